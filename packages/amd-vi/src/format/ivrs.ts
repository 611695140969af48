import { ByteReader, ByteWriter, acpiTableProblem, buildAcpiTable, defineLayout, parseAcpiTableHeader, type AcpiTableHeader, type AcpiTableIdentity } from "@viommu/core";
import { readIvhdDeviceEntry, writeIvhdDeviceEntry, type IvhdDeviceEntry } from "./ivhd-device-entry.js";

/**
 * The IVRS ACPI table (I/O Virtualization Reporting Structure; spec x86.md B9; ACPICA actbl2.h and
 * dmtbinfo2.c for the layout and the names iASL prints, Linux init.c for what the driver reads, QEMU
 * acpi-build.c build_amd_iommu for what a VMM writes).
 *
 * After the 36-byte ACPI header: IVinfo (4 bytes, offset 36), 8 reserved bytes, then IVHD blocks (types
 * 0x10, 0x11, 0x40) and IVMD blocks (0x20, 0x21, 0x22), each starting with Type(1), Flags(1), Length(2).
 */

/** IVinfo (offset 36): [0] EFRSup, [1] DMA remap (pre-boot DMA protection; Linux IOMMU_IVINFO_DMA_REMAP), [7:5] GVAsize, [14:8] PAsize, [21:15] VAsize (0 = 64), [22] HtAtsResv. */
export const ivInfoLayout = defineLayout("IVinfo", 32, [
  { name: "EFRSup", bit: 0, width: 1 },
  { name: "DMARemap", bit: 1, width: 1 },
  { name: "GVAsize", bit: 5, width: 3 },
  { name: "PAsize", bit: 8, width: 7 },
  { name: "VAsize", bit: 15, width: 7 },
  { name: "HtAtsResv", bit: 22, width: 1 },
] as const);

/** IVHD Flags byte (ACPICA ACPI_IVHD_*; Linux copies bits 0–3 into Control). */
export const ivhdFlagsLayout = defineLayout("IvhdFlags", 32, [
  { name: "HtTunEn", bit: 0, width: 1 },
  { name: "PassPW", bit: 1, width: 1 },
  { name: "ResPassPW", bit: 2, width: 1 },
  { name: "Isoc", bit: 3, width: 1 },
  { name: "IotlbSup", bit: 4, width: 1 },
  { name: "Coherent", bit: 5, width: 1 },
  { name: "PrefSup", bit: 6, width: 1 },
  { name: "PPRSup", bit: 7, width: 1 },
] as const);

/** IVHD IOMMU info (offset 18): [4:0] MSI number, [12:8] UnitID. */
export const ivhdInfoLayout = defineLayout("IvhdInfo", 32, [
  { name: "MsiNum", bit: 0, width: 5 },
  { name: "UnitID", bit: 8, width: 5 },
] as const);

/**
 * IVHD type 0x10 "IOMMU Feature Reporting" (offset 20). XTSup, GTSup, GASup, PNCounters, PNBanks, GATS and
 * HATS are confirmed by QEMU/Linux; the spec file marks NXSup, GLXSup, IASup, HESup, PASmax and MsiNumPPR
 * unverified. QEMU's own HATS/GATS arithmetic truncates to 0.
 */
export const ivhdFeatureReportingLayout = defineLayout("IvhdFeatureReporting", 32, [
  { name: "XTSup", bit: 0, width: 1 },
  { name: "NXSup", bit: 1, width: 1 },
  { name: "GTSup", bit: 2, width: 1 },
  { name: "GLXSup", bit: 3, width: 2 },
  { name: "IASup", bit: 5, width: 1 },
  { name: "GASup", bit: 6, width: 1 },
  { name: "HESup", bit: 7, width: 1 },
  { name: "PASmax", bit: 8, width: 5 },
  { name: "PNCounters", bit: 13, width: 4 },
  { name: "PNBanks", bit: 17, width: 6 },
  { name: "MsiNumPPR", bit: 23, width: 5 },
  { name: "GATS", bit: 28, width: 2 },
  { name: "HATS", bit: 30, width: 2 },
] as const);

/** IVHD types 0x11/0x40 "IOMMU Attributes" (offset 20): bit 0 HATDis (AMDESE/linux-iommu IOMMU_IVHD_ATTR_HATDIS_SHIFT). */
export const ivhdAttributesLayout = defineLayout("IvhdAttributes", 32, [{ name: "HATDis", bit: 0, width: 1 }] as const);

