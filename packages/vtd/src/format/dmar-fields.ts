import { err, ok, type AcpiField, type Result } from "@viommu/core";

/**
 * The DMAR body (from offset 36) field by field as iasl -d lists it: names, offsets, lengths and values as the
 * ACPICA disassembler prints them (dmtbinfo1.c AcpiDmTableInfoDmar*, its subtable and device-scope type names;
 * hex values upper case and zero-padded to the field's width, PCI paths as "DD,FF"). Subtables after the
 * header: DRHD (0), RMRR (1), ATSR (2), RHSA (3), ANDD (4), SATC (5) and SIDP (6) of the VT-d specification
 * §8.3–8.9; a type beyond these is listed by its type and length only. A table that is truncated or whose
 * lengths do not fit is EINVAL naming the offset; no input throws.
 */
export function decodeDmarFields(table: Uint8Array): Result<readonly AcpiField[]> {
  if (table.length < HEADER + BODY_HEADER) return err("EINVAL", `DMAR truncated: ${table.length} bytes, the header and DMAR fields end at offset 0x${(HEADER + BODY_HEADER).toString(16)}`);
  const declared = u32(table, 4);
  if (declared > table.length) return err("EINVAL", `DMAR Table Length (offset 0x4) is 0x${declared.toString(16)}, beyond the 0x${table.length.toString(16)} bytes given`);
  if (declared < HEADER + BODY_HEADER) return err("EINVAL", `DMAR Table Length (offset 0x4) is 0x${declared.toString(16)}, short of the DMAR fields ending at offset 0x${(HEADER + BODY_HEADER).toString(16)}`);
  const out: AcpiField[] = [];
  const field = (offset: number, length: number, name: string, value: string, depth: number): void => {
    out.push({ offset, length, name, value, depth });
  };
  field(36, 1, "Host Address Width", hex(table[36]!, 1), 0);
  field(37, 1, "Flags", hex(table[37]!, 1), 0);
  field(38, 10, "Reserved", bytes(table, 38, 10), 0);
  let at = HEADER + BODY_HEADER;
  while (at < declared) {
    if (at + 4 > declared) return err("EINVAL", `DMAR subtable at offset 0x${at.toString(16)} is truncated: its type and length need 4 bytes, the table ends at 0x${declared.toString(16)}`);
    const type = u16(table, at);
    const length = u16(table, at + 2);
    if (length < 4 || at + length > declared) return err("EINVAL", `DMAR subtable at offset 0x${at.toString(16)}: Length 0x${length.toString(16)} (offset 0x${(at + 2).toString(16)}) does not fit the table ending at 0x${declared.toString(16)}`);
    field(at, 2, "Subtable Type", `${hex(type, 2)} [${SUBTABLES[type] ?? "Unknown Subtable Type"}]`, 1);
    field(at + 2, 2, "Length", hex(length, 2), 1);
    const end = at + length;
    const need = FIXED_BYTES[type];
    if (need !== undefined && length < need) return err("EINVAL", `DMAR ${SUBTABLES[type]} at offset 0x${at.toString(16)}: Length 0x${length.toString(16)} is short of its 0x${need.toString(16)} fixed bytes`);
    let scopes: number | undefined;
    switch (type) {
      case 0:
        field(at + 4, 1, "Flags", hex(table[at + 4]!, 1), 1);
        field(at + 5, 1, "Reserved", hex(table[at + 5]!, 1), 1);
        field(at + 6, 2, "PCI Segment Number", hex(u16(table, at + 6), 2), 1);
        field(at + 8, 8, "Register Base Address", hex64(table, at + 8), 1);
        scopes = at + 16;
        break;
      case 1:
        field(at + 4, 2, "Reserved", hex(u16(table, at + 4), 2), 1);
        field(at + 6, 2, "PCI Segment Number", hex(u16(table, at + 6), 2), 1);
        field(at + 8, 8, "Base Address", hex64(table, at + 8), 1);
        field(at + 16, 8, "End Address (limit)", hex64(table, at + 16), 1);
        scopes = at + 24;
        break;
      case 2:
      case 5:
        field(at + 4, 1, "Flags", hex(table[at + 4]!, 1), 1);
        field(at + 5, 1, "Reserved", hex(table[at + 5]!, 1), 1);
        field(at + 6, 2, "PCI Segment Number", hex(u16(table, at + 6), 2), 1);
        scopes = at + 8;
        break;
      case 3:
        field(at + 4, 4, "Reserved", hex(u32(table, at + 4), 4), 1);
        field(at + 8, 8, "Base Address", hex64(table, at + 8), 1);
        field(at + 16, 4, "Proximity Domain", hex(u32(table, at + 16), 4), 1);
        break;
      case 4: {
        field(at + 4, 3, "Reserved", hex(table[at + 4]! | (table[at + 5]! << 8) | (table[at + 6]! << 16), 3), 1);
        field(at + 7, 1, "Device Number", hex(table[at + 7]!, 1), 1);
        let name = "";
        for (let i = at + 8; i < end && table[i] !== 0; i++) name += String.fromCharCode(table[i]!);
        field(at + 8, length - 8, "Device Name", `"${name}"`, 1);
        break;
      }
      case 6:
        field(at + 4, 2, "Reserved", hex(u16(table, at + 4), 2), 1);
        field(at + 6, 2, "PCI Segment Number", hex(u16(table, at + 6), 2), 1);
        scopes = at + 8;
        break;
      default:
        break;
    }
    if (scopes !== undefined) {
      const r = deviceScopes(table, scopes, end, field);
      if (r !== undefined) return err("EINVAL", r);
    }
    at = end;
  }
  return ok(out);
}

