import {
  ACPI_HEADER_BYTES,
  acpiTableProblem,
  buildAcpiTable,
  ByteReader,
  ByteWriter,
  parseAcpiTableHeader,
  type AcpiTableHeader,
  type AcpiTableIdentity,
} from "@viommu/core";

/**
 * The ACPI DMA Remapping Reporting table (DMAR). Intel VT-d spec chapter 8; ../shared/spec/x86.md A10
 * (ACPICA actbl1.h / dmtbinfo1.c, QEMU `build_dmar_q35`, Linux include/linux/dmar.h). Encoded from a typed
 * description and decoded back; remapping structures of an unknown type are kept as raw bytes.
 */

/** DMAR header flags (offset 37). ACPICA names bit 2 X2APIC_MODE; Linux and the VT-d spec DMA_CTRL_PLATFORM_OPT_IN. */
export const DmarFlags = {
  INTR_REMAP: 0x1,
  X2APIC_OPT_OUT: 0x2,
  DMA_CTRL_PLATFORM_OPT_IN: 0x4,
} as const;

/** Remapping structure types. */
export const DmarStructureType = {
  /** DMA remapping hardware unit definition. */
  DRHD: 0,
  /** Reserved memory region reporting. */
  RMRR: 1,
  /** Root port ATS capability reporting. */
  ATSR: 2,
  /** Remapping hardware static affinity. */
  RHSA: 3,
  /** ACPI name-space device declaration. */
  ANDD: 4,
  /** SoC integrated address translation cache. */
  SATC: 5,
  /** SoC integrated device property (newer VT-d; in ACPICA). */
  SIDP: 6,
} as const;

/** DRHD flags. */
export const DrhdFlags = { INCLUDE_PCI_ALL: 0x1 } as const;
/** ATSR flags. */
export const AtsrFlags = { ALL_PORTS: 0x1 } as const;
/** SATC flags. */
export const SatcFlags = { ATC_REQUIRED: 0x1 } as const;

/** Device scope entry types. */
export const DeviceScopeType = {
  PCI_ENDPOINT: 1,
  PCI_SUB_HIERARCHY: 2,
  IOAPIC: 3,
  MSI_CAPABLE_HPET: 4,
  ACPI_NAMESPACE_DEVICE: 5,
} as const;

/** One hop of a device scope path: a (device, function) pair walked from the start bus through bridges. */
export interface DmarPciPathEntry {
  readonly device: number;
  readonly function: number;
}

export interface DmarDeviceScope {
  /** DeviceScopeType. */
  readonly type: number;
  /** Byte 2 (ACPICA "Flags"; reserved in older specs). Default 0. */
  readonly flags?: number;
  /** IOAPIC id (type 3), HPET number (type 4), ACPI device number matching an ANDD (type 5); else 0. */
  readonly enumerationId: number;
  readonly startBus: number;
  readonly path: readonly DmarPciPathEntry[];
}

export interface DmarDrhd {
  readonly type: "DRHD";
  /** DrhdFlags. */
  readonly flags: number;
  /** Register set size: 2^size 4 KiB pages (bits [3:0] of byte 5). */
  readonly size: number;
  readonly segment: number;
  readonly registerBase: bigint;
  readonly scopes: readonly DmarDeviceScope[];
}

export interface DmarRmrr {
  readonly type: "RMRR";
  readonly segment: number;
  /** 4 KiB aligned. */
  readonly baseAddress: bigint;
  /** Inclusive limit; limit + 1 is 4 KiB aligned. */
  readonly endAddress: bigint;
  readonly scopes: readonly DmarDeviceScope[];
}

export interface DmarAtsr {
  readonly type: "ATSR";
  /** AtsrFlags. */
  readonly flags: number;
  readonly segment: number;
  readonly scopes: readonly DmarDeviceScope[];
}

export interface DmarRhsa {
  readonly type: "RHSA";
  readonly registerBase: bigint;
  readonly proximityDomain: number;
}

export interface DmarAndd {
  readonly type: "ANDD";
  readonly acpiDeviceNumber: number;
  /** Fully qualified ACPI object name, e.g. "\\_SB.PCI0.I2C0" (stored NUL-terminated). */
  readonly objectName: string;
}

export interface DmarSatc {
  readonly type: "SATC";
  /** SatcFlags. */
  readonly flags: number;
  readonly segment: number;
  readonly scopes: readonly DmarDeviceScope[];
}

export interface DmarSidp {
  readonly type: "SIDP";
  readonly segment: number;
  readonly scopes: readonly DmarDeviceScope[];
}

/** A structure of a type this code does not know: its type code and the bytes after the 4-byte type/length. */
export interface DmarUnknownStructure {
  readonly type: "UNKNOWN";
  readonly code: number;
  readonly body: Uint8Array;
}

export type DmarStructure = DmarDrhd | DmarRmrr | DmarAtsr | DmarRhsa | DmarAndd | DmarSatc | DmarSidp | DmarUnknownStructure;

