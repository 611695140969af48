import { err, IoasMapFlag, ok, type GuestMemory, type HostLogKind, type IommuError, type IommufdContext, type Result, type VmmStats } from "@viommu/core";
import { writeStruct } from "../format/byte-layout.js";
import { HV_DEVICE_DOMAIN_ID_DEFAULT, HV_DEVICE_DOMAIN_ID_NULL, HvDeviceDomainType } from "../format/device-domain.js";
import { HvStatus, type HvStatusCode } from "../format/hv-status.js";
import { hwptHypervS1Layout, IOMMU_HWPT_DATA_HYPERV_S1, IOMMU_VIOMMU_INVALIDATE_DATA_HYPERV, viommuInvalidateHypervLayout } from "../format/iommufd-uapi.js";
import type { DeviceState, PartitionDevices, PartitionInstance } from "./partition-devices.js";
import type { HostReport } from "./host-report.js";
import type { SavedDomain } from "./partition-state.js";
import { S2Mappings } from "./s2-mappings.js";
import { statusOfErrno } from "./status-of-errno.js";

const SUCCESS = HvStatus.HV_STATUS_SUCCESS;
const PAGE = 4096;

/** Guest-created device domains per partition, so a guest cannot grow the hypervisor's domain table without bound. */
export const MAX_DEVICE_DOMAINS = 1024;
/** Pages mapped into stage-2 device domains per partition (16 GiB), for the same reason. */
export const MAX_S2_PAGES = 1 << 22;

/** What HVCALL_CONFIGURE_DEVICE_DOMAIN made of a stage-1 domain. A created, unconfigured domain blocks DMA. */
export type DomainConfig =
  | { readonly kind: "unconfigured" }
  | { readonly kind: "identity" }
  | { readonly kind: "blocked" }
  | { readonly kind: "paging"; readonly root: number; readonly levels: 4 | 5 };

/** One guest-created device domain. */
export interface DeviceDomain {
  readonly id: number;
  /** HV_DEVICE_DOMAIN_TYPE_S1 (guest stage 1) or _S2 (hypercall-mapped stage 2). */
  readonly type: number;
  config: DomainConfig;
  /** Stage 1: the nested HWPT realising it on each instance that has attached a device to it. */
  readonly hwpts: Map<PartitionInstance, number>;
  /** Stage 2: its IOAS and its pages. */
  readonly ioasId: number | undefined;
  readonly s2: S2Mappings | undefined;
  /** Requester ids of the devices in it. */
  readonly attached: Set<number>;
}

/** How a device's DMA is translated, whatever got it there. */
export type Effective =
  | { readonly kind: "blocked" }
  | { readonly kind: "identity" }
  | { readonly kind: "paging"; readonly domain: DeviceDomain; readonly root: number; readonly levels: 4 | 5 }
  | { readonly kind: "s2"; readonly domain: DeviceDomain; readonly s2: S2Mappings };

/** What the domains need from their partition. */
export interface DomainHost {
  readonly ctx: IommufdContext;
  readonly parentHwptId: number;
  readonly memory: GuestMemory;
  readonly devices: PartitionDevices;
  readonly stats: VmmStats;
  instances(): readonly PartitionInstance[];
  /** Whether the host units walk 5-level stage-1 tables (HV_IOMMU_CAP_S1_5LVL). */
  readonly fiveLevel: boolean;
  /** Where refusals by the host go (HostServices.log). */
  readonly report: HostReport;
}

/** A rep hypercall's outcome: the status and how many reps (absolute, from rep 0) are done. */
export interface RepOutcome {
  readonly status: HvStatusCode;
  readonly done: number;
}

/** One hv_iommu_flush_va entry of HVCALL_FLUSH_DEVICE_DOMAIN_LIST. */
export interface FlushVa {
  readonly page_number: number;
  readonly page_mask_shift: number;
}

