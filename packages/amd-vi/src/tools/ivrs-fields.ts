import { err, ok, type AcpiField, type Result } from "@viommu/core";

/** Hex digits as iasl prints an n-byte integer field: upper case, zero padded to 2n digits. */
function hexOf(bytes: Uint8Array, at: number, length: number): string {
  let s = "";
  for (let i = length - 1; i >= 0; i--) s += bytes[at + i]!.toString(16).toUpperCase().padStart(2, "0");
  return s;
}

/** ASCII of a fixed-size string field, up to its first NUL. */
function asciiOf(bytes: Uint8Array, at: number, length: number): string {
  let s = "";
  for (let i = 0; i < length && bytes[at + i] !== 0; i++) s += String.fromCharCode(bytes[at + i]!);
  return s;
}

const SUBTABLE_NAMES: Readonly<Record<number, string>> = {
  0x10: "Hardware Definition Block",
  0x11: "Hardware Definition Block",
  // Newer ACPICA names the mixed-format block so; the 2020 iasl installed here does not disassemble it.
  0x40: "Hardware Definition Block - Mixed Format",
  0x20: "Memory Definition Block",
  0x21: "Memory Definition Block",
  0x22: "Memory Definition Block",
};

/**
 * The length of a device entry (AMD IOMMU spec, IVHD device entries): the type's top two bits give 4, 8, 16 or
 * (11b) a variable length; type F0h (ACPI_HID) is 22 bytes plus its UID Length at byte 21.
 */
function entryLength(bytes: Uint8Array, at: number, end: number): number | undefined {
  const type = bytes[at]!;
  switch (type >>> 6) {
    case 0:
      return 4;
    case 1:
      return 8;
    case 2:
      return 16;
    default:
      if (type !== 0xf0 || at + 22 > end) return undefined;
      return 22 + bytes[at + 21]!;
  }
}

/**
 * `viommu acpi --decode` for an IVRS: every field from offset 36 on, named and formatted as `iasl -d` prints it
 * (ACPICA dmtbinfo2.c AcpiDmTableInfoIvrs*): IVinfo, then each IVHD (types 10h, 11h and 40h, their device
 * entries: 4-byte select / range entries, 8-byte alias, extended and special entries, and the variable ACPI_HID
 * entry with its _HID, _CID and UID) and each IVMD (20h, 21h, 22h). A block or entry running beyond its
 * container, or a length too small for its type, is EINVAL naming the offset; nothing here throws.
 */
