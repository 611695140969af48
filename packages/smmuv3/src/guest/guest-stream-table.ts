import { err, ok, type GuestMemory, type PageSource, type RawBits, type Result } from "@viommu/core";
import { encodeSte, SteConfig, SteShcfg } from "../format/stream-table-entry.js";
import { encodeLayout } from "@viommu/core";
import { l1StdLayout, L1STD_BYTES, STE_BYTES, StrtabFormat, strtabL1Index, strtabL2Index } from "../format/stream-table.js";

/** Linux's STRTAB_SPLIT: 256 STEs (one PCI bus) per level-2 table. */
export const LINUX_STRTAB_SPLIT = 8;

/** The abort STE Linux 6.1 writes for unused and detached streams: V, Config abort, SHCFG "use incoming" (spec §9.15). */
export function linuxAbortSte(): RawBits {
  return encodeSte({ V: 1, Config: SteConfig.Abort, SHCFG: SteShcfg.Incoming });
}

/**
 * The guest driver's stream table (Linux `arm_smmu_init_strtab`): linear, 2^SIDSIZE STEs, every one an abort
 * STE from the start; or 2-level with SPLIT 8, level-2 tables of 256 abort STEs allocated when a StreamID is
 * first used and announced in its L1 descriptor (Span = SPLIT + 1).
 */
export class GuestStreamTable {
  private readonly l2 = new Map<number, number>();

  private constructor(
    private readonly memory: GuestMemory,
    private readonly pages: PageSource,
    readonly base: number,
    readonly log2Size: number,
    readonly twoLevel: boolean,
  ) {}

  static create(memory: GuestMemory, pages: PageSource, log2Size: number, twoLevel: boolean): Result<GuestStreamTable> {
    const bytes = twoLevel ? Math.max(64, 2 ** (log2Size - LINUX_STRTAB_SPLIT) * L1STD_BYTES) : 2 ** log2Size * STE_BYTES;
    const count = Math.ceil(bytes / 4096);
    const base = pages.allocate(count, count);
    if (base === undefined) return err("ENOMEM", "no guest memory for the stream table");
    const table = new GuestStreamTable(memory, pages, base, log2Size, twoLevel);
    if (!twoLevel) table.fillAbort(base, 2 ** log2Size);
    return ok(table);
  }

  /** STRTAB_BASE_CFG for this table. */
  get baseCfg(): number {
    return this.log2Size | (this.twoLevel ? (LINUX_STRTAB_SPLIT << 6) | (StrtabFormat.TwoLevel << 16) : 0);
  }

  private fillAbort(at: number, count: number): void {
    const abort = linuxAbortSte();
    for (let i = 0; i < count; i++) {
      this.memory.write64Halves(at + i * STE_BYTES, abort[0]!, abort[1]!);
      this.memory.write64Halves(at + i * STE_BYTES + 8, abort[2]!, abort[3]!);
    }
  }

  /** The address of a StreamID's STE, creating its level-2 table if needed. EINVAL beyond the table. */
  steAddress(sid: number): Result<number> {
    if (!Number.isInteger(sid) || sid < 0 || sid >= 2 ** this.log2Size) return err("EINVAL", `StreamID 0x${sid.toString(16)} beyond the stream table`);
    if (!this.twoLevel) return ok(this.base + sid * STE_BYTES);
    const l1 = strtabL1Index(sid, LINUX_STRTAB_SPLIT);
    let l2 = this.l2.get(l1);
    if (l2 === undefined) {
      const span = 2 ** LINUX_STRTAB_SPLIT;
      const count = (span * STE_BYTES) / 4096;
      const at = this.pages.allocate(count, count);
      if (at === undefined) return err("ENOMEM", "no guest memory for a level-2 stream table");
      this.fillAbort(at, span);
      const desc = encodeLayout(l1StdLayout, { Span: LINUX_STRTAB_SPLIT + 1, L2Ptr: at });
      this.memory.write64Halves(this.base + l1 * L1STD_BYTES, desc[0]!, desc[1]!);
      this.l2.set(l1, at);
      l2 = at;
    }
    return ok(l2 + strtabL2Index(sid, LINUX_STRTAB_SPLIT) * STE_BYTES);
  }
}