/**
 * The hypervisor's device domains for one partition, and how they are realised on the host through iommufd:
 * a paging stage-1 domain is a nested HWPT on each instance's vIOMMU; an identity domain (and the predefined
 * default domain 0) is the stage-2 parent; a blocked, unconfigured or NULL domain is no attachment; a stage-2
 * domain is its own IOAS, mapped page by page by the guest. Every method answers the hypervisor's status; a
 * host refusal becomes the status of its errno (statusOfErrno) and an entry in the host's log, and leaves the
 * host and the bookkeeping as they were before the call.
 */
export class DeviceDomains {
  private readonly domains = new Map<number, DeviceDomain>();
  private s2Pages = 0;

  constructor(private readonly host: DomainHost) {}

  get(id: number): DeviceDomain | undefined {
    return this.domains.get(id);
  }

  get count(): number {
    return this.domains.size;
  }

  /** Pages mapped in the partition's stage-2 domains (bounded by MAX_S2_PAGES). */
  get s2PageCount(): number {
    return this.s2Pages;
  }

  all(): IterableIterator<DeviceDomain> {
    return this.domains.values();
  }

  /** A domain named by a hypercall: it must exist and have the type the caller names. */
  private named(id: number, type: number): DeviceDomain | HvStatusCode {
    const d = this.domains.get(id);
    if (d === undefined) return HvStatus.HV_STATUS_NOT_FOUND;
    return d.type === type ? d : HvStatus.HV_STATUS_INVALID_PARAMETER;
  }

  /** Logs a host refusal and answers the status of its errno. */
  private refused(kind: HostLogKind, error: IommuError, what: string): HvStatusCode {
    this.host.report(kind, what, error);
    return statusOfErrno(error.errno);
  }

  create(id: number, type: number): HvStatusCode {
    if (id === HV_DEVICE_DOMAIN_ID_DEFAULT || id === HV_DEVICE_DOMAIN_ID_NULL) return HvStatus.HV_STATUS_INVALID_PARAMETER;
    if (type !== HvDeviceDomainType.HV_DEVICE_DOMAIN_TYPE_S1 && type !== HvDeviceDomainType.HV_DEVICE_DOMAIN_TYPE_S2) return HvStatus.HV_STATUS_INVALID_PARAMETER;
    if (this.domains.has(id)) return HvStatus.HV_STATUS_INVALID_PARAMETER;
    if (this.domains.size >= MAX_DEVICE_DOMAINS) return HvStatus.HV_STATUS_NO_RESOURCES;
    let ioasId: number | undefined;
    let s2: S2Mappings | undefined;
    if (type === HvDeviceDomainType.HV_DEVICE_DOMAIN_TYPE_S2) {
      const ioas = this.host.ctx.ioasAlloc();
      if (!ioas.ok) return this.refused("configuration-refused", ioas.error, `IOAS of stage-2 device domain ${id}`);
      ioasId = ioas.value;
      s2 = this.s2For(ioas.value);
    }
    this.domains.set(id, { id, type, config: { kind: "unconfigured" }, hwpts: new Map(), ioasId, s2, attached: new Set() });
    return SUCCESS;
  }

  /** The IOAS port of a stage-2 domain; every host call that took effect is counted in stats.forwarded. */
  private s2For(ioasId: number): S2Mappings {
    const { ctx, memory, stats } = this.host;
    return new S2Mappings({
      map: (iova, gpa, length, writable) => {
        const flags = IoasMapFlag.FIXED_IOVA | IoasMapFlag.READABLE | (writable ? IoasMapFlag.WRITEABLE : 0);
        const r = ctx.ioasMap({ ioasId, flags, memory, gpa, length, iova });
        if (!r.ok) return r;
        stats.forwarded++;
        return ok();
      },
      unmap: (iova, length) => {
        const r = ctx.ioasUnmap({ ioasId, iova, length });
        if (r.ok) stats.forwarded++;
        return r;
      },
    });
  }

  /** The partition's devices in a domain (emulated ones too). */
  private members(d: DeviceDomain): DeviceState[] {
    const out: DeviceState[] = [];
    for (const rid of d.attached) {
      const dev = this.host.devices.get(rid);
      if (dev !== undefined) out.push(dev);
    }
    return out;
  }

