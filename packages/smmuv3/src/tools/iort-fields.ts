import { err, ok, type AcpiField, type Result } from "@viommu/core";
import { IortNodeType, IORT_HEADER_BYTES, IORT_ID_MAPPING_BYTES, IORT_NODE_HEADER_BYTES } from "../format/iort.js";

/** A field that would lie beyond the table (or its node): the decode stops there with EINVAL. */
class Truncated {
  constructor(readonly message: string) {}
}

/** The node types whose bodies are decoded (the others show their header only). */
const DECODED: ReadonlySet<number> = new Set([IortNodeType.ItsGroup, IortNodeType.NamedComponent, IortNodeType.RootComplex, IortNodeType.SmmuV3]);

const hex = (x: number): string => `0x${x.toString(16)}`;

/**
 * Reads fields in order and keeps them as iasl -d prints them: integers as upper-case hex of twice their byte
 * length, strings quoted, padding as bytes each followed by a space. Every read is checked against `limit`.
 */
class FieldReader {
  readonly fields: AcpiField[] = [];
  private readonly view: DataView;

  constructor(
    private readonly bytes: Uint8Array,
    private readonly limit: number,
  ) {
    this.view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  }

  need(offset: number, length: number, name: string, end = this.limit): void {
    if (offset + length > end) throw new Truncated(`${name} at offset ${hex(offset)} needs ${length} bytes, beyond ${end === this.limit ? "the table" : "its node"} (ends at ${hex(end)})`);
  }

  value(offset: number, length: number): number | bigint {
    if (length === 1) return this.view.getUint8(offset);
    if (length === 2) return this.view.getUint16(offset, true);
    if (length === 4) return this.view.getUint32(offset, true);
    if (length === 3) return this.view.getUint16(offset, true) | (this.view.getUint8(offset + 2) << 16);
    return this.view.getBigUint64(offset, true);
  }

  int(offset: number, length: number, name: string, depth: number, end?: number): number {
    this.need(offset, length, name, end);
    const v = this.value(offset, length);
    this.fields.push({ offset, length, name, value: v.toString(16).toUpperCase().padStart(2 * length, "0"), depth });
    return Number(v);
  }

  text(offset: number, length: number, name: string, value: string, depth: number): void {
    this.fields.push({ offset, length, name, value, depth });
  }

  /** A NUL-terminated string within [offset, end): its length with the NUL. */
  cstring(offset: number, end: number, name: string, depth: number): number {
    let n = offset;
    while (n < end && this.bytes[n] !== 0) n++;
    if (n >= end) throw new Truncated(`${name} at offset ${hex(offset)} has no terminating NUL before the node ends at ${hex(end)}`);
    this.text(offset, n + 1 - offset, name, `"${String.fromCharCode(...this.bytes.subarray(offset, n))}"`, depth);
    return n + 1 - offset;
  }

  padding(offset: number, end: number, depth: number): void {
    if (end <= offset) return;
    this.need(offset, end - offset, "Padding");
    let value = "";
    for (let i = offset; i < end; i++) value += `${this.bytes[i]!.toString(16).toUpperCase().padStart(2, "0")} `;
    this.text(offset, end - offset, "Padding", value, depth);
  }
}

/** The memory access properties (IORT §3.1.1.4), as iasl groups them. */
function memoryProperties(r: FieldReader, at: number, depth: number, end: number): void {
  r.need(at, 8, "Memory Properties", end);
  r.text(at, 8, "Memory Properties", "[IORT Memory Access Properties]", depth);
  r.int(at, 4, "Cache Coherency", depth, end);
  r.int(at + 4, 1, "Hints (decoded below)", depth, end);
  r.int(at + 5, 2, "Reserved", depth, end);
  r.int(at + 7, 1, "Memory Flags (decoded below)", depth, end);
}

/** One node's type-specific fields from `at` to `end`; returns where they stop. */
function nodeBody(r: FieldReader, type: number, at: number, end: number): number {
  switch (type) {
    case IortNodeType.ItsGroup: {
      const count = r.int(at, 4, "ItsCount", 1, end);
      r.need(at + 4, count * 4, "Identifiers", end);
      for (let i = 0; i < count; i++) r.int(at + 4 + 4 * i, 4, "Identifiers", 1, end);
      return at + 4 + 4 * count;
    }
    case IortNodeType.NamedComponent: {
      r.int(at, 4, "Node Flags", 1, end);
      memoryProperties(r, at + 4, 1, end);
      r.int(at + 12, 1, "Memory Size Limit", 1, end);
      return at + 13 + r.cstring(at + 13, end, "Device Name", 1);
    }
    case IortNodeType.RootComplex:
      memoryProperties(r, at, 1, end);
      r.int(at + 8, 4, "ATS Attribute", 1, end);
      r.int(at + 12, 4, "PCI Segment Number", 1, end);
      r.int(at + 16, 1, "Memory Size Limit", 1, end);
      r.int(at + 17, 3, "Reserved", 1, end);
      return at + 20;
    case IortNodeType.SmmuV3: {
      const names: [number, string][] = [
        [8, "Base Address"],
        [4, "Flags (decoded below)"],
        [4, "Reserved"],
        [8, "VATOS Address"],
        [4, "Model"],
        [4, "Event GSIV"],
        [4, "PRI GSIV"],
        [4, "GERR GSIV"],
        [4, "Sync GSIV"],
      ];
      let o = at;
      for (const [length, name] of names) {
        r.int(o, length, name, 1, end);
        o += length;
      }
      // Node revision 3 and later (IORT issue D): iasl shows them when the node is long enough to hold them.
      if (o + 8 <= end) {
        r.int(o, 4, "Proximity Domain", 1, end);
        r.int(o + 4, 4, "Device ID Mapping Index", 1, end);
        o += 8;
      }
      return o;
    }
    default:
      return at;
  }
}

