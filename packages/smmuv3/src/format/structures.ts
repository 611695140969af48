import { decodeLayout, type DecodedStructure, type Layout, type RawBits, type StructureDecoder } from "@viommu/core";
import { decodeCommand } from "./command.js";
import { cdLayout } from "./context-descriptor.js";
import { decodeEvent } from "./event-record.js";
import { idr0Layout, idr1Layout, idr2Layout, idr3Layout, idr4Layout, idr5Layout } from "./id-registers.js";
import { priEntryLayout } from "./pri-entry.js";
import { l1StdLayout } from "./stream-table.js";
import { steConfigName, steLayout } from "./stream-table-entry.js";
import { stage1LeafLayout, stage1TableLayout } from "./vmsa-stage1.js";
import { stage2LeafLayout, stage2TableLayout } from "./vmsa-stage2.js";

/**
 * The structures `viommu decode --vendor smmuv3 --structure <id>` understands. Structures without a type
 * code (STE aside) report their own mnemonic with code 0; the STE reports its Config mnemonic and value;
 * page-table descriptors report their type from bits[1:0] (a page and a table look alike without the level).
 */

function fixed(id: string, title: string, words: number, layout: Layout, name: string): StructureDecoder {
  return {
    id,
    title,
    words: [words],
    decode(raw: RawBits): DecodedStructure {
      return { name, code: 0, fields: decodeLayout(layout, raw) };
    },
  };
}

/** A 32-bit ID register given as one 64-bit word: the register is the low half; the high half is ignored. */
function idRegister(n: number, layout: Layout): StructureDecoder {
  return {
    id: `idr${n}`,
    title: `SMMU_IDR${n}`,
    words: [1],
    decode(raw: RawBits): DecodedStructure {
      return { name: `SMMU_IDR${n}`, code: 0, fields: decodeLayout(layout, raw.subarray(0, 1)) };
    },
  };
}

function descriptor(id: string, title: string, leaf: Layout, table: Layout): StructureDecoder {
  return {
    id,
    title,
    words: [1],
    decode(raw: RawBits): DecodedStructure {
      const type = raw[0]! & 0b11;
      if ((type & 1) === 0) return { name: "INVALID", code: type, fields: { Valid: 0, Type: type >> 1 } };
      if (type === 0b01) return { name: "BLOCK", code: type, fields: decodeLayout(leaf, raw) };
      return { name: "TABLE_OR_PAGE", code: type, fields: { ...decodeLayout(leaf, raw), ...decodeLayout(table, raw) } };
    },
  };
}

export const smmuv3Structures: readonly StructureDecoder[] = [
  {
    id: "cmd",
    title: "Command queue entry",
    words: [2],
    decode: (raw) => decodeCommand(raw),
  },
  {
    id: "ste",
    title: "Stream Table Entry",
    words: [8],
    decode(raw: RawBits): DecodedStructure {
      const fields = decodeLayout(steLayout, raw);
      return { name: steConfigName(fields.Config), code: fields.Config, fields };
    },
  },
  fixed("cd", "Context Descriptor", 8, cdLayout, "CD"),
  {
    id: "event",
    title: "Event queue record",
    words: [4],
    decode: (raw) => decodeEvent(raw),
  },
  fixed("pri", "PRI queue entry", 2, priEntryLayout, "PRIQ_ENTRY"),
  fixed("l1-std", "Level-1 stream table descriptor", 1, l1StdLayout, "L1STD"),
  descriptor("pte-s1", "VMSAv8-64 stage-1 descriptor", stage1LeafLayout, stage1TableLayout),
  descriptor("pte-s2", "VMSAv8-64 stage-2 descriptor", stage2LeafLayout, stage2TableLayout),
  idRegister(0, idr0Layout),
  idRegister(1, idr1Layout),
  idRegister(2, idr2Layout),
  idRegister(3, idr3Layout),
  idRegister(4, idr4Layout),
  idRegister(5, idr5Layout),
];