export interface DmarTable {
  /** ACPI header identity (OEM ids, revisions); signature is always DMAR, revision defaults to 1. */
  readonly identity?: Partial<Omit<AcpiTableIdentity, "signature">>;
  /** Host address width in bits (the table stores HAW − 1; QEMU writes aw-bits − 1). */
  readonly hostAddressWidth: number;
  /** DmarFlags. */
  readonly flags: number;
  readonly structures: readonly DmarStructure[];
}

export interface DecodedDmar extends DmarTable {
  readonly header: AcpiTableHeader;
}

export type DmarDecodeResult = { readonly ok: true; readonly table: DecodedDmar } | { readonly ok: false; readonly problem: string };

const DMAR_BODY_HEADER_BYTES = 12;

function u8(v: number, what: string): number {
  if (!Number.isInteger(v) || v < 0 || v > 0xff) throw new RangeError(`${what} ${v} is not a byte`);
  return v;
}

function u16(v: number, what: string): number {
  if (!Number.isInteger(v) || v < 0 || v > 0xffff) throw new RangeError(`${what} ${v} is not 16-bit`);
  return v;
}

function writeScopes(w: ByteWriter, scopes: readonly DmarDeviceScope[]): void {
  for (const s of scopes) {
    const length = 6 + 2 * s.path.length;
    w.u8(u8(s.type, "device scope type")).u8(u8(length, "device scope length")).u8(u8(s.flags ?? 0, "device scope flags")).u8(0);
    w.u8(u8(s.enumerationId, "enumeration id")).u8(u8(s.startBus, "start bus"));
    for (const hop of s.path) {
      if (hop.device > 31 || hop.function > 7) throw new RangeError(`PCI path ${hop.device}.${hop.function} out of range`);
      w.u8(u8(hop.device, "device")).u8(u8(hop.function, "function"));
    }
  }
}

function writeStructure(w: ByteWriter, s: DmarStructure): void {
  const start = w.offset;
  const code = s.type === "UNKNOWN" ? s.code : DmarStructureType[s.type];
  w.u16(u16(code, "structure type")).u16(0);
  switch (s.type) {
    case "DRHD":
      if (s.size > 0xf) throw new RangeError(`DRHD size ${s.size} does not fit 4 bits`);
      w.u8(u8(s.flags, "DRHD flags")).u8(s.size).u16(u16(s.segment, "segment")).u64(s.registerBase);
      writeScopes(w, s.scopes);
      break;
    case "RMRR":
      w.u16(0).u16(u16(s.segment, "segment")).u64(s.baseAddress).u64(s.endAddress);
      writeScopes(w, s.scopes);
      break;
    case "ATSR":
      w.u8(u8(s.flags, "ATSR flags")).u8(0).u16(u16(s.segment, "segment"));
      writeScopes(w, s.scopes);
      break;
    case "RHSA":
      w.u32(0).u64(s.registerBase).u32(s.proximityDomain);
      break;
    case "ANDD": {
      w.zeros(3).u8(u8(s.acpiDeviceNumber, "ACPI device number"));
      w.ascii(s.objectName, s.objectName.length).u8(0);
      break;
    }
    case "SATC":
      w.u8(u8(s.flags, "SATC flags")).u8(0).u16(u16(s.segment, "segment"));
      writeScopes(w, s.scopes);
      break;
    case "SIDP":
      w.u16(0).u16(u16(s.segment, "segment"));
      writeScopes(w, s.scopes);
      break;
    case "UNKNOWN":
      w.bytes(s.body);
      break;
  }
  w.patchU16(start + 2, u16(w.offset - start, "structure length"));
}

/** Builds the complete DMAR table (header, length and checksum filled in). Throws RangeError on values that do not fit. */
export function encodeDmar(table: DmarTable): Uint8Array {
  if (table.hostAddressWidth < 1 || table.hostAddressWidth > 256) throw new RangeError(`host address width ${table.hostAddressWidth}`);
  const w = new ByteWriter();
  w.u8(table.hostAddressWidth - 1).u8(u8(table.flags, "DMAR flags")).zeros(10);
  for (const s of table.structures) writeStructure(w, s);
  return buildAcpiTable({ ...table.identity, revision: table.identity?.revision ?? 1, signature: "DMAR" }, w.finish());
}

function readScopes(r: ByteReader, at: number, end: number): DmarDeviceScope[] | string {
  const scopes: DmarDeviceScope[] = [];
  while (at < end) {
    if (end - at < 6) return `device scope at ${at} shorter than 6 bytes`;
    const length = r.u8(at + 1);
    if (length < 6 || length % 2 !== 0 || at + length > end) return `device scope at ${at} has bad length ${length}`;
    const path: DmarPciPathEntry[] = [];
    for (let p = at + 6; p < at + length; p += 2) path.push({ device: r.u8(p), function: r.u8(p + 1) });
    scopes.push({ type: r.u8(at), flags: r.u8(at + 2), enumerationId: r.u8(at + 4), startBus: r.u8(at + 5), path });
    at += length;
  }
  return scopes;
}

