import {
  copyStructFromUserArray,
  fail,
  type Result,
  err,
  ok,
  type InvalidateOutcome,
  type NestedDomain,
  type PagingDomain,
  type PhysicalIommu,
  type UserDataArray,
  type ViommuCore,
} from "@viommu/core";
import { decodeMockInvalidate, MOCK_INVALIDATE_BYTES, MOCK_INVALIDATE_DATA_TYPE, MockInvalidateFlag, type MockInvalidate } from "../format/uapi.js";

const U64_MAX = 0xffff_ffff_ffff_ffffn;
/** Minimum entry: through `npages`, the last initial field. */
const MIN_INVALIDATE_BYTES = 24;

/** What a nested domain needs from its unit to drop cached translations. */
export interface MockTlb {
  invalidateAsid(vmid: number, asid: number): number;
  invalidateRange(vmid: number, asid: number, address: number, length: number): number;
}

/** Why an invalidation entry is refused, as the mock driver's errno; undefined when it is acceptable. */
export function checkMockInvalidate(entry: MockInvalidate): Result<void> | undefined {
  if ((entry.flags & ~(MockInvalidateFlag.ALL | MockInvalidateFlag.LEAF)) !== 0) return err("EOPNOTSUPP", `unknown invalidation flags 0x${entry.flags.toString(16)}`);
  if (entry.asid > 0xffff) return err("EINVAL", `ASID ${entry.asid} wider than 16 bits`);
  if (entry.addr % 4096n !== 0n) return err("EINVAL", "address not 4 KiB aligned");
  if (entry.npages === U64_MAX && entry.addr !== 0n) return err("EINVAL", "all-ones page count needs address 0");
  return undefined;
}

/** Applies one accepted entry to the unit's IOTLB for `vmid`. */
export function applyMockInvalidate(tlb: MockTlb, vmid: number, entry: MockInvalidate): void {
  const everything = (entry.flags & MockInvalidateFlag.ALL) !== 0 || (entry.addr === 0n && entry.npages === U64_MAX);
  if (everything) tlb.invalidateAsid(vmid, entry.asid);
  else if (entry.npages > 0n) {
    const length = entry.npages * 4096n;
    const clipped = entry.addr + length > 1n << 53n ? Number((1n << 53n) - entry.addr) : Number(length);
    if (entry.addr < 1n << 53n) tlb.invalidateRange(vmid, entry.asid, Number(entry.addr), clipped);
  }
}

/**
 * A nested domain: the guest's stage-1 table (mock format) at `s1Root` (a GPA), tagged `asid`, over the
 * paging parent's stage 2. Allocated on a vIOMMU or, on the legacy path, directly on the parent.
 */
export class MockNestedDomain implements NestedDomain {
  readonly kind = "nested" as const;

  constructor(
    readonly unit: PhysicalIommu,
    readonly parent: PagingDomain,
    readonly s1Root: number,
    readonly asid: number,
    private readonly tlb: MockTlb,
    /** The vIOMMU it was allocated on, if any: attaching then needs a vDEVICE, and its faults go there. */
    readonly viommu: ViommuCore | undefined,
  ) {}

  destroy(): void {
    this.tlb.invalidateAsid(this.parent.vmid, this.asid);
  }

  /**
   * The legacy nested-HWPT invalidation: entries copied one by one with the per-entry helper, so an entry
   * length below the minimum or above the struct size (even by a zero byte) is EINVAL.
   */
  cacheInvalidateUser(array: UserDataArray): InvalidateOutcome {
    if (array.type !== MOCK_INVALIDATE_DATA_TYPE) return { handled: 0, result: err("EINVAL", `invalidation data type ${array.type}`) };
    for (let i = 0; i < array.entryNum; i++) {
      const bytes = copyStructFromUserArray(array, MOCK_INVALIDATE_DATA_TYPE, i, MIN_INVALIDATE_BYTES, MOCK_INVALIDATE_BYTES);
      if (!bytes.ok) return { handled: i, result: fail(bytes) };
      const entry = decodeMockInvalidate(bytes.value);
      const bad = checkMockInvalidate(entry);
      if (bad) return { handled: i, result: bad };
      if (entry.asid !== this.asid) return { handled: i, result: err("EINVAL", `ASID ${entry.asid} is not this domain's (${this.asid})`) };
      applyMockInvalidate(this.tlb, this.parent.vmid, entry);
    }
    return { handled: array.entryNum, result: ok() };
  }
}
