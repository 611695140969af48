import {
  createShadowBackend,
  err,
  fail,
  HwptAllocFlag,
  NO_PASID,
  ok,
  U64_MAX,
  type DmaDevice,
  type IommuError,
  type IommufdContext,
  type Result,
  type ShadowReporter,
  type VmmDeviceOptions,
  type VmmStats,
} from "@viommu/core";
import { VtdFaultReason } from "../format/fault-reasons.js";
import {
  encodeVtdS1,
  encodeVtdS1InvalidateInto,
  encodeVtdS1InvalidateAll,
  IOMMU_HWPT_DATA_VTD_S1,
  IOMMU_HWPT_INVALIDATE_DATA_VTD_S1,
  VTD_S1_ADDR_WIDTH_4LEVEL,
  VTD_S1_ADDR_WIDTH_5LEVEL,
  VTD_S1_INVALIDATE_BYTES,
  VtdInvalidateFlag,
  VtdS1Flag,
} from "../format/uapi.js";
import { ContextKind, DeviceContext, type GuestTranslator } from "./guest-translator.js";
import { vtdShadowAdmit } from "./shadow-admission.js";
import { ShadowSpace } from "./shadow-space.js";

/** How the host currently translates one passthrough device. */
type Binding =
  /** Detached: DMA blocked (the guest's entries do not translate, or the host refused them). */
  | { readonly kind: "blocked" }
  /** Attached to the VM's stage-2 parent: DMA untranslated (IOVA = GPA). */
  | { readonly kind: "identity" }
  /** A HWPT_NESTED with the guest's first-level table over the shared parent. */
  | { readonly kind: "nested"; readonly hwptId: number }
  /** Attached to a shadow address space the VMM keeps equal to the guest's table. */
  | { readonly kind: "shadow"; readonly space: ShadowSpace };

/** One translation the host keeps for a device: its requests without PASID (the RID), or one PASID's. */
export interface BindingSlot {
  /** NO_PASID for the RID (the context's RID_PASID entry), else the PASID. */
  readonly pasid: number;
  /** The guest configuration the binding was built from (what the VMM has "cached"). */
  readonly context: DeviceContext;
  binding: Binding;
  /**
   * The fault reason the guest is shown for this slot's DMA while the host refuses the configuration its
   * entries ask for (0 when the host took it): hardware that cannot use an entry reports it as programmed
   * invalidly (0x3 legacy, 0x5B scalable).
   */
  refusedReason: number;
}

/** A passthrough device: its RID slot (the object itself) and a slot per guest PASID the host translates. */
export interface AssignedDevice extends BindingSlot {
  readonly device: DmaDevice;
  readonly devId: number;
  /** Where the guest sees it (changes when the device is renumbered). */
  guestRid: number;
  /** The guest's PASIDs with a present entry that the host attached (nested mode, PASID-capable devices). */
  readonly pasids: Map<number, BindingSlot>;
  /** The last scan found more present PASIDs than the host binds (MAX_PASID_SLOTS). */
  pasidOverflow: boolean;
}

/**
 * PASIDs bound per device at most, so that a guest cannot make the host hold an HWPT for each of its 2^20 PASID
 * entries; present entries beyond are refused (host log) and their DMA faults.
 */
export const MAX_PASID_SLOTS = 64;

const BLOCKED: Binding = { kind: "blocked" };
const IDENTITY: Binding = { kind: "identity" };
/** The context of every device while translation is off (or in interrupt-remapping-only mode). */
const UNTRANSLATED: DeviceContext = untranslatedContext();

/**
 * The host side of the guest's device configuration: for each passthrough device, the iommufd objects that
 * make the host translate as the guest's root/context/PASID entries say, rebuilt when the guest invalidates
 * the caches holding those entries. A guest first-level table is nested (HWPT_NESTED with IOMMU_HWPT_DATA_VTD_S1
 * over the shared parent) in nested mode and shadowed otherwise; a guest second-level table (legacy mode)
 * is always shadowed, since hardware nests only first-level over second-level tables.
 *
 * Every host refusal is written to the host log. A refused configuration blocks the device and is shown to the
 * guest as a fault when the device uses it; a refused invalidation or shadow mapping is returned to the caller,
 * which makes it the guest's invalidation-queue error.
 */