  /**
   * HVCALL_CONFIGURE_DEVICE_DOMAIN. A reconfigured domain moves every attached device to the new settings (a
   * paging domain gets new HWPTs: the old table's translations die with the old ones). All or nothing: when the
   * host refuses a device's move, the devices already moved go back and the new HWPTs are destroyed.
   */
  configure(id: number, type: number, config: DomainConfig): HvStatusCode {
    const d = this.named(id, type);
    if (typeof d === "number") return d;
    if (d.type !== HvDeviceDomainType.HV_DEVICE_DOMAIN_TYPE_S1) return HvStatus.HV_STATUS_INVALID_PARAMETER;
    if (config.kind === "paging") {
      if (config.root % PAGE !== 0 || !this.host.memory.contains(config.root, PAGE)) return HvStatus.HV_STATUS_INVALID_PARAMETER;
      if (config.levels === 5 && !this.host.fiveLevel) return HvStatus.HV_STATUS_INVALID_PARAMETER;
    }
    const oldConfig = d.config;
    const oldHwpts = new Map(d.hwpts);
    d.hwpts.clear();
    d.config = config;
    const moved: DeviceState[] = [];
    let failure: IommuError | undefined;
    for (const dev of this.members(d)) {
      failure = this.apply(dev);
      if (failure !== undefined) break;
      moved.push(dev);
    }
    if (failure !== undefined) {
      const fresh = new Map(d.hwpts);
      d.hwpts.clear();
      for (const [inst, hwpt] of oldHwpts) d.hwpts.set(inst, hwpt);
      d.config = oldConfig;
      for (const dev of moved) if (this.apply(dev) !== undefined) this.block(dev, `device 0x${dev.rid.toString(16)} could not return to device domain ${id}`);
      for (const [inst, hwpt] of fresh) this.destroyHwpt(d, inst, hwpt);
      return statusOfErrno(failure.errno);
    }
    for (const [inst, hwpt] of oldHwpts) this.destroyHwpt(d, inst, hwpt);
    return SUCCESS;
  }

  /**
   * Destroys a HWPT of domain `d` no device uses any more; its domain's cached translations go with it. When the
   * host refuses, the refusal is logged and the domain's translations are flushed on the instance all the same,
   * so nothing walked through the old table survives under the domain's tag.
   */
  private destroyHwpt(d: DeviceDomain, inst: PartitionInstance, hwpt: number): IommuError | undefined {
    const r = inst.ctx.destroy(hwpt);
    if (r.ok) return undefined;
    this.host.report("other", `HWPT ${hwpt} of device domain ${d.id} not destroyed`, r.error);
    this.invalidateOn(inst, d.id, 1, allEntry(d.id));
    return r.error;
  }

  /** Last resort for a device the host would not put back: detach it, so its DMA is blocked, never misdirected. */
  private block(dev: DeviceState, why: string): void {
    const p = dev.passthrough;
    if (p === undefined) return;
    const r = p.instance.ctx.detach(p.devId);
    if (r.ok || r.error.errno === "ENOENT") {
      p.hostPt = undefined;
      this.host.report("configuration-refused", `${why}: detached, its DMA is blocked`);
    } else this.host.report("configuration-refused", `${why}, nor be detached`, r.error);
  }

  /** HVCALL_ATTACH_DEVICE_DOMAIN: DEFAULT is the identity domain, NULL the blocking one; others must exist. */
  attach(id: number, type: number, dev: DeviceState): HvStatusCode {
    if (dev.direct !== undefined) return HvStatus.HV_STATUS_OPERATION_DENIED;
    if (id !== HV_DEVICE_DOMAIN_ID_DEFAULT && id !== HV_DEVICE_DOMAIN_ID_NULL) {
      const d = this.named(id, type);
      if (typeof d === "number") return d;
    }
    if (dev.domain === id) return HvStatus.HV_STATUS_DEVICE_ALREADY_IN_DOMAIN;
    return this.move(dev, id);
  }

