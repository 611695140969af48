import { decodeLayout, defineLayout, encodeLayout, hasReservedBits, type DecodedStructure, type Fields, type RawBits } from "@viommu/core";

/**
 * Interrupt remapping table entry (IRTE), 128 bits at IRTA + 16 × index. Intel VT-d spec §9.10/§9.11;
 * ../shared/spec/x86.md A9.2 (Linux `struct irte` in include/linux/dmar.h, QEMU `VTD_IR_TableEntry`,
 * VirtualBox `VTD_BF_*_IRTE_*`). IM (bit 15) selects the format: 0 remapped, 1 posted (needs CAP.PI).
 */
export const IrteMode = { REMAPPED: 0, POSTED: 1 } as const;

/** Remapped format. */
export const irteRemappedLayout = defineLayout("irte_remapped", 128, [
  { name: "P", bit: 0, width: 1 },
  { name: "FPD", bit: 1, width: 1 },
  /** Destination mode: 1 logical. */
  { name: "DM", bit: 2, width: 1 },
  /** Redirection hint. */
  { name: "RH", bit: 3, width: 1 },
  /** Trigger mode: 1 level. */
  { name: "TM", bit: 4, width: 1 },
  /** Delivery mode (APIC encoding). */
  { name: "DLM", bit: 5, width: 3 },
  { name: "AVAIL", bit: 8, width: 4 },
  { name: "IM", bit: 15, width: 1 },
  /** Vector. */
  { name: "V", bit: 16, width: 8 },
  /** Destination id: xAPIC (IRTA.EIME = 0) uses [47:40] only; x2APIC all 32 bits. */
  { name: "DST", bit: 32, width: 32 },
  { name: "SID", bit: 64, width: 16 },
  { name: "SQ", bit: 80, width: 2 },
  { name: "SVT", bit: 82, width: 2 },
] as const);

/** Posted format: the interrupt is posted to the descriptor at PDA (64-byte aligned). */
export const irtePostedLayout = defineLayout("irte_posted", 128, [
  { name: "P", bit: 0, width: 1 },
  { name: "FPD", bit: 1, width: 1 },
  { name: "AVAIL", bit: 8, width: 4 },
  /** Urgent. */
  { name: "URG", bit: 14, width: 1 },
  { name: "IM", bit: 15, width: 1 },
  /** Virtual (guest) vector. */
  { name: "VV", bit: 16, width: 8 },
  /** Posted-descriptor address bits [31:6]. */
  { name: "PDA_LO", bit: 38, width: 26, shift: 6 },
  { name: "SID", bit: 64, width: 16 },
  { name: "SQ", bit: 80, width: 2 },
  { name: "SVT", bit: 82, width: 2 },
  /** Posted-descriptor address bits [63:32]. */
  { name: "PDA_HI", bit: 96, width: 32 },
] as const);

export type IrteRemappedFields = Fields<typeof irteRemappedLayout>;
export type IrtePostedFields = Fields<typeof irtePostedLayout>;

/** Source validation type. */
export const SourceValidationType = {
  NONE: 0,
  /** Compare the requester id with SID under the SQ mask. */
  VERIFY_SID: 1,
  /**
   * Requester bus must lie in [start, end] with the start bus in SID[15:8] and the end bus in SID[7:0] (VT-d
   * spec §9.10, IRTE SVT 10b; Linux `set_irte_verify_bus` in drivers/iommu/intel/irq_remapping.c writes
   * `(start_bus << 8) | end_bus`). QEMU's `vtd_irte_get` (hw/i386/intel_iommu.c) reads SID[15:8] as the highest
   * bus and SID[7:0] as the lowest, the reverse: a QEMU deviation; the specification wins.
   */
  VERIFY_BUS: 2,
  /** Reserved (QEMU: verification fails, fault 0x26). */
  RESERVED: 3,
} as const;

/** Requester-id compare mask for each SQ value (SQ 1..3 ignore function-number bits). */
export const SOURCE_ID_QUALIFIER_MASKS: readonly number[] = [0xffff, 0xfffb, 0xfff9, 0xfff8];

/** The IRTE mode of an entry from its low 32 bits. */
export function irteMode(lo: number): number {
  return (lo >>> 15) & 1;
}

export function decodeIrteRemapped(raw: RawBits): IrteRemappedFields {
  return decodeLayout(irteRemappedLayout, raw);
}