export class DeviceBindings {
  readonly devices = new Map<number, AssignedDevice>();
  private readonly spaces = new Map<string, ShadowSpace>();
  /** The one IOMMU_HWPT_INVALIDATE entry a page-selective invalidation forwards, rewritten each time. */
  private readonly invalidateEntry = new Uint8Array(VTD_S1_INVALIDATE_BYTES);
  translationEnabled = false;
  private readonly scratch = new DeviceContext();
  private readonly found: number[] = [];
  /**
   * The fault queue nested HWPTs of page-request-enabled contexts report to (IOMMU_HWPT_FAULT_ID_VALID), or
   * undefined when the VMM has none: set by the VMM that reads it.
   */
  faultQueue: (() => number | undefined) | undefined;

  constructor(
    private readonly options: VmmDeviceOptions,
    private readonly translator: GuestTranslator,
    private readonly stats: VmmStats,
    private readonly reporter: ShadowReporter,
  ) {}

  private get ctx(): IommufdContext {
    return this.options.iommufd;
  }

  /** Adds a passthrough device at `guestRid` and binds it as the guest's tables say; a refusal is the caller's error. */
  add(device: DmaDevice, devId: number, guestRid: number): Result<AssignedDevice> {
    const a: AssignedDevice = { device, devId, guestRid, pasid: NO_PASID, context: new DeviceContext().fault(0), binding: BLOCKED, refusedReason: 0, pasids: new Map(), pasidOverflow: false };
    this.devices.set(guestRid, a);
    const r = this.rebind(a, a, true, undefined);
    if (!r.ok) {
      this.devices.delete(guestRid);
      this.detach(a, NO_PASID);
      return fail(r);
    }
    this.rescanPasids(a, undefined);
    return ok(a);
  }

  /** Hot-unplug: the device's attachment and whatever the VMM built for it go; ENOENT when nothing is there. */
  remove(guestRid: number): Result<AssignedDevice> {
    const a = this.devices.get(guestRid);
    if (a === undefined) return err("ENOENT", `no device at guest source id 0x${guestRid.toString(16)}`);
    this.devices.delete(guestRid);
    this.dropPasids(a);
    this.detach(a, NO_PASID);
    this.release(a.binding);
    a.binding = BLOCKED;
    a.context.fault(0);
    this.countShadow();
    return ok(a);
  }

  /**
   * Re-addressing: the device at `from` is now at `to`, and its binding is rebuilt from the guest's entries at
   * `to` (blocked until the guest programs one there). ENOENT, EEXIST and EINVAL as `EmulatedIommu` documents.
   */
  renumber(from: number, to: number): Result<IommuError | undefined> {
    if (!isSourceId(to)) return err("EINVAL", `guest requester id ${to} is not a 16-bit source id`);
    const a = this.devices.get(from);
    if (a === undefined) return err("ENOENT", `no device at guest source id 0x${from.toString(16)}`);
    if (from === to) return ok(undefined);
    if (this.devices.has(to)) return err("EEXIST", `guest source id 0x${to.toString(16)} already assigned`);
    this.devices.delete(from);
    a.guestRid = to;
    this.devices.set(to, a);
    const refused: RefusalSink = { first: undefined };
    this.rebind(a, a, true, refused);
    this.rescanPasids(a, refused);
    this.countShadow();
    return ok(refused.first);
  }

  /** The assigned device with physical requester id `requesterId`, if it is one of this unit's. */
  byRequesterId(requesterId: number): AssignedDevice | undefined {
    for (const a of this.devices.values()) if (a.device.requesterId === requesterId && a.device.unit === this.options.unit) return a;
    return undefined;
  }