  /** HVCALL_DETACH_DEVICE_DOMAIN: the device leaves its domain for the NULL domain (DMA blocked). */
  detach(dev: DeviceState): HvStatusCode {
    if (dev.direct !== undefined) return HvStatus.HV_STATUS_OPERATION_DENIED;
    if (dev.domain === HV_DEVICE_DOMAIN_ID_DEFAULT || dev.domain === HV_DEVICE_DOMAIN_ID_NULL) return HvStatus.HV_STATUS_INVALID_PARAMETER;
    return this.move(dev, HV_DEVICE_DOMAIN_ID_NULL);
  }

  /**
   * Puts a device in domain `id` (bookkeeping and host). On a host refusal it stays where it was: a refused
   * attach or HWPT allocation leaves the host's attachment untouched, so only the bookkeeping is undone.
   */
  move(dev: DeviceState, id: number): HvStatusCode {
    const previous = dev.domain;
    dev.domain = id;
    const failure = this.apply(dev);
    if (failure !== undefined) {
      dev.domain = previous;
      return statusOfErrno(failure.errno);
    }
    this.domains.get(previous)?.attached.delete(dev.rid);
    this.domains.get(id)?.attached.add(dev.rid);
    return SUCCESS;
  }

  /**
   * HVCALL_ATTACH_DEVICE: the device leaves its domain and translates with the partition's own GPA map until
   * HVCALL_DETACH_DEVICE, after which it is in the NULL domain (blocked).
   */
  directAttach(dev: DeviceState, logicalId: bigint): HvStatusCode {
    const previous = dev.domain;
    dev.direct = logicalId;
    const failure = this.apply(dev);
    if (failure !== undefined) {
      dev.direct = undefined;
      return statusOfErrno(failure.errno);
    }
    this.domains.get(previous)?.attached.delete(dev.rid);
    dev.domain = HV_DEVICE_DOMAIN_ID_NULL;
    return SUCCESS;
  }

  directDetach(dev: DeviceState): HvStatusCode {
    const logicalId = dev.direct;
    dev.direct = undefined;
    const failure = this.apply(dev);
    if (failure !== undefined) {
      dev.direct = logicalId;
      return statusOfErrno(failure.errno);
    }
    return SUCCESS;
  }

  /**
   * HVCALL_DELETE_DEVICE_DOMAIN: refused while a device is in the domain. The domain goes only when the host
   * let go of every object of it; a refusal keeps the domain (and what is left of it) for another try.
   */
  delete(id: number, type: number): HvStatusCode {
    const d = this.named(id, type);
    if (typeof d === "number") return d;
    if (d.attached.size > 0) return HvStatus.HV_STATUS_OPERATION_DENIED;
    for (const [inst, hwpt] of [...d.hwpts]) {
      const failure = this.destroyHwpt(d, inst, hwpt);
      if (failure !== undefined) return statusOfErrno(failure.errno);
      d.hwpts.delete(inst);
    }
    if (d.ioasId !== undefined) {
      const r = this.host.ctx.destroy(d.ioasId);
      if (!r.ok) return this.refused("other", r.error, `IOAS ${d.ioasId} of stage-2 device domain ${id} not destroyed`);
    }
    if (d.s2 !== undefined) {
      this.s2Pages -= d.s2.size;
      d.s2.forget();
    }
    this.domains.delete(id);
    return SUCCESS;
  }

  /** How a device's DMA is translated now. */
  effective(dev: DeviceState): Effective {
    if (dev.direct !== undefined || dev.domain === HV_DEVICE_DOMAIN_ID_DEFAULT) return { kind: "identity" };
    const d = this.domains.get(dev.domain);
    if (d === undefined) return { kind: "blocked" };
    if (d.s2 !== undefined) return { kind: "s2", domain: d, s2: d.s2 };
    const c = d.config;
    if (c.kind === "paging") return { kind: "paging", domain: d, root: c.root, levels: c.levels };
    return c.kind === "identity" ? { kind: "identity" } : { kind: "blocked" };
  }