export function decodeIvrsFields(table: Uint8Array): Result<readonly AcpiField[]> {
  const fields: AcpiField[] = [];
  if (table.length < 48) return err("EINVAL", `IVRS of ${table.length} bytes: the IVinfo and reserved fields at offset 0x24 need 48`);
  const declared = table[4]! | (table[5]! << 8) | (table[6]! << 16) | (table[7]! * 2 ** 24);
  if (declared > table.length) return err("EINVAL", `Table Length 0x${declared.toString(16)} at offset 0x4 is beyond the ${table.length} bytes given`);
  if (declared < 48) return err("EINVAL", `Table Length 0x${declared.toString(16)} at offset 0x4 is below the 48-byte IVRS header`);
  const end = declared;
  const field = (offset: number, length: number, name: string, depth: number, value?: string): void => {
    fields.push({ offset, length, name, value: value ?? hexOf(table, offset, length), depth });
  };
  field(36, 4, "Virtualization Info", 0);
  field(40, 8, "Reserved", 0);
  let at = 48;
  while (at < end) {
    if (at + 4 > end) return err("EINVAL", `subtable at offset 0x${at.toString(16)}: ${end - at} bytes left, a subtable header needs 4`);
    const type = table[at]!;
    const length = table[at + 2]! | (table[at + 3]! << 8);
    const name = SUBTABLE_NAMES[type] ?? "Unknown Subtable Type";
    if (length < 4) return err("EINVAL", `subtable at offset 0x${at.toString(16)}: Length 0x${length.toString(16)} is below its 4-byte header`);
    if (at + length > end) return err("EINVAL", `subtable at offset 0x${at.toString(16)}: Length 0x${length.toString(16)} runs beyond the table (0x${end.toString(16)})`);
    const ivhd = type === 0x10 || type === 0x11 || type === 0x40;
    const header = type === 0x10 ? 24 : ivhd ? 40 : 32;
    if ((ivhd || (type >= 0x20 && type <= 0x22)) && length < header) {
      return err("EINVAL", `subtable type 0x${type.toString(16)} at offset 0x${at.toString(16)}: Length 0x${length.toString(16)} is below its ${header}-byte header`);
    }
    field(at, 1, "Subtable Type", 1, `${hexOf(table, at, 1)} [${name}]`);
    field(at + 1, 1, "Flags", 1);
    field(at + 2, 2, "Length", 1);
    field(at + 4, 2, "DeviceId", 1);
    if (ivhd) {
      field(at + 6, 2, "Capability Offset", 1);
      field(at + 8, 8, "Base Address", 1);
      field(at + 16, 2, "PCI Segment Group", 1);
      field(at + 18, 2, "Virtualization Info", 1);
      if (type === 0x10) field(at + 20, 4, "Feature Reporting", 1);
      else {
        field(at + 20, 4, "Attributes", 1);
        field(at + 24, 8, "EFR Image", 1);
        field(at + 32, 8, "Reserved", 1);
      }
      const r = decodeEntries(table, at + header, at + length, field);
      if (!r.ok) return r;
    } else if (type >= 0x20 && type <= 0x22) {
      field(at + 6, 2, "Auxiliary Data", 1);
      field(at + 8, 8, "Reserved", 1);
      field(at + 16, 8, "Start Address", 1);
      field(at + 24, 8, "Memory Length", 1);
    }
    at += length;
  }
  return ok(fields);
}

function decodeEntries(table: Uint8Array, start: number, end: number, field: (offset: number, length: number, name: string, depth: number, value?: string) => void): Result<void> {
  let at = start;
  while (at < end) {
    const length = entryLength(table, at, end);
    if (length === undefined) return err("EINVAL", `device entry at offset 0x${at.toString(16)}: type 0x${table[at]!.toString(16)} has no defined length`);
    if (at + length > end) return err("EINVAL", `device entry type 0x${table[at]!.toString(16)} at offset 0x${at.toString(16)}: its ${length} bytes run beyond the IVHD (0x${end.toString(16)})`);
    const type = table[at]!;
    field(at, 1, "Entry Type", 2);
    field(at + 1, 2, "Device ID", 2);
    field(at + 3, 1, "Data Setting", 2);
    switch (type) {
      case 0x42:
      case 0x43:
        field(at + 4, 1, "Reserved", 2);
        field(at + 5, 2, "Source Used Device ID", 2);
        field(at + 7, 1, "Reserved", 2);
        break;
      case 0x46:
      case 0x47:
        field(at + 4, 4, "Extended Data", 2);
        break;
      case 0x48:
        field(at + 4, 1, "Handle", 2);
        field(at + 5, 2, "Source Used Device ID", 2);
        field(at + 7, 1, "Variety", 2);
        break;
      case 0xf0: {
        // ACPICA AcpiDmTableInfoIvrsHid / IvrsUidString: the 8-byte _HID and _CID strings, UID format and length.
        field(at + 4, 8, "ACPI HID", 2, `"${asciiOf(table, at + 4, 8)}"`);
        field(at + 12, 8, "ACPI CID", 2, hexOf(table, at + 12, 8));
        field(at + 20, 1, "UID Format", 2);
        field(at + 21, 1, "UID Length", 2);
        const uidLength = table[at + 21]!;
        if (uidLength > 0) {
          const format = table[at + 20]!;
          field(at + 22, uidLength, format === 2 ? "UID String" : "UID Integer", 2, format === 2 ? `"${asciiOf(table, at + 22, uidLength)}"` : hexOf(table, at + 22, uidLength));
        }
        break;
      }
      default:
        break;
    }
    at += length;
  }
  return ok();
}
