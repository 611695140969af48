import {
  copyStructFromFullUserArray,
  copyStructFromUser,
  err,
  fail,
  ok,
  type InvalidateOutcome,
  type NestedDomain,
  type PhysicalDevice,
  type Result,
  type UserData,
  type UserDataArray,
  type ViommuCore,
  type ViommuOps,
} from "@viommu/core";
import { readStruct, structProblem } from "../format/byte-layout.js";
import { HV_DEVICE_DOMAIN_ID_DEFAULT, HV_DEVICE_DOMAIN_ID_NULL } from "../format/device-domain.js";
import {
  hwptHypervS1Layout,
  IOMMU_HWPT_DATA_HYPERV_S1,
  IOMMU_VIOMMU_INVALIDATE_DATA_HYPERV,
  viommuInvalidateHypervLayout,
} from "../format/iommufd-uapi.js";
import { HypervNestedDomain, type DomainTlb } from "./hyperv-nested-domain.js";

/** Notional size of the driver's vIOMMU struct (nonzero: supported). */
export const HYPERV_VIOMMU_SIZE = 128;

/** IOVAs the model can hold exactly: a flush beyond them has nothing cached to drop. */
const ADDRESS_LIMIT = 2 ** 53;

/**
 * The Hyper-V vIOMMU on a physical unit: nested domains from `iommu_hwpt_hyperv_s1` (one per configured paging
 * device domain) and flushes from `iommu_viommu_invalidate_hyperv` entries, each confined to this vIOMMU's VMID.
 */
export class HypervViommu implements ViommuOps {
  constructor(
    readonly core: ViommuCore,
    private readonly tlb: DomainTlb,
    private readonly fiveLevel: boolean,
  ) {}

  allocDomainNested(_device: PhysicalDevice, flags: number, data: UserData): Result<NestedDomain> {
    if (flags !== 0) return err("EOPNOTSUPP", "the pvIOMMU has no PASID-granular or fault-queue nested domains");
    if (data.type !== IOMMU_HWPT_DATA_HYPERV_S1) return err("EOPNOTSUPP", `HWPT data type 0x${data.type.toString(16)}`);
    const bytes = copyStructFromUser(data, IOMMU_HWPT_DATA_HYPERV_S1, hwptHypervS1Layout.size, hwptHypervS1Layout.size);
    if (!bytes.ok) return fail(bytes);
    if (structProblem(hwptHypervS1Layout, bytes.value) !== undefined) return err("EOPNOTSUPP", "unknown iommu_hwpt_hyperv_s1 flags");
    const s1 = readStruct(hwptHypervS1Layout, bytes.value);
    if (s1.domain_id === HV_DEVICE_DOMAIN_ID_DEFAULT || s1.domain_id === HV_DEVICE_DOMAIN_ID_NULL) return err("EINVAL", `domain ${s1.domain_id} is predefined`);
    if (s1.s1_root % 4096n !== 0n || s1.s1_root >= 1n << 52n) return err("EINVAL", "stage-1 root not a 4 KiB aligned 52-bit address");
    if (s1.flags.FIVE_LEVEL && !this.fiveLevel) return err("EOPNOTSUPP", "5-level stage 1 not supported by this unit");
    const levels = s1.flags.FIVE_LEVEL ? 5 : 4;
    return ok(new HypervNestedDomain(this.core.unit, this.core.parent, s1.domain_id, Number(s1.s1_root), levels, this.tlb));
  }

  /**
   * Device-domain flushes, copied as one array (shorter entries zero-extended, longer only with a zero tail).
   * Stops at the first malformed entry; `handled` counts the entries applied before it.
   */
  cacheInvalidate(array: UserDataArray): InvalidateOutcome {
    if (array.type !== IOMMU_VIOMMU_INVALIDATE_DATA_HYPERV) return { handled: 0, result: err("EINVAL", `invalidation data type ${array.type}`) };
    if (array.entryNum === 0) return { handled: 0, result: ok() };
    const entries = copyStructFromFullUserArray(array, IOMMU_VIOMMU_INVALIDATE_DATA_HYPERV, viommuInvalidateHypervLayout.size);
    if (!entries.ok) return { handled: 0, result: fail(entries) };
    const vmid = this.core.parent.vmid;
    for (let i = 0; i < entries.value.length; i++) {
      const bytes = entries.value[i]!;
      if (structProblem(viommuInvalidateHypervLayout, bytes) !== undefined) return { handled: i, result: err("EINVAL", `entry ${i}: reserved bits set`) };
      const e = readStruct(viommuInvalidateHypervLayout, bytes);
      if (e.flags.ALL) {
        this.tlb.flushDomain(vmid, e.domain_id);
        continue;
      }
      // A shift of 52 or more covers every page: the whole domain.
      if (e.page_mask_shift >= 52) {
        this.tlb.flushDomain(vmid, e.domain_id);
        continue;
      }
      const pages = 1n << BigInt(e.page_mask_shift);
      if (e.page_number % pages !== 0n) return { handled: i, result: err("EINVAL", `entry ${i}: page ${e.page_number} not aligned to 2^${e.page_mask_shift} pages`) };
      const start = e.page_number * 4096n;
      if (start >= BigInt(ADDRESS_LIMIT)) continue;
      const end = start + pages * 4096n;
      const length = end > BigInt(ADDRESS_LIMIT) ? ADDRESS_LIMIT - Number(start) : Number(end - start);
      this.tlb.flushRange(vmid, e.domain_id, Number(start), length);
    }
    return { handled: entries.value.length, result: ok() };
  }
}
