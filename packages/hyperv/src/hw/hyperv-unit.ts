import {
  cacheTranslation,
  err,
  fail,
  HOST_OWNER,
  HwptAllocFlag,
  Iotlb,
  NestedWalker,
  newIotlbHit,
  newWalkResult,
  NO_PASID,
  ok,
  Perm,
  StageTwoCacheWatcher,
  TablePagingDomain,
  translateFromIotlb,
  WalkFault,
  type DmaRequest,
  type HostServices,
  type HwInfo,
  type IommuDomain,
  type OwnerId,
  type PagingDomain,
  type PhysicalDevice,
  type PhysicalIommu,
  type Result,
  type StaleTranslationAudit,
  type UserData,
  type ViommuCore,
  type ViommuOps,
  type WalkResult,
} from "@viommu/core";
import { writeStruct } from "../format/byte-layout.js";
import { IOMMU_HW_INFO_TYPE_HYPERV, IOMMU_VIOMMU_TYPE_HYPERV } from "../format/iommufd-uapi.js";
import { getIommuCapabilitiesOutputLayout, HV_IOMMU_PGSIZES_X86 } from "../format/iommu-discovery.js";
import { HostFaultLog } from "./host-fault-log.js";
import { hostStage2Format, hostStage2Geometry } from "./host-stage2.js";
import { HypervNestedDomain, type DomainTlb } from "./hyperv-nested-domain.js";
import { HYPERV_VIOMMU_SIZE, HypervViommu } from "./hyperv-viommu.js";

/** IOTLB tag of a stage-2-only attachment: device-domain ids are 32-bit, so this never collides. */
export const TAG_STAGE2_ONLY = 2 ** 32;

/** A device whose IOTLB hits are audited, as its VMM names it: where findings go and the id the guest knows. */
export interface HypervAuditedDevice {
  readonly audit: StaleTranslationAudit;
  readonly vm: number;
  readonly guestRid: number;
}

export interface HypervUnitOptions {
  /** Supports 5-level guest stage 1 (HV_IOMMU_CAP_S1_5LVL, 57-bit IOVAs); default false (48-bit, 4 levels). */
  readonly fiveLevel?: boolean;
  /** IOTLB entries (default 8192). */
  readonly iotlbEntries?: number;
}

/**
 * The physical IOMMU under the Hyper-V hypervisor, as the model drives it: its domains are the guests' device
 * domains. A paging device domain is the guest's x86-64 stage 1 walked nested over the host's stage 2 (every
 * stage-1 fetch translated by stage 2); an identity domain is stage 2 alone; a device with no domain is blocked.
 * The IOTLB is tagged (VMID, device-domain id), and a flush drops exactly the entries it names. Faults stay in
 * the hypervisor's own log: Hyper-V gives the guest no fault record.
 */
export class HypervUnit implements PhysicalIommu {
  readonly vendor = "hyperv";
  readonly name: string;
  readonly iotlb: Iotlb;
  readonly faults = new HostFaultLog();
  readonly fiveLevel: boolean;
  private readonly attachments = new Map<number, IommuDomain>();
  private readonly devices = new Map<number, PhysicalDevice>();
  private readonly nested: NestedWalker;
  private readonly hit = newIotlbHit();
  /**
   * A stage-2 change can invalidate any stage-1 translation through it, so a nesting parent's unmap drops its
   * whole VMID; a stage-2-only domain's unmap drops just the range.
   */
  private readonly stage2Cache: StageTwoCacheWatcher;

  /** The IOTLB as device-domain flushes reach it; every flush is reported on the event bus. */
  readonly tlb: DomainTlb = {
    flushDomain: (vmid, domainId) => this.reported("asid", this.iotlb.invalidateAsid(vmid, domainId), vmid, domainId, 0, Number.MAX_SAFE_INTEGER),
    flushRange: (vmid, domainId, address, length) =>
      this.reported("range", this.iotlb.invalidateRange(vmid, domainId, address, length), vmid, domainId, address, address + length - 1),
  };

  // ---- stale-translation audit ----

