import { err, ok, type GuestMemory, type Result } from "@viommu/core";
import { encodeGcr3Entry, gcr3Index } from "../format/gcr3-table-entry.js";

/**
 * One device's GCR3 table as Linux keeps it (struct gcr3_tbl_info): the root, its levels (GLX) and the
 * per-device DomainID its DTE carries, so that the IOTLB entries of each (DomainID, PASID) belong to one
 * device only (set_dte_gcr3_table uses gcr3_info.domid, not the attached domain's id).
 */
export interface Gcr3Table {
  root: number;
  glx: number;
  readonly domainId: number;
  /** PASIDs with a valid entry (PASID 0 is the requester id's v2 domain, under GIoV). */
  readonly pasids: Set<number>;
}

/** GLX needed for `pasid`: 9 PASID bits per level (Linux get_gcr3_levels). */
export function gcr3LevelsFor(pasid: number): number {
  return pasid < 2 ** 9 ? 0 : pasid < 2 ** 18 ? 1 : 2;
}

/**
 * The driver's GCR3 tables in guest memory (Linux setup_gcr3_table, __get_gcr3_pte, update_gcr3). A table
 * starts with one level and grows when a PASID needs more: the new top level's entry 0 points at the old
 * table, which then still covers every PASID it did. Entries the driver reads back go through RAM checks, so
 * a table the guest corrupted is the guest's problem, never an access outside its memory.
 */
export class Gcr3Tables {
  private readonly tables = new Map<number, Gcr3Table>();
  private readonly entry = new Uint32Array(2);

  constructor(
    private readonly memory: GuestMemory,
    /** Zeroed guest pages for table levels (shared with the host in a confidential guest). */
    private readonly allocate: (pages: number) => Result<number>,
  ) {}

  of(rid: number): Gcr3Table | undefined {
    return this.tables.get(rid);
  }

  /** A new one-level table for `rid` with its own DomainID. */
  create(rid: number, domainId: number): Result<Gcr3Table> {
    const page = this.allocate(1);
    if (!page.ok) return page;
    const t: Gcr3Table = { root: page.value, glx: 0, domainId, pasids: new Set() };
    this.tables.set(rid, t);
    return ok(t);
  }

  /** Forgets the device's table (free_gcr3_table): its pages are zeroed so a stale pointer reads nothing valid. */
  drop(rid: number): void {
    const t = this.tables.get(rid);
    if (t === undefined) return;
    this.tables.delete(rid);
    this.zeroTree(t.root, t.glx);
  }

  private zeroTree(table: number, level: number): void {
    if (!this.memory.contains(table, 4096)) return;
    if (level > 0) {
      for (let i = 0; i < 512; i++) {
        const next = this.read(table + i * 8);
        if (next !== undefined) this.zeroTree(next, level - 1);
      }
    }
    this.memory.fill(table, 4096, 0);
  }

  /** The table an entry points to, or undefined when it is not valid (or outside RAM). */
  private read(at: number): number | undefined {
    if (!this.memory.contains(at, 8)) return undefined;
    this.memory.read64Halves(at, this.entry);
    if ((this.entry[0]! & 1) === 0) return undefined;
    return ((this.entry[0]! & 0xfffff000) >>> 0) + (this.entry[1]! & 0xfffff) * 0x1_0000_0000;
  }

  private write(at: number, root: number | undefined): void {
    if (!this.memory.contains(at, 8)) return;
    if (root === undefined) this.memory.write64Halves(at, 0, 0);
    else {
      encodeGcr3Entry(root, this.entry);
      this.memory.write64Halves(at, this.entry[0]!, this.entry[1]!);
    }
  }

  /** Adds levels until `glx` (ENOMEM when no page is left). Returns whether the root changed. */
  private grow(t: Gcr3Table, glx: number): Result<boolean> {
    let grew = false;
    while (t.glx < glx) {
      const page = this.allocate(1);
      if (!page.ok) return page;
      this.write(page.value, t.root);
      t.root = page.value;
      t.glx++;
      grew = true;
    }
    return ok(grew);
  }

  /**
   * Points PASID `pasid` at the v2 (or CPU) table `root`, or clears it (`root` undefined). `maxGlx` is what the
   * IOMMU supports (EFR.GLXSup): a PASID needing more levels is EINVAL, as setup_gcr3_table answers. Returns
   * whether the table grew (the DTE must then be rewritten) and whether a valid entry was replaced.
   */
  set(t: Gcr3Table, pasid: number, root: number | undefined, maxGlx: number): Result<{ grew: boolean; replaced: boolean }> {
    const need = gcr3LevelsFor(pasid);
    if (need > maxGlx) return err("EINVAL", `PASID 0x${pasid.toString(16)} needs ${need + 1} GCR3 levels; the IOMMU has ${maxGlx + 1}`);
    let grew = false;
    if (root !== undefined) {
      const g = this.grow(t, need);
      if (!g.ok) return g;
      grew = g.value;
    }
    let table = t.root;
    for (let level = t.glx; level > 0; level--) {
      const at = table + gcr3Index(pasid, level) * 8;
      let next = this.read(at);
      if (next === undefined) {
        if (root === undefined) return ok({ grew, replaced: false });
        const page = this.allocate(1);
        if (!page.ok) return page;
        this.write(at, page.value);
        next = page.value;
      }
      table = next;
    }
    const at = table + gcr3Index(pasid, 0) * 8;
    const replaced = this.read(at) !== undefined;
    this.write(at, root);
    if (root === undefined) t.pasids.delete(pasid);
    else t.pasids.add(pasid);
    return ok({ grew, replaced });
  }
}
