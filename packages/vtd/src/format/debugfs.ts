import type { DebugfsEntry, DebugfsImporter, Layout } from "@viommu/core";
import { capLayout } from "./cap.js";
import { contextEntryLayout } from "./context-entry.js";
import { ecapLayout } from "./ecap.js";
import { decodeInvDesc } from "./inv-desc.js";
import { decodeIrte } from "./irte.js";
import { layoutFields } from "./layout-decoder.js";
import { pasidEntryLayout } from "./pasid-entry.js";
import { rootEntryLayout } from "./root-entry.js";
import { slPteLayout } from "./sl-pte.js";
import { smContextEntryLayout } from "./sm-context-entry.js";
import { smRootEntryLayout } from "./sm-root-entry.js";

/**
 * Linux's VT-d debugfs files (/sys/kernel/debug/iommu/intel/, written by drivers/iommu/intel/debugfs.c) read
 * back and every entry decoded with this package's formats. The line formats are the kernel's seq_printf
 * formats (cited per file below, from torvalds/linux drivers/iommu/intel/debugfs.c as of commit 20693782766d);
 * header, title and blank lines are recognised and skipped; any other line is an error naming its number.
 */
export const vtdDebugfs: DebugfsImporter = {
  files: ["iommu_regset", "dmar_translation_struct", "domain_translation_struct", "invalidation_queue", "ir_translation_struct"],

  parse(file: string, text: string): { readonly entries: readonly DebugfsEntry[]; readonly errors: readonly string[] } {
    const parser = PARSERS[file];
    if (parser === undefined) return { entries: [], errors: [`${file}: not a VT-d debugfs file this reads (${vtdDebugfs.files.join(", ")})`] };
    const entries: DebugfsEntry[] = [];
    const errors: string[] = [];
    const state: ParseState = { scalable: false, wide: false };
    text.split("\n").forEach((raw, i) => {
      const line = raw.replace(/\r$/, "");
      if (line.trim() === "") return;
      const problem = parser(line, i + 1, entries, state);
      if (problem !== undefined) errors.push(`${file}:${i + 1}: ${problem}: ${JSON.stringify(line.length > 120 ? `${line.slice(0, 120)}…` : line)}`);
    });
    return { entries, errors };
  },
};

interface ParseState {
  /** dmar_translation_struct: the PASID column shows scalable-mode entries (a PASID other than -1 was seen). */
  scalable: boolean;
  /** invalidation_queue: 256-bit descriptors (the qw2/qw3 header). */
  wide: boolean;
}

type LineParser = (line: string, n: number, out: DebugfsEntry[], state: ParseState) => string | undefined;

const H16 = "([0-9a-fA-F]{16})";
const BDF = "([0-9a-fA-F]{2}):([0-9a-fA-F]{2})\\.([0-7])";

/** Little-endian 32-bit words of 64-bit hex texts, lowest first. */
function words(...qwords: string[]): Uint32Array {
  const out = new Uint32Array(qwords.length * 2);
  qwords.forEach((q, i) => {
    const v = BigInt(`0x${q}`);
    out[2 * i] = Number(v & 0xffff_ffffn);
    out[2 * i + 1] = Number(v >> 32n);
  });
  return out;
}

function fieldsOf(layout: Layout, raw: Uint32Array): Record<string, number | bigint> {
  const padded = new Uint32Array(layout.bits / 32);
  padded.set(raw.subarray(0, padded.length));
  return layoutFields(layout, padded);
}

const hex = (q: string): string => `0x${q.toLowerCase()}`;

/**
 * iommu_regset: "IOMMU: %s Register Base Address: %llx", "Name\t\t\tOffset\t\tContents", then
 * "%-16s\t0x%02x\t\t0x%016llx" per register (iommu_regset_show); CAP and ECAP are decoded by field.
 */
const regset: LineParser = (line, n, out) => {
  if (/^IOMMU: \S+ Register Base Address: [0-9a-fA-F]+$/.test(line) || /^Name\t+Offset\t+Contents$/.test(line)) return undefined;
  const m = new RegExp(`^(\\S+)\\s*\\t0x([0-9a-fA-F]{2,})\\t\\t0x${H16}$`).exec(line);
  if (m === null) return "not a register line (%-16s\\t0x%02x\\t\\t0x%016llx)";
  const [, name, offset, value] = m as unknown as [string, string, string, string];
  const raw = words(value);
  const fields: Record<string, number | bigint | boolean | string> = name === "CAP" ? fieldsOf(capLayout, raw) : name === "ECAP" ? fieldsOf(ecapLayout, raw) : { value: hex(value) };
  out.push({ structure: `${name} register`, line: n, address: parseInt(offset, 16), index: name, raw: [hex(value)], fields });
  return undefined;
};

