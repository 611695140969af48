import { err, ok, type Result } from "../errors/errno.js";
import type { IommufdObjectType } from "./uapi.js";

/**
 * An iommufd object. `users` counts long-term references: the table's own (1) plus one per dependant
 * (an attached device, a child HWPT, a vDEVICE on a vIOMMU, an open file…). DESTROY succeeds only when the
 * table's reference is the last.
 */
export abstract class IommufdObject {
  id = 0;
  users = 1;
  abstract readonly type: IommufdObjectType;

  /** Releases what this object holds (its references on others, driver state). Called once. */
  abstract release(): void;
}

/** A vDEVICE whose device was unbound: its id stays reserved until the context closes; lookups fail. */
const TOMBSTONE = Symbol("tombstone");

/** A reserved id whose object is still being built (invisible to lookups until finalized). */
const RESERVED = Symbol("reserved");

/**
 * The object table of one iommufd context: ids from 1 upward (lowest free first, 31-bit, never 0), lookups by
 * id and type, DESTROY with the busy rule, tombstones, and the close-time sweep.
 */
export class ObjectTable {
  private readonly slots = new Map<number, IommufdObject | typeof TOMBSTONE | typeof RESERVED>();

  /** Reserves the lowest free id for an object under construction. */
  reserve(): Result<number> {
    for (let id = 1; id <= 0x7fffffff; id++) {
      if (!this.slots.has(id)) {
        this.slots.set(id, RESERVED);
        return ok(id);
      }
    }
    return err("ENOSPC", "object ids exhausted");
  }

  /** Makes a reserved id's object visible. */
  finalize<T extends IommufdObject>(id: number, obj: T): T {
    obj.id = id;
    this.slots.set(id, obj);
    return obj;
  }

  /** Frees a reserved id whose construction failed: no id leaks. */
  abort(id: number): void {
    if (this.slots.get(id) === RESERVED) this.slots.delete(id);
  }

  /** Reserves and finalizes in one step. */
  add<T extends IommufdObject>(obj: T): Result<T> {
    const id = this.reserve();
    if (!id.ok) return id;
    return ok(this.finalize(id.value, obj));
  }

  /** The object of `id`, of one of `types` (any type when omitted). ENOENT for absent, wrong-typed or tombstoned ids. */
  get<T extends IommufdObject = IommufdObject>(id: number, ...types: IommufdObjectType[]): Result<T> {
    const slot = this.slots.get(id);
    if (slot === undefined || slot === TOMBSTONE || slot === RESERVED) return err("ENOENT", `no object ${id}`);
    if (types.length > 0 && !types.includes(slot.type)) return err("ENOENT", `object ${id} is a ${slot.type}, not ${types.join("/")}`);
    return ok(slot as T);
  }

  /** IOMMU_DESTROY: ENOENT when absent or a tombstone, EBUSY while anything depends on it. */
  destroy(id: number): Result<void> {
    const slot = this.slots.get(id);
    if (slot === undefined || slot === TOMBSTONE || slot === RESERVED) return err("ENOENT", `no object ${id}`);
    if (slot.users !== 1) return err("EBUSY", `${slot.type} ${id} has ${slot.users - 1} dependant(s)`);
    this.remove(slot);
    return ok();
  }

  /** Removes an object regardless of the busy rule (kernel-initiated teardown); optionally leaves a tombstone. */
  remove(obj: IommufdObject, tombstone = false): void {
    if (this.slots.get(obj.id) !== obj) return;
    if (tombstone) this.slots.set(obj.id, TOMBSTONE);
    else this.slots.delete(obj.id);
    obj.release();
  }

  isTombstone(id: number): boolean {
    return this.slots.get(id) === TOMBSTONE;
  }

  /** Live objects, for inspection. */
  objects(): IommufdObject[] {
    return [...this.slots.values()].filter((s): s is IommufdObject => s instanceof IommufdObject);
  }

  /**
   * Close: repeatedly destroys every object nobody depends on until nothing is left, so leaves go first
   * (vEVENTQ before vIOMMU before parent HWPT before IOAS). Returns the objects that could not be freed.
   */
  sweep(isPinnedByOutside: (obj: IommufdObject) => boolean): IommufdObject[] {
    for (const [id, slot] of this.slots) if (slot === TOMBSTONE) this.slots.delete(id);
    let progress = true;
    while (progress) {
      progress = false;
      for (const obj of this.objects()) {
        if (obj.users === 1 && !isPinnedByOutside(obj)) {
          this.remove(obj);
          progress = true;
        }
      }
    }
    return this.objects();
  }
}

export function hold(obj: IommufdObject): void {
  obj.users++;
}

export function drop(obj: IommufdObject): void {
  obj.users--;
}
