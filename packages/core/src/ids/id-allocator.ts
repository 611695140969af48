import { err, ok, type Result } from "../errors/errno.js";

/**
 * Allocates integer ids in [min, max] (VMIDs, domain ids, ASIDs): lowest free first, so ids are reused
 * predictably. Exhaustion is a defined error (ENOSPC), not an exception.
 */
export class IdAllocator {
  private readonly used = new Set<number>();
  private readonly freed: number[] = [];
  private next: number;

  constructor(
    readonly name: string,
    readonly min: number,
    readonly max: number,
  ) {
    if (!Number.isSafeInteger(min) || !Number.isSafeInteger(max) || min > max) throw new RangeError(`${name}: bad id range [${min}, ${max}]`);
    this.next = min;
  }

  allocate(): Result<number> {
    let id: number | undefined;
    if (this.freed.length > 0) {
      let best = 0;
      for (let i = 1; i < this.freed.length; i++) if (this.freed[i]! < this.freed[best]!) best = i;
      id = this.freed.splice(best, 1)[0];
    } else if (this.next <= this.max) {
      id = this.next++;
    }
    if (id === undefined) return err("ENOSPC", `${this.name}: all ${this.max - this.min + 1} ids in use`);
    this.used.add(id);
    return ok(id);
  }

  /** Claims a specific id (a guest-chosen domain id, a restored VMID). EEXIST when taken, EINVAL outside the range. */
  claim(id: number): Result<number> {
    if (!Number.isSafeInteger(id) || id < this.min || id > this.max) return err("EINVAL", `${this.name}: ${id} outside [${this.min}, ${this.max}]`);
    if (this.used.has(id)) return err("EEXIST", `${this.name}: ${id} in use`);
    this.used.add(id);
    const at = this.freed.indexOf(id);
    if (at >= 0) this.freed.splice(at, 1);
    while (this.next <= id) {
      if (this.next !== id && !this.used.has(this.next)) this.freed.push(this.next);
      this.next++;
    }
    return ok(id);
  }

  release(id: number): void {
    if (this.used.delete(id)) this.freed.push(id);
  }

  isUsed(id: number): boolean {
    return this.used.has(id);
  }

  get inUse(): number {
    return this.used.size;
  }
}
