import { EntryKind, type EntryDecode, type EntryReader, type GuestMemory, type PageTableFormat } from "@viommu/core";
import { amdV1PageTableFormat, v1LevelShift } from "../format/page-table-v1.js";
import { decodeNotPresent } from "../format/page-table-entry.js";

/** The most copies a v1 NextLevel = 7 leaf has: its size is at most the level's default size × 2^8. */
const MAX_REPLICAS = 256;

/**
 * Guest table entries as a shadowing VMM may read them: only where the host may read (an SEV-SNP guest's
 * private pages are not read as ciphertext; an entry there is simply absent).
 */
export class HostReadableEntries implements EntryReader {
  constructor(private readonly memory: GuestMemory) {}

  readEntry(address: number, out: Uint32Array): boolean {
    if (!Number.isSafeInteger(address) || address % 8 !== 0 || !this.memory.hostReadable(address, 8)) return false;
    this.memory.read64Halves(address, out);
    return true;
  }
}

/**
 * A guest v1 table as the shadow mirror enumerates it. A v1 page larger than its level's default size
 * (NextLevel = 7) is written into every slot it covers (spec x86.md B4.1), and each slot translates on its own:
 * an IOVA in slot i reaches the page base + (i mod copies) × slot size. The enumeration visits every slot with
 * the page's full size, which a mirror cannot map as such; this view turns the copies into what they mean:
 * - a complete group of identical copies is one leaf of the full size at its first slot, and the other copies
 *   read as not present (one host mapping, not one per slot);
 * - any other slot (its group is not uniform: a hostile or half-written table; or the enumeration began
 *   after the group's first slot) is a leaf of the slot's own size at the output that slot translates to,
 *   so the mirror never maps more than the hardware would translate.
 *
 * The slot of an entry comes from the address the enumerator last read through `reader`: the enumeration
 * (core's forEachLeaf) decodes each entry right after reading it, which is what ties the two together.
 */
export class ShadowV1TableView {
  readonly reader: EntryReader;
  readonly format: PageTableFormat;
  private lastAddress = 0;
  private groupAddress = -1;
  private groupUniform = false;
  /** The current group's first slot was visited in this enumeration, as the full page. */
  private groupCovered = false;
  private readonly probe = new Uint32Array(2);
  private readonly first = new Uint32Array(2);

  constructor(private readonly inner: EntryReader) {
    this.reader = {
      readEntry: (address, out) => {
        this.lastAddress = address;
        return inner.readEntry(address, out);
      },
    };
    this.format = {
      ...amdV1PageTableFormat,
      decodeEntry: (lo, hi, level, out) => this.decode(lo, hi, level, out),
    };
  }

  private decode(lo: number, hi: number, level: number, out: EntryDecode): void {
    amdV1PageTableFormat.decodeEntry(lo, hi, level, out);
    if (out.kind !== EntryKind.Leaf) return;
    const slotShift = v1LevelShift(level);
    if (out.pageShift <= slotShift) return;
    const copies = 2 ** (out.pageShift - slotShift);
    const slot = (this.lastAddress % 4096) / 8;
    const offset = slot % copies;
    const group = this.lastAddress - offset * 8;
    if (this.uniform(group, copies)) {
      if (offset === 0) {
        this.groupCovered = true;
        return;
      }
      if (this.groupCovered) return decodeNotPresent(out);
    }
    out.address += offset * 2 ** slotShift;
    out.pageShift = slotShift;
  }

  /** Whether the `copies` entries from `group` are all readable and equal (remembered for the group's next slots). */
  private uniform(group: number, copies: number): boolean {
    if (group === this.groupAddress) return this.groupUniform;
    this.groupAddress = group;
    this.groupUniform = false;
    this.groupCovered = false;
    if (copies > MAX_REPLICAS || !this.inner.readEntry(group, this.first)) return false;
    for (let i = 1; i < copies; i++) {
      if (!this.inner.readEntry(group + i * 8, this.probe) || this.probe[0] !== this.first[0] || this.probe[1] !== this.first[1]) return false;
    }
    this.groupUniform = true;
    return true;
  }

  /** Forget the remembered group (before each enumeration: the guest may have rewritten its table). */
  reset(): void {
    this.groupAddress = -1;
  }
}
