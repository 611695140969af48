import {
  copyStructFromUserArray,
  err,
  fail,
  ok,
  type InvalidateOutcome,
  type NestedDomain,
  type PagingDomain,
  type PhysicalIommu,
  type Result,
  type TableGeometry,
  type UserDataArray,
} from "@viommu/core";
import { decodeCap } from "../format/cap.js";
import { decodeEcap } from "../format/ecap.js";
import {
  decodeVtdS1Invalidate,
  IOMMU_HWPT_INVALIDATE_DATA_VTD_S1,
  U64_ALL_ONES,
  VTD_S1_ADDR_WIDTH_4LEVEL,
  VTD_S1_ADDR_WIDTH_5LEVEL,
  VTD_S1_INVALIDATE_BYTES,
  VTD_S1_INVALIDATE_MIN_BYTES,
  VtdInvalidateFlag,
  VtdS1Flag,
} from "../format/uapi.js";
import { FL_GEOMETRY_4, FL_GEOMETRY_5 } from "./host-formats.js";

/** What a nested domain needs from its unit's IOTLB. */
export interface NestedDomainTlb {
  invalidateAsid(vmid: number, asid: number): number;
  invalidateRange(vmid: number, asid: number, address: number, length: number): number;
}

/** The stage-1 configuration of `struct iommu_hwpt_vtd_s1`, as the unit keeps it. */
export interface VtdS1Config {
  /** VtdS1Flag bits (Linux acts on SRE, EAFE and WPE and ignores the rest of the u64). */
  readonly flags: number;
  /** First-level root (guest physical, bits [63:12] as the PASID entry's FLPTPTR holds them). */
  readonly root: number;
  readonly addrWidth: number;
}

/** The IOTLB address-space tag of (host domain id, PASID): both fit a double exactly. */
export function nestedTag(hostDid: number, pasid: number): number {
  return hostDid * 2 ** 21 + (pasid + 1);
}

/**
 * The checks Linux's `intel_pasid_setup_nested` makes when the domain is attached (not when it is allocated):
 * a stage-1 width of 48 or 57 bits, 57 only with CAP.FL5LP, SRE only with ECAP.SRS, EAFE only with ECAP.EAFS.
 * Every failure is EINVAL.
 */
export function checkNestedConfig(s1: VtdS1Config, cap: Uint32Array, ecap: Uint32Array): Result<void> {
  const c = decodeCap(cap);
  const e = decodeEcap(ecap);
  if (!e.NEST) return err("EINVAL", "the unit does not support nested translation");
  if (s1.addrWidth !== VTD_S1_ADDR_WIDTH_4LEVEL && s1.addrWidth !== VTD_S1_ADDR_WIDTH_5LEVEL) return err("EINVAL", `stage-1 address width ${s1.addrWidth}`);
  if (s1.addrWidth === VTD_S1_ADDR_WIDTH_5LEVEL && !c.FL5LP) return err("EINVAL", "5-level stage 1 without CAP.FL5LP");
  if (s1.flags & VtdS1Flag.SRE && !e.SRS) return err("EINVAL", "SRE without ECAP.SRS");
  if (s1.flags & VtdS1Flag.EAFE && !e.EAFS) return err("EINVAL", "EAFE without ECAP.EAFS");
  return ok();
}

/**
 * A nested domain (HWPT_NESTED with IOMMU_HWPT_DATA_VTD_S1): the guest's first-level table, translated as
 * PASID-entry PGTT = nested over the shared second-level parent. It has a host domain id of its own; the IOTLB
 * tags its translations with the parent's VMID and (that domain id, PASID).
 */
export class VtdNestedDomain implements NestedDomain {
  readonly kind = "nested" as const;
  /** PASIDs (NO_PASID = −1 for the RID) at which a device is attached to this domain: the tags it owns. */
  readonly pasids = new Set<number>();
  readonly geometry: TableGeometry;
  private destroyed = false;

  constructor(
    readonly unit: PhysicalIommu,
    readonly parent: PagingDomain,
    readonly s1: VtdS1Config,
    readonly hostDid: number,
    private readonly tlb: NestedDomainTlb,
    private readonly release: (domain: VtdNestedDomain) => void,
  ) {
    this.geometry = s1.addrWidth === VTD_S1_ADDR_WIDTH_5LEVEL ? FL_GEOMETRY_5 : FL_GEOMETRY_4;
  }

  destroy(): void {
    if (this.destroyed) return;
    this.destroyed = true;
    this.invalidateAll();
    this.release(this);
  }

  invalidateAll(): void {
    for (const pasid of this.pasids) this.tlb.invalidateAsid(this.parent.vmid, nestedTag(this.hostDid, pasid));
  }

  invalidateRange(address: number, length: number): void {
    for (const pasid of this.pasids) this.tlb.invalidateRange(this.parent.vmid, nestedTag(this.hostDid, pasid), address, length);
  }

  /**
   * `intel_nested_cache_invalidate_user`: the type is checked before any entry (EINVAL, 0 handled); each
   * entry is copied with the per-entry helper (so entry_len must be exactly the struct, EINVAL otherwise);
   * unknown flags or a nonzero `__reserved` are EOPNOTSUPP; a misaligned address, or npages all ones with a
   * nonzero address, is EINVAL. addr 0 with npages all ones flushes the whole domain. `handled` counts the
   * entries done before the failing one.
   */
  cacheInvalidateUser(array: UserDataArray): InvalidateOutcome {
    if (array.type !== IOMMU_HWPT_INVALIDATE_DATA_VTD_S1) return { handled: 0, result: err("EINVAL", `invalidation data type ${array.type}`) };
    for (let i = 0; i < array.entryNum; i++) {
      const bytes = copyStructFromUserArray(array, IOMMU_HWPT_INVALIDATE_DATA_VTD_S1, i, VTD_S1_INVALIDATE_MIN_BYTES, VTD_S1_INVALIDATE_BYTES);
      if (!bytes.ok) return { handled: i, result: fail(bytes) };
      const entry = decodeVtdS1Invalidate(bytes.value);
      if ((entry.flags & ~VtdInvalidateFlag.LEAF) !== 0 || entry.reserved !== 0) {
        return { handled: i, result: err("EOPNOTSUPP", `invalidation flags 0x${entry.flags.toString(16)} / reserved 0x${entry.reserved.toString(16)}`) };
      }
      if (entry.addr % 4096n !== 0n || (entry.npages === U64_ALL_ONES && entry.addr !== 0n)) {
        return { handled: i, result: err("EINVAL", `invalidation address 0x${entry.addr.toString(16)} with ${entry.npages} pages`) };
      }
      this.apply(entry.addr, entry.npages);
    }
    return { handled: array.entryNum, result: ok() };
  }

  private apply(addr: bigint, npages: bigint): void {
    if (addr === 0n && npages === U64_ALL_ONES) {
      this.invalidateAll();
      return;
    }
    const limit = 1n << 53n;
    if (npages === 0n || addr >= limit) return;
    const end = addr + npages * 4096n;
    this.invalidateRange(Number(addr), Number((end > limit ? limit : end) - addr));
  }
}
