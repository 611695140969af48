import { err, Errno, HwptAllocFlag, ok, type DmaDevice, type IommuError, type Result, type ShadowReporter } from "@viommu/core";
import { dteGcr3Root, dteProblem, DTE_BYTES } from "../format/device-table-entry.js";
import { exclusionAppliesTo } from "../format/exclusion-registers.js";
import { devTabHardwareErrorEvent, illegalDteEvent } from "../format/fault-event.js";
import { encodeHwptAmdGuest, IOMMU_HWPT_DATA_AMD_GUEST } from "../format/iommufd-uapi.js";
import type { AmdViDeviceOptions } from "./amd-vi-device.js";
import type { DeviceTableLocation } from "./guest-dte-walker.js";
import { emptyReport, ShadowSpaces, type ShadowSource, type ShadowSpace } from "./shadow-spaces.js";

/** A passthrough device as the VMM tracks it. */
export interface AssignedDevice {
  readonly device: DmaDevice;
  readonly devId: number;
  readonly guestRid: number;
  /** The nested HWPT allocated from its DTE (nested mode). */
  hwptId: number | undefined;
  /** The DTE last applied, so an INVALIDATE_DEVTAB_ENTRY of an unchanged DTE costs nothing. */
  lastDte: string | undefined;
  /** The shadow space it is attached to (shadow mode). */
  shadow: ShadowSpace | undefined;
  /** What it is attached to now (an IOAS or HWPT id), undefined when blocked. */
  attachedTo: number | undefined;
}

export interface DeviceEntryPorts {
  viommuId(): number | undefined;
  /** The fault queue nested HWPTs of devices with DTE.PPR are allocated with (page requests), if any. */
  faultId(): number | undefined;
  logEvent(record: Uint32Array): void;
  /** Where the VMM reports what the host refused on the guest's behalf. */
  readonly reporter: ShadowReporter;
}

const UNTRANSLATED = "untranslated";

/**
 * What a guest DTE means for a passthrough device's host attachment, applied when the guest invalidates the
 * DTE (and when translation is switched on or off):
 * - translation off (IommuEn clear, IR-only mode) or V = 0: DMA passes untranslated, i.e. stage 2 alone
 *   (nested, IR-only: the parent HWPT; shadow: the guest-RAM IOAS);
 * - a malformed DTE: blocked, ILLEGAL_DEV_TABLE_ENTRY logged; an unreadable one: blocked,
 *   DEV_TAB_HARDWARE_ERROR; TV = 0, or Mode 0 without IR and IW: blocked;
 * - nested: GV → a nested HWPT from the guest DTE (IOMMU_HWPT_DATA_AMD_GUEST) on the vIOMMU, with the VMM's
 *   fault queue when the DTE has PPR set (the device's page requests are the guest's); Mode ≠ 0 is
 *   refused as QEMU does when host translation is not offered (HATS = 3); Mode 0 with IR and IW → stage 2;
 * - shadow: Mode 1–6 → a mirror of the v1 table; GV with GIoV → a mirror of PASID 0's v2 table; Mode 0
 *   with IR and IW → the guest-RAM IOAS. A mirror cannot express partial identity permissions or v2 over v1,
 *   so those DTEs block the device. An exclusion range that applies to the device is an identity window in
 *   its mirror;
 * - nested: an exclusion range that applies to a device on a nested domain cannot be honoured (the host
 *   walks the guest's tables), so that DTE is refused as below.
 *
 * What the host refuses is never silent. A nested HWPT or an attachment the host refuses leaves the device
 * blocked, writes "configuration-refused" to the host log and logs ILLEGAL_DEV_TABLE_ENTRY for the guest (the
 * hardware's answer to a DTE it cannot use). A new shadow space whose mappings the back end refused stays
 * attached with what was installed (the mirror logged "shadow-map-refused"), and `refresh` returns the error
 * so that the command that asked for it can fail.
 */
export class DeviceEntryHandler {
  readonly shadows: ShadowSpaces;
  private readonly dte = new Uint32Array(8);

  constructor(
    private readonly options: AmdViDeviceOptions,
    private readonly ports: DeviceEntryPorts,
  ) {
    this.shadows = new ShadowSpaces(options.iommufd, options.vm.memory, options.shadowBackend ?? "iommufd", options.dmaEntryLimit, ports.reporter);
  }

  get shadowMappings(): number {
    return this.shadows.mappings;
  }

  private get ctx(): AmdViDeviceOptions["iommufd"] {
    return this.options.iommufd;
  }