  /**
   * Re-reads the guest configuration of the devices `which` selects and rebuilds what changed: the RID's
   * translation, and the PASIDs of the devices `rescan` selects (every present entry is re-read, as a context-
   * or a wider-than-one-PASID cache invalidation asks). Returns the first shadow mapping the host refused while doing it (refused
   * configurations are handled here).
   */
  refresh(which: (a: AssignedDevice) => boolean, rescan: (a: AssignedDevice) => boolean = which): IommuError | undefined {
    const refused: RefusalSink = { first: undefined };
    for (const a of this.devices.values()) {
      if (which(a)) this.rebind(a, a, false, refused);
      if (rescan(a)) this.rescanPasids(a, refused);
    }
    this.countShadow();
    return refused.first;
  }

  /**
   * A PASID-selective PASID-cache invalidation (DID, PASID): the RID translation of devices whose RID_PASID
   * entry it names (or that cached a fault) is re-read, and every PASID-capable device's entry for `pasid`.
   */
  refreshPasid(did: number, pasid: number): IommuError | undefined {
    const refused: RefusalSink = { first: undefined };
    for (const a of this.devices.values()) {
      if (a.context.kind === ContextKind.FAULT || (a.context.did === did && a.context.pasid === pasid)) this.rebind(a, a, false, refused);
      if (this.pasidCapable(a)) this.rebindPasid(a, pasid, refused);
    }
    this.countShadow();
    return refused.first;
  }

  /** The slot translating requests of `a` with `pasid` (the RID's for NO_PASID), if the host keeps one. */
  slotOf(a: AssignedDevice, pasid: number): BindingSlot | undefined {
    return pasid === NO_PASID ? a : a.pasids.get(pasid);
  }

  /**
   * Whether the host attaches guest PASIDs of `a`: nested mode (a PASID's first-level table is nested like the
   * RID's; shadowing one address space per PASID is not modelled), translation on, a device with a PASID width.
   */
  private pasidCapable(a: AssignedDevice): boolean {
    return this.options.mode === "nested" && this.translationEnabled && a.device.pasidBits > 0;
  }

  /**
   * Brings the device's PASID slots in line with its guest PASID table: each present entry (PASID 0 aside: the
   * host's RID_PASID) is bound or rebound, slots whose entry is gone are detached. At most MAX_PASID_SLOTS.
   */
  private rescanPasids(a: AssignedDevice, refused: RefusalSink | undefined): void {
    if (!this.pasidCapable(a) || !a.context.scalable || !a.context.paside) {
      this.dropPasids(a);
      return;
    }
    const found = this.found;
    // One more than the slots, and PASID 0 besides: enough to tell whether the guest has more than the host binds.
    this.translator.presentPasids(a.context, 2 ** Math.min(a.device.pasidBits, 20), MAX_PASID_SLOTS + 1, found);
    const present = new Set(found.filter((p) => p !== 0).slice(0, MAX_PASID_SLOTS));
    a.pasidOverflow = found.filter((p) => p !== 0).length > MAX_PASID_SLOTS;
    if (a.pasidOverflow) {
      const refusal = err("ENOSPC", `guest source id 0x${a.guestRid.toString(16)} has more than ${MAX_PASID_SLOTS} present PASID entries: the host binds the first ${MAX_PASID_SLOTS}`);
      if (!refusal.ok) this.log("configuration-refused", refusal.error, refusal.error.message);
    }
    for (const p of [...a.pasids.keys()]) if (!present.has(p)) this.rebindPasid(a, p, refused);
    for (const p of present) this.rebindPasid(a, p, refused);
  }

  /** Re-reads one PASID entry of `a` and makes its slot (or its absence) match. */
  private rebindPasid(a: AssignedDevice, pasid: number, refused: RefusalSink | undefined): void {
    if (pasid === 0 || !Number.isInteger(pasid) || pasid < 0 || pasid > 0xfffff) return;
    let slot = a.pasids.get(pasid);
    if (slot === undefined) {
      if (a.pasids.size >= MAX_PASID_SLOTS) return;
      slot = { pasid, context: new DeviceContext().fault(0), binding: BLOCKED, refusedReason: 0 };
      a.pasids.set(pasid, slot);
    }
    this.rebind(a, slot, false, refused);
    if (slot.binding.kind === "blocked" && slot.refusedReason === 0) a.pasids.delete(pasid);
  }

