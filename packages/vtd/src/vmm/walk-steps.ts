import type { Layout, WalkStep } from "@viommu/core";
import { contextEntryLayout } from "../format/context-entry.js";
import { flPteLayout } from "../format/fl-pte.js";
import { layoutFields } from "../format/layout-decoder.js";
import { pasidDirEntryLayout } from "../format/pasid-dir-entry.js";
import { pasidEntryLayout } from "../format/pasid-entry.js";
import { rootEntryLayout } from "../format/root-entry.js";
import { slPteLayout } from "../format/sl-pte.js";
import { smContextEntryLayout } from "../format/sm-context-entry.js";
import { smRootEntryLayout } from "../format/sm-root-entry.js";
import type { VtdStructureName } from "./guest-translator.js";

const hex = (v: number | bigint): string => `0x${v.toString(16)}`;

/** The raw entry as 64-bit hex words, lowest first. */
export function rawWords(words: Uint32Array): string[] {
  const out: string[] = [];
  for (let i = 0; i + 1 < words.length; i += 2) out.push(hex((BigInt(words[i + 1]!) << 32n) | BigInt(words[i]!)));
  return out;
}

/** Fields of `layout` by the specification's names; pointers (bigint) as hex text. */
export function stepFields(layout: Layout, words: Uint32Array): Record<string, number | string> {
  const out: Record<string, number | string> = {};
  for (const [name, value] of Object.entries(layoutFields(layout, words))) out[name] = typeof value === "bigint" ? hex(value) : value;
  return out;
}

/**
 * Collects the entries one translation reads as `viommu walk` steps (VT-d spec chapter 9 names and fields).
 * Root entries show the legacy or the scalable-mode fields as RTADDR.TTM says; paging entries carry their level,
 * counted down from the table's top level, and the last one its page size when the walk ended on a leaf.
 */
export class WalkSteps {
  readonly steps: WalkStep[] = [];
  private pteLevel = 0;

  constructor(private readonly scalable: boolean) {}

  /** Starts a paging walk whose top level is `levels`. */
  startPaging(levels: number): void {
    this.pteLevel = levels;
  }

  readonly entry = (what: VtdStructureName, address: number, words: Uint32Array): void => {
    const raw = rawWords(words);
    switch (what) {
      case "root entry":
        this.steps.push({ what, address, raw, fields: stepFields(this.scalable ? smRootEntryLayout : rootEntryLayout, words) });
        return;
      case "context entry":
        this.steps.push({ what, address, raw, fields: stepFields(this.scalable ? smContextEntryLayout : contextEntryLayout, words) });
        return;
      case "PASID directory entry":
        this.steps.push({ what, address, raw, fields: stepFields(pasidDirEntryLayout, words) });
        return;
      case "PASID table entry":
        this.steps.push({ what, address, raw, fields: stepFields(pasidEntryLayout, words) });
        return;
      default:
        this.steps.push({ what, address, raw, level: this.pteLevel, fields: stepFields(what === "FL-PTE" ? flPteLayout : slPteLayout, words) });
        this.pteLevel--;
    }
  };

  /** Marks the last paging entry read as the leaf mapping `pageSize` bytes. */
  leaf(pageSize: number): void {
    const last = this.steps[this.steps.length - 1];
    if (last !== undefined && last.level !== undefined) this.steps[this.steps.length - 1] = { ...last, pageSize };
  }
}
