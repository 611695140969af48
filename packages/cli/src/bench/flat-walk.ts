import type { HostMemory } from "@viommu/core";

/**
 * The nested-walk baseline: every written host page copied into one flat word array, found by a direct page index,
 * and walked with plain integer arithmetic in the mock entry format (V bit 0, R bit 1, L bit 3, reserved bits
 * 11:4 but 6 and 63:52, address 51:12; 4 KiB leaves at level 1). Top-level functions, no closures, no
 * allocation: the best plain code for the job.
 */
export class FlatTables {
  private readonly words: Uint32Array;
  private readonly index: Int32Array;
  private readonly firstPage: number;
  /** Table fetches of the last walk (both stages). */
  fetches = 0;

  constructor(host: HostMemory) {
    const pages = host.writtenPagesIn(0, host.sizeBytes);
    this.firstPage = pages.length === 0 ? 0 : pages[0]! / 4096;
    const last = pages.length === 0 ? 0 : pages[pages.length - 1]! / 4096;
    this.index = new Int32Array(last - this.firstPage + 1).fill(-1);
    this.words = new Uint32Array(pages.length * 1024);
    const bytes = new Uint8Array(this.words.buffer);
    pages.forEach((page, slot) => {
      this.index[page / 4096 - this.firstPage] = slot;
      host.readBytes(page, 4096, bytes, slot * 4096);
    });
  }

  /** Word index of the 8-byte entry at physical `address`, or -1 outside the copied pages. */
  private at(address: number): number {
    const page = Math.floor(address / 4096) - this.firstPage;
    if (page < 0 || page >= this.index.length) return -1;
    const slot = this.index[page]!;
    return slot < 0 ? -1 : slot * 1024 + ((address & 4095) >>> 2);
  }

  /** One 4-level walk of `input` for a read; the output address, or -1 on any fault. */
  walk(root: number, input: number): number {
    const hi = Math.floor(input / 4294967296);
    const lo = input >>> 0;
    let table = root;
    for (let level = 4; level >= 1; level--) {
      const index = level === 1 ? (lo >>> 12) & 511 : level === 2 ? (lo >>> 21) & 511 : level === 3 ? ((lo >>> 30) | (hi << 2)) & 511 : (hi >>> 7) & 511;
      const w = this.at(table + index * 8);
      this.fetches++;
      if (w < 0) return -1;
      const elo = this.words[w]!;
      const ehi = this.words[w + 1]!;
      if ((elo & 1) === 0 || (elo & 0xfb0) !== 0 || (ehi & 0xfff00000) !== 0 || (elo & 2) === 0) return -1;
      const next = (ehi & 0xfffff) * 4294967296 + ((elo & 0xfffff000) >>> 0);
      if (level === 1) return next + (lo & 4095);
      if ((elo & 8) !== 0) return -1;
      table = next;
    }
    return -1;
  }

  /** Stage 1 at `s1Root` (table addresses are guest-physical) over stage 2 at `s2Root`; -1 on any fault. */
  nested(s1Root: number, s2Root: number, input: number): number {
    this.fetches = 0;
    const hi = Math.floor(input / 4294967296);
    const lo = input >>> 0;
    let table = s1Root;
    for (let level = 4; level >= 1; level--) {
      const index = level === 1 ? (lo >>> 12) & 511 : level === 2 ? (lo >>> 21) & 511 : level === 3 ? ((lo >>> 30) | (hi << 2)) & 511 : (hi >>> 7) & 511;
      const hpa = this.walk(s2Root, table + index * 8);
      if (hpa < 0) return -1;
      const w = this.at(hpa);
      this.fetches++;
      if (w < 0) return -1;
      const elo = this.words[w]!;
      const ehi = this.words[w + 1]!;
      if ((elo & 1) === 0 || (elo & 0xfb0) !== 0 || (ehi & 0xfff00000) !== 0 || (elo & 2) === 0) return -1;
      const next = (ehi & 0xfffff) * 4294967296 + ((elo & 0xfffff000) >>> 0);
      if (level === 1) return this.walk(s2Root, next + (lo & 4095));
      if ((elo & 8) !== 0) return -1;
      table = next;
    }
    return -1;
  }
}