/** Minimum length of each known structure (its fixed part). */
const FIXED_BYTES: Readonly<Record<number, number>> = { 0: 16, 1: 24, 2: 8, 3: 20, 4: 9, 5: 8, 6: 8 };

function readStructure(r: ByteReader, at: number, code: number, length: number): DmarStructure | string {
  const end = at + length;
  const fixed = FIXED_BYTES[code];
  if (fixed !== undefined && length < fixed) return `structure type ${code} at ${at} shorter than ${fixed} bytes`;
  const withScopes = <T>(scopeStart: number, make: (scopes: readonly DmarDeviceScope[]) => T): T | string => {
    const scopes = readScopes(r, scopeStart, end);
    return typeof scopes === "string" ? scopes : make(scopes);
  };
  switch (code) {
    case DmarStructureType.DRHD:
      return withScopes(at + 16, (scopes) => ({
        type: "DRHD" as const,
        flags: r.u8(at + 4),
        size: r.u8(at + 5) & 0xf,
        segment: r.u16(at + 6),
        registerBase: r.u64(at + 8),
        scopes,
      }));
    case DmarStructureType.RMRR:
      return withScopes(at + 24, (scopes) => ({
        type: "RMRR" as const,
        segment: r.u16(at + 6),
        baseAddress: r.u64(at + 8),
        endAddress: r.u64(at + 16),
        scopes,
      }));
    case DmarStructureType.ATSR:
      return withScopes(at + 8, (scopes) => ({ type: "ATSR" as const, flags: r.u8(at + 4), segment: r.u16(at + 6), scopes }));
    case DmarStructureType.RHSA:
      return { type: "RHSA", registerBase: r.u64(at + 8), proximityDomain: r.u32(at + 16) };
    case DmarStructureType.ANDD: {
      const nameBytes = r.slice(at + 8, length - 8);
      const nul = nameBytes.indexOf(0);
      if (nul < 0) return `ANDD at ${at}: object name is not NUL-terminated`;
      return { type: "ANDD", acpiDeviceNumber: r.u8(at + 7), objectName: String.fromCharCode(...nameBytes.subarray(0, nul)) };
    }
    case DmarStructureType.SATC:
      return withScopes(at + 8, (scopes) => ({ type: "SATC" as const, flags: r.u8(at + 4), segment: r.u16(at + 6), scopes }));
    case DmarStructureType.SIDP:
      return withScopes(at + 8, (scopes) => ({ type: "SIDP" as const, segment: r.u16(at + 6), scopes }));
    default:
      return { type: "UNKNOWN", code, body: r.slice(at + 4, length - 4).slice() };
  }
}

/**
 * Decodes a DMAR table. Malformed input (bad checksum or length, a structure running past the end, a scope
 * with a bad length) returns `{ ok: false, problem }`; it never throws.
 */
export function decodeDmar(bytes: Uint8Array): DmarDecodeResult {
  const headerProblem = acpiTableProblem(bytes, "DMAR");
  if (headerProblem !== undefined) return { ok: false, problem: headerProblem };
  if (bytes.length < ACPI_HEADER_BYTES + DMAR_BODY_HEADER_BYTES) return { ok: false, problem: "shorter than the DMAR header" };
  const header = parseAcpiTableHeader(bytes);
  const r = new ByteReader(bytes);
  const structures: DmarStructure[] = [];
  let at = ACPI_HEADER_BYTES + DMAR_BODY_HEADER_BYTES;
  while (at < bytes.length) {
    if (bytes.length - at < 4) return { ok: false, problem: `trailing ${bytes.length - at} bytes at ${at}` };
    const code = r.u16(at);
    const length = r.u16(at + 2);
    if (length < 4 || at + length > bytes.length) return { ok: false, problem: `structure at ${at} has bad length ${length}` };
    const s = readStructure(r, at, code, length);
    if (typeof s === "string") return { ok: false, problem: s };
    structures.push(s);
    at += length;
  }
  return {
    ok: true,
    table: {
      header,
      identity: {
        revision: header.revision,
        oemId: header.oemId,
        oemTableId: header.oemTableId,
        oemRevision: header.oemRevision,
        creatorId: header.creatorId,
        creatorRevision: header.creatorRevision,
      },
      hostAddressWidth: r.u8(ACPI_HEADER_BYTES) + 1,
      flags: r.u8(ACPI_HEADER_BYTES + 1),
      structures,
    },
  };
}

/** The source id (bus << 8 | device << 3 | function) a single-hop device scope names. */
export function deviceScopeSourceId(scope: DmarDeviceScope): number | undefined {
  if (scope.path.length !== 1) return undefined;
  const hop = scope.path[0]!;
  return (scope.startBus << 8) | (hop.device << 3) | hop.function;
}
