import { decodeCmdqvCrs, TEGRA241_CMDQV_HID } from "../format/acpi-device.js";

/** A CMDQV as the guest's firmware describes it. */
export interface FoundCmdqv {
  /** _UID: the Identifier of the IORT SMMUv3 node it extends. */
  readonly uid: number;
  readonly base: number;
  readonly length: number;
  readonly gsiv: number;
}

const ACPI_HEADER_BYTES = 36;
const EXT_OP = 0x5b;
const DEVICE_OP = 0x82;
const NAME_OP = 0x08;
const BUFFER_OP = 0x11;
const STRING_PREFIX = 0x0d;
/** Enough for any namespace a VMM publishes; bounds the scan of a hostile table. */
const MAX_DEVICES = 256;

/** PkgLength (ACPI 6.5 §20.2.4): the value and how many bytes encode it, or undefined past the end. */
function pkgLength(aml: Uint8Array, at: number): { value: number; bytes: number } | undefined {
  const lead = aml[at];
  if (lead === undefined) return undefined;
  const follow = lead >>> 6;
  if (follow === 0) return { value: lead & 0x3f, bytes: 1 };
  if (at + follow >= aml.length) return undefined;
  let value = lead & 0x0f;
  for (let i = 1; i <= follow; i++) value |= aml[at + i]! << (4 + 8 * (i - 1));
  return { value, bytes: follow + 1 };
}

/** A data object (integer, string, buffer) at `at`, or undefined for anything else. */
function dataObject(aml: Uint8Array, at: number, end: number): { value: number | string | Uint8Array; next: number } | undefined {
  const op = aml[at];
  const le = (n: number): number | undefined => {
    if (at + 1 + n > end) return undefined;
    let v = 0;
    for (let i = n - 1; i >= 0; i--) v = v * 256 + aml[at + 1 + i]!;
    return v;
  };
  switch (op) {
    case 0x00:
    case 0x01:
      return { value: op, next: at + 1 };
    case 0x0a:
    case 0x0b:
    case 0x0c:
    case 0x0e: {
      const n = op === 0x0a ? 1 : op === 0x0b ? 2 : op === 0x0c ? 4 : 8;
      const v = le(n);
      return v === undefined ? undefined : { value: v, next: at + 1 + n };
    }
    case STRING_PREFIX: {
      let e = at + 1;
      while (e < end && aml[e] !== 0) e++;
      if (e >= end) return undefined;
      return { value: String.fromCharCode(...aml.subarray(at + 1, e)), next: e + 1 };
    }
    case BUFFER_OP: {
      const len = pkgLength(aml, at + 1);
      if (len === undefined) return undefined;
      const pkgEnd = at + 1 + len.value;
      if (pkgEnd > end) return undefined;
      const size = dataObject(aml, at + 1 + len.bytes, pkgEnd);
      if (size === undefined || typeof size.value !== "number") return undefined;
      return { value: aml.slice(size.next, Math.min(pkgEnd, size.next + size.value)), next: pkgEnd };
    }
    default:
      return undefined;
  }
}

/**
 * The NVDA200C devices of an SSDT/DSDT, read the way Linux's tegra241_cmdqv_find_acpi_resource does: each
 * Device(...) whose _HID is "NVDA200C", its _UID, and the first memory window and interrupt of its _CRS. Only
 * the plain Name() declarations a VMM writes are understood; anything malformed is skipped, never thrown on.
 */
export function findCmdqvDevices(table: Uint8Array): FoundCmdqv[] {
  const found: FoundCmdqv[] = [];
  for (let at = ACPI_HEADER_BYTES; at + 1 < table.length && found.length < MAX_DEVICES; at++) {
    if (table[at] !== EXT_OP || table[at + 1] !== DEVICE_OP) continue;
    const len = pkgLength(table, at + 2);
    if (len === undefined) continue;
    const end = Math.min(table.length, at + 2 + len.value);
    let p = at + 2 + len.bytes + 4;
    const names = new Map<string, number | string | Uint8Array>();
    while (p + 5 <= end && table[p] === NAME_OP) {
      const name = String.fromCharCode(...table.subarray(p + 1, p + 5));
      const obj = dataObject(table, p + 5, end);
      if (obj === undefined) break;
      names.set(name, obj.value);
      p = obj.next;
    }
    const hid = names.get("_HID");
    const crs = names.get("_CRS");
    if (hid !== TEGRA241_CMDQV_HID || !(crs instanceof Uint8Array)) continue;
    const resources = decodeCmdqvCrs(crs);
    if (typeof resources === "string") continue;
    const uid = names.get("_UID");
    found.push({ uid: typeof uid === "number" ? uid : 0, base: resources.base, length: resources.length, gsiv: resources.gsiv });
  }
  return found;
}