/** The standard ACPI header, and the DMAR's own fields after it (HAW, flags, 10 reserved bytes). */
const HEADER = 36;
const BODY_HEADER = 12;

/** iasl's subtable names (ACPICA AcpiDmDmarSubnames). */
const SUBTABLES: Readonly<Record<number, string>> = {
  0: "Hardware Unit Definition",
  1: "Reserved Memory Region",
  2: "Root Port ATS Capability",
  3: "Remapping Hardware Static Affinity",
  4: "ACPI Namespace Device Declaration",
  5: "SoC Integrated Address Translation Cache",
  6: "SoC Integrated Device Property",
};

/** Bytes each subtable type has before its device scopes (or in all). */
const FIXED_BYTES: Readonly<Record<number, number>> = { 0: 16, 1: 24, 2: 8, 3: 20, 4: 8, 5: 8, 6: 8 };

/** iasl's device-scope type names (ACPICA AcpiDmDmarScope). */
const SCOPES = ["Reserved value", "PCI Endpoint Device", "PCI Bridge Device", "IOAPIC Device", "Message-capable HPET Device", "Namespace Device"];

/** Device scope entries (VT-d spec §8.3.1) in [at, end); a problem naming its offset, or undefined. */
function deviceScopes(table: Uint8Array, at: number, end: number, field: (offset: number, length: number, name: string, value: string, depth: number) => void): string | undefined {
  while (at < end) {
    if (at + 6 > end) return `DMAR device scope at offset 0x${at.toString(16)} is truncated: it needs 6 bytes, its subtable ends at 0x${end.toString(16)}`;
    const type = table[at]!;
    const length = table[at + 1]!;
    if (length < 6 || at + length > end || (length - 6) % 2 !== 0) return `DMAR device scope at offset 0x${at.toString(16)}: Entry Length 0x${length.toString(16)} (offset 0x${(at + 1).toString(16)}) is not 6 plus whole 2-byte path entries within its subtable ending at 0x${end.toString(16)}`;
    field(at, 1, "Device Scope Type", `${hex(type, 1)} [${SCOPES[type] ?? "Unknown Scope Type"}]`, 2);
    field(at + 1, 1, "Entry Length", hex(length, 1), 2);
    field(at + 2, 2, "Reserved", hex(u16(table, at + 2), 2), 2);
    field(at + 4, 1, "Enumeration ID", hex(table[at + 4]!, 1), 2);
    field(at + 5, 1, "PCI Bus Number", hex(table[at + 5]!, 1), 2);
    for (let p = at + 6; p < at + length; p += 2) field(p, 2, "PCI Path", `${hex(table[p]!, 1)},${hex(table[p + 1]!, 1)}`, 2);
    at += length;
  }
  return undefined;
}

function u16(t: Uint8Array, at: number): number {
  return t[at]! | (t[at + 1]! << 8);
}

function u32(t: Uint8Array, at: number): number {
  return (t[at]! | (t[at + 1]! << 8) | (t[at + 2]! << 16) | (t[at + 3]! << 24)) >>> 0;
}

function hex(value: number, bytes: number): string {
  return value.toString(16).toUpperCase().padStart(bytes * 2, "0");
}

function hex64(t: Uint8Array, at: number): string {
  return hex(u32(t, at + 4), 4) + hex(u32(t, at), 4);
}

function bytes(t: Uint8Array, at: number, n: number): string {
  const parts: string[] = [];
  for (let i = 0; i < n; i++) parts.push(hex(t[at + i]!, 1));
  return parts.join(" ");
}
