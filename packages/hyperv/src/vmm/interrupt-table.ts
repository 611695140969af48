import type { InterruptResult, MsiMessage } from "@viommu/core";

/**
 * Why the hypervisor dropped a device MSI. MODEL-DEFINED codes: Hyper-V reports blocked interrupts to no one
 * (there is no pvIOMMU fault record), so these name the model's reasons for the host-side result only.
 */
export const HvInterruptBlock = {
  /** The message is not an x86 MSI (address outside 0xFEExxxxx). */
  NOT_AN_MSI: 1,
  /** No remapping entry answers to this message (never mapped, or unmapped). */
  NO_ENTRY: 2,
  /** The entry belongs to another device. */
  SOURCE_MISMATCH: 3,
} as const;

const blockNames: Record<number, string> = { 1: "NOT_AN_MSI", 2: "NO_ENTRY", 3: "SOURCE_MISMATCH" };

/** Where a remapped interrupt goes in the guest: the vector and virtual processors of hv_device_interrupt_target. */
export interface InterruptTarget {
  readonly vector: number;
  /** VP indexes (the model's VP index is the vCPU's APIC id), ascending, at least one. */
  readonly vps: readonly number[];
  /** HV_DEVICE_INTERRUPT_TARGET_MULTICAST: every VP of the set receives it; otherwise the first does. */
  readonly multicast: boolean;
  readonly level: boolean;
}

interface Entry {
  readonly rid: number;
  target: InterruptTarget;
}

/** Host vectors the model hands out (below 0x30 and above 0xEF are the host's own). */
const FIRST_VECTOR = 0x30;
const VECTORS = 0xf0 - FIRST_VECTOR;
const HOST_CPUS = 256;
/** Entries are numbered by the (host CPU, host vector) pair their MSI names: slots [0, INTERRUPT_SLOTS). */
export const INTERRUPT_SLOTS = VECTORS * HOST_CPUS;
const SLOTS = INTERRUPT_SLOTS;

/** Remapping entries per partition, so a guest cannot grow the table without bound. */
export const MAX_INTERRUPT_ENTRIES = 4096;

/**
 * The hypervisor's device-interrupt table for one partition. HVCALL_MAP_DEVICE_INTERRUPT allocates an entry and
 * answers the MSI the device must write: a physical (host CPU, host vector) pair in compatibility format, which
 * identifies the entry; the hypervisor forwards that physical interrupt to the guest vector and VP the entry
 * names, so a guest with more than 255 vCPUs is reachable although an MSI's destination id has 8 bits.
 * RETARGET moves an entry, UNMAP frees it; an MSI through a freed entry is dropped.
 */
export class InterruptTable {
  private readonly entries = new Map<number, Entry>();
  private cursor = 0;

  get size(): number {
    return this.entries.size;
  }

  /** A new entry for device `rid`; undefined when the table is full. */
  map(rid: number, target: InterruptTarget): MsiMessage | undefined {
    if (this.entries.size >= MAX_INTERRUPT_ENTRIES) return undefined;
    for (let tries = 0; tries < SLOTS; tries++) {
      const slot = this.cursor;
      this.cursor = (this.cursor + 1) % SLOTS;
      if (this.entries.has(slot)) continue;
      this.entries.set(slot, { rid, target });
      return messageOf(slot, target.level);
    }
    return undefined;
  }

  /** The entry `msi` names if it belongs to device `rid`. */
  find(rid: number, msi: MsiMessage): number | undefined {
    const slot = slotOf(msi);
    return slot !== undefined && this.entries.get(slot)?.rid === rid ? slot : undefined;
  }

  retarget(slot: number, target: InterruptTarget): void {
    const e = this.entries.get(slot);
    if (e !== undefined) e.target = target;
  }

  unmap(slot: number): void {
    this.entries.delete(slot);
  }

  /** Where an MSI device `rid` wrote goes, or why it is dropped. Never throws for any message. */
  remap(rid: number, msi: MsiMessage): InterruptResult & { readonly vps?: readonly number[] } {
    if (!isMsiAddress(msi.address)) return blocked(HvInterruptBlock.NOT_AN_MSI);
    const slot = slotOf(msi);
    const e = slot === undefined ? undefined : this.entries.get(slot);
    if (e === undefined) return blocked(HvInterruptBlock.NO_ENTRY, slot);
    if (e.rid !== rid) return blocked(HvInterruptBlock.SOURCE_MISMATCH, slot);
    const t = e.target;
    return {
      ok: true,
      irq: { vector: t.vector, destination: t.vps[0]!, destinationMode: "physical", deliveryMode: 0, trigger: t.level ? "level" : "edge" },
      vps: t.multicast ? t.vps : t.vps.slice(0, 1),
    };
  }

  /** Every entry, for save, in slot order. */
  list(): { slot: number; rid: number; target: InterruptTarget }[] {
    return [...this.entries].sort(([a], [b]) => a - b).map(([slot, e]) => ({ slot, rid: e.rid, target: e.target }));
  }

  /**
   * Restores one saved entry. The caller (the partition's restore) has checked the whole saved table first: the
   * slot is below INTERRUPT_SLOTS and free, the table stays within MAX_INTERRUPT_ENTRIES.
   */
  restore(slot: number, rid: number, target: InterruptTarget): void {
    this.entries.set(slot, { rid, target });
  }

  /** A device leaves the partition: its entries go, so a device later assigned at its id inherits none. */
  dropDevice(rid: number): void {
    for (const [slot, e] of [...this.entries]) if (e.rid === rid) this.entries.delete(slot);
  }

  clear(): void {
    this.entries.clear();
  }
}

function messageOf(slot: number, level: boolean): MsiMessage {
  const cpu = Math.floor(slot / VECTORS);
  const vector = FIRST_VECTOR + (slot % VECTORS);
  // Fixed delivery; a level-triggered message also asserts (data bits 15 and 14).
  return { address: (0xfee00000 | (cpu << 12)) >>> 0, data: vector | (level ? 0xc000 : 0) };
}

function isMsiAddress(address: number): boolean {
  return Number.isInteger(address) && address >= 0 && address <= 0xffffffff && address >>> 20 === 0xfee;
}

function slotOf(msi: MsiMessage): number | undefined {
  if (!isMsiAddress(msi.address) || !Number.isInteger(msi.data)) return undefined;
  const vector = msi.data & 0xff;
  if (vector < FIRST_VECTOR || vector >= FIRST_VECTOR + VECTORS) return undefined;
  return ((msi.address >>> 12) & 0xff) * VECTORS + (vector - FIRST_VECTOR);
}

function blocked(code: number, index?: number): InterruptResult {
  return { ok: false, fault: { code, name: blockNames[code]!, index } };
}