  /** Detaches and forgets every PASID slot of `a`. */
  private dropPasids(a: AssignedDevice): void {
    for (const slot of a.pasids.values()) {
      this.detach(a, slot.pasid);
      this.release(slot.binding);
    }
    a.pasids.clear();
    a.pasidOverflow = false;
  }

  private target(a: AssignedDevice, pasid: number, next: DeviceContext): "blocked" | "identity" | "nested" | "shadow" {
    if (this.options.mode === "ir-only" || !this.translationEnabled) {
      if (pasid !== NO_PASID) {
        next.fault(0);
        return "blocked";
      }
      next.copyFrom(UNTRANSLATED);
      return "identity";
    }
    this.translator.resolve(a.guestRid, pasid, next);
    switch (next.kind) {
      case ContextKind.FAULT:
        return "blocked";
      case ContextKind.PASS_THROUGH:
        return "identity";
      case ContextKind.FIRST_LEVEL:
        return this.options.mode === "nested" ? "nested" : "shadow";
      default:
        return "shadow";
    }
  }

  /**
   * Makes the host translate one slot of `a` as its guest entries say. A configuration the host refuses blocks
   * the slot (logged, and returned for `add`); shadow mappings it refuses go to `refused`.
   */
  private rebind(a: AssignedDevice, slot: BindingSlot, force: boolean, refused: RefusalSink | undefined): Result<void> {
    const next = this.scratch;
    const kind = this.target(a, slot.pasid, next);
    if (!force && kind === slot.binding.kind && next.sameAs(slot.context) && slot.refusedReason === 0) {
      // Nothing the binding depends on changed; what else the entries say (PASIDE, the PASID directory) is kept.
      slot.context.copyFrom(next);
      return ok();
    }
    const previous = slot.binding;
    let bound: Result<Binding>;
    switch (kind) {
      case "blocked":
        this.detach(a, slot.pasid);
        bound = ok(BLOCKED);
        break;
      case "identity": {
        const r = this.ctx.attach(a.devId, this.options.parentHwptId, slot.pasid);
        bound = r.ok ? ok(IDENTITY) : fail(r);
        break;
      }
      case "nested":
        bound = this.bindNested(a, slot.pasid, next);
        break;
      case "shadow":
        bound = slot.pasid === NO_PASID ? this.bindShadow(a, next, refused) : err("EOPNOTSUPP", "a second-level table at a PASID is not shadowed");
        break;
    }
    slot.context.copyFrom(next);
    const what = slot.pasid === NO_PASID ? `guest source id 0x${a.guestRid.toString(16)}` : `guest source id 0x${a.guestRid.toString(16)} PASID 0x${slot.pasid.toString(16)}`;
    if (bound.ok) {
      slot.binding = bound.value;
      slot.refusedReason = 0;
    } else {
      this.detach(a, slot.pasid);
      slot.binding = BLOCKED;
      slot.refusedReason = next.scalable ? VtdFaultReason.PASID_TABLE_ENTRY_INV : VtdFaultReason.CONTEXT_ENTRY_INV;
      this.log("configuration-refused", bound.error, `${kind} binding of ${what} refused: ${bound.error.errno} ${bound.error.message}; its DMA is blocked`);
    }
    this.release(previous);
    return bound.ok ? ok() : fail(bound);
  }