/** IVMD Flags byte: [0] Unity, [1] IR, [2] IW, [3] ExclusionRange (Linux IVMD_FLAG_*). */
export const ivmdFlagsLayout = defineLayout("IvmdFlags", 32, [
  { name: "Unity", bit: 0, width: 1 },
  { name: "IR", bit: 1, width: 1 },
  { name: "IW", bit: 2, width: 1 },
  { name: "ExclusionRange", bit: 3, width: 1 },
] as const);

export const IvrsBlockType = {
  IVHD_10: 0x10,
  IVHD_11: 0x11,
  IVHD_40: 0x40,
  IVMD_ALL: 0x20,
  IVMD_SELECT: 0x21,
  IVMD_RANGE: 0x22,
} as const;

export const IVRS_HEADER_BYTES = 48;
export const IVHD_10_HEADER_BYTES = 24;
export const IVHD_11_40_HEADER_BYTES = 40;
export const IVMD_BYTES = 32;

export interface IvhdBlock {
  readonly kind: "IVHD";
  readonly type: 0x10 | 0x11 | 0x40;
  /** IvhdFlags byte. */
  readonly flags: number;
  /** BDF of the IOMMU itself. */
  readonly deviceId: number;
  /** Offset of the IOMMU capability in the IOMMU's PCI configuration space. */
  readonly capabilityOffset: number;
  readonly baseAddress: bigint;
  readonly pciSegment: number;
  /** IvhdInfo (MSI number, UnitID). */
  readonly info: number;
  /** Type 0x10: IOMMU Feature Reporting; types 0x11/0x40: IOMMU Attributes. */
  readonly features: number;
  /** Types 0x11/0x40: copy of the EFR (MMIO 0x30). */
  readonly efr?: bigint;
  /** Types 0x11/0x40: copy of EFR2 (MMIO 0x1A0). ACPICA calls these 8 bytes "Reserved"; Linux and QEMU read EFR2. */
  readonly efr2?: bigint;
  readonly entries: readonly IvhdDeviceEntry[];
}

export interface IvmdBlock {
  readonly kind: "IVMD";
  readonly type: 0x20 | 0x21 | 0x22;
  /** IvmdFlags byte. */
  readonly flags: number;
  /** Type 0x21: the DeviceID; 0x22: the first DeviceID of the range; 0x20: 0. */
  readonly deviceId: number;
  /** Type 0x22: the last DeviceID of the range; otherwise 0. */
  readonly auxData: number;
  /** Linux reads a PCI segment at block offset 8; ACPICA shows these bytes as reserved. */
  readonly pciSegment: number;
  readonly startAddress: bigint;
  readonly length: bigint;
}

export type IvrsBlock = IvhdBlock | IvmdBlock;

export interface IvrsDescription {
  readonly ivInfo: number;
  readonly blocks: readonly IvrsBlock[];
  /** Table identity; revision defaults to 2 when any IVHD 0x11/0x40 is present, else 1 (QEMU 7.2 writes 1). */
  readonly identity?: Partial<AcpiTableIdentity>;
}

function writeIvhd(w: ByteWriter, block: IvhdBlock): void {
  const start = w.offset;
  w.u8(block.type).u8(block.flags).u16(0).u16(block.deviceId).u16(block.capabilityOffset).u64(block.baseAddress).u16(block.pciSegment).u16(block.info).u32(block.features);
  if (block.type !== IvrsBlockType.IVHD_10) w.u64(block.efr ?? 0n).u64(block.efr2 ?? 0n);
  for (const entry of block.entries) writeIvhdDeviceEntry(w, entry);
  const length = w.offset - start;
  if (length > 0xffff) throw new RangeError(`IVHD of ${length} bytes does not fit its 16-bit length`);
  w.patchU16(start + 2, length);
}

function writeIvmd(w: ByteWriter, block: IvmdBlock): void {
  w.u8(block.type).u8(block.flags).u16(IVMD_BYTES).u16(block.deviceId).u16(block.auxData).u16(block.pciSegment).zeros(6).u64(block.startAddress).u64(block.length);
}

function writeBody(w: ByteWriter, description: IvrsDescription): void {
  w.u32(description.ivInfo).zeros(8);
  for (const block of description.blocks) {
    if (block.kind === "IVHD") writeIvhd(w, block);
    else writeIvmd(w, block);
  }
}

/** The IVRS body (everything after the ACPI header). */
export function encodeIvrsBody(description: IvrsDescription): Uint8Array {
  const w = new ByteWriter();
  writeBody(w, description);
  return w.finish();
}

