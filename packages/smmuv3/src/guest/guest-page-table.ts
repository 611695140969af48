import { err, GuestTableStore, ok, PageTableBuilder, type GuestMemory, type PageSource, type Result, type TableGeometry, type WritableFormat } from "@viommu/core";
import { Tg0 } from "../format/context-descriptor.js";
import { stage1Geometry, type GranuleShift } from "../format/vmsa-geometry.js";
import { vmsaStage1Encoder, vmsaStage1Format } from "../format/vmsa-stage1.js";

/** Linux's stage-1 input size for DMA domains: 48-bit VAs, so T0SZ 16 with any granule. */
export const LINUX_S1_T0SZ = 16;

/** CD.TG0 of a granule. */
export function tg0Of(granuleShift: GranuleShift): number {
  return granuleShift === 12 ? Tg0.Granule4K : granuleShift === 14 ? Tg0.Granule16K : Tg0.Granule64K;
}

/**
 * One domain's stage-1 table, as Linux io-pgtable-arm (ARM_64_LPAE_S1) builds it in guest memory: T0SZ 16,
 * the chosen granule, block mappings where aligned, leaves as Linux's DMA API maps (AttrIndx 1, inner
 * shareable, AF, nG, AP[1] unprivileged, no XN), AP[2] for read-only.
 */
export class GuestPageTable {
  private constructor(
    readonly builder: PageTableBuilder,
    readonly granuleShift: GranuleShift,
    readonly geometry: TableGeometry,
  ) {}

  static create(memory: GuestMemory, pages: PageSource, granuleShift: GranuleShift, outputBits: number): Result<GuestPageTable> {
    const g = stage1Geometry(granuleShift, LINUX_S1_T0SZ, { outputBits });
    if (!g.ok) return err("EINVAL", g.reason);
    const format: WritableFormat = {
      ...vmsaStage1Format({ granuleShift, outputBits }),
      ...vmsaStage1Encoder({ granuleShift, geometry: g.geometry }),
    };
    const builder = PageTableBuilder.create(format, g.geometry, new GuestTableStore(memory, pages));
    if (builder === undefined) return err("ENOMEM", "no guest memory for a page table");
    return ok(new GuestPageTable(builder, granuleShift, g.geometry));
  }

  get root(): number {
    return this.builder.root;
  }
}
