import { decodeLayout, toBytes, type DecodedStructure, type RawBits, type StructureDecoder } from "@viommu/core";
import { flattenStruct, readStruct, viewOf, type ByteLayout, type FlatFields } from "./byte-layout.js";
import { hvStatusName } from "./hv-status.js";
import { hypercallInputLayout } from "./hypercall-input.js";
import { hypercallResultLayout } from "./hypercall-result.js";
import {
  HV_HYP_PAGE_SIZE,
  hvMapDeviceInterruptArm64,
  hvRetargetInterruptArm64,
  hvUnmapDeviceInterruptArm64,
  hypercallByCode,
  hypervHypercalls,
  type HypercallSpec,
} from "./hypercalls.js";
import { interruptTargetOffset } from "./interrupt-hypercalls.js";
import { x86PteLayout } from "./x86-page-table.js";

/**
 * The structures `viommu decode --vendor hyperv --structure <id>` understands.
 * - `hypercall-input`, `hypercall-result`: the 64-bit control and result values; name = the call's HVCALL_*
 *   name / the status's HV_STATUS_* name.
 * - `pte`: an x86-64 stage-1 entry; name PRESENT / NOT_PRESENT, code = P (the level is unknown here).
 * - one id per hypercall input (and `<id>-output` for calls with output): the words are the input page from the
 *   input GPA on, 64-bit words lowest first; any count from the fixed header's size to a whole page is accepted.
 *   Without the control word, the variable header of the interrupt calls is sized from the VP set itself, and a
 *   rep list is every whole element present. name = HVCALL_* name, code = call code.
 */

function wordRange(bytes: number): number[] {
  const out: number[] = [];
  for (let w = Math.ceil(bytes / 8); w <= HV_HYP_PAGE_SIZE / 8; w++) out.push(w);
  return out;
}

function popcount64(v: bigint): number {
  let n = 0;
  for (let x = v; x !== 0n; x &= x - 1n) n++;
  return n;
}

function flattenElement(layout: ByteLayout, bytes: Uint8Array, offset: number, prefix: string, out: FlatFields): void {
  const value = readStruct(layout, bytes, offset) as Record<string, unknown>;
  if (layout.fields.length === 1) {
    const only = layout.fields[0]!;
    only.codec.flatten(value[only.name] as never, prefix, out);
    return;
  }
  Object.assign(out, flattenStruct(layout, value as never, prefix));
}

function inputDecoder(s: HypercallSpec): StructureDecoder {
  const listName = s.repElement?.name.replace(/\[\]$/, "") ?? "";
  return {
    id: s.id,
    title: `${s.name} input (${s.input.name})`,
    words: wordRange(s.input.size),
    decode(raw: RawBits): DecodedStructure {
      const bytes = toBytes(raw);
      const fields: FlatFields = flattenStruct(s.input, readStruct(s.input, bytes, 0) as never);
      let next = s.input.size;
      if (s.variableHeader === "vp-set") {
        const view = viewOf(bytes);
        const targetAt = interruptTargetOffset(s.input);
        const processorSet = (view.getUint32(targetAt + 4, true) >>> 1) & 1;
        if (processorSet === 1 && next + 8 <= bytes.length) {
          const validBankMask = view.getBigUint64(next, true);
          fields["var_header.valid_bank_mask"] = validBankMask;
          next += 8;
          const banks = popcount64(validBankMask);
          for (let i = 0; i < banks && next + 8 <= bytes.length; i++, next += 8) fields[`var_header.bank_contents[${i}]`] = view.getBigUint64(next, true);
        }
      }
      if (s.repElement !== undefined) {
        for (let i = 0; next + s.repElement.size <= bytes.length; i++, next += s.repElement.size) {
          flattenElement(s.repElement, bytes, next, `${listName}[${i}]`, fields);
        }
      }
      return { name: s.name, code: s.code, fields };
    },
  };
}

function outputDecoder(s: HypercallSpec, output: ByteLayout): StructureDecoder {
  return {
    id: `${s.id}-output`,
    title: `${s.name} output (${output.name})`,
    words: wordRange(output.size),
    decode(raw: RawBits): DecodedStructure {
      return { name: s.name, code: s.code, fields: flattenStruct(output, readStruct(output, toBytes(raw), 0) as never) };
    },
  };
}

const callDecoders: StructureDecoder[] = [];
for (const s of [...hypervHypercalls, hvMapDeviceInterruptArm64, hvUnmapDeviceInterruptArm64, hvRetargetInterruptArm64]) {
  callDecoders.push(inputDecoder(s));
  if (s.output !== undefined) callDecoders.push(outputDecoder(s, s.output));
}

export const hypervStructures: readonly StructureDecoder[] = [
  {
    id: "hypercall-input",
    title: "Hypercall input value (HV_HYPERCALL_INPUT)",
    words: [1],
    decode(raw: RawBits): DecodedStructure {
      const fields = decodeLayout(hypercallInputLayout, raw.subarray(0, 2));
      return { name: hypercallByCode(fields.call_code)?.name ?? "UNKNOWN", code: fields.call_code, fields };
    },
  },
  {
    id: "hypercall-result",
    title: "Hypercall result value (HV_HYPERCALL_OUTPUT)",
    words: [1],
    decode(raw: RawBits): DecodedStructure {
      const fields = decodeLayout(hypercallResultLayout, raw.subarray(0, 2));
      return { name: hvStatusName(fields.status), code: fields.status, fields };
    },
  },
  {
    id: "pte",
    title: "x86-64 stage-1 page-table entry",
    words: [1],
    decode(raw: RawBits): DecodedStructure {
      const fields = decodeLayout(x86PteLayout, raw.subarray(0, 2));
      return { name: fields.P ? "PRESENT" : "NOT_PRESENT", code: fields.P, fields };
    },
  },
  ...callDecoders,
];