  /**
   * Makes the host match a device's domain: attach to the parent, a nested HWPT or an IOAS, or detach; nothing
   * when the host already has it there. The host's refusal (logged), or undefined.
   */
  apply(dev: DeviceState): IommuError | undefined {
    const p = dev.passthrough;
    if (p === undefined) return undefined;
    const ctx = p.instance.ctx;
    const eff = this.effective(dev);
    let target: number | undefined;
    if (eff.kind === "identity") target = this.host.parentHwptId;
    else if (eff.kind === "s2") target = eff.domain.ioasId;
    else if (eff.kind === "paging") {
      const hwpt = this.realize(eff.domain, eff.root, eff.levels, p.instance, p.devId);
      if (!hwpt.ok) return hwpt.error;
      target = hwpt.value;
    }
    if (target === p.hostPt) return undefined;
    const what = `device 0x${dev.rid.toString(16)} into device domain ${dev.domain}`;
    if (target === undefined) {
      const r = ctx.detach(p.devId);
      // Detaching what is not attached leaves it detached (older iommufd answered ENOENT for it).
      if (!r.ok && r.error.errno !== "ENOENT") {
        this.host.report("configuration-refused", `detach of ${what}`, r.error);
        return r.error;
      }
      p.hostPt = undefined;
      return undefined;
    }
    const r = ctx.attach(p.devId, target);
    if (!r.ok) {
      this.host.report("configuration-refused", `attach of ${what} (object ${target})`, r.error);
      return r.error;
    }
    p.hostPt = target;
    return undefined;
  }

  /** The domain's nested HWPT on an instance, allocated on first use. */
  private realize(d: DeviceDomain, root: number, levels: 4 | 5, instance: PartitionInstance, devId: number): Result<number> {
    const existing = d.hwpts.get(instance);
    if (existing !== undefined) return ok(existing);
    if (instance.viommuId === undefined) return err("EOPNOTSUPP", "the instance has no vIOMMU for a paging domain");
    const bytes = writeStruct(hwptHypervS1Layout, { domain_id: d.id, flags: { FIVE_LEVEL: levels === 5 ? 1 : 0 }, s1_root: BigInt(root) });
    const hwpt = instance.ctx.hwptAlloc({ flags: 0, devId, ptId: instance.viommuId, data: { type: IOMMU_HWPT_DATA_HYPERV_S1, bytes } });
    if (!hwpt.ok) {
      this.host.report("configuration-refused", `nested HWPT of device domain ${d.id} (root 0x${root.toString(16)}) on ${instance.unit.name}`, hwpt.error);
      return hwpt;
    }
    d.hwpts.set(instance, hwpt.value);
    return hwpt;
  }

  /** HVCALL_FLUSH_DEVICE_DOMAIN: the domain's whole IOTLB, on every instance's unit. */
  flush(id: number, type: number): HvStatusCode {
    const d = this.named(id, type);
    if (typeof d === "number") return d;
    if (d.s2 !== undefined) return SUCCESS; // stage-2 unmaps already invalidated synchronously
    const failure = this.invalidate(id, [allEntry(id)]);
    return failure === undefined ? SUCCESS : statusOfErrno(failure.errno);
  }

  /**
   * HVCALL_FLUSH_DEVICE_DOMAIN_LIST reps [start, end): each entry flushes the naturally aligned 2^page_mask_shift
   * pages at page_number, which must be aligned to that size (the hypervisor's requirement, per the series'
   * author); the call stops at the first entry that is not. A flush the host refuses completes no rep: the
   * guest is told, and may issue the list again.
   */
  flushList(id: number, type: number, entries: readonly FlushVa[], start: number, end: number): RepOutcome {
    const d = this.named(id, type);
    if (typeof d === "number") return { status: d, done: start };
    const batch: Uint8Array[] = [];
    let stop: HvStatusCode = SUCCESS;
    let done = start;
    for (; done < end; done++) {
      const e = entries[done]!;
      const shift = Math.min(e.page_mask_shift, 63);
      if (shift < 52 && e.page_number % 2 ** shift !== 0) {
        stop = HvStatus.HV_STATUS_INVALID_PARAMETER;
        break;
      }
      batch.push(writeStruct(viommuInvalidateHypervLayout, { domain_id: id, page_number: BigInt(e.page_number), page_mask_shift: shift }));
    }
    if (d.s2 === undefined && batch.length > 0) {
      const failure = this.invalidate(id, batch);
      if (failure !== undefined) return { status: statusOfErrno(failure.errno), done: start };
    }
    return { status: stop, done };
  }