/**
 * dmar_translation_struct: "IOMMU %s: Root Table Address: 0x%llx", the B.D.F header, then per present context
 * "%02x:%02x.%x\t0x%016llx:0x%016llx\t0x%016llx:0x%016llx\t%-6d\t0x%016llx:0x%016llx:0x%016llx" — root entry
 * hi:lo, context entry hi:lo, PASID (-1 in legacy mode) and the PASID entry's val[2]:val[1]:val[0]
 * (print_tbl_walk). Scalable-mode lines decode with the scalable-mode root and context layouts.
 */
const translationStruct: LineParser = (line, n, out) => {
  if (/^IOMMU \S+: Root Table Address: 0x[0-9a-fA-F]+$/.test(line) || /^B\.D\.F\tRoot_entry/.test(line) || /^DMA Remapping is not enabled on \S+$/.test(line)) return undefined;
  const m = new RegExp(`^${BDF}\\t0x${H16}:0x${H16}\\t0x${H16}:0x${H16}\\t(-?\\d+)\\s*\\t0x${H16}:0x${H16}:0x${H16}$`).exec(line);
  if (m === null) return "not a B.D.F line (%02x:%02x.%x\\t0x%016llx:0x%016llx\\t0x%016llx:0x%016llx\\t%-6d\\t0x%016llx:0x%016llx:0x%016llx)";
  const [, bus, dev, fn, rootHi, rootLo, ctxHi, ctxLo, pasidText, pe2, pe1, pe0] = m as unknown as string[];
  const index = `${bus}:${dev}.${fn}`.toLowerCase();
  const pasid = Number(pasidText);
  const scalable = pasid >= 0;
  const root = words(rootLo!, rootHi!);
  const ctx = words(ctxLo!, ctxHi!);
  out.push({ structure: scalable ? "scalable-mode root entry" : "root entry", line: n, index, raw: [hex(rootLo!), hex(rootHi!)], fields: fieldsOf(scalable ? smRootEntryLayout : rootEntryLayout, root) });
  out.push({ structure: scalable ? "scalable-mode context entry" : "context entry", line: n, index, raw: [hex(ctxLo!), hex(ctxHi!)], fields: fieldsOf(scalable ? smContextEntryLayout : contextEntryLayout, ctx) });
  if (scalable) out.push({ structure: "PASID table entry", line: n, index: `${index} PASID ${pasid}`, raw: [hex(pe0!), hex(pe1!), hex(pe2!)], fields: fieldsOf(pasidEntryLayout, words(pe0!, pe1!, pe2!)) });
  return undefined;
};

/**
 * domain_translation_struct: "Device %s @0x%llx" (the domain's top table), the IOVA_PFN header, then per leaf
 * "0x%013lx |\t0x%016llx\t0x%016llx\t0x%016llx\t0x%016llx\t0x%016llx" — the IOVA page frame and the PML5E,
 * PML4E, PDPE, PDE and PTE on its path, 0 for levels the walk did not use (dump_page_info). Each entry is
 * decoded as a second-level entry (bit positions Linux's dma_pte shares with first-level R/W/present).
 */
const domainStruct: LineParser = (line, n, out) => {
  if (/^Device \S+ @0x[0-9a-fA-F]+$/.test(line) || /^IOVA_PFN\t/.test(line)) return undefined;
  const m = new RegExp(`^0x([0-9a-fA-F]{13,}) \\|\\t0x${H16}\\t0x${H16}\\t0x${H16}\\t0x${H16}\\t0x${H16}$`).exec(line);
  if (m === null) return "not a page line (0x%013lx |\\t0x%016llx ×5)";
  const pfn = BigInt(`0x${m[1]!}`);
  const names = ["PML5E", "PML4E", "PDPE", "PDE", "PTE"];
  for (let i = 0; i < 5; i++) {
    const q = m[i + 2]!;
    if (/^0+$/.test(q)) continue;
    out.push({ structure: names[i]!, line: n, index: `IOVA 0x${(pfn << 12n).toString(16)}`, raw: [hex(q)], fields: { level: 5 - i, ...fieldsOf(slPteLayout, words(q)) } });
  }
  return undefined;
};

