import { ByteReader, ByteWriter, defineLayout } from "@viommu/core";

/**
 * IVHD device entries (spec x86.md B9.3; ACPICA actbl2.h acpi_ivrs_device*, Linux init.c
 * ivhd_entry_length / init_iommu_from_acpi). The top two bits of the type give the length: 0x00–0x3F are
 * 4 bytes, 0x40–0x7F 8 bytes; 0xF0 (ACPI HID device) is 22 + UID-length bytes; the other 0x80+ types are
 * reserved and have no length Linux can skip.
 */
export const IvhdEntryType = {
  PAD4: 0x00,
  ALL: 0x01,
  SELECT: 0x02,
  START_OF_RANGE: 0x03,
  END_OF_RANGE: 0x04,
  PAD8: 0x40,
  ALIAS_SELECT: 0x42,
  ALIAS_START_OF_RANGE: 0x43,
  EXT_SELECT: 0x46,
  EXT_START_OF_RANGE: 0x47,
  SPECIAL: 0x48,
  ACPI_HID: 0xf0,
} as const;

/**
 * The DTE-setting byte (byte 3 of every entry): the DTE bits firmware wants set for the covered DeviceIDs
 * (ACPICA ACPI_IVHD_*): [0] INITPass → DTE 184, [1] EIntPass → 185, [2] NMIPass → 186, [5:4] SysMgt →
 * [105:104], [6] Lint0Pass → 190, [7] Lint1Pass → 191.
 */
export const dteSettingLayout = defineLayout("DteSetting", 32, [
  { name: "INITPass", bit: 0, width: 1 },
  { name: "EIntPass", bit: 1, width: 1 },
  { name: "NMIPass", bit: 2, width: 1 },
  { name: "SysMgt", bit: 4, width: 2 },
  { name: "Lint0Pass", bit: 6, width: 1 },
  { name: "Lint1Pass", bit: 7, width: 1 },
] as const);

/** Extended data bit 31 of EXT_SELECT / EXT_START_OF_RANGE: ATS disabled for the devices (ACPI_IVHD_ATS_DISABLED). */
export const IVHD_EXT_ATS_DISABLED = 0x8000_0000;
/** SPECIAL entry variety (byte 7). */
export const IvhdSpecialVariety = { IOAPIC: 1, HPET: 2 } as const;
/** ACPI_HID entry UID format (byte 20). */
export const IvhdUidFormat = { NotPresent: 0, Integer: 1, String: 2 } as const;

export interface IvhdPlainEntry {
  readonly kind: "PAD4" | "ALL" | "SELECT" | "START_OF_RANGE" | "END_OF_RANGE";
  readonly deviceId: number;
  readonly dteSetting: number;
}

export interface IvhdAliasEntry {
  readonly kind: "ALIAS_SELECT" | "ALIAS_START_OF_RANGE";
  readonly deviceId: number;
  readonly dteSetting: number;
  /** The DeviceID the aliased requests appear with (ACPICA "Source Used Device ID"). */
  readonly sourceDeviceId: number;
}

export interface IvhdExtendedEntry {
  readonly kind: "PAD8" | "EXT_SELECT" | "EXT_START_OF_RANGE";
  readonly deviceId: number;
  readonly dteSetting: number;
  readonly extendedData: number;
}

export interface IvhdSpecialEntry {
  readonly kind: "SPECIAL";
  readonly deviceId: number;
  readonly dteSetting: number;
  /** IOAPIC ID or HPET number. */
  readonly handle: number;
  /** The DeviceID the IOAPIC/HPET's requests carry. */
  readonly sourceDeviceId: number;
  readonly variety: number;
}

export interface IvhdAcpiHidEntry {
  readonly kind: "ACPI_HID";
  readonly deviceId: number;
  readonly dteSetting: number;
  /** ACPI _HID, up to 8 ASCII characters (zero padded in the table). */
  readonly hid: string;
  /** ACPI _CID, up to 8 ASCII characters, or "" for none (all zero). */
  readonly cid: string;
  readonly uidFormat: number;
  /** UID bytes as stored: ASCII for format 2, little-endian integer for format 1, empty for format 0. */
  readonly uid: Uint8Array;
}

/** A decoded entry of a reserved type (4- and 8-byte types Linux skips by length). */
export interface IvhdUnknownEntry {
  readonly kind: "UNKNOWN";
  readonly type: number;
  readonly bytes: Uint8Array;
}

export type IvhdDeviceEntry = IvhdPlainEntry | IvhdAliasEntry | IvhdExtendedEntry | IvhdSpecialEntry | IvhdAcpiHidEntry | IvhdUnknownEntry;

const typeByKind: Readonly<Record<Exclude<IvhdDeviceEntry["kind"], "UNKNOWN">, number>> = IvhdEntryType;
const kindByType: ReadonlyMap<number, string> = new Map(Object.entries(IvhdEntryType).map(([k, v]) => [v, k]));

