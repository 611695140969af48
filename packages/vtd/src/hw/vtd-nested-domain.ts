import {
  checkUserArrayEntry,
  err,
  ok,
  readUserArrayEntryWords,
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
  IOMMU_HWPT_INVALIDATE_DATA_VTD_S1,
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
  /** One invalidation entry's 32-bit halves, reused entry after entry. */
  private readonly entryWords = new Uint32Array(VTD_S1_INVALIDATE_BYTES / 4);

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
    const w = this.entryWords;
    for (let i = 0; i < array.entryNum; i++) {
      const checked = checkUserArrayEntry(array, IOMMU_HWPT_INVALIDATE_DATA_VTD_S1, i, VTD_S1_INVALIDATE_MIN_BYTES, VTD_S1_INVALIDATE_BYTES);
      if (!checked.ok) return { handled: i, result: checked };
      // addr [1:0], npages [3:2], flags, __reserved as 32-bit halves: no BigInt on the forwarding path.
      readUserArrayEntryWords(array, i, VTD_S1_INVALIDATE_BYTES, w);
      const flags = w[4]!;
      const reserved = w[5]!;
      if ((flags & ~VtdInvalidateFlag.LEAF) !== 0 || reserved !== 0) {
        return { handled: i, result: err("EOPNOTSUPP", `invalidation flags 0x${flags.toString(16)} / reserved 0x${reserved.toString(16)}`) };
      }
      const addrZero = w[0] === 0 && w[1] === 0;
      const all = w[2] === 0xffff_ffff && w[3] === 0xffff_ffff;
      if ((w[0]! & 0xfff) !== 0 || (all && !addrZero)) {
        const addr = (BigInt(w[1]!) << 32n) | BigInt(w[0]!);
        const npages = (BigInt(w[3]!) << 32n) | BigInt(w[2]!);
        return { handled: i, result: err("EINVAL", `invalidation address 0x${addr.toString(16)} with ${npages} pages`) };
      }
      this.apply(w, addrZero && all);
    }
    return { handled: array.entryNum, result: ok() };
  }

  /** One checked entry's effect (its halves in `w`): everything, or the range clipped to 2^53. */
  private apply(w: Uint32Array, all: boolean): void {
    if (all) {
      this.invalidateAll();
      return;
    }
    const limit = 2 ** 53;
    // addr ≥ 2^53 (its high half ≥ 2^21) or no pages: nothing a number address can hold.
    if (w[1]! >= 0x20_0000 || (w[2] === 0 && w[3] === 0)) return;
    const addr = w[1]! * 2 ** 32 + w[0]!;
    // Above 2^41 pages the end is past 2^53 whatever addr is; below, the arithmetic is exact up to the clip.
    const npages = w[3]! * 2 ** 32 + w[2]!;
    const end = npages >= 2 ** 41 ? limit : Math.min(addr + npages * 4096, limit);
    this.invalidateRange(addr, end - addr);
  }
}