  /**
   * A HWPT_NESTED with the guest's first-level table over the shared parent, attached at the slot's PASID. It is
   * allocated with IOMMU_HWPT_ALLOC_PASID (intel_iommu_domain_alloc_nested takes it), so the RID's HWPT and every
   * PASID's are PASID-compatible as iommufd requires once PASIDs are attached; with the context's PRE set and a
   * PRI-capable device, it reports page requests to the VMM's fault queue (IOMMU_HWPT_FAULT_ID_VALID).
   */
  private bindNested(a: AssignedDevice, pasid: number, next: DeviceContext): Result<Binding> {
    const flags = (next.sre ? VtdS1Flag.SRE : 0) | (next.wpe ? VtdS1Flag.WPE : 0) | (next.eafe ? VtdS1Flag.EAFE : 0);
    const data = encodeVtdS1({ flags, pgtblAddr: next.root, addrWidth: next.levels === 5 ? VTD_S1_ADDR_WIDTH_5LEVEL : VTD_S1_ADDR_WIDTH_4LEVEL });
    const faultId = next.pre && a.device.pri === true ? this.faultQueue?.() : undefined;
    const allocFlags = HwptAllocFlag.PASID | (faultId !== undefined ? HwptAllocFlag.FAULT_ID_VALID : 0);
    const hwpt = this.ctx.hwptAlloc({ flags: allocFlags, devId: a.devId, ptId: this.options.parentHwptId, data: { type: IOMMU_HWPT_DATA_VTD_S1, bytes: data }, faultId });
    if (!hwpt.ok) return fail(hwpt);
    const attached = this.ctx.attach(a.devId, hwpt.value, pasid);
    if (attached.ok) return ok({ kind: "nested", hwptId: hwpt.value });
    this.destroyObject(hwpt.value);
    return fail(attached);
  }

  private bindShadow(a: AssignedDevice, next: DeviceContext, refused: RefusalSink | undefined): Result<Binding> {
    const key = `${next.kind}:${next.did}:${next.root}:${next.levels}`;
    let space = this.spaces.get(key);
    if (space === undefined) {
      const backend = createShadowBackend(this.options.shadowBackend ?? "iommufd", this.ctx, this.options.vm.memory, this.options.dmaEntryLimit);
      if (!backend.ok) return fail(backend);
      const stage = this.translator.stageOf(next);
      const source = { format: stage.format, geometry: stage.geometry, root: next.root, reader: this.translator.reader };
      const admit = vtdShadowAdmit(this.options.vm.memory, next.kind === ContextKind.FIRST_LEVEL);
      space = new ShadowSpace(key, next.did, backend.value, source, this.options.vm.memory, this.reporter, admit);
      this.spaces.set(key, space);
      const report = space.resync(0, Infinity);
      if (report.refused > 0 && refused !== undefined) refused.first ??= report.firstError;
    }
    const attached = this.ctx.attach(a.devId, space.backend.ioasId);
    if (!attached.ok) {
      if (space.users === 0) this.dropSpace(space);
      return fail(attached);
    }
    space.users++;
    return ok({ kind: "shadow", space });
  }

  private release(binding: Binding): void {
    if (binding.kind === "nested") this.destroyObject(binding.hwptId);
    else if (binding.kind === "shadow" && --binding.space.users === 0) this.dropSpace(binding.space);
  }

  private dropSpace(space: ShadowSpace): void {
    space.clear();
    this.spaces.delete(space.key);
    const unmapped = this.ctx.ioasUnmap({ ioasId: space.backend.ioasId, iova: 0, length: U64_MAX });
    // ENOENT: the space held no mapping (everything was refused, or the guest table was empty).
    if (!unmapped.ok && unmapped.error.errno !== "ENOENT") this.log("shadow-unmap-refused", unmapped.error, `shadow IOAS ${space.backend.ioasId}: ${unmapped.error.message}`);
    this.destroyObject(space.backend.ioasId);
  }

  /** Detaches the device (at `pasid`); ENOENT (not attached) is the expected answer for a device already blocked. */
  private detach(a: AssignedDevice, pasid: number): void {
    const r = this.ctx.detach(a.devId, pasid);
    if (!r.ok && r.error.errno !== "ENOENT") this.log("other", r.error, `detach of guest source id 0x${a.guestRid.toString(16)} (PASID ${pasid}) failed: ${r.error.message}`);
  }

