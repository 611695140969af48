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
  private readonly guests = new Map<OwnerId, { memory: GuestMemory; holders: number }>();

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
    this.guests.set(memory.owner, { memory, holders: 1 });
  }

  /** One holder lets go; the last takes the guest out of the map (its pages are reclaimed as shared). */
  withdraw(memory: GuestMemory): void {
    const g = this.guests.get(memory.owner);
    if (g === undefined || --g.holders > 0) return;
    this.guests.delete(memory.owner);
  }

  /**
   * Fills `out` and returns true when the host page holding `hpa` is private to a confidential guest; false for a
   * shared page, a page of a guest that is not confidential, or host memory. Allocates nothing: the guest memory's
   * own reverse map (proportional to its backing runs, not its size) answers which guest address it backs.
   */
  privateOwner(hpa: number, out: PrivateAssignment): boolean {
    if (this.guests.size === 0) return false;
    const owner = this.host.ownerOf(hpa);
    if (owner === undefined) return false;
    const g = this.guests.get(owner);
    if (g === undefined) return false;
    const gpa = g.memory.guestAddressOf(hpa);
    if (gpa === undefined) return false;
    if (g.memory.isShared(gpa - (gpa % PAGE_SIZE))) return false;
    out.owner = owner;
    out.gpa = gpa;
    return true;
  }
}
