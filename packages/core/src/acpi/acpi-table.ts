import { ByteReader, ByteWriter } from "./byte-writer.js";

/** The 36-byte System Description Table header every ACPI table starts with (ACPI 6.5 §5.2.6). */
export interface AcpiTableHeader {
  readonly signature: string;
  readonly length: number;
  readonly revision: number;
  readonly checksum: number;
  readonly oemId: string;
  readonly oemTableId: string;
  readonly oemRevision: number;
  readonly creatorId: string;
  readonly creatorRevision: number;
}

export const ACPI_HEADER_BYTES = 36;

export interface AcpiTableIdentity {
  readonly signature: string;
  readonly revision: number;
  readonly oemId?: string;
  readonly oemTableId?: string;
  readonly oemRevision?: number;
  readonly creatorId?: string;
  readonly creatorRevision?: number;
}

export const VIOMMU_OEM = { oemId: "VIOMMU", oemTableId: "VIOMMU  ", creatorId: "VIOM", creatorRevision: 1 } as const;

/** Sum of all bytes modulo 256; a well-formed table sums to zero. */
export function acpiChecksum(bytes: Uint8Array): number {
  let sum = 0;
  for (const b of bytes) sum = (sum + b) & 0xff;
  return sum;
}

/** Builds a complete table: header (length and checksum filled in) followed by `body`. */
export function buildAcpiTable(identity: AcpiTableIdentity, body: Uint8Array): Uint8Array {
  if (identity.signature.length !== 4) throw new RangeError(`ACPI signature must be 4 characters: ${identity.signature}`);
  const w = new ByteWriter();
  w.ascii(identity.signature, 4)
    .u32(ACPI_HEADER_BYTES + body.length)
    .u8(identity.revision)
    .u8(0)
    .ascii(identity.oemId ?? VIOMMU_OEM.oemId, 6)
    .ascii(identity.oemTableId ?? VIOMMU_OEM.oemTableId, 8)
    .u32(identity.oemRevision ?? 1)
    .ascii(identity.creatorId ?? VIOMMU_OEM.creatorId, 4)
    .u32(identity.creatorRevision ?? VIOMMU_OEM.creatorRevision)
    .bytes(body);
  const table = w.finish();
  table[9] = (0x100 - acpiChecksum(table)) & 0xff;
  return table;
}

/** Parses a table header; throws RangeError when the bytes are too short for it. */
export function parseAcpiTableHeader(bytes: Uint8Array): AcpiTableHeader {
  const r = new ByteReader(bytes);
  return {
    signature: r.ascii(0, 4),
    length: r.u32(4),
    revision: r.u8(8),
    checksum: r.u8(9),
    oemId: r.ascii(10, 6),
    oemTableId: r.ascii(16, 8),
    oemRevision: r.u32(24),
    creatorId: r.ascii(28, 4),
    creatorRevision: r.u32(32),
  };
}

/** Why a table is malformed at the header level, or undefined when its length and checksum are right. */
export function acpiTableProblem(bytes: Uint8Array, signature?: string): string | undefined {
  if (bytes.length < ACPI_HEADER_BYTES) return `shorter than the ${ACPI_HEADER_BYTES}-byte header`;
  const h = parseAcpiTableHeader(bytes);
  if (signature !== undefined && h.signature !== signature) return `signature ${h.signature}, expected ${signature}`;
  if (h.length !== bytes.length) return `header length ${h.length} but ${bytes.length} bytes`;
  if (acpiChecksum(bytes) !== 0) return "checksum does not sum to zero";
  return undefined;
}
