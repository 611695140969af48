import type { RawBits, TableStore } from "@viommu/core";
import { CD_L2_ENTRIES, type CdTableShape } from "./cd-table-shape.js";
import { CD_BYTES, L1CD_BYTES } from "./context-descriptor.js";
import { SteS1Fmt } from "./stream-table-entry.js";

const L1CD_V = 1;
const LEAF_BYTES = CD_L2_ENTRIES * CD_BYTES;

/**
 * A master's CD table as Linux's arm-smmu-v3 keeps it (arm_smmu_alloc_cd_tables, arm_smmu_get_cd_ptr,
 * arm_smmu_write_cd_entry), in whatever memory `store` allocates from: the host's for a host-owned table, the
 * guest's for the reference driver's. Linear, or 2-level with 64 KiB leaves allocated when a SubstreamID under them
 * is first written and announced in their L1CD (L2Ptr | V). A CD is written with dw0 (and its V bit) last, as the
 * hitless update leaves it for a valid entry, and cleared to all zero (V = 0).
 */
export class CdTable {
  private readonly leaves = new Map<number, number>();
  private readonly valid = new Set<number>();
  private readonly halves = new Uint32Array(2);

  private constructor(
    private readonly store: TableStore,
    readonly shape: CdTableShape,
    readonly base: number,
  ) {}

  static create(store: TableStore, shape: CdTableShape): CdTable | undefined {
    const base = store.allocateTable(CdTable.baseBytes(shape));
    return base === undefined ? undefined : new CdTable(store, shape, base);
  }

  private static baseBytes(shape: CdTableShape): number {
    return Math.max(CD_BYTES, shape.entries * (shape.s1fmt === SteS1Fmt.Linear ? CD_BYTES : L1CD_BYTES));
  }

  /** How many SubstreamIDs the table covers (2^S1CDMax). */
  get contexts(): number {
    return 2 ** this.shape.s1cdmax;
  }

  /** SubstreamIDs whose CD is valid. */
  get inUse(): number {
    return this.valid.size;
  }

  has(ssid: number): boolean {
    return this.valid.has(ssid);
  }

  /** The address of `ssid`'s CD; allocates its leaf table when `allocate`. Undefined beyond the table or without a leaf. */
  cdAddress(ssid: number, allocate: boolean): number | undefined {
    if (!Number.isInteger(ssid) || ssid < 0 || ssid >= this.contexts) return undefined;
    if (this.shape.s1fmt === SteS1Fmt.Linear) return this.base + ssid * CD_BYTES;
    const l1 = Math.floor(ssid / CD_L2_ENTRIES);
    let leaf = this.leaves.get(l1);
    if (leaf === undefined) {
      if (!allocate) return undefined;
      leaf = this.store.allocateTable(LEAF_BYTES);
      if (leaf === undefined) return undefined;
      this.leaves.set(l1, leaf);
      this.store.write64Halves(this.base + l1 * L1CD_BYTES, ((leaf % 2 ** 32) | L1CD_V) >>> 0, Math.floor(leaf / 2 ** 32) >>> 0);
    }
    return leaf + (ssid % CD_L2_ENTRIES) * CD_BYTES;
  }

  /** Writes a CD (16 halves): dw1..dw7 first, then dw0. False when the table cannot hold it (out of range or memory). */
  write(ssid: number, cd: RawBits): boolean {
    const at = this.cdAddress(ssid, true);
    if (at === undefined) return false;
    for (let i = 2; i < 16; i += 2) this.store.write64Halves(at + i * 4, cd[i]!, cd[i + 1]!);
    this.store.write64Halves(at, cd[0]!, cd[1]!);
    if ((cd[0]! & (1 << 31)) !== 0) this.valid.add(ssid);
    else this.valid.delete(ssid);
    return true;
  }

  /** Makes `ssid`'s CD invalid (all zero, V = 0 first). */
  clear(ssid: number): void {
    const at = this.cdAddress(ssid, false);
    this.valid.delete(ssid);
    if (at === undefined) return;
    this.store.write64Halves(at, 0, 0);
    for (let i = 8; i < CD_BYTES; i += 8) this.store.write64Halves(at + i, 0, 0);
  }

  /** dw0 of `ssid`'s CD as it is in memory (0 when absent), for inspection. */
  readDw0(ssid: number): bigint {
    const at = this.cdAddress(ssid, false);
    if (at === undefined) return 0n;
    this.store.read64Halves(at, this.halves);
    return (BigInt(this.halves[1]!) << 32n) | BigInt(this.halves[0]!);
  }

  /** Frees the leaves and the table. */
  destroy(): void {
    for (const leaf of this.leaves.values()) this.store.freeTable(leaf, LEAF_BYTES);
    this.leaves.clear();
    this.valid.clear();
    this.store.freeTable(this.base, CdTable.baseBytes(this.shape));
  }
}