  /**
   * Forwards flush entries of domain `id` to every instance's vIOMMU (a domain may have devices behind each).
   * An instance's refusal does not stop the others: every unit drops what it can. The first refusal, or
   * undefined.
   */
  private invalidate(id: number, entries: Uint8Array[]): IommuError | undefined {
    const size = viommuInvalidateHypervLayout.size;
    const bytes = new Uint8Array(entries.length * size);
    entries.forEach((e, i) => bytes.set(e, i * size));
    let first: IommuError | undefined;
    for (const inst of this.host.instances()) {
      const failure = this.invalidateOn(inst, id, entries.length, bytes);
      first ??= failure;
    }
    return first;
  }

  /** One instance's part of a flush: stats.forwarded counts the entries the host handled; a refusal is logged. */
  private invalidateOn(inst: PartitionInstance, id: number, count: number, bytes: Uint8Array): IommuError | undefined {
    if (inst.viommuId === undefined) return undefined;
    const size = viommuInvalidateHypervLayout.size;
    const r = inst.ctx.hwptInvalidate({ hwptId: inst.viommuId, dataType: IOMMU_VIOMMU_INVALIDATE_DATA_HYPERV, entryLen: size, entryNum: count, entries: bytes });
    this.host.stats.forwarded += r.handled;
    if (r.result.ok) return undefined;
    this.host.report("invalidation-refused", `flush of device domain ${id} on ${inst.unit.name}: ${r.handled} of ${count} entries handled`, r.result.error);
    return r.result.error;
  }

  /**
   * HVCALL_MAP_DEVICE_GPA_PAGES reps [start, end): rep i maps IOVA page vaPage + i to GPA page gpaPages[i]. Runs of
   * consecutive GPA pages go to the host as one mapping. Stops at the first page that is already mapped, outside
   * guest RAM or over the partition's limit, or that the host refuses; the reps before it stay mapped (the
   * caller rolls back).
   */
  mapPages(id: number, type: number, vaPage: number, writable: boolean, gpaPages: readonly number[], start: number, end: number): RepOutcome {
    const d = this.named(id, type);
    if (typeof d === "number") return { status: d, done: start };
    const s2 = d.s2;
    if (s2 === undefined) return { status: HvStatus.HV_STATUS_INVALID_PARAMETER, done: start };
    let runStart = start;
    const flush = (upTo: number): HvStatusCode => {
      if (upTo <= runStart) return SUCCESS;
      const r = s2.mapRun(vaPage + runStart, gpaPages[runStart]!, upTo - runStart, writable);
      if (!r.ok) return this.refused("other", r.error, `map of IOVA pages 0x${(vaPage + runStart).toString(16)}+${upTo - runStart} in stage-2 device domain ${id}`);
      this.s2Pages += upTo - runStart;
      return SUCCESS;
    };
    for (let i = start; i < end; i++) {
      const gpaPage = gpaPages[i]!;
      const iova = (vaPage + i) * PAGE;
      let problem: HvStatusCode | undefined;
      if (!Number.isSafeInteger(gpaPage) || !this.host.memory.contains(gpaPage * PAGE, PAGE)) problem = HvStatus.HV_STATUS_INVALID_PARAMETER;
      else if (!Number.isSafeInteger(iova) || s2.has(vaPage + i)) problem = HvStatus.HV_STATUS_INVALID_PARAMETER;
      else if (this.s2Pages + (i - runStart) >= MAX_S2_PAGES) problem = HvStatus.HV_STATUS_NO_RESOURCES;
      if (problem !== undefined) {
        const s = flush(i);
        return { status: s !== SUCCESS ? s : problem, done: s !== SUCCESS ? runStart : i };
      }
      if (i > runStart && gpaPage !== gpaPages[i - 1]! + 1) {
        const s = flush(i);
        if (s !== SUCCESS) return { status: s, done: runStart };
        runStart = i;
      }
    }
    const s = flush(end);
    return { status: s, done: s === SUCCESS ? end : runStart };
  }

