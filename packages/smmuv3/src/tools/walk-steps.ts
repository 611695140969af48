import { decodeLayout, type Layout, type WalkStep } from "@viommu/core";
import { cdLayout, l1CdLayout } from "../format/context-descriptor.js";
import { steLayout, steStage1Enabled } from "../format/stream-table-entry.js";
import { l1StdLayout } from "../format/stream-table.js";
import { stage1LeafLayout, stage1TableLayout } from "../format/vmsa-stage1.js";
import { decodeCdSettings } from "../translate/cd-config.js";
import type { SmmuFeatures } from "../translate/smmu-features.js";
import type { StreamTableConfig } from "../translate/stream-table-lookup.js";

/** A 64-bit entry as the step table shows it: 0x and 16 hex digits. */
export function hex64(lo: number, hi: number): string {
  return `0x${(hi >>> 0).toString(16).padStart(8, "0")}${(lo >>> 0).toString(16).padStart(8, "0")}`;
}

function fieldsOf(layout: Layout, halves: Uint32Array): Record<string, number | string> {
  const out: Record<string, number | string> = {};
  for (const [name, value] of Object.entries(decodeLayout(layout, halves)) as [string, unknown][]) out[name] = typeof value === "bigint" ? `0x${value.toString(16)}` : (value as number);
  return out;
}

/**
 * The stage-1 descriptor kinds by the Arm ARM's names (DDI0487 D8.3): bit 0 clear is invalid; bits [1:0] = 0b11 a
 * table descriptor above the last level and a page descriptor at it; 0b01 a block descriptor above the last level,
 * reserved (treated as invalid) at it.
 */
function descriptorName(lo: number, level: number): string {
  if ((lo & 1) === 0) return "invalid descriptor";
  if (level === 1) return (lo & 2) !== 0 ? "page descriptor" : "reserved descriptor";
  return (lo & 2) !== 0 ? "table descriptor" : "block descriptor";
}

/**
 * The entries a stage-1 walk read, in order, named as IHI0070 and the Arm ARM name them: the L1STD (2-level stream
 * table), the STE, the L1CD (2-level CD table), the CD, then the stage-1 descriptors from the start level of the
 * half the address selects (`ttb` 0 or 1) down. Levels are counted with the leaf at 1 (the Arm ARM's lookup level
 * is 4 − level, given as the field "lookup level"); a block or page descriptor gives the size it maps. `reads`:
 * address, low, high half per entry, as RecordingReader keeps them. An STE or CD cut short by a failed fetch is
 * shown with the words read and no fields.
 */
export function walkSteps(reads: readonly number[], table: StreamTableConfig, features: SmmuFeatures, ttb: 0 | 1): WalkStep[] {
  const steps: WalkStep[] = [];
  const n = reads.length / 3;
  let i = 0;
  const single = (what: string, layout: Layout): Uint32Array => {
    const halves = Uint32Array.of(reads[3 * i + 1]!, reads[3 * i + 2]!);
    steps.push({ what, address: reads[3 * i]!, raw: [hex64(halves[0]!, halves[1]!)], fields: fieldsOf(layout, halves) });
    i++;
    return halves;
  };
  /** An 8-entry structure (STE, CD); its 16 halves, or undefined when the fetch stopped early. */
  const structure = (what: string, layout: Layout): Uint32Array | undefined => {
    const count = Math.min(8, n - i);
    const halves = new Uint32Array(16);
    const raw: string[] = [];
    for (let k = 0; k < count; k++) {
      halves[2 * k] = reads[3 * (i + k) + 1]!;
      halves[2 * k + 1] = reads[3 * (i + k) + 2]!;
      raw.push(hex64(halves[2 * k]!, halves[2 * k + 1]!));
    }
    steps.push({ what, address: reads[3 * i]!, raw, ...(count === 8 ? { fields: fieldsOf(layout, halves) } : {}) });
    i += count;
    return count === 8 ? halves : undefined;
  };
  if (i < n && table.twoLevel) single("L1STD", l1StdLayout);
  if (i >= n) return steps;
  const ste = structure("STE", steLayout);
  if (ste === undefined) return steps;
  const steFields = decodeLayout(steLayout, ste);
  if (steFields.V === 0 || !steStage1Enabled(steFields.Config) || i >= n) return steps;
  if (steFields.S1Fmt !== 0 && steFields.S1CDMax !== 0) single("L1CD", l1CdLayout);
  if (i >= n) return steps;
  const cd = structure("CD", cdLayout);
  if (cd === undefined) return steps;
  const settings = decodeCdSettings(cd, features, steFields.S1STALLD === 1);
  if (typeof settings === "number") return steps;
  const geometry = ttb === 1 ? settings.ttb1?.geometry : settings.geometry;
  if (geometry === undefined) return steps;
  for (let level = geometry.startLevel; i < n && level >= 1; level--) {
    const lo = reads[3 * i + 1]!;
    const hi = reads[3 * i + 2]!;
    const what = descriptorName(lo, level);
    const leaf = what === "page descriptor" || what === "block descriptor";
    const layout = what === "table descriptor" ? stage1TableLayout : stage1LeafLayout;
    const fields = (lo & 1) === 0 ? { Valid: 0 } : fieldsOf(layout, Uint32Array.of(lo, hi));
    steps.push({
      what,
      address: reads[3 * i]!,
      raw: [hex64(lo, hi)],
      level,
      stage: 1,
      fields: { ...fields, "lookup level": 4 - level },
      ...(leaf ? { pageSize: 2 ** geometry.levelShift[level]! } : {}),
    });
    i++;
  }
  return steps;
}
