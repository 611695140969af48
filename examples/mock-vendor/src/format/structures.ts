import { type StructureDecoder } from "@viommu/core";
import { decodeMockCommand, mockOpcodeNames } from "./command.js";
import { decodeMockDeviceEntry } from "./device-entry.js";
import { decodeMockEvent, mockEventNames } from "./event.js";
import { decodeMockIrte } from "./irte.js";
import { mockPteLayout } from "./pte.js";
import { decodeLayout } from "@viommu/core";

/** `viommu decode --vendor mock --structure …`. */
export const mockStructures: readonly StructureDecoder[] = [
  {
    id: "cmd",
    title: "Mock command",
    words: [2],
    decode(raw) {
      const f = decodeMockCommand(raw);
      return { name: mockOpcodeNames[f.OP] ?? "UNKNOWN", code: f.OP, fields: f };
    },
  },
  {
    id: "event",
    title: "Mock event record",
    words: [2],
    decode(raw) {
      const f = decodeMockEvent(raw);
      return { name: mockEventNames[f.TYPE] ?? "UNKNOWN", code: f.TYPE, fields: f };
    },
  },
  {
    id: "dte",
    title: "Mock device table entry",
    words: [2],
    decode(raw) {
      const f = decodeMockDeviceEntry(raw);
      return { name: "MOCK_DTE", code: f.V, fields: f };
    },
  },
  {
    id: "irte",
    title: "Mock interrupt remapping entry",
    words: [1],
    decode(raw) {
      const f = decodeMockIrte(raw);
      return { name: "MOCK_IRTE", code: f.P, fields: f };
    },
  },
  {
    id: "pte",
    title: "Mock page-table entry",
    words: [1],
    decode(raw) {
      const fields = decodeLayout(mockPteLayout, raw);
      return { name: "MOCK_PTE", code: fields.V, fields };
    },
  },
];
