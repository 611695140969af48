import { err, ok, type GuestMemory, type Result } from "@viommu/core";
import { encodePasidDirEntry, pasidDirEntryOffset, pasidEntryOffset } from "../format/pasid-dir-entry.js";
import { pasidDirectoryEntries } from "../format/sm-context-entry.js";

/** PASID-directory size of a device without a PASID capability: Linux's one page, 512 entries (PDTS 2). */
export const PDTS_ONE_PAGE = 2;

/**
 * The PDTS Linux gives a device whose PASIDs are `pasidBits` wide (`intel_pasid_alloc_table` sizes the
 * directory for max_pasid, `context_get_sm_pds` encodes it): 2^(bits − 6) directory entries, at least one page.
 */
export function pdtsForPasidBits(pasidBits: number): number {
  const entries = Math.log2(Math.max(2 ** 15, 2 ** Math.min(Math.max(pasidBits, 0), 20)) / 64);
  return Math.min(7, entries - 7);
}

/**
 * One device's scalable-mode PASID directory and the PASID tables under it, as drivers/iommu/intel/pasid.c keeps
 * them: the directory sized by PDTS, a table page allocated the first time one of its 64 PASIDs is used
 * (`intel_pasid_get_entry`), its directory entry then written present.
 */
export class DevicePasidTables {
  /** PASID-table page of each directory index in use. */
  private readonly tables = new Map<number, number>();

  private constructor(
    private readonly memory: GuestMemory,
    private readonly allocate: (pages: number) => Result<number>,
    public dir: number,
    public pdts: number,
  ) {}

  /** A directory of 2^(pdts + 7) entries. */
  static create(memory: GuestMemory, allocate: (pages: number) => Result<number>, pdts: number): Result<DevicePasidTables> {
    const dir = allocate(directoryPages(pdts));
    return dir.ok ? ok(new DevicePasidTables(memory, allocate, dir.value, pdts)) : dir;
  }

  /** PASIDs the directory reaches. */
  get limit(): number {
    return pasidDirectoryEntries(this.pdts) * 64;
  }

  /** Guest physical address of PASID `pasid`'s 64-byte entry, its table allocated if it has none yet. */
  entryAddress(pasid: number): Result<number> {
    if (!Number.isInteger(pasid) || pasid < 0 || pasid >= this.limit) return err("EINVAL", `PASID ${pasid} is beyond the device's PASID directory`);
    const index = pasid >>> 6;
    let table = this.tables.get(index);
    if (table === undefined) {
      const page = this.allocate(1);
      if (!page.ok) return page;
      table = page.value;
      this.tables.set(index, table);
      this.memory.writeWords(this.dir + pasidDirEntryOffset(pasid), encodePasidDirEntry({ P: 1, SMPTBLPTR: BigInt(table) }));
    }
    return ok(table + pasidEntryOffset(pasid));
  }

  /**
   * Moves to a directory of 2^(pdts + 7) entries (the device's PASID capability turned out wider than the one
   * page it was given): the tables in use keep their pages and their entries are written into the new directory.
   * Returns the old directory, for the caller to zero once the context entry points at `dir` and is invalidated.
   */
  resize(pdts: number): Result<{ dir: number; bytes: number } | undefined> {
    if (pdts === this.pdts) return ok(undefined);
    const dir = this.allocate(directoryPages(pdts));
    if (!dir.ok) return dir;
    const old = { dir: this.dir, bytes: directoryPages(this.pdts) * 4096 };
    this.dir = dir.value;
    this.pdts = pdts;
    for (const [index, table] of [...this.tables]) {
      if (index * 64 >= this.limit) this.tables.delete(index);
      else this.memory.writeWords(this.dir + 8 * index, encodePasidDirEntry({ P: 1, SMPTBLPTR: BigInt(table) }));
    }
    return ok(old);
  }
}

function directoryPages(pdts: number): number {
  return Math.max(1, (pasidDirectoryEntries(pdts) * 8) / 4096);
}