  private destroyObject(id: number): void {
    const r = this.ctx.destroy(id);
    if (!r.ok) this.log("other", r.error, `iommufd object ${id} could not be destroyed: ${r.error.errno} ${r.error.message}`);
  }

  private log(kind: "configuration-refused" | "invalidation-refused" | "shadow-unmap-refused" | "other", error: IommuError, message: string): void {
    this.reporter.log.record({ vm: this.reporter.vm, source: this.reporter.source, kind, error, message });
  }

  private countShadow(): void {
    let n = 0;
    for (const s of this.spaces.values()) n += s.entries;
    this.stats.shadowMappings = n;
  }

  /**
   * A translation-cache invalidation for domain `did` (every domain when undefined), PASID `pasid` (any when
   * undefined), over [address, address + length) (everything when length is Infinity). Nested devices get it
   * forwarded as IOMMU_HWPT_INVALIDATE with a VTD_S1 entry; shadow spaces are resynchronised over the range.
   * Returns the first refusal (an invalidation iommufd refused, a shadow mapping the back end refused); the
   * other targets are still invalidated. `stats.forwarded` counts what the host accepted.
   */
  invalidate(did: number | undefined, pasid: number | undefined, address: number, length: number, leaf: boolean): IommuError | undefined {
    const refused: RefusalSink = { first: undefined };
    const all = !Number.isFinite(length);
    const hwpts = new Set<number>();
    const consider = (slot: BindingSlot): void => {
      if (slot.binding.kind !== "nested") return;
      if (did !== undefined && slot.context.did !== did) return;
      if (pasid !== undefined && slot.context.pasid !== pasid) return;
      hwpts.add(slot.binding.hwptId);
    };
    for (const a of this.devices.values()) {
      consider(a);
      for (const slot of a.pasids.values()) consider(slot);
    }
    if (hwpts.size > 0) {
      const entry = all
        ? encodeVtdS1InvalidateAll()
        : encodeVtdS1InvalidateInto(this.invalidateEntry, address, Math.max(1, Math.ceil(length / 4096)), leaf ? VtdInvalidateFlag.LEAF : 0);
      for (const hwptId of hwpts) {
        const r = this.ctx.hwptInvalidate({ hwptId, dataType: IOMMU_HWPT_INVALIDATE_DATA_VTD_S1, entryLen: VTD_S1_INVALIDATE_BYTES, entryNum: 1, entries: entry });
        this.stats.forwarded += r.handled;
        if (!r.result.ok) {
          refused.first ??= r.result.error;
          const what = all ? "everything" : `0x${address.toString(16)}+0x${length.toString(16)}`;
          this.log("invalidation-refused", r.result.error, `VTD_S1 invalidation of HWPT ${hwptId} (DID ${did ?? "any"}, ${what}) refused after ${r.handled} entries: ${r.result.error.errno} ${r.result.error.message}`);
        }
      }
    }
    for (const space of this.spaces.values()) {
      if (did !== undefined && space.did !== did) continue;
      const report = space.resync(address, length);
      if (report.refused > 0) refused.first ??= report.firstError;
      else this.stats.forwarded++;
    }
    this.countShadow();
    return refused.first;
  }

  /** Detaches everything and frees the host objects (the VMM is going away). */
  destroy(): void {
    for (const a of this.devices.values()) {
      this.dropPasids(a);
      this.detach(a, NO_PASID);
      this.release(a.binding);
      a.binding = BLOCKED;
    }
    this.devices.clear();
    for (const space of [...this.spaces.values()]) this.dropSpace(space);
    this.countShadow();
  }
}

function untranslatedContext(): DeviceContext {
  const c = new DeviceContext();
  c.kind = ContextKind.PASS_THROUGH;
  return c;
}

/** Where the first host refusal of one guest operation is kept. */
interface RefusalSink {
  first: IommuError | undefined;
}

export function isSourceId(rid: number): boolean {
  return Number.isInteger(rid) && rid >= 0 && rid <= 0xffff;
}
