import { err, ok, type Result } from "@viommu/core";

/**
 * The mock's iommufd types. The vIOMMU, HW queue and vEVENTQ type values are Linux's selftest values, so the
 * flows read like `tools/testing/selftests/iommu/iommufd.c`.
 */
export const MOCK_VIOMMU_TYPE = 0xdeadbeef;
export const MOCK_HW_QUEUE_TYPE = 0xdeadbeef;
export const MOCK_VEVENTQ_TYPE = 0xbeefbeef;
export const MOCK_HW_INFO_TYPE = 0xfeedbeef;
export const MOCK_HWPT_DATA_TYPE = 0xdead;
export const MOCK_INVALIDATE_DATA_TYPE = 0xdeadbeef;
/** At most two HW queues, allocated in ascending order. */
export const MOCK_HW_QUEUE_MAX = 2;

/** `struct iommu_hwpt_mock_s1 { u64 s1_root; u32 asid; u32 flags; }`: the guest's stage 1 for a nested HWPT. */
export const MOCK_S1_BYTES = 16;
export const MOCK_S1_MIN_BYTES = 12;

export interface MockS1Data {
  readonly s1Root: number;
  readonly asid: number;
  readonly flags: number;
}

export function encodeMockS1(data: MockS1Data): Uint8Array {
  const out = new Uint8Array(MOCK_S1_BYTES);
  const v = new DataView(out.buffer);
  v.setBigUint64(0, BigInt(data.s1Root), true);
  v.setUint32(8, data.asid, true);
  v.setUint32(12, data.flags, true);
  return out;
}

/** Parses (already size-checked) bytes; EINVAL for values the hardware could not hold. */
export function decodeMockS1(bytes: Uint8Array): Result<MockS1Data> {
  const v = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  const root = v.getBigUint64(0, true);
  const asid = v.getUint32(8, true);
  const flags = v.getUint32(12, true);
  if (flags !== 0) return err("EOPNOTSUPP", `unknown stage-1 flags 0x${flags.toString(16)}`);
  if (root % 4096n !== 0n || root >= 1n << 52n) return err("EINVAL", "stage-1 root not a 4 KiB-aligned 52-bit address");
  if (asid > 0xffff) return err("EINVAL", `ASID ${asid} wider than 16 bits`);
  return ok({ s1Root: Number(root), asid, flags });
}

/**
 * `struct iommu_mock_invalidate { u32 flags; u32 asid; u64 addr; u64 npages; }` (24 bytes; minimum through
 * `npages`). flags: ALL (everything of the ASID), LEAF (hint). addr 0 with npages all-ones is also everything.
 */
export const MOCK_INVALIDATE_BYTES = 24;
export const MockInvalidateFlag = { ALL: 1 << 0, LEAF: 1 << 1 } as const;

export interface MockInvalidate {
  readonly flags: number;
  readonly asid: number;
  readonly addr: bigint;
  readonly npages: bigint;
}

export function encodeMockInvalidate(entry: MockInvalidate): Uint8Array {
  const out = new Uint8Array(MOCK_INVALIDATE_BYTES);
  const v = new DataView(out.buffer);
  v.setUint32(0, entry.flags, true);
  v.setUint32(4, entry.asid, true);
  v.setBigUint64(8, entry.addr, true);
  v.setBigUint64(16, entry.npages, true);
  return out;
}

export function decodeMockInvalidate(bytes: Uint8Array): MockInvalidate {
  const v = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  return { flags: v.getUint32(0, true), asid: v.getUint32(4, true), addr: v.getBigUint64(8, true), npages: v.getBigUint64(16, true) };
}

/** `struct iommu_hw_info_mock { u32 flags; u32 version; u64 caps; }`. */
export const MOCK_HW_INFO_BYTES = 16;

/** The vEVENT payload: the 16-byte mock event record, RID replaced by the virtual id. */
export const MOCK_VEVENT_BYTES = 16;
