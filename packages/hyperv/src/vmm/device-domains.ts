import { IoasMapFlag, type GuestMemory, type IommufdContext, type VmmStats } from "@viommu/core";
import { writeStruct } from "../format/byte-layout.js";
import { HV_DEVICE_DOMAIN_ID_DEFAULT, HV_DEVICE_DOMAIN_ID_NULL, HvDeviceDomainType } from "../format/device-domain.js";
import { HvStatus, type HvStatusCode } from "../format/hv-status.js";
import { hwptHypervS1Layout, IOMMU_HWPT_DATA_HYPERV_S1, IOMMU_VIOMMU_INVALIDATE_DATA_HYPERV, viommuInvalidateHypervLayout } from "../format/iommufd-uapi.js";
import type { DeviceState, PartitionDevices, PartitionInstance } from "./partition-devices.js";
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
 * domain is its own IOAS, mapped page by page by the guest. Every method answers the hypervisor's status.
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

  all(): IterableIterator<DeviceDomain> {
    return this.domains.values();
  }

  /** A domain named by a hypercall: it must exist and have the type the caller names. */
  private named(id: number, type: number): DeviceDomain | HvStatusCode {
    const d = this.domains.get(id);
    if (d === undefined) return HvStatus.HV_STATUS_NOT_FOUND;
    return d.type === type ? d : HvStatus.HV_STATUS_INVALID_PARAMETER;
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
      if (!ioas.ok) return statusOfErrno(ioas.error.errno);
      ioasId = ioas.value;
      s2 = this.s2For(ioas.value);
    }
    this.domains.set(id, { id, type, config: { kind: "unconfigured" }, hwpts: new Map(), ioasId, s2, attached: new Set() });
    return SUCCESS;
  }

  private s2For(ioasId: number): S2Mappings {
    const { ctx, memory } = this.host;
    return new S2Mappings({
      map: (iova, gpa, length, writable) => {
        const flags = IoasMapFlag.FIXED_IOVA | IoasMapFlag.READABLE | (writable ? IoasMapFlag.WRITEABLE : 0);
        const r = ctx.ioasMap({ ioasId, flags, memory, gpa, length, iova });
        return r.ok ? { ok: true, value: undefined } : r;
      },
      unmap: (iova, length) => ctx.ioasUnmap({ ioasId, iova, length }),
    });
  }

  /** HVCALL_CONFIGURE_DEVICE_DOMAIN. A reconfigured domain moves every attached device to the new settings. */
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
    const status = this.reapply(d);
    if (status !== SUCCESS) {
      for (const hwpt of d.hwpts.values()) this.destroyAfterDetach(d, hwpt);
      d.hwpts.clear();
      for (const [inst, hwpt] of oldHwpts) d.hwpts.set(inst, hwpt);
      d.config = oldConfig;
      this.reapply(d);
      return status;
    }
    for (const hwpt of oldHwpts.values()) this.host.ctx.destroy(hwpt);
    return SUCCESS;
  }

  private reapply(d: DeviceDomain): HvStatusCode {
    for (const rid of d.attached) {
      const dev = this.host.devices.get(rid);
      if (dev === undefined) continue;
      const s = this.apply(dev);
      if (s !== SUCCESS) return s;
    }
    return SUCCESS;
  }

  private destroyAfterDetach(d: DeviceDomain, hwpt: number): void {
    for (const rid of d.attached) {
      const p = this.host.devices.get(rid)?.passthrough;
      if (p !== undefined) p.instance.ctx.detach(p.devId);
    }
    this.host.ctx.destroy(hwpt);
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

  /** Puts a device in domain `id` (bookkeeping and host); on failure it stays where it was. */
  move(dev: DeviceState, id: number): HvStatusCode {
    const previous = dev.domain;
    dev.domain = id;
    const status = this.apply(dev);
    if (status !== SUCCESS) {
      dev.domain = previous;
      this.apply(dev);
      return status;
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
    const status = this.apply(dev);
    if (status !== SUCCESS) {
      dev.direct = undefined;
      this.apply(dev);
      return status;
    }
    this.domains.get(previous)?.attached.delete(dev.rid);
    dev.domain = HV_DEVICE_DOMAIN_ID_NULL;
    return SUCCESS;
  }

  directDetach(dev: DeviceState): HvStatusCode {
    dev.direct = undefined;
    return this.apply(dev);
  }

  /** HVCALL_DELETE_DEVICE_DOMAIN: refused while a device is in the domain. */
  delete(id: number, type: number): HvStatusCode {
    const d = this.named(id, type);
    if (typeof d === "number") return d;
    if (d.attached.size > 0) return HvStatus.HV_STATUS_OPERATION_DENIED;
    for (const hwpt of d.hwpts.values()) this.host.ctx.destroy(hwpt);
    d.hwpts.clear();
    if (d.s2 !== undefined) {
      this.s2Pages -= d.s2.size;
      d.s2.clear();
    }
    if (d.ioasId !== undefined) this.host.ctx.destroy(d.ioasId);
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

  /** Makes the host match a device's domain: attach to the parent, a nested HWPT or an IOAS, or detach. */
  apply(dev: DeviceState): HvStatusCode {
    const p = dev.passthrough;
    if (p === undefined) return SUCCESS;
    const ctx = p.instance.ctx;
    const eff = this.effective(dev);
    let target: number | undefined;
    if (eff.kind === "identity") target = this.host.parentHwptId;
    else if (eff.kind === "s2") target = eff.domain.ioasId;
    else if (eff.kind === "paging") {
      const hwpt = this.realize(eff.domain, eff.root, eff.levels, p.instance, p.devId);
      if (!hwpt.ok) return hwpt.status;
      target = hwpt.id;
    }
    if (target === undefined) {
      ctx.detach(p.devId);
      return SUCCESS;
    }
    const r = ctx.attach(p.devId, target);
    return r.ok ? SUCCESS : statusOfErrno(r.error.errno);
  }

  /** The domain's nested HWPT on an instance, allocated on first use. */
  private realize(d: DeviceDomain, root: number, levels: 4 | 5, instance: PartitionInstance, devId: number): { ok: true; id: number } | { ok: false; status: HvStatusCode } {
    const existing = d.hwpts.get(instance);
    if (existing !== undefined) return { ok: true, id: existing };
    if (instance.viommuId === undefined) return { ok: false, status: HvStatus.HV_STATUS_OPERATION_FAILED };
    const bytes = writeStruct(hwptHypervS1Layout, { domain_id: d.id, flags: { FIVE_LEVEL: levels === 5 ? 1 : 0 }, s1_root: BigInt(root) });
    const hwpt = instance.ctx.hwptAlloc({ flags: 0, devId, ptId: instance.viommuId, data: { type: IOMMU_HWPT_DATA_HYPERV_S1, bytes } });
    if (!hwpt.ok) return { ok: false, status: statusOfErrno(hwpt.error.errno) };
    d.hwpts.set(instance, hwpt.value);
    return { ok: true, id: hwpt.value };
  }

  /** HVCALL_FLUSH_DEVICE_DOMAIN: the domain's whole IOTLB, on every instance's unit. */
  flush(id: number, type: number): HvStatusCode {
    const d = this.named(id, type);
    if (typeof d === "number") return d;
    if (d.s2 !== undefined) return SUCCESS; // stage-2 unmaps already invalidated synchronously
    return this.invalidate([writeStruct(viommuInvalidateHypervLayout, { domain_id: id, flags: { ALL: 1 } })]);
  }

  /**
   * HVCALL_FLUSH_DEVICE_DOMAIN_LIST reps [start, end): each entry flushes the naturally aligned 2^page_mask_shift
   * pages at page_number, which must be aligned to that size (the hypervisor's requirement, per the series'
   * author); the call stops at the first entry that is not.
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
      const s = this.invalidate(batch);
      if (s !== SUCCESS) return { status: s, done: start };
    }
    return { status: stop, done };
  }

  /** Forwards flush entries to every instance's vIOMMU (a domain may have devices behind each). */
  private invalidate(entries: Uint8Array[]): HvStatusCode {
    const size = viommuInvalidateHypervLayout.size;
    const bytes = new Uint8Array(entries.length * size);
    entries.forEach((e, i) => bytes.set(e, i * size));
    for (const inst of this.host.instances()) {
      if (inst.viommuId === undefined) continue;
      this.host.stats.forwarded += entries.length;
      const r = inst.ctx.hwptInvalidate({ hwptId: inst.viommuId, dataType: IOMMU_VIOMMU_INVALIDATE_DATA_HYPERV, entryLen: size, entryNum: entries.length, entries: bytes });
      if (!r.result.ok) return statusOfErrno(r.result.error.errno);
    }
    return SUCCESS;
  }

  /**
   * HVCALL_MAP_DEVICE_GPA_PAGES reps [start, end): rep i maps IOVA page vaPage + i to GPA page gpaPages[i]. Runs of
   * consecutive GPA pages go to the host as one mapping. Stops at the first page that is already mapped, outside
   * guest RAM or over the partition's limit; the reps before it stay mapped (the caller rolls back).
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
      if (!r.ok) return statusOfErrno(r.error.errno);
      this.s2Pages += upTo - runStart;
      this.host.stats.forwarded++;
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

  /** HVCALL_UNMAP_DEVICE_GPA_PAGES reps [start, end): unmaps IOVA pages vaPage + start … vaPage + end − 1. */
  unmapPages(id: number, type: number, vaPage: number, start: number, end: number): RepOutcome {
    const d = this.named(id, type);
    if (typeof d === "number") return { status: d, done: start };
    if (d.s2 === undefined) return { status: HvStatus.HV_STATUS_INVALID_PARAMETER, done: start };
    const r = d.s2.unmapRange(vaPage + start, end - start);
    if (!r.ok) return { status: statusOfErrno(r.error.errno), done: start };
    this.s2Pages -= r.value;
    this.host.stats.forwarded++;
    return { status: SUCCESS, done: end };
  }

  /** An instance goes away: its devices were detached; its HWPTs go with it. */
  dropInstance(instance: PartitionInstance): void {
    for (const d of this.domains.values()) {
      const hwpt = d.hwpts.get(instance);
      if (hwpt === undefined) continue;
      instance.ctx.destroy(hwpt);
      d.hwpts.delete(instance);
    }
  }

  /** The partition goes away: every remaining host object of its domains. */
  dispose(): void {
    for (const d of this.domains.values()) {
      for (const hwpt of d.hwpts.values()) this.host.ctx.destroy(hwpt);
      d.hwpts.clear();
      d.s2?.clear();
      if (d.ioasId !== undefined) this.host.ctx.destroy(d.ioasId);
    }
    this.domains.clear();
    this.s2Pages = 0;
  }
}