/** Byte length of an entry of `type`, or undefined for reserved 16/32-byte types (Linux returns 0 and stops). */
export function ivhdEntryLength(type: number, uidLength = 0): number | undefined {
  if (type < 0x80) return 4 << (type >> 6);
  if (type === IvhdEntryType.ACPI_HID) return 22 + uidLength;
  return undefined;
}

function asciiField(w: ByteWriter, text: string): void {
  if (text.length > 8 || !/^[\x20-\x7e]*$/.test(text)) throw new RangeError(`ACPI id ${JSON.stringify(text)} does not fit 8 ASCII bytes`);
  for (let i = 0; i < 8; i++) w.u8(i < text.length ? text.charCodeAt(i) : 0);
}

export function writeIvhdDeviceEntry(w: ByteWriter, entry: IvhdDeviceEntry): void {
  if (entry.kind === "UNKNOWN") {
    w.bytes(entry.bytes);
    return;
  }
  w.u8(typeByKind[entry.kind]).u16(entry.deviceId).u8(entry.dteSetting);
  switch (entry.kind) {
    case "PAD4":
    case "ALL":
    case "SELECT":
    case "START_OF_RANGE":
    case "END_OF_RANGE":
      return;
    case "ALIAS_SELECT":
    case "ALIAS_START_OF_RANGE":
      w.u8(0).u16(entry.sourceDeviceId).u8(0);
      return;
    case "PAD8":
    case "EXT_SELECT":
    case "EXT_START_OF_RANGE":
      w.u32(entry.extendedData);
      return;
    case "SPECIAL":
      w.u8(entry.handle).u16(entry.sourceDeviceId).u8(entry.variety);
      return;
    case "ACPI_HID":
      if (entry.uid.length > 255) throw new RangeError("ACPI HID UID longer than 255 bytes");
      asciiField(w, entry.hid);
      asciiField(w, entry.cid);
      w.u8(entry.uidFormat).u8(entry.uid.length).bytes(entry.uid);
      return;
  }
}

function readAscii8(bytes: Uint8Array): string {
  let text = "";
  for (const b of bytes) {
    if (b === 0) break;
    text += String.fromCharCode(b);
  }
  return text;
}

/**
 * Reads the entry at `at`; returns it with its length, or a reason when the bytes end early or the type has
 * no known length. Never throws.
 */
export function readIvhdDeviceEntry(r: ByteReader, at: number, end: number): { entry: IvhdDeviceEntry; length: number } | { problem: string } {
  if (at + 4 > end) return { problem: `device entry at ${at} runs past its IVHD` };
  const type = r.u8(at);
  const uidLength = type === IvhdEntryType.ACPI_HID && at + 22 <= end ? r.u8(at + 21) : 0;
  const length = ivhdEntryLength(type, uidLength);
  if (length === undefined) return { problem: `device entry type 0x${type.toString(16)} at ${at} has no known length` };
  if (at + length > end) return { problem: `device entry type 0x${type.toString(16)} at ${at} runs past its IVHD` };
  const kind = kindByType.get(type);
  const deviceId = r.u16(at + 1);
  const dteSetting = r.u8(at + 3);
  switch (kind) {
    case "PAD4":
    case "ALL":
    case "SELECT":
    case "START_OF_RANGE":
    case "END_OF_RANGE":
      return { entry: { kind, deviceId, dteSetting }, length };
    case "ALIAS_SELECT":
    case "ALIAS_START_OF_RANGE":
      return { entry: { kind, deviceId, dteSetting, sourceDeviceId: r.u16(at + 5) }, length };
    case "PAD8":
    case "EXT_SELECT":
    case "EXT_START_OF_RANGE":
      return { entry: { kind, deviceId, dteSetting, extendedData: r.u32(at + 4) }, length };
    case "SPECIAL":
      return { entry: { kind, deviceId, dteSetting, handle: r.u8(at + 4), sourceDeviceId: r.u16(at + 5), variety: r.u8(at + 7) }, length };
    case "ACPI_HID":
      return {
        entry: {
          kind,
          deviceId,
          dteSetting,
          hid: readAscii8(r.slice(at + 4, 8)),
          cid: readAscii8(r.slice(at + 12, 8)),
          uidFormat: r.u8(at + 20),
          uid: r.slice(at + 22, uidLength).slice(),
        },
        length,
      };
    default:
      return { entry: { kind: "UNKNOWN", type, bytes: r.slice(at, length).slice() }, length };
  }
}

/** UID bytes for an integer UID (format 1), little-endian in `bytes` bytes. */
export function integerUid(value: number, bytes = 1): Uint8Array {
  const out = new Uint8Array(bytes);
  let v = value;
  for (let i = 0; i < bytes; i++) {
    out[i] = v % 256;
    v = Math.floor(v / 256);
  }
  return out;
}

/** UID bytes for a string UID (format 2). */
export function stringUid(text: string): Uint8Array {
  return Uint8Array.from(text, (ch) => ch.charCodeAt(0));
}