  refresh(a: AssignedDevice, translationOn: boolean, table: DeviceTableLocation): Result<void> {
    const at = table.base + a.guestRid * DTE_BYTES;
    if (!translationOn) return this.untranslated(a, at);
    const memory = this.options.vm.memory;
    if (!(a.guestRid < table.entries)) return this.refuse(a, `beyond:${table.base}:${table.entries}`, illegalDteEvent(a.guestRid, at, false));
    if (!memory.hostReadable(at, DTE_BYTES)) return this.refuse(a, `unreadable:${at}`, devTabHardwareErrorEvent(a.guestRid, at, false, false));
    const w = memory.readWords(at, this.dte);
    const ex = table.exclusion !== undefined && exclusionAppliesTo(table.exclusion, w[3]!) ? { base: table.exclusion.base, limit: table.exclusion.limit } : undefined;
    // The exclusion range that applies is part of what the DTE means for the device.
    const key = Array.from(w, (x) => x.toString(16)).join(":") + (ex === undefined ? "" : `|${ex.base}-${ex.limit}`);
    if (key === a.lastDte) return ok();
    if ((w[0]! & 1) === 0) return this.untranslated(a, at);
    if (dteProblem(w) !== undefined) return this.refuse(a, key, illegalDteEvent(a.guestRid, at, false));
    a.lastDte = key;
    if ((w[0]! & 2) === 0) return this.block(a);
    const mode = (w[0]! >>> 9) & 7;
    const gv = ((w[1]! >>> 23) & 1) === 1;
    const ir = ((w[1]! >>> 29) & 1) === 1;
    const iw = ((w[1]! >>> 30) & 1) === 1;
    if (this.options.mode === "nested") {
      if (mode !== 0) return this.refuse(a, undefined, illegalDteEvent(a.guestRid, at, false));
      if (!gv && ir && iw) return this.attachTo(a, this.options.parentHwptId, at);
      if (!gv && !ir && !iw) return this.block(a);
      // The host walks the guest's tables itself and has no exclusion range for them: a DTE that needs one
      // cannot be given to it as written.
      if (ex !== undefined) return this.configurationRefused(a, at, "exclusion range over a nested domain", { errno: "EOPNOTSUPP", code: Errno.EOPNOTSUPP, message: "the host's nested translation has no guest exclusion range" });
      return this.nested(a, w, at);
    }
    if (gv) {
      const giov = ((w[1]! >>> 22) & 1) === 1;
      if (!giov || mode !== 0) return this.block(a);
      const root = this.pasidZeroRoot(w);
      if (root === undefined) return this.block(a);
      return this.shadow(a, { kind: "v2", domainId: w[2]! & 0xffff, root, levels: ((w[5]! >>> 22) & 3) === 1 ? 5 : 4, exclusion: ex }, at);
    }
    if (mode === 0) return ir && iw ? this.attachTo(a, this.options.ioasId, at) : this.block(a);
    const root = ((w[0]! & 0xfffff000) >>> 0) + (w[1]! & 0xfffff) * 0x1_0000_0000;
    return this.shadow(a, { kind: "v1", domainId: w[2]! & 0xffff, root, levels: mode, exclusion: ex }, at);
  }

  /** The v2 root of PASID 0 from the device's GCR3 table (GLX + 1 levels), or undefined. */
  private pasidZeroRoot(w: Uint32Array): number | undefined {
    const memory = this.options.vm.memory;
    let table = dteGcr3Root(w);
    const entry = new Uint32Array(2);
    for (let level = (w[1]! >>> 24) & 3; level >= 0; level--) {
      if (!memory.hostReadable(table, 8)) return undefined;
      memory.read64Halves(table, entry);
      if ((entry[0]! & 1) === 0) return undefined;
      table = ((entry[0]! & 0xfffff000) >>> 0) + (entry[1]! & 0xfffff) * 0x1_0000_0000;
    }
    return table;
  }

  private untranslated(a: AssignedDevice, at: number): Result<void> {
    a.lastDte = UNTRANSLATED;
    return this.attachTo(a, this.options.mode === "shadow" ? this.options.ioasId : this.options.parentHwptId, at);
  }

  private attachTo(a: AssignedDevice, ptId: number, at: number): Result<void> {
    this.attach(a, ptId, at);
    return ok();
  }

  /** Blocks the device and logs why, once per DTE value (`key` undefined: the caller already recorded it). */
  private refuse(a: AssignedDevice, key: string | undefined, event: Uint32Array): Result<void> {
    if (key !== undefined) {
      if (a.lastDte === key) return ok();
      a.lastDte = key;
    }
    this.ports.logEvent(event);
    return this.block(a);
  }