  /**
   * Audited devices by physical requester id. The pvIOMMU's only cache the guest must invalidate is the IOTLB of
   * a stage-1 domain (HVCALL_FLUSH_DEVICE_DOMAIN / _LIST): a domain's root, an attachment and an interrupt entry
   * are hypercall arguments the hypervisor applies at once, read from no guest table it could hold stale.
   */
  private readonly audited = new Map<number, HypervAuditedDevice>();
  private auditing = false;
  private readonly fresh = newWalkResult();

  /** The VMM of `requesterId` audits its IOTLB hits (undefined: stops). */
  auditDevice(requesterId: number, device: HypervAuditedDevice | undefined): void {
    if (device === undefined) this.audited.delete(requesterId);
    else this.audited.set(requesterId, device);
    this.auditing = this.audited.size > 0;
  }

  private noteFlush(what: string, vmid: number, domainId: number, start: number, end: number): void {
    for (const [rid, device] of this.audited) {
      const d = this.attachments.get(rid);
      if (d instanceof HypervNestedDomain && d.parent.vmid === vmid && d.domainId === domainId) device.audit.noteInvalidation(what, { rid: device.guestRid, start, end });
    }
  }

  /** An IOTLB hit of an audited device against a walk of the guest's stage 1 (and stage 2) as they are now. */
  private audit(nested: HypervNestedDomain, request: DmaRequest, used: WalkResult): void {
    const device = this.audited.get(request.requesterId);
    if (device === undefined) return;
    this.nested.translate(nested.stage1, nested.stage2, this.devices.get(request.requesterId)?.owner ?? HOST_OWNER, request.iova, request.access, this.fresh);
    device.audit.check({ vm: device.vm, unit: this.name, cache: "IOTLB", rid: device.guestRid, iova: request.iova }, used, this.fresh);
  }

  constructor(
    private readonly host: HostServices,
    index: number,
    options: HypervUnitOptions = {},
  ) {
    this.name = `hv-iommu${index}`;
    this.fiveLevel = options.fiveLevel ?? false;
    this.iotlb = new Iotlb(options.iotlbEntries ?? 8192);
    this.stage2Cache = new StageTwoCacheWatcher(this.iotlb, { singleStageAsid: TAG_STAGE2_ONLY });
    this.nested = new NestedWalker(host.memory, HOST_OWNER);
  }

  private reported(scope: "asid" | "range", entriesRemoved: number, vmid: number, domainId: number, start: number, end: number): number {
    this.host.events.emit("invalidation", { unit: this.name, scope, entriesRemoved });
    if (this.auditing) this.noteFlush(scope === "asid" ? `HVCALL_FLUSH_DEVICE_DOMAIN ${domainId}` : `HVCALL_FLUSH_DEVICE_DOMAIN_LIST ${domainId}`, vmid, domainId, start, end);
    return entriesRemoved;
  }

  /** hw_info: the capabilities the hypervisor answers HVCALL_GET_IOMMU_CAPABILITIES with. */
  hwInfo(_device: PhysicalDevice, requestedType: number | undefined): Result<HwInfo> {
    if (requestedType !== undefined && requestedType !== 0 && requestedType !== IOMMU_HW_INFO_TYPE_HYPERV) return err("EOPNOTSUPP", `hw_info type ${requestedType}`);
    const data = writeStruct(getIommuCapabilitiesOutputLayout, {
      size: getIommuCapabilitiesOutputLayout.size,
      max_iova_width: this.fiveLevel ? 57 : 48,
      max_pasid_width: 0,
      // PASID, ATS and PRI are not modelled: the unit translates requests without PASID and has no device TLB.
      iommu_cap: { PRESENT: 1, S2: 1, S1: 1, S1_5LVL: this.fiveLevel ? 1 : 0 },
      pgsize_bitmap: HV_IOMMU_PGSIZES_X86,
    });
    return ok({ type: IOMMU_HW_INFO_TYPE_HYPERV, data, maxPasidLog2: 0, capabilities: 0 });
  }

