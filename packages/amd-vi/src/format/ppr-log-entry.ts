import { defineLayout, encodeLayout, type DecodedStructure, type Fields, type RawBits } from "@viommu/core";
import { fieldRecord } from "./layout-tools.js";

/**
 * PPR (peripheral page request) log entry (128 bits; spec x86.md B8; Linux PPR_* macros and
 * PPR_FLAG_*): [15:0] DeviceID, [31:16] PASID[15:0], [41:32] tag (10 bits), [45:42] PASID[19:16], flags
 * [59:48] (bit 1 EXEC, 2 READ, 5 WRITE, 6 US, 7 RVSD, 8 GN), [63:60] type (1 = PAGE_SERVICE_REQUEST),
 * [127:64] address.
 *
 * The tag's low 9 bits are the PCIe page request group index (PRGI) and its bit 9 says the request is the last
 * of its group (Linux ppr.c: grpid = PPR_TAG & 0x1FF, PPR_TAG & 0x200 → IOMMU_FAULT_PAGE_REQUEST_LAST_PAGE):
 * that is why the response, COMPLETE_PPR_REQUEST, carries a 9-bit tag.
 */
export const pprLogEntryLayout = defineLayout("PPR_LOG_ENTRY", 128, [
  { name: "DeviceID", bit: 0, width: 16 },
  { name: "PASID_15_0", bit: 16, width: 16 },
  { name: "Tag", bit: 32, width: 10 },
  { name: "PASID_19_16", bit: 42, width: 4 },
  { name: "EXEC", bit: 49, width: 1 },
  { name: "READ", bit: 50, width: 1 },
  { name: "WRITE", bit: 53, width: 1 },
  { name: "US", bit: 54, width: 1 },
  { name: "RVSD", bit: 55, width: 1 },
  { name: "GN", bit: 56, width: 1 },
  { name: "Type", bit: 60, width: 4 },
  { name: "Address", bit: 64, width: 64, big: true },
] as const);

export type PprLogEntryFields = Fields<typeof pprLogEntryLayout>;

export const PprType = { PAGE_SERVICE_REQUEST: 1 } as const;
/** Flag bits within the 12-bit flags field (Linux PPR_FLAG_*). */
export const PprFlag = { EXEC: 0x002, READ: 0x004, WRITE: 0x020, US: 0x040, RVSD: 0x080, GN: 0x100 } as const;
export const PPR_ENTRY_BYTES = 16;
/** Tag bit 9: the last request of its page request group. */
export const PPR_TAG_LAST = 0x200;

export function decodePprLogEntry(raw: RawBits): DecodedStructure {
  const fields = fieldRecord(pprLogEntryLayout, raw);
  fields["PASID"] = Number(fields["PASID_19_16"]) * 0x10000 + Number(fields["PASID_15_0"]);
  const type = Number(fields["Type"]);
  return { name: type === PprType.PAGE_SERVICE_REQUEST ? "PAGE_SERVICE_REQUEST" : "UNKNOWN", code: type, fields };
}

export function encodePprLogEntry(fields: Partial<PprLogEntryFields>): RawBits {
  return encodeLayout(pprLogEntryLayout, fields);
}

/** A PAGE_SERVICE_REQUEST entry for `pasid` (20 bits split as the log stores it) and `flags` (PprFlag bits). */
export function buildPageServiceRequest(options: { deviceId: number; pasid: number; tag: number; flags: number; address: bigint }): RawBits {
  const raw = new Uint32Array(4);
  raw[0] = ((options.deviceId & 0xffff) | ((options.pasid & 0xffff) << 16)) >>> 0;
  raw[1] = ((options.tag & 0x3ff) | (((options.pasid >>> 16) & 0xf) << 10) | ((options.flags & 0xfff) << 16) | (PprType.PAGE_SERVICE_REQUEST << 28)) >>> 0;
  raw[2] = Number(options.address & 0xffff_ffffn);
  raw[3] = Number((options.address >> 32n) & 0xffff_ffffn);
  return raw;
}