export function encodeIrteRemapped(fields: Partial<Omit<IrteRemappedFields, "IM">>): RawBits {
  return encodeLayout(irteRemappedLayout, { ...fields, IM: IrteMode.REMAPPED });
}

export function decodeIrtePosted(raw: RawBits): IrtePostedFields {
  return decodeLayout(irtePostedLayout, raw);
}

/** A posted IRTE; `pda` is the full posted-descriptor address (64-byte aligned). */
export function encodeIrtePosted(fields: Partial<Omit<IrtePostedFields, "IM" | "PDA_LO" | "PDA_HI">> & { readonly pda?: bigint }): RawBits {
  const { pda, ...rest } = fields;
  const address = pda ?? 0n;
  if ((address & 0x3fn) !== 0n || address >> 64n !== 0n) throw new RangeError(`posted descriptor address 0x${address.toString(16)} is not 64-byte aligned`);
  return encodeLayout(irtePostedLayout, { ...rest, IM: IrteMode.POSTED, PDA_LO: Number(address & 0xffffffffn), PDA_HI: Number(address >> 32n) });
}

/** The posted-descriptor address of a posted IRTE. */
export function irtePostedDescriptorAddress(fields: Pick<IrtePostedFields, "PDA_LO" | "PDA_HI">): bigint {
  return (BigInt(fields.PDA_HI) << 32n) | BigInt(fields.PDA_LO);
}

/** The destination APIC id of a remapped IRTE: DST[15:8] in xAPIC mode (IRTA.EIME = 0), all of DST with EIME. */
export function irteDestination(dst: number, eime: boolean): number {
  return eime ? dst : (dst >>> 8) & 0xff;
}

/** The DST value Linux writes for APIC id `apicId` (IRTE_DEST: shifted left 8 in xAPIC mode). */
export function irteDst(apicId: number, eime: boolean): number {
  return eime ? apicId >>> 0 : (apicId & 0xff) << 8;
}

const XAPIC_DST_RESERVED_LO = 0x000000ff;
const XAPIC_DST_RESERVED_HI = 0xffff0000;

/**
 * Whether a present IRTE has a reserved bit set (fault 0x24). In remapped format: [14:12], [31:24],
 * [127:84] (QEMU's checks) and, in xAPIC mode, DST bits [39:32] and [63:48] (VirtualBox, from the spec).
 * In posted format: [7:2], [13:12], [37:24], [95:84].
 */
export function irteHasReservedBits(raw: RawBits, eime: boolean): boolean {
  if (irteMode(raw[0]!) === IrteMode.POSTED) return hasReservedBits(irtePostedLayout, raw);
  if (hasReservedBits(irteRemappedLayout, raw)) return true;
  return !eime && (raw[1]! & (XAPIC_DST_RESERVED_LO | XAPIC_DST_RESERVED_HI)) !== 0;
}

/** The SID of a bus-range (SVT 10b) IRTE: start bus in [15:8], end bus in [7:0]. */
export function irteBusRangeSid(startBus: number, endBus: number): number {
  return ((startBus & 0xff) << 8) | (endBus & 0xff);
}

/** Whether requester id `requesterId` passes the IRTE's source-id validation. SVT 3 (reserved) fails. */
export function irteSourceIdValid(svt: number, sq: number, sid: number, requesterId: number): boolean {
  switch (svt) {
    case SourceValidationType.NONE:
      return true;
    case SourceValidationType.VERIFY_SID: {
      const mask = SOURCE_ID_QUALIFIER_MASKS[sq & 3]!;
      return (sid & mask) === (requesterId & mask);
    }
    case SourceValidationType.VERIFY_BUS: {
      const bus = (requesterId >>> 8) & 0xff;
      return bus >= ((sid >>> 8) & 0xff) && bus <= (sid & 0xff);
    }
    default:
      return false;
  }
}

/** Decodes an IRTE in the format its IM bit selects (the `irte` structure of `viommu decode`). */
export function decodeIrte(raw: RawBits): DecodedStructure {
  const mode = irteMode(raw[0]!);
  if (mode === IrteMode.POSTED) {
    const { PDA_LO, PDA_HI, ...rest } = decodeIrtePosted(raw);
    return { name: "POSTED", code: mode, fields: { ...rest, PDA: irtePostedDescriptorAddress({ PDA_LO, PDA_HI }) } };
  }
  return { name: "REMAPPED", code: mode, fields: decodeIrteRemapped(raw) };
}