  domainAllocPaging(_device: PhysicalDevice, flags: number, _owner: OwnerId): Result<PagingDomain> {
    if (flags & (HwptAllocFlag.DIRTY_TRACKING | HwptAllocFlag.PASID)) return err("EOPNOTSUPP", "no dirty tracking or PASID domains");
    if ((flags & ~HwptAllocFlag.NEST_PARENT) !== 0) return err("EOPNOTSUPP", "unknown paging flags");
    const r = TablePagingDomain.create(this, this.host, hostStage2Format, hostStage2Geometry, { nestParent: (flags & HwptAllocFlag.NEST_PARENT) !== 0 });
    if (!r.ok) return fail(r);
    this.stage2Cache.use(r.value, false);
    return ok(r.value);
  }

  getViommuSize(_device: PhysicalDevice, type: number): number {
    return type === IOMMU_VIOMMU_TYPE_HYPERV ? HYPERV_VIOMMU_SIZE : 0;
  }

  viommuInit(viommu: ViommuCore, parent: PagingDomain, _data: UserData | undefined): Result<ViommuOps> {
    // Any unit of this driver walks this driver's stage 2, so one parent serves every vIOMMU of the VM.
    if (parent.unit.vendor !== this.vendor) return err("EINVAL", "nesting parent belongs to another driver");
    this.stage2Cache.use(parent, true);
    return ok(new HypervViommu(viommu, this.tlb, this.fiveLevel));
  }

  attachDevice(device: PhysicalDevice, domain: IommuDomain, pasid: number): Result<void> {
    if (domain.unit.vendor !== this.vendor) return err("EINVAL", "domain belongs to another driver");
    if (pasid !== NO_PASID) return err("EOPNOTSUPP", "the pvIOMMU attaches whole devices, not PASIDs");
    if (domain.kind === "paging") this.stage2Cache.use(domain, false);
    this.attachments.set(device.requesterId, domain);
    this.devices.set(device.requesterId, device);
    return ok();
  }

  detachDevice(device: PhysicalDevice, pasid: number): void {
    if (pasid === NO_PASID) this.attachments.delete(device.requesterId);
  }

  /** The domain a requester is attached to (host-side inspection for tests and tools). */
  domainOf(requesterId: number): IommuDomain | undefined {
    return this.attachments.get(requesterId);
  }

  translate(request: DmaRequest, out: WalkResult): void {
    const domain = request.pasid === NO_PASID ? this.attachments.get(request.requesterId) : undefined;
    if (domain === undefined) {
      blocked(out, request.iova);
      return;
    }
    const nested = domain.kind === "nested" ? (domain as HypervNestedDomain) : undefined;
    const vmid = nested === undefined ? (domain as PagingDomain).vmid : nested.parent.vmid;
    const tag = nested === undefined ? TAG_STAGE2_ONLY : nested.domainId;
    if (translateFromIotlb(this.iotlb, vmid, tag, request.iova, request.access, this.hit, out)) {
      if (this.auditing && nested !== undefined) this.audit(nested, request, out);
      return;
    }
    if (nested === undefined) (domain as PagingDomain).table.walk(request.iova, request.access, out);
    else {
      this.nested.translate(
        nested.stage1,
        nested.stage2,
        this.devices.get(request.requesterId)?.owner ?? HOST_OWNER,
        request.iova,
        request.access,
        out,
      );
    }
    // Only complete translations are cached; a permission fault never reached the page.
    cacheTranslation(this.iotlb, vmid, tag, request.iova, out);
  }

  /** The hypervisor keeps the fault; nothing reaches the guest (there is no pvIOMMU fault log). */
  reportDmaFault(request: DmaRequest, result: WalkResult): void {
    const domain = this.attachments.get(request.requesterId);
    this.faults.record({
      requesterId: request.requesterId,
      iova: request.iova,
      write: (request.access & Perm.Write) !== 0,
      fault: result.fault,
      reason: HostFaultLog.reasonOf(result.fault),
      stage: result.stage,
      domainId: domain instanceof HypervNestedDomain ? domain.domainId : undefined,
    });
  }
}

function blocked(out: WalkResult, iova: number): void {
  out.ok = false;
  out.mapped = false;
  out.fault = WalkFault.Translation;
  out.stage = 1;
  out.level = 0;
  out.faultInput = iova;
  out.fetches = 0;
}
