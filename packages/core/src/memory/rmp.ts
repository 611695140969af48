import type { GuestMemory } from "./guest-memory.js";
import type { HostMemory, OwnerId } from "./host-memory.js";
import { PAGE_SIZE } from "./page.js";

/** A host page a confidential VM holds privately: whose, and at which guest-physical address. */
export interface PrivateAssignment {
  owner: OwnerId;
  gpa: number;
}

/**
 * The host's reverse map of confidential memory (SEV-SNP's RMP, TDX's PAMT play this part): for any host page,
 * whether a confidential VM holds it as private and at which guest-physical address. Device DMA and IOMMU table
 * walks reaching a private page are refused by the hardware that consults it; pages the guest shared are
 * ordinary guest memory.
 *
 * The map follows the enrolled guests' own sharing state (`GuestMemory.isShared`), so a page the guest converts
 * (set_memory_decrypted, the page-state change the hypervisor performs) is seen at once. It is kept per host
 * memory: every unit of one platform sees the same map (`PrivatePageMap.of`).
 */
export class PrivatePageMap {
  private static readonly maps = new WeakMap<HostMemory, PrivatePageMap>();
  /** Enrolled confidential guests by owner, with how many enrolled them. */
  private readonly guests = new Map<OwnerId, { memory: GuestMemory; holders: number; index: Map<number, number>; indexedBytes: number }>();

  private constructor(private readonly host: HostMemory) {}

  /** The map of `host` (one per host memory). */
  static of(host: HostMemory): PrivatePageMap {
    let map = PrivatePageMap.maps.get(host);
    if (map === undefined) {
      map = new PrivatePageMap(host);
      PrivatePageMap.maps.set(host, map);
    }
    return map;
  }

  /** Whether any confidential guest is enrolled: the check costs nothing otherwise. */
  get active(): boolean {
    return this.guests.size > 0;
  }

  /** A confidential guest's RAM: its private pages are assigned to it (SNP launch). Counted: enroll once per holder. */
  enroll(memory: GuestMemory): void {
    if (!memory.confidential) return;
    const g = this.guests.get(memory.owner);
    if (g !== undefined) {
      g.holders++;
      return;
    }
    this.guests.set(memory.owner, { memory, holders: 1, index: new Map(), indexedBytes: -1 });
  }

  /** One holder lets go; the last takes the guest out of the map (its pages are reclaimed as shared). */
  withdraw(memory: GuestMemory): void {
    const g = this.guests.get(memory.owner);
    if (g === undefined || --g.holders > 0) return;
    this.guests.delete(memory.owner);
  }

  /**
   * Fills `out` and returns true when the host page holding `hpa` is private to a confidential guest; false for a
   * shared page, a page of a guest that is not confidential, or host memory. Allocates nothing once the guest's
   * backing pages are indexed (they are indexed again only after the guest's backing grew).
   */
  privateOwner(hpa: number, out: PrivateAssignment): boolean {
    if (this.guests.size === 0) return false;
    const owner = this.host.ownerOf(hpa);
    if (owner === undefined) return false;
    const g = this.guests.get(owner);
    if (g === undefined) return false;
    const chunk = 2 ** g.memory.backingPageShift;
    const hostChunk = Math.floor(hpa / chunk);
    let guestChunk = g.index.get(hostChunk);
    if (guestChunk === undefined && g.indexedBytes !== g.memory.backedBytes) {
      this.reindex(g, chunk);
      guestChunk = g.index.get(hostChunk);
    }
    if (guestChunk === undefined) return false;
    const gpa = guestChunk * chunk + (hpa - hostChunk * chunk);
    if (g.memory.isShared(gpa - (gpa % PAGE_SIZE))) return false;
    out.owner = owner;
    out.gpa = gpa;
    return true;
  }

  /** Rebuilds a guest's host-chunk → guest-chunk index from its backing (run only when the backing grew). */
  private reindex(g: { memory: GuestMemory; index: Map<number, number>; indexedBytes: number }, chunk: number): void {
    const m = g.memory;
    g.index.clear();
    for (let c = Math.floor(m.base / chunk); c * chunk < m.end; c++) {
      const hpa = m.backingOf(c * chunk);
      if (hpa !== undefined) g.index.set(Math.floor(hpa / chunk), c);
    }
    g.indexedBytes = m.backedBytes;
  }
}
