import type { DecodedStructure, RawBits, StructureDecoder } from "@viommu/core";
import { decodeCommand } from "./command.js";
import { decodeControl } from "./control-register.js";
import { decodeDte } from "./device-table-entry.js";
import { decodeEfr } from "./extended-feature-register.js";
import { decodeEvent } from "./event-log-entry.js";
import { decodeIrte128 } from "./irte128.js";
import { decodeIrte32 } from "./irte32.js";
import { fieldRecord, firstZeroAtOrAbove12 } from "./layout-tools.js";
import { V1_NEXT_LEVEL_DEFAULT_PAGE, V1_NEXT_LEVEL_SIZE_ENCODED, v1PdeLayout, v1PteLayout } from "./page-table-v1.js";
import { v2PteLayout } from "./page-table-v2.js";
import { decodePprLogEntry } from "./ppr-log-entry.js";

function decodeV1Entry(raw: RawBits): DecodedStructure {
  const nextLevel = (raw[0]! >>> 9) & 7;
  if ((raw[0]! & 1) === 0) return { name: "NOT_PRESENT", code: nextLevel, fields: fieldRecord(v1PteLayout, raw) };
  if (nextLevel === V1_NEXT_LEVEL_DEFAULT_PAGE || nextLevel === V1_NEXT_LEVEL_SIZE_ENCODED) {
    const fields = fieldRecord(v1PteLayout, raw);
    if (nextLevel === V1_NEXT_LEVEL_SIZE_ENCODED) {
      // The page size a NextLevel=7 entry encodes (the level is not known here, so the size is not checked).
      const pageShift = firstZeroAtOrAbove12(raw[0]!, raw[1]!) + 1;
      fields["PageSize"] = pageShift <= 52 ? 2 ** pageShift : 0;
    }
    return { name: "PTE", code: nextLevel, fields };
  }
  return { name: "PDE", code: nextLevel, fields: fieldRecord(v1PdeLayout, raw) };
}

function decodeV2Entry(raw: RawBits): DecodedStructure {
  const fields = fieldRecord(v2PteLayout, raw);
  return { name: (raw[0]! & 1) === 0 ? "NOT_PRESENT" : "PTE", code: raw[0]! & 1, fields };
}

/**
 * The AMD-Vi structures `viommu decode --vendor amd-vi --structure <id>` knows. Inputs are 64-bit words,
 * lowest first; `irte32` takes one word whose low 32 bits hold the entry.
 */
export const amdViStructures: readonly StructureDecoder[] = [
  { id: "cmd", title: "Command buffer entry", words: [2], decode: decodeCommand },
  { id: "dte", title: "Device Table Entry", words: [4], decode: (raw) => ({ name: "DTE", code: raw[0]! & 1, fields: decodeDte(raw) }) },
  { id: "event", title: "Event log entry", words: [2], decode: decodeEvent },
  { id: "ppr", title: "PPR log entry", words: [2], decode: decodePprLogEntry },
  { id: "pte-v1", title: "Host (v1) page table entry", words: [1], decode: decodeV1Entry },
  { id: "pte-v2", title: "Guest (v2) page table entry", words: [1], decode: decodeV2Entry },
  { id: "irte32", title: "Interrupt remapping table entry (32-bit)", words: [1], decode: decodeIrte32 },
  { id: "irte128", title: "Interrupt remapping table entry (128-bit, GA)", words: [2], decode: decodeIrte128 },
  { id: "efr", title: "Extended Feature Register", words: [1], decode: (raw) => ({ name: "EFR", code: 0, fields: decodeEfr(raw) }) },
  { id: "control", title: "Control register", words: [1], decode: (raw) => ({ name: "CONTROL", code: 0, fields: decodeControl(raw) }) },
];