/**
 * invalidation_queue: "Invalidation queue on IOMMU: %s", " Base: 0x%llx\tHead: %lld\tTail: %lld", the Index
 * header (with qw2 and qw3 when ECAP.SMTS), then "%5d\t%016llx\t%016llx[\t%016llx\t%016llx]\t%016x" per slot
 * with its status (invalidation_queue_entry_show). Each descriptor is decoded by its type.
 */
const invalidationQueue: LineParser = (line, n, out, state) => {
  if (/^Invalidation queue on IOMMU: \S+$/.test(line) || /^ Base: 0x[0-9a-fA-F]+\tHead: \d+\tTail: \d+$/.test(line)) return undefined;
  if (/^Index\t/.test(line)) {
    state.wide = /qw3/.test(line);
    return undefined;
  }
  const m = new RegExp(`^\\s*(\\d+)\\t${H16}\\t${H16}(?:\\t${H16}\\t${H16})?\\t([0-9a-fA-F]+)$`).exec(line);
  if (m === null) return "not a descriptor line (%5d\\t%016llx\\t%016llx[\\t%016llx\\t%016llx]\\t%016x)";
  const qwords = m[4] !== undefined ? [m[2]!, m[3]!, m[4]!, m[5]!] : [m[2]!, m[3]!];
  if ((qwords.length === 4) !== state.wide) return `a ${qwords.length * 64}-bit descriptor under a ${state.wide ? 256 : 128}-bit header`;
  const decoded = decodeInvDesc(words(...qwords));
  out.push({ structure: decoded.name, line: n, index: m[1]!, raw: qwords.map(hex), fields: { ...decoded.fields, status: Number(`0x${m[6]!}`) } });
  return undefined;
};

/**
 * ir_translation_struct: "Remapped Interrupt supported on IOMMU: %s", " IR table address:%llx", the Entry
 * header, then " %-5d %02x:%02x.%01x %08x %02x  %016llx\t%016llx" per remapped IRTE (index, SID, destination,
 * vector, high, low: ir_tbl_remap_entry_show); after "****" the posted section's
 * " %-5d %02x:%02x.%01x %08x %08x %02x  %016llx\t%016llx" (PDA high, PDA low, vector: ir_tbl_posted_entry_show).
 */
const irStruct: LineParser = (line, n, out) => {
  if (/^(Remapped|Posted) Interrupt supported on IOMMU: \S+$/.test(line) || /^ IR table address:[0-9a-fA-F]+$/.test(line) || /^ Entry SrcID/.test(line) || line === "****" || line === "Interrupt Remapping is not enabled") return undefined;
  const remapped = new RegExp(`^ (\\d+)\\s* ${BDF} ([0-9a-fA-F]{8}) ([0-9a-fA-F]{2})  ${H16}\\t${H16}$`).exec(line);
  const posted = remapped === null ? new RegExp(`^ (\\d+)\\s* ${BDF} ([0-9a-fA-F]{8}) ([0-9a-fA-F]{8}) ([0-9a-fA-F]{2})  ${H16}\\t${H16}$`).exec(line) : null;
  const m = remapped ?? posted;
  if (m === null) return "not an IRTE line ( %-5d %02x:%02x.%01x %08x [%08x ]%02x  %016llx\\t%016llx)";
  const high = m[m.length - 2]!;
  const low = m[m.length - 1]!;
  const decoded = decodeIrte(words(low, high));
  out.push({ structure: posted !== null ? "posted IRTE" : "IRTE", line: n, index: m[1]!, raw: [hex(low), hex(high)], fields: { ...decoded.fields, SID: `${m[2]}:${m[3]}.${m[4]}`.toLowerCase() } });
  return undefined;
};

const PARSERS: Readonly<Record<string, LineParser>> = {
  iommu_regset: regset,
  dmar_translation_struct: translationStruct,
  domain_translation_struct: domainStruct,
  invalidation_queue: invalidationQueue,
  ir_translation_struct: irStruct,
};