/** A complete IVRS table (header with length and checksum). */
export function encodeIvrs(description: IvrsDescription): Uint8Array {
  const newer = description.blocks.some((b) => b.kind === "IVHD" && b.type !== IvrsBlockType.IVHD_10);
  return buildAcpiTable({ signature: "IVRS", revision: newer ? 2 : 1, ...description.identity }, encodeIvrsBody(description));
}

export interface DecodedIvrs {
  readonly header: AcpiTableHeader;
  readonly ivInfo: number;
  readonly blocks: readonly IvrsBlock[];
  /** Blocks of a type this decoder does not know, kept as bytes (Linux skips them by length). */
  readonly unknownBlocks: readonly { readonly type: number; readonly bytes: Uint8Array }[];
}

export type IvrsDecodeResult = { readonly ok: true; readonly table: DecodedIvrs } | { readonly ok: false; readonly problem: string };

function readIvhd(r: ByteReader, at: number, type: 0x10 | 0x11 | 0x40, length: number): IvhdBlock | string {
  const headerBytes = type === IvrsBlockType.IVHD_10 ? IVHD_10_HEADER_BYTES : IVHD_11_40_HEADER_BYTES;
  if (length < headerBytes) return `IVHD type 0x${type.toString(16)} at ${at} is shorter than its ${headerBytes}-byte header`;
  const entries: IvhdDeviceEntry[] = [];
  const end = at + length;
  for (let p = at + headerBytes; p < end; ) {
    const read = readIvhdDeviceEntry(r, p, end);
    if ("problem" in read) return read.problem;
    entries.push(read.entry);
    p += read.length;
  }
  const block: IvhdBlock = {
    kind: "IVHD",
    type,
    flags: r.u8(at + 1),
    deviceId: r.u16(at + 4),
    capabilityOffset: r.u16(at + 6),
    baseAddress: r.u64(at + 8),
    pciSegment: r.u16(at + 16),
    info: r.u16(at + 18),
    features: r.u32(at + 20),
    entries,
    ...(type === IvrsBlockType.IVHD_10 ? {} : { efr: r.u64(at + 24), efr2: r.u64(at + 32) }),
  };
  return block;
}

/** Parses an IVRS table. Malformed input gives `{ ok: false, problem }`; this never throws. */
export function decodeIvrs(bytes: Uint8Array): IvrsDecodeResult {
  const headerProblem = acpiTableProblem(bytes, "IVRS");
  if (headerProblem !== undefined) return { ok: false, problem: headerProblem };
  if (bytes.length < IVRS_HEADER_BYTES) return { ok: false, problem: "shorter than the 48-byte IVRS header" };
  const r = new ByteReader(bytes);
  const blocks: IvrsBlock[] = [];
  const unknownBlocks: { type: number; bytes: Uint8Array }[] = [];
  for (let at = IVRS_HEADER_BYTES; at < bytes.length; ) {
    if (at + 4 > bytes.length) return { ok: false, problem: `block header at ${at} runs past the table` };
    const type = r.u8(at);
    const length = r.u16(at + 2);
    if (length < 4 || at + length > bytes.length) return { ok: false, problem: `block type 0x${type.toString(16)} at ${at} has length ${length}` };
    if (type === IvrsBlockType.IVHD_10 || type === IvrsBlockType.IVHD_11 || type === IvrsBlockType.IVHD_40) {
      const block = readIvhd(r, at, type, length);
      if (typeof block === "string") return { ok: false, problem: block };
      blocks.push(block);
    } else if (type === IvrsBlockType.IVMD_ALL || type === IvrsBlockType.IVMD_SELECT || type === IvrsBlockType.IVMD_RANGE) {
      if (length < IVMD_BYTES) return { ok: false, problem: `IVMD at ${at} is ${length} bytes, not ${IVMD_BYTES}` };
      blocks.push({
        kind: "IVMD",
        type,
        flags: r.u8(at + 1),
        deviceId: r.u16(at + 4),
        auxData: r.u16(at + 6),
        pciSegment: r.u16(at + 8),
        startAddress: r.u64(at + 16),
        length: r.u64(at + 24),
      });
    } else {
      unknownBlocks.push({ type, bytes: r.slice(at, length).slice() });
    }
    at += length;
  }
  return { ok: true, table: { header: parseAcpiTableHeader(bytes), ivInfo: r.u32(36), blocks, unknownBlocks } };
}
