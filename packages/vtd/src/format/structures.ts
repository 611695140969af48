import type { DecodedStructure, RawBits, StructureDecoder } from "@viommu/core";
import { capLayout } from "./cap.js";
import { contextEntryLayout } from "./context-entry.js";
import { ecapLayout } from "./ecap.js";
import { faultReasonName } from "./fault-reasons.js";
import { faultRecordLayout } from "./fault-record.js";
import { flPteLayout } from "./fl-pte.js";
import { decodeInvDesc } from "./inv-desc.js";
import { decodeIrte } from "./irte.js";
import { layoutDecoder, layoutFields } from "./layout-decoder.js";
import { pageRequestLayout } from "./page-request.js";
import { pasidDirEntryLayout } from "./pasid-dir-entry.js";
import { pasidEntryLayout } from "./pasid-entry.js";
import { rootEntryLayout } from "./root-entry.js";
import { slPteLayout } from "./sl-pte.js";
import { smContextEntryLayout } from "./sm-context-entry.js";
import { smRootEntryLayout } from "./sm-root-entry.js";

/**
 * The VT-d structures `viommu decode --vendor vtd --structure <id>` knows, words in 64-bit units. Every
 * decoder accepts any bits of its sizes without throwing.
 */
export const vtdStructures: readonly StructureDecoder[] = [
  {
    id: "inv-desc",
    title: "Invalidation queue descriptor (128- or 256-bit)",
    words: [2, 4],
    decode: (raw: RawBits): DecodedStructure => decodeInvDesc(raw),
  },
  {
    id: "root-entry",
    title: "Root entry: legacy fields (P, CTP) and scalable-mode fields (LP, LCTP, UP, UCTP) of the same 128 bits",
    words: [2],
    decode: (raw: RawBits): DecodedStructure => ({
      name: "ROOT_ENTRY",
      code: 0,
      fields: { ...layoutFields(rootEntryLayout, raw), ...layoutFields(smRootEntryLayout, raw) },
    }),
  },
  layoutDecoder("context-entry", "Legacy-mode context entry (128-bit)", "CONTEXT_ENTRY", contextEntryLayout),
  layoutDecoder("sm-context-entry", "Scalable-mode context entry (256-bit)", "SM_CONTEXT_ENTRY", smContextEntryLayout),
  layoutDecoder("pasid-dir-entry", "Scalable-mode PASID directory entry (64-bit)", "PASID_DIR_ENTRY", pasidDirEntryLayout),
  layoutDecoder("pasid-entry", "Scalable-mode PASID table entry (512-bit)", "PASID_ENTRY", pasidEntryLayout),
  layoutDecoder("sl-pte", "Second-level paging entry (64-bit)", "SL_PTE", slPteLayout),
  layoutDecoder("fl-pte", "First-level paging entry (64-bit)", "FL_PTE", flPteLayout),
  {
    id: "irte",
    title: "Interrupt remapping table entry (128-bit; remapped or posted by IM)",
    words: [2],
    decode: (raw: RawBits): DecodedStructure => decodeIrte(raw),
  },
  {
    id: "fault-record",
    title: "Fault recording register (128-bit); name is the fault reason",
    words: [2],
    decode: (raw: RawBits): DecodedStructure => {
      const fields = layoutFields(faultRecordLayout, raw);
      const fr = fields.FR as number;
      return { name: faultReasonName(fr), code: fr, fields };
    },
  },
  layoutDecoder("page-request", "Page request descriptor (256-bit)", "PAGE_REQ", pageRequestLayout),
  layoutDecoder("cap", "Capability register CAP_REG", "CAP_REG", capLayout),
  layoutDecoder("ecap", "Extended capability register ECAP_REG", "ECAP_REG", ecapLayout),
];
