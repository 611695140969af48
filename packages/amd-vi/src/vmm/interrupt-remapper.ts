import type { GuestMemory, InterruptFault, MsiMessage, RemappedInterrupt } from "@viommu/core";
import { dteProblem, DTE_BYTES, IntCtl } from "../format/device-table-entry.js";
import { EventCode, eventName } from "../format/event-log-entry.js";
import { devTabHardwareErrorEvent, illegalDteEvent, interruptFaultEvent, irtHardwareErrorEvent } from "../format/fault-event.js";
import { IRTE128_BYTES } from "../format/irte128.js";
import { IRTE32_BYTES } from "../format/irte32.js";
import { classifyMsi, irteAddress, msiDeliveryMode, MsiAction, msiIrteIndex } from "../format/msi-remap.js";
import type { DeviceTableLocation } from "./guest-dte-walker.js";

/** The Control bits that shape remapping. */
export interface RemapSettings {
  /** Control.IommuEn: off, interrupts pass as written. */
  readonly enabled: boolean;
  /** Control.GAEn: 128-bit IRTEs. */
  readonly ga: boolean;
  /** Control.XTEn: 32-bit destinations in 128-bit IRTEs. */
  readonly xt: boolean;
  /** Control.NumIntRemapMode = 1: 2048 interrupts, remapped directly when the MSI address DM bit is set. */
  readonly twoK: boolean;
}

/** A remapping outcome: the interrupt, or the fault with the event the IOMMU logs (none when suppressed). */
export type RemapOutcome =
  | { readonly ok: true; readonly irq: RemappedInterrupt }
  | { readonly ok: false; readonly fault: InterruptFault; readonly event: Uint32Array | undefined };

function compatible(msi: MsiMessage): RemapOutcome {
  return {
    ok: true,
    irq: {
      vector: msi.data & 0xff,
      destination: (msi.address >>> 12) & 0xff,
      destinationMode: (msi.address & 4) !== 0 ? "logical" : "physical",
      deliveryMode: msiDeliveryMode(msi.data),
      trigger: (msi.data & 0x8000) !== 0 ? "level" : "edge",
    },
  };
}

function refused(code: number, event: Uint32Array | undefined, index?: number): RemapOutcome {
  return { ok: false, fault: { code, name: eventName(code), index }, event };
}

/**
 * Interrupt remapping as the IOMMU does it for an MSI from `deviceId` (spec x86.md B5): the MSI selects a
 * delivery mode and an IRTE index; the DTE decides (IV clear: the MSI passes; IntCtl 0 aborts, 1 passes,
 * 2 remaps, 3 is reserved; NMI/INIT/ExtINT pass only with the DTE's pass bits); the IRTE (32-bit, or 128-bit
 * under GAEn, with 32-bit x2APIC destinations under XTEn) gives vector and destination. Every guest structure
 * is read only where the host may read it. Refusals are IO_PAGE_FAULT with I set (SupIOPF silences an
 * invalid entry), ILLEGAL_DEV_TABLE_ENTRY for a malformed DTE, and the hardware-error events for
 * unreadable tables. Nothing here throws, whatever the tables hold.
 */
export class InterruptRemapper {
  private readonly dte = new Uint32Array(8);
  private readonly irte = new Uint32Array(4);
  private readonly freshIrte = new Uint32Array(4);
  /**
   * The interrupt remapping table entries the IOMMU has read, by DeviceID × 2048 + index (the spec lets the
   * IOMMU cache IRTEs; software changing one issues INVALIDATE_INTERRUPT_TABLE for the DeviceID, as Linux's
   * iommu_flush_irt_and_complete does after every IRTE update). Only entries with RemapEn set are kept.
   */
  private readonly cache = new Map<number, Uint32Array>();
  /**
   * The stale-translation audit (VmmDeviceOptions.audit): called on each cache hit with what the cached IRTE gave
   * and what the IRTE in guest memory gives now.
   */
  auditHit: ((deviceId: number, index: number, cached: RemapOutcome, now: RemapOutcome) => void) | undefined;

  constructor(private readonly memory: GuestMemory) {}

  /** INVALIDATE_INTERRUPT_TABLE (and a DTE change, which may move the table): the device's cached IRTEs go. */
  invalidateDevice(deviceId: number): void {
    if (this.cache.size === 0) return;
    const first = deviceId * 2048;
    for (const key of this.cache.keys()) if (key >= first && key < first + 2048) this.cache.delete(key);
  }

  /** INVALIDATE_IOMMU_ALL, a new device table or a Control change (GAEn, XTEn, NumIntRemapMode): nothing cached stays. */
  invalidateAll(): void {
    this.cache.clear();
  }

  /** IRTEs cached now (tests and the audit). */
  get cachedEntries(): number {
    return this.cache.size;
  }

  /**
   * How many IRTEs the device's DTE gives it (2^IntTabLen with IV and IntCtl = remap), 0 when remapping is off or
   * the DTE cannot be read. Nothing is logged.
   */
  tableEntries(table: DeviceTableLocation, settings: RemapSettings, deviceId: number): number {
    if (!settings.enabled || !(Number.isInteger(deviceId) && deviceId >= 0 && deviceId < table.entries)) return 0;
    const at = table.base + deviceId * DTE_BYTES;
    if (!this.memory.hostReadable(at, DTE_BYTES)) return 0;
    const w = this.memory.readWords(at, this.dte);
    if ((w[4]! & 1) === 0 || ((w[5]! >>> 28) & 3) !== IntCtl.Remap) return 0;
    return 2 ** ((w[4]! >>> 1) & 0xf);
  }

