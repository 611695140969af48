import { ok, type Result } from "../errors/errno.js";
import { IdAllocator } from "./id-allocator.js";

/**
 * The host-wide space of cache tags (VMIDs, and the per-domain tags some vendors take from it): an id is
 * reused only after every holder let it go. A domain holds its tag from allocation to destruction; the core
 * holds it again for every device attached to the domain. When the last holder releases, the tag's
 * finalizers run (a domain frees its table and tells the caches that used it) and only then does the id go
 * back to the pool. So an IOTLB entry tagged with an id can only be hit by the domain that created it: the id
 * cannot name another domain while any domain, attachment or cached entry still carries it.
 */
export class VmidSpace {
  private readonly ids: IdAllocator;
  private readonly refs = new Map<number, number>();
  private readonly finalizers = new Map<number, (() => void)[]>();

  constructor(name: string, min: number, max: number) {
    this.ids = new IdAllocator(name, min, max);
  }

  get name(): string {
    return this.ids.name;
  }

  /** A free id, held once by the caller. ENOSPC when every id is held. */
  allocate(): Result<number> {
    const r = this.ids.allocate();
    if (r.ok) this.refs.set(r.value, 1);
    return r;
  }

  /** Takes a specific free id (a restored VMID), held once. EEXIST when held, EINVAL outside the range. */
  claim(id: number): Result<number> {
    const r = this.ids.claim(id);
    if (r.ok) this.refs.set(id, 1);
    return r;
  }

  /** One more holder of a live id (an attachment of a device to the domain tagged with it). */
  retain(id: number): Result<void> {
    const n = this.refs.get(id);
    if (n === undefined) return ok(); // an id the space never gave out (a vendor's private tag): nothing to hold
    this.refs.set(id, n + 1);
    return ok();
  }

  /** Runs `finalizer` when the id is finally freed (before the id can be allocated again). */
  onFree(id: number, finalizer: () => void): void {
    let list = this.finalizers.get(id);
    if (list === undefined) {
      list = [];
      this.finalizers.set(id, list);
    }
    list.push(finalizer);
  }

  /** One holder lets go; the last one runs the finalizers and frees the id. */
  release(id: number): void {
    const n = this.refs.get(id);
    if (n === undefined) return;
    if (n > 1) {
      this.refs.set(id, n - 1);
      return;
    }
    this.refs.delete(id);
    const list = this.finalizers.get(id);
    this.finalizers.delete(id);
    if (list !== undefined) for (const f of list) f();
    this.ids.release(id);
  }

  /** How many holders an id has (0 when free). */
  holders(id: number): number {
    return this.refs.get(id) ?? 0;
  }

  isUsed(id: number): boolean {
    return this.refs.has(id);
  }

  get inUse(): number {
    return this.refs.size;
  }
}
