import { decodeLayout, defineLayout, encodeLayout, type Fields, type RawBits } from "@viommu/core";

/**
 * Fault recording register FRCD_REG (128 bits, at CAP.FRO × 16 + 16n). Intel VT-d spec §11.4.14;
 * ../shared/spec/x86.md A7.1 (QEMU `VTD_FRCD_*`, Linux `dma_frcd_*`). T2, PRIV, EXE and AT — marked unverified
 * in the spec file — are confirmed by VirtualBox's spec-derived `VTD_BF_1_FRCD_REG_*`. Request type: with T2
 * clear, T1 = 0 write and 1 read (Linux and QEMU use T1 alone); with T2 set, T1 = 0 page request and 1 AtomicOp
 * (FaultRequestType). Bits [11:0] and [91:80] are reserved.
 */
export const faultRecordLayout = defineLayout("FRCD_REG", 128, [
  /** Fault information: the faulting page address; for interrupt-remapping faults [63:48] is the interrupt index. */
  { name: "FI", bit: 12, width: 52, shift: 12, big: true },
  /** Source id of the faulting request (bus[15:8], device[7:3], function[2:0]). */
  { name: "SID", bit: 64, width: 16 },
  /** Type bit 2. */
  { name: "T2", bit: 92, width: 1 },
  /** Privilege (supervisor) mode requested. */
  { name: "PRIV", bit: 93, width: 1 },
  /** Execute permission requested. */
  { name: "EXE", bit: 94, width: 1 },
  /** PASID present. */
  { name: "PP", bit: 95, width: 1 },
  /** Fault reason (fault-reasons.ts). */
  { name: "FR", bit: 96, width: 8 },
  /** PASID value (QEMU writes only 16 bits of it). */
  { name: "PV", bit: 104, width: 20 },
  /** Address type of the request (PCIe AT). */
  { name: "AT", bit: 124, width: 2 },
  /** Type bit 1 (Linux and QEMU: 1 = read request, 0 = write request, with T2 = 0). */
  { name: "T1", bit: 126, width: 1 },
  /** Fault: the record is valid; software writes 1 to clear. */
  { name: "F", bit: 127, width: 1 },
] as const);

export type FaultRecordFields = Fields<typeof faultRecordLayout>;

/** FRCD request type, (T1 << 1) | T2, numbered as VirtualBox's VTDREQTYPE lists it. */
export const FaultRequestType = { WRITE: 0, PAGE: 1, READ: 2, ATOMIC_OP: 3 } as const;

export function decodeFaultRecord(raw: RawBits): FaultRecordFields {
  return decodeLayout(faultRecordLayout, raw);
}

export function encodeFaultRecord(fields: Partial<FaultRecordFields>): RawBits {
  return encodeLayout(faultRecordLayout, fields);
}

/** The request type of a fault record (FaultRequestType): (T1 << 1) | T2. */
export function faultRequestType(fields: Pick<FaultRecordFields, "T1" | "T2">): number {
  return (fields.T1 << 1) | fields.T2;
}

/**
 * The FI a DMA fault record (or a page request's ADDR) carries for request address `address`: the page of the
 * 64-bit address the device put on the wire, bits [63:12]. A number at or above 2^64 keeps its low 64 bits, as
 * the wire would; a value that is no address (negative, fractional, not finite) records 0.
 */
export function faultPageAddress(address: number): bigint {
  if (!isDmaAddress(address)) return 0n;
  return BigInt(address) & 0xffff_ffff_ffff_f000n;
}

/** Whether `value` is an address a device can issue: a non-negative integer (core's DmaDevice rule). */
export function isDmaAddress(value: number): boolean {
  return Number.isInteger(value) && value >= 0;
}

/** The interrupt index an interrupt-remapping fault record carries in FI[63:48]. */
export function faultRecordInterruptIndex(raw: RawBits): number {
  return raw[1]! >>> 16;
}

/** FI value for an interrupt-remapping fault on interrupt `index` (QEMU `VTD_FRCD_IR_IDX`). */
export function interruptFaultInfo(index: number): bigint {
  return BigInt(index & 0xffff) << 48n;
}