  private nested(a: AssignedDevice, w: Uint32Array, at: number): Result<void> {
    const viommuId = this.ports.viommuId();
    if (viommuId === undefined) return this.block(a);
    // DTE.PPR: the device's page requests reach the guest, through a fault queue on its nested HWPT.
    const faultId = (w[1]! >>> 20) & 1 ? this.ports.faultId() : undefined;
    const flags = faultId === undefined ? 0 : HwptAllocFlag.FAULT_ID_VALID;
    const hwpt = this.ctx.hwptAlloc({ flags, faultId, devId: a.devId, ptId: viommuId, data: { type: IOMMU_HWPT_DATA_AMD_GUEST, bytes: encodeHwptAmdGuest(w) } });
    if (!hwpt.ok) return this.configurationRefused(a, at, "nested HWPT", hwpt.error);
    const previous = a.hwptId;
    if (!this.attach(a, hwpt.value, at, { keepHwpt: true })) {
      this.destroy(hwpt.value, "refused nested HWPT");
      return ok();
    }
    a.hwptId = hwpt.value;
    if (previous !== undefined) this.destroy(previous, "previous nested HWPT");
    return ok();
  }

  private shadow(a: AssignedDevice, source: ShadowSource, at: number): Result<void> {
    const report = emptyReport();
    const space = this.shadows.spaceFor(source, report);
    if (!space.ok) return this.configurationRefused(a, at, "shadow IOAS", space.error);
    if (!this.attach(a, space.value.mirror.backend.ioasId, at, { space: space.value })) {
      this.shadows.releaseIfUnused(space.value);
      return ok();
    }
    if (report.firstError !== undefined) return err(report.firstError.errno, `${report.refused} shadow mapping(s) of DomainID ${source.domainId} refused: ${report.firstError.message}`);
    return ok();
  }

  /** The host refused what the guest's DTE asks for: the device stays blocked, and both sides are told. */
  private configurationRefused(a: AssignedDevice, at: number, what: string, error: IommuError): Result<void> {
    const { log, vm, source } = this.ports.reporter;
    log.record({ vm, source, kind: "configuration-refused", error, message: `${what} for guest DeviceID 0x${a.guestRid.toString(16)} refused: ${error.errno} ${error.message}` });
    this.ports.logEvent(illegalDteEvent(a.guestRid, at, false));
    this.block(a);
    return ok();
  }

  /**
   * Attaches to `ptId`, dropping what the previous attachment held (an old nested HWPT, a shadow space).
   * False when the host refused: the device is then blocked and the refusal reported.
   */
  private attach(a: AssignedDevice, ptId: number, at: number, keep: { keepHwpt?: boolean; space?: ShadowSpace } = {}): boolean {
    const { keepHwpt = false, space } = keep;
    const r = this.ctx.attach(a.devId, ptId);
    if (!r.ok) {
      this.configurationRefused(a, at, `attachment to object ${ptId}`, r.error);
      return false;
    }
    a.attachedTo = ptId;
    if (!keepHwpt && a.hwptId !== undefined) {
      this.destroy(a.hwptId, "nested HWPT");
      a.hwptId = undefined;
    }
    const old = a.shadow;
    a.shadow = space;
    if (space !== undefined) space.devices.add(a.guestRid);
    if (old !== undefined && old !== space) {
      old.devices.delete(a.guestRid);
      this.shadows.releaseIfUnused(old);
    }
    return true;
  }

  /** Destroys an iommufd object the VMM no longer needs; one the host keeps is a leak the operator is told of. */
  private destroy(id: number, what: string): void {
    const r = this.ctx.destroy(id);
    if (r.ok) return;
    const { log, vm, source } = this.ports.reporter;
    log.record({ vm, source, kind: "other", error: r.error, message: `${what} ${id} not destroyed: ${r.error.errno} ${r.error.message}` });
  }

  /** Blocks the device's DMA (detached) and frees what its attachment held. */
  block(a: AssignedDevice): Result<void> {
    if (a.attachedTo !== undefined) this.ctx.detach(a.devId);
    a.attachedTo = undefined;
    if (a.hwptId !== undefined) {
      this.destroy(a.hwptId, "nested HWPT");
      a.hwptId = undefined;
    }
    if (a.shadow !== undefined) {
      a.shadow.devices.delete(a.guestRid);
      this.shadows.releaseIfUnused(a.shadow);
      a.shadow = undefined;
    }
    return ok();
  }

  release(a: AssignedDevice): void {
    this.block(a);
    a.lastDte = undefined;
  }
}