/**
 * The IORT (ARM DEN 0049) field by field from offset 36, under the names and in the formats `iasl -d` (ACPICA
 * 20200925) prints: the node count and offset, each node's header (its identifier is "Reserved" to that iasl),
 * the ITS group, named component, root complex and SMMUv3 node bodies, the padding before a node's ID mappings
 * and each mapping. Other node types (SMMUv1/v2, PMCG, RMR) give their header only. A table whose declared
 * length exceeds the bytes, or a field, node or mapping array beyond the table or its node, is EINVAL naming the
 * offset; nothing throws.
 */
export function decodeIortFields(bytes: Uint8Array): Result<readonly AcpiField[]> {
  if (bytes.length < 8) return err("EINVAL", `IORT truncated: Table Length at offset 0x4 needs 4 bytes, the table has ${bytes.length}`);
  const declared = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength).getUint32(4, true);
  if (declared > bytes.length) return err("EINVAL", `IORT Table Length (offset 0x4) is ${hex(declared)}, beyond the ${hex(bytes.length)} bytes given`);
  const r = new FieldReader(bytes, declared);
  try {
    const count = r.int(36, 4, "Node Count", 0);
    let node = r.int(40, 4, "Node Offset", 0);
    r.int(44, 4, "Reserved", 0);
    if (node < IORT_HEADER_BYTES && count > 0) return err("EINVAL", `IORT Node Offset (offset 0x28) is ${hex(node)}, inside the table header`);
    for (let i = 0; i < count; i++) {
      r.need(node, IORT_NODE_HEADER_BYTES, `node ${i} header`);
      const type = r.int(node, 1, "Type", 1);
      const length = r.int(node + 1, 2, "Length", 1);
      if (length < IORT_NODE_HEADER_BYTES || node + length > declared) return err("EINVAL", `IORT node ${i} at offset ${hex(node)}: Length ${hex(length)} ${length < IORT_NODE_HEADER_BYTES ? "is shorter than a node header" : "runs beyond the table"}`);
      const end = node + length;
      r.int(node + 3, 1, "Revision", 1);
      r.int(node + 4, 4, "Reserved", 1);
      const mappings = r.int(node + 8, 4, "Mapping Count", 1);
      const mappingOffset = r.int(node + 12, 4, "Mapping Offset", 1);
      const bodyEnd = nodeBody(r, type, node + IORT_NODE_HEADER_BYTES, mappings > 0 ? Math.min(end, node + mappingOffset) : end);
      if (mappings > 0) {
        const first = node + mappingOffset;
        if (mappingOffset < IORT_NODE_HEADER_BYTES || first + mappings * IORT_ID_MAPPING_BYTES > end) {
          return err("EINVAL", `IORT node ${i} at offset ${hex(node)}: ${mappings} ID mappings from Mapping Offset ${hex(mappingOffset)} do not fit in its Length ${hex(length)}`);
        }
        if (bodyEnd > first) return err("EINVAL", `IORT node ${i} at offset ${hex(node)}: Mapping Offset ${hex(mappingOffset)} overlaps the node's fields (they end at ${hex(bodyEnd - node)})`);
        if (DECODED.has(type)) r.padding(bodyEnd, first, 1);
        for (let m = 0; m < mappings; m++) {
          const at = first + m * IORT_ID_MAPPING_BYTES;
          r.int(at, 4, "Input base", 2, end);
          r.int(at + 4, 4, "ID Count", 2, end);
          r.int(at + 8, 4, "Output Base", 2, end);
          r.int(at + 12, 4, "Output Reference", 2, end);
          r.int(at + 16, 4, "Flags (decoded below)", 2, end);
        }
      } else if (DECODED.has(type)) r.padding(bodyEnd, end, 1);
      node = end;
    }
    return ok(r.fields);
  } catch (e) {
    if (e instanceof Truncated) return err("EINVAL", `IORT truncated: ${e.message}`);
    throw e;
  }
}