  remap(table: DeviceTableLocation, settings: RemapSettings, deviceId: number, msi: MsiMessage): RemapOutcome {
    if (!settings.enabled) return compatible(msi);
    const action = classifyMsi(msi.address >>> 0, Math.floor(msi.address / 2 ** 32), msi.data, settings.twoK);
    if (action === MsiAction.NotInterrupt) return refused(EventCode.IO_PAGE_FAULT, interruptFaultEvent(deviceId, msi.address, false, false));
    const at = table.base + deviceId * DTE_BYTES;
    if (!(Number.isInteger(deviceId) && deviceId >= 0 && deviceId < table.entries)) return refused(EventCode.ILLEGAL_DEV_TABLE_ENTRY, illegalDteEvent(deviceId, msi.address, true, true));
    if (!this.memory.hostReadable(at, DTE_BYTES)) return refused(EventCode.DEV_TAB_HARDWARE_ERROR, devTabHardwareErrorEvent(deviceId, at, true, true));
    const w = this.memory.readWords(at, this.dte);
    if ((w[4]! & 1) === 0) return compatible(msi);
    if (dteProblem(w) !== undefined && (w[0]! & 1) === 1) return refused(EventCode.ILLEGAL_DEV_TABLE_ENTRY, illegalDteEvent(deviceId, msi.address, true, true));
    const hi = w[5]!;
    switch (action) {
      case MsiAction.PassIfNmiPass:
        return (hi >>> 26) & 1 ? compatible(msi) : refused(EventCode.IO_PAGE_FAULT, interruptFaultEvent(deviceId, msi.address, false, false));
      case MsiAction.PassIfInitPass:
        return (hi >>> 24) & 1 ? compatible(msi) : refused(EventCode.IO_PAGE_FAULT, interruptFaultEvent(deviceId, msi.address, false, false));
      case MsiAction.PassIfEIntPass:
        return (hi >>> 25) & 1 ? compatible(msi) : refused(EventCode.IO_PAGE_FAULT, interruptFaultEvent(deviceId, msi.address, false, false));
      case MsiAction.Invalid:
        return refused(EventCode.IO_PAGE_FAULT, interruptFaultEvent(deviceId, msi.address, false, true));
      default:
        break;
    }
    const intCtl = (hi >>> 28) & 3;
    if (intCtl === IntCtl.Abort) return refused(EventCode.IO_PAGE_FAULT, interruptFaultEvent(deviceId, msi.address, false, false));
    if (intCtl === IntCtl.Forward) return compatible(msi);
    if (intCtl === IntCtl.Reserved) return refused(EventCode.ILLEGAL_DEV_TABLE_ENTRY, illegalDteEvent(deviceId, msi.address, true, true));
    const index = msiIrteIndex(msi.data);
    const intTabLen = (w[4]! >>> 1) & 0xf;
    if (index >= 2 ** intTabLen) return refused(EventCode.IO_PAGE_FAULT, interruptFaultEvent(deviceId, msi.address, false, false), index);
    const root = ((w[4]! & 0xffffffc0) >>> 0) + (hi & 0xfffff) * 0x1_0000_0000;
    const key = deviceId * 2048 + index;
    const cached = this.cache.get(key);
    if (cached !== undefined) {
      const outcome = evaluateIrte(cached, deviceId, msi, index, settings);
      if (this.auditHit !== undefined) this.auditHit(deviceId, index, outcome, this.readIrte(root, index, deviceId, msi, settings, this.freshIrte, false));
      return outcome;
    }
    return this.readIrte(root, index, deviceId, msi, settings, this.irte, true);
  }

  /** Reads the IRTE from the guest's table and evaluates it; `keep`: a valid entry goes into the cache. */
  private readIrte(root: number, index: number, deviceId: number, msi: MsiMessage, settings: RemapSettings, into: Uint32Array, keep: boolean): RemapOutcome {
    const entry = irteAddress(root, index, settings.ga);
    const bytes = settings.ga ? IRTE128_BYTES : IRTE32_BYTES;
    if (!this.memory.hostReadable(entry, bytes)) return refused(EventCode.PAGE_TAB_HARDWARE_ERROR, irtHardwareErrorEvent(deviceId, entry), index);
    into.fill(0);
    const e = this.memory.readWords(entry, settings.ga ? into : into.subarray(0, 1));
    if (keep && (e[0]! & 1) === 1) this.cache.set(deviceId * 2048 + index, into.slice());
    return evaluateIrte(into, deviceId, msi, index, settings);
  }
}

/** What one IRTE (32-bit, or 128-bit under GAEn) makes of an MSI: the interrupt, or IO_PAGE_FAULT (I set). */
function evaluateIrte(e: Uint32Array, deviceId: number, msi: MsiMessage, index: number, settings: RemapSettings): RemapOutcome {
  const lo = e[0]!;
  if ((lo & 1) === 0) return refused(EventCode.IO_PAGE_FAULT, lo & 2 ? undefined : interruptFaultEvent(deviceId, msi.address, false, false), index);
  const intType = (lo >>> 2) & 7;
  // GuestMode (vAPIC posting, GAMSup) is not offered, and only fixed/arbitrated delivery is remapped.
  if ((lo & 0x80) !== 0 || intType > 1) return refused(EventCode.IO_PAGE_FAULT, interruptFaultEvent(deviceId, msi.address, true, true), index);
  const logical = (lo & 0x40) !== 0;
  let vector: number;
  let destination: number;
  if (settings.ga) {
    vector = e[2]! & 0xff;
    destination = settings.xt ? (e[3]! >>> 24) * 2 ** 24 + (lo >>> 8) : (lo >>> 8) & 0xff;
  } else {
    vector = (lo >>> 16) & 0xff;
    destination = (lo >>> 8) & 0xff;
  }
  return { ok: true, irq: { vector, destination, destinationMode: logical ? "logical" : "physical", deliveryMode: intType, trigger: "edge" } };
}