  /**
   * HVCALL_UNMAP_DEVICE_GPA_PAGES reps [start, end): unmaps IOVA pages vaPage + start … vaPage + end − 1. A host
   * refusal completes no rep (the guest may issue the call again; pages already gone are skipped then).
   */
  unmapPages(id: number, type: number, vaPage: number, start: number, end: number): RepOutcome {
    const d = this.named(id, type);
    if (typeof d === "number") return { status: d, done: start };
    if (d.s2 === undefined) return { status: HvStatus.HV_STATUS_INVALID_PARAMETER, done: start };
    const r = d.s2.unmapRange(vaPage + start, end - start);
    this.s2Pages -= r.removed;
    if (r.error !== undefined) return { status: this.refused("other", r.error, `unmap of IOVA pages 0x${(vaPage + start).toString(16)}+${end - start} in stage-2 device domain ${id}`), done: start };
    return { status: SUCCESS, done: end };
  }

  /**
   * Recreates a saved domain (restore): its record, its IOAS and pages for a stage-2 domain, its settings. The
   * caller checked the saved domain against the partition (parsePartition); what can still fail is the host's
   * allocation or mapping, which is returned (the domain stays, for the caller's reset to dispose of).
   */
  restore(saved: SavedDomain): IommuError | undefined {
    let ioasId: number | undefined;
    let s2: S2Mappings | undefined;
    if (saved.type === HvDeviceDomainType.HV_DEVICE_DOMAIN_TYPE_S2) {
      const ioas = this.host.ctx.ioasAlloc();
      if (!ioas.ok) return ioas.error;
      ioasId = ioas.value;
      s2 = this.s2For(ioas.value);
    }
    this.domains.set(saved.id, { id: saved.id, type: saved.type, config: saved.config, hwpts: new Map(), ioasId, s2, attached: new Set() });
    for (const run of saved.runs) {
      const r = s2!.mapRun(run.iovaPage, run.gpaPage, run.pages, run.writable);
      if (!r.ok) return r.error;
      this.s2Pages += run.pages;
    }
    return undefined;
  }

  /** An instance goes away: its devices were detached; its HWPTs go with it. */
  dropInstance(instance: PartitionInstance): void {
    for (const d of this.domains.values()) {
      const hwpt = d.hwpts.get(instance);
      if (hwpt === undefined) continue;
      this.destroyHwpt(d, instance, hwpt);
      d.hwpts.delete(instance);
    }
  }

  /** The partition goes away: every remaining host object of its domains (refusals are logged). */
  dispose(): void {
    for (const d of this.domains.values()) {
      for (const [inst, hwpt] of d.hwpts) this.destroyHwpt(d, inst, hwpt);
      d.hwpts.clear();
      d.s2?.forget();
      if (d.ioasId !== undefined) {
        const r = this.host.ctx.destroy(d.ioasId);
        if (!r.ok) this.host.report("other", `IOAS ${d.ioasId} of stage-2 device domain ${d.id} not destroyed`, r.error);
      }
    }
    this.domains.clear();
    this.s2Pages = 0;
  }
}

/** An iommu_viommu_invalidate_hyperv entry flushing all of domain `id`. */
function allEntry(id: number): Uint8Array {
  return writeStruct(viommuInvalidateHypervLayout, { domain_id: id, flags: { ALL: 1 } });
}
