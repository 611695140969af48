import {
  ANY_ASID,
  cacheTranslation,
  err,
  fail,
  HOST_OWNER,
  HwCapability,
  HwptAllocFlag,
  IdAllocator,
  Iotlb,
  NestedWalker,
  newIotlbHit,
  NO_PASID,
  ok,
  Perm,
  PgfaultPerm,
  PrivatePageMap,
  StageTwoCacheWatcher,
  TablePagingDomain,
  translateFromIotlb,
  newWalkResult,
  WalkFault,
  type DmaRequest,
  type InterruptResult,
  type MsiMessage,
  type HostServices,
  type HwInfo,
  type IommuDomain,
  type OwnerId,
  type PageTableFormat,
  type PagingDomain,
  type PrivateAssignment,
  type TableGeometry,
  type PhysicalDevice,
  type PhysicalIommu,
  type Result,
  type UserData,
  type ViommuCore,
  type ViommuOps,
  type WalkResult,
} from "@viommu/core";
import { amdV1DirtyBits, amdV1Geometry, amdV1PageTableEncoder, amdV1PageTableFormat } from "../format/page-table-v1.js";
import { amdV2Geometry, amdV2PageTableFormat } from "../format/page-table-v2.js";
import { encodeHwInfoAmd, IOMMU_HW_INFO_TYPE_AMD, IOMMU_VIOMMU_TYPE_AMD } from "../format/iommufd-uapi.js";
import { dmaFaultEvent, rmpPageFaultEvent } from "../format/fault-event.js";
import { gcr3Index } from "../format/gcr3-table-entry.js";
import { AmdNestedDomain } from "./amd-nested-domain.js";
import { AmdViommu, type ViommuUnitPorts } from "./amd-viommu.js";
import type { AmdVapicPosting, VapicTarget } from "../format/vapic-posting.js";
import { HostDirtyMarker } from "./host-dirty.js";
import { HOST_EFR, HOST_EFR2, HOST_EFR_NO_HD } from "./host-features.js";
import { HostInterruptRemapping } from "./host-interrupt-remapping.js";
import { FreshDte, GuestDteState, GuestDteView, sameTranslationDte, type AmdAuditedDevice, type NestedDteView } from "./guest-dte-view.js";
import { Stage2Access } from "./stage2-access.js";

/** IOTLB tag of a single-stage (paging) attachment: PASIDs are 20-bit, so no PASID collides with it. */
const TAG_PAGING = 0x20_0000;
/** IOTLB tag of a nested domain's requests without a PASID when GIoV is clear (stage 2 only). */
const TAG_NO_PASID = 0x10_0000;
/** Host (v1) tables this unit builds: 4 levels, 48-bit IOVA (a guest's RAM fits; Linux grows tables on demand). */
export const HOST_TABLE_MODE = 4;
const hostFormat = { ...amdV1PageTableFormat, ...amdV1PageTableEncoder };
const hostGeometry = amdV1Geometry(HOST_TABLE_MODE);
const guestGeometry4 = amdV2Geometry(4);
const guestGeometry5 = amdV2Geometry(5);
/** Physical base of the VF-MMIO BAR (256 MiB, 4 KiB per guest id), per unit. */
const VF_BAR_BASE = 0xe000_0000;
const VF_BAR_STRIDE = 0x1000_0000;

/** A fault the unit kept for the host log (stage-2 faults, devices with no guest to tell). */
export interface AmdHostFault {
  readonly requesterId: number;
  readonly pasid: number;
  readonly iova: number;
  readonly write: boolean;
  readonly record: Uint32Array;
  readonly stage: 1 | 2;
}

/**
 * A physical AMD-Vi IOMMU and its host driver: host v1 paging domains, vIOMMUs (mainline nested DTE path and
 * the hardware vIOMMU), nested domains whose guest v2 tables (reached through the GCR3 table, a guest
 * physical address under GCR3TRPMode) are walked as stage 1 over the parent's v1 stage 2, an IOTLB tagged by
 * domain id and PASID, and fault records routed to the guest (its own log, or a vEVENT) or the host log.
 */
/** How a physical unit differs from the default part. */
export interface AmdViUnitOptions {
  /** EFR.HDSup: host dirty tracking in v1 leaves (default true). */
  readonly hostDirty?: boolean;
}

export class AmdViUnit implements PhysicalIommu, AmdVapicPosting {
  readonly vendor = "amd-vi";
  readonly name: string;
  readonly iotlb = new Iotlb(16384);
  readonly hostFaults: AmdHostFault[] = [];
  private readonly attachments = new Map<number, Map<number, IommuDomain>>();
  private readonly devices = new Map<number, PhysicalDevice>();
  private readonly viommusByParent = new Map<number, Set<AmdViommu>>();
  /**
   * A stage-2 unmap can invalidate any nested translation through it: nested translations are tagged by host
   * DomainID, not the parent's VMID, so every host DomainID nested on that parent is flushed (Linux walks the
   * parent's vIOMMU list); a single-stage domain drops just the range.
   */
  private readonly stage2Cache = new StageTwoCacheWatcher(this.iotlb, {
    singleStageAsid: TAG_PAGING,
    dropNested: (vmid) => {
      for (const v of this.viommusByParent.get(vmid) ?? []) for (const h of v.hostDomainIds()) this.iotlb.invalidateVmid(h);
    },
  });
  private readonly guestIds = new IdAllocator("AMD-Vi GID", 1, 0xffff);
  private readonly nested: NestedWalker;
  private readonly hit = newIotlbHit();
  private readonly s2Stage: { format: PageTableFormat; geometry: TableGeometry; root: number };
  private readonly gcr3Entry = new Uint32Array(2);
  /** The host driver's own interrupt remapping (128-bit IRTEs, x2APIC: the unit's GAEn and XTEn). */
  readonly interruptRemapping: HostInterruptRemapping;

  /** EFR.HDSup (Linux amd_iommu_hd_support). */
  readonly hostDirty: boolean;
  private readonly efr: bigint;
  private readonly dirty = new HostDirtyMarker();
  /** The host's reverse map of confidential memory, which every DMA is checked against. */
  private readonly rmp: PrivatePageMap;
  private readonly rmpHit: PrivateAssignment = { owner: 0, gpa: 0 };
  /** The last access the RMP refused, so the fault report that follows it is an RMP_PAGE_FAULT. */
  private readonly rmpFault = { requesterId: -1, iova: 0, owner: 0, gpa: 0 };

  constructor(
    private readonly host: HostServices,
    readonly index: number,
    options: AmdViUnitOptions = {},
  ) {
    this.name = `amdvi${index}`;
    this.hostDirty = options.hostDirty ?? true;
    this.efr = this.hostDirty ? HOST_EFR : HOST_EFR_NO_HD;
    this.nested = new NestedWalker(host.memory, HOST_OWNER);
    this.rmp = PrivatePageMap.of(host.memory);
    this.s2Stage = { format: amdV1PageTableFormat, geometry: hostGeometry, root: 0 };
    this.interruptRemapping = new HostInterruptRemapping(host.memory, true, true);
  }

  /** The host driver programs a remapped interrupt for one of its devices (a passthrough device's MSI). */
  programInterrupt(device: PhysicalDevice, vector: number, destination: number): Result<MsiMessage> {
    return this.interruptRemapping.program(device.requesterId, vector, destination);
  }

  /** KVM's irq bypass for a passthrough device's interrupt: a vAPIC-form host IRTE (amd_iommu_activate_guest_mode). */
  postInterrupt(device: PhysicalDevice, target: VapicTarget): Result<MsiMessage> {
    return this.interruptRemapping.programPosted(device.requesterId, target);
  }

  updateVcpu(backingPage: number, running: boolean, hostApicId: number): void {
    this.interruptRemapping.updateVcpu(backingPage, running, hostApicId);
  }

  unpostInterrupt(device: PhysicalDevice, msi: MsiMessage): void {
    this.interruptRemapping.free(device.requesterId, msi);
  }

  setGaLogNotifier(owner: OwnerId, notify: ((gaTag: number) => void) | undefined): void {
    this.interruptRemapping.setGaLogNotifier(owner, notify);
  }

  /** Physical interrupt remapping of a device MSI through the host IRT. */
  remapInterrupt(device: PhysicalDevice, msi: MsiMessage): InterruptResult {
    return this.interruptRemapping.remap(device.requesterId, msi);
  }

  hwInfo(_device: PhysicalDevice, requestedType: number | undefined): Result<HwInfo> {
    if (requestedType !== undefined && requestedType !== 0 && requestedType !== IOMMU_HW_INFO_TYPE_AMD) return err("EOPNOTSUPP", `hw_info type ${requestedType}`);
    // IOMMU_CAP_DIRTY_TRACKING is amd_iommu_hd_support: EFR.HDSup.
    const capabilities = this.hostDirty ? HwCapability.DIRTY_TRACKING : 0;
    return ok({ type: IOMMU_HW_INFO_TYPE_AMD, data: encodeHwInfoAmd(this.efr, HOST_EFR2), maxPasidLog2: 20, capabilities });
  }

  /**
   * amd_iommu_domain_alloc_paging_flags: v1 tables; IOMMU_HWPT_ALLOC_DIRTY_TRACKING gives the domain dirty ops
   * (the D bit of its leaves) and is EOPNOTSUPP on a unit without EFR.HDSup, as every flag Linux does not
   * support is.
   */
  domainAllocPaging(_device: PhysicalDevice, flags: number, _owner: OwnerId): Result<PagingDomain> {
    if ((flags & ~(HwptAllocFlag.NEST_PARENT | HwptAllocFlag.PASID | HwptAllocFlag.DIRTY_TRACKING)) !== 0) return err("EOPNOTSUPP", "unknown paging flags");
    const tracked = (flags & HwptAllocFlag.DIRTY_TRACKING) !== 0;
    if (tracked && !this.hostDirty) return err("EOPNOTSUPP", "dirty tracking needs host dirty support (EFR.HDSup)");
    const r = TablePagingDomain.create(this, this.host, hostFormat, hostGeometry, { nestParent: (flags & HwptAllocFlag.NEST_PARENT) !== 0, dirty: tracked ? amdV1DirtyBits : undefined });
    if (!r.ok) return fail(r);
    this.stage2Cache.use(r.value, false);
    return ok(r.value);
  }

  getViommuSize(_device: PhysicalDevice, type: number): number {
    return type === IOMMU_VIOMMU_TYPE_AMD ? 256 : 0;
  }

  viommuInit(viommu: ViommuCore, parent: PagingDomain, data: UserData | undefined): Result<ViommuOps> {
    // Any AMD-Vi unit walks a v1 stage 2: one parent serves every vIOMMU of the VM.
    if (parent.unit.vendor !== this.vendor || !(parent instanceof TablePagingDomain)) return err("EINVAL", "nesting parent is not an AMD-Vi v1 domain");
    this.stage2Cache.use(parent, true);
    const r = AmdViommu.create(viommu, this.viommuPorts, this.host.memory, data);
    return r.ok ? ok(r.value) : fail(r);
  }

  private readonly viommuPorts: ViommuUnitPorts = {
    hostFiveLevel: false,
    allocateDomainId: () => {
      const id = this.host.vmids.allocate();
      // Whoever lets go last (the guest DomainID mapping, or the last device attached), nothing cached under
      // the id survives it: the IOTLB is flushed before the id can be handed out again.
      if (id.ok) this.host.vmids.onFree(id.value, () => this.iotlb.invalidateVmid(id.value));
      return id;
    },
    retainDomainId: (id) => void this.host.vmids.retain(id),
    releaseDomainId: (id) => this.host.vmids.release(id),
    allocateGuestId: () => this.guestIds.allocate(),
    releaseGuestId: (id) => this.guestIds.release(id),
    vfMmioAddress: (gid) => VF_BAR_BASE + this.index * VF_BAR_STRIDE + gid * 0x1000,
    invalidate: (hdomId, pasid, base, size, all) => this.invalidate(hdomId, pasid, base, size, all),
    register: (v) => {
      const vmid = v.core.parent.vmid;
      let set = this.viommusByParent.get(vmid);
      if (set === undefined) {
        set = new Set();
        this.viommusByParent.set(vmid, set);
      }
      set.add(v);
    },
    unregister: (v) => {
      const vmid = v.core.parent.vmid;
      const set = this.viommusByParent.get(vmid);
      set?.delete(v);
      if (set?.size === 0) this.viommusByParent.delete(vmid);
    },
  };

  /** Drops cached translations of a host DomainID: one PASID (or every one) over a range, or everything. */
  invalidate(hdomId: number, pasid: number | undefined, base: number, size: number, all: boolean): void {
    if (this.auditing) this.noteInvalidation(hdomId, pasid, base, size, all);
    const tag = pasid === undefined ? ANY_ASID : pasid;
    if (all) {
      if (pasid === undefined) this.iotlb.invalidateVmid(hdomId);
      else this.iotlb.invalidateAsid(hdomId, pasid);
      return;
    }
    if (!(base < 2 ** 53) || size <= 0) return;
    this.iotlb.invalidateRange(hdomId, tag, base, Math.min(size, 2 ** 53 - base));
  }

  attachDevice(device: PhysicalDevice, domain: IommuDomain, pasid: number): Result<void> {
    if (domain.unit.vendor !== this.vendor) return err("EINVAL", "domain belongs to another driver");
    // amd_iommu_attach_device: a dirty-tracking domain only on units with host dirty support.
    const stage2 = domain.kind === "paging" ? domain : domain.parent;
    if (stage2.dirtyOps !== undefined && !this.hostDirty) return err("EINVAL", "dirty-tracking domain on a unit without EFR.HDSup");
    // Linux nested_attach_device: the nested DTE path is for the RID only.
    if (domain instanceof AmdNestedDomain && pasid !== NO_PASID) return err("EINVAL", "a nested domain attaches to the RID only");
    if (domain.kind === "paging") this.stage2Cache.use(domain, false);
    let byPasid = this.attachments.get(device.requesterId);
    if (byPasid === undefined) {
      byPasid = new Map();
      this.attachments.set(device.requesterId, byPasid);
    }
    const previous = byPasid.get(pasid);
    byPasid.set(pasid, domain);
    this.devices.set(device.requesterId, device);
    // The host driver flushes the DTE and what the old domain left cached for this device.
    if (previous !== undefined && previous !== domain) this.flushDomain(previous);
    return ok();
  }

  detachDevice(device: PhysicalDevice, pasid: number): void {
    const byPasid = this.attachments.get(device.requesterId);
    const previous = byPasid?.get(pasid);
    byPasid?.delete(pasid);
    if (byPasid !== undefined && byPasid.size === 0) this.attachments.delete(device.requesterId);
    if (previous !== undefined) this.flushDomain(previous);
  }

  private flushDomain(domain: IommuDomain): void {
    if (domain instanceof AmdNestedDomain) this.iotlb.invalidateVmid(domain.hdomId);
  }

  domainOf(requesterId: number, pasid: number): IommuDomain | undefined {
    const byPasid = this.attachments.get(requesterId);
    if (byPasid === undefined) return undefined;
    const exact = byPasid.get(pasid);
    if (exact !== undefined || pasid === NO_PASID) return exact;
    // A PASID request without a PASID attachment uses the RID's nested domain (its GCR3 table covers PASIDs).
    const rid = byPasid.get(NO_PASID);
    return rid instanceof AmdNestedDomain ? rid : undefined;
  }

  private ownerOf(requesterId: number): OwnerId {
    return this.devices.get(requesterId)?.owner ?? HOST_OWNER;
  }

  translate(request: DmaRequest, out: WalkResult): void {
    const domain = this.domainOf(request.requesterId, request.pasid);
    if (domain === undefined) return blocked(out, request.iova);
    if (domain instanceof AmdNestedDomain) return this.translateNested(domain, request, out);
    const vmid = domain.kind === "paging" ? domain.vmid : domain.parent.vmid;
    if (translateFromIotlb(this.iotlb, vmid, TAG_PAGING, request.iova, request.access, this.hit, out)) {
      if (this.auditing) this.auditStage2(domain, request, out);
      return this.rmpCheck(request, out);
    }
    if (domain.kind !== "paging") return blocked(out, request.iova);
    domain.table.walk(request.iova, request.access, out);
    if (!out.ok) out.stage = 2;
    if (this.auditing) this.auditStage2(domain, request, out);
    this.rmpCheck(request, out);
    this.dirty.written(domain, request.access, out);
    cacheTranslation(this.iotlb, vmid, TAG_PAGING, request.iova, out, 0, this.dirty.cleanOnRead(domain, request.access));
  }

  /** The IOTLB tag of a request through a DTE (its PASID, 0 for GIoV, TAG_NO_PASID for stage 2 alone), or -1: blocked. */
  private static tagOf(v: NestedDteView, pasid: number): number {
    if (pasid !== NO_PASID) return v.gv && pasid < v.pasidLimit ? pasid : -1;
    return v.gv && v.giov ? 0 : TAG_NO_PASID;
  }

  private translateNested(d: AmdNestedDomain, request: DmaRequest, out: WalkResult): void {
    const tag = AmdViUnit.tagOf(d, request.pasid);
    if (tag < 0) {
      blocked(out, request.iova);
      if (this.auditing) this.auditNested(d, request, out, false);
      return;
    }
    if (translateFromIotlb(this.iotlb, d.hdomId, tag, request.iova, request.access, this.hit, out)) {
      if (this.auditing) this.auditNested(d, request, out, true);
      return this.rmpCheck(request, out);
    }
    this.walkNested(d, d.stage2, d.parent.table.root, tag, request, out);
    if (this.auditing) this.auditNested(d, request, out, false);
    if (!out.ok) this.pageRequest(d, request, out);
    this.rmpCheck(request, out);
    this.dirty.written(d.parent, request.access, out);
    // Only complete translations are cached: a permission fault may be lifted by a later, looser mapping.
    cacheTranslation(this.iotlb, d.hdomId, tag, request.iova, out, 0, this.dirty.cleanOnRead(d.parent, request.access));
  }

  /** The walk of a nested request through `v` (tag from tagOf, not -1): the guest's tables over stage 2, or stage 2 alone. */
  private walkNested(v: NestedDteView, stage2: Stage2Access, parentRoot: number, tag: number, request: DmaRequest, out: WalkResult): void {
    const s2 = this.s2Stage;
    s2.root = parentRoot;
    if (tag === TAG_NO_PASID) {
      // Guest translation off for this request: the IOVA is a GPA, checked against the DTE's IR/IW.
      this.nested.translateStage2(s2, request.iova, request.access, out);
      if (out.ok && (request.access & v.dtePerms) !== request.access) {
        out.ok = false;
        out.fault = WalkFault.Permission;
        out.stage = 1;
      }
      if (out.ok) out.perms &= v.dtePerms;
      return;
    }
    const root = this.guestCr3(v, stage2, tag, request, out);
    if (root === undefined) return;
    const geometry = v.guestLevels === 5 ? guestGeometry5 : guestGeometry4;
    this.nested.translate({ format: amdV2PageTableFormat, geometry, root }, s2, this.ownerOf(request.requesterId), request.iova, request.access, out);
  }

  // ---- stale-translation audit ----

  /** Audited devices by physical requester id. */
  private readonly audited = new Map<number, AmdAuditedDevice>();
  /** Whether any device is audited: the one check a translation pays while nobody audits. */
  private auditing = false;
  private readonly fresh = newWalkResult();
  private readonly auditDte = new Uint32Array(8);
  private readonly auditView = new GuestDteView();

  /** The VMM of `requesterId` audits its translations against the guest's DTE (undefined: stops). */
  auditDevice(requesterId: number, device: AmdAuditedDevice | undefined): void {
    if (device === undefined) this.audited.delete(requesterId);
    else this.audited.set(requesterId, device);
    this.auditing = this.audited.size > 0;
  }

  /** An IOTLB invalidation of a host DomainID, noted for the audited devices whose nested domain carries it. */
  private noteInvalidation(hdomId: number, pasid: number | undefined, base: number, size: number, all: boolean): void {
    for (const [rid, device] of this.audited) {
      const d = this.domainOf(rid, NO_PASID);
      if (!(d instanceof AmdNestedDomain) || d.hdomId !== hdomId) continue;
      const what = `INVALIDATE_IOMMU_PAGES DomainID ${d.gdomId}${pasid === undefined ? "" : ` PASID ${pasid}`}`;
      device.audit.noteInvalidation(what, all ? { rid: device.guestRid } : { rid: device.guestRid, start: base, end: base + size - 1 });
    }
  }

  /**
   * The audit of one translation through a nested domain: the result used (an IOTLB hit, or a walk from the DTE
   * the host still holds) against a walk from the guest's DTE as it is now. A DTE the guest changed without
   * INVALIDATE_DEVTAB_ENTRY is a stale device table entry (the context cache), found at every use; otherwise a
   * difference on a hit is an IOTLB entry the guest did not invalidate (INVALIDATE_IOMMU_PAGES after an unmap or a
   * GCR3 change). A walk from an unchanged DTE reads the same tables and agrees.
   */
  private auditNested(d: AmdNestedDomain, request: DmaRequest, used: WalkResult, hit: boolean): void {
    const device = this.audited.get(request.requesterId);
    if (device === undefined) return;
    const state = device.guestDte(this.auditDte);
    const staleContext = state !== GuestDteState.Entry || !sameTranslationDte(this.auditDte, d.guestDte);
    if (!hit && !staleContext) return;
    this.freshWalk(state, d.stage2, d.parent.table.root, request);
    this.report(device, request, used, staleContext ? "context cache" : "IOTLB");
  }

  /**
   * The audit of a device the host translates through stage 2 alone (its guest DTE passed DMA untranslated, or
   * identity with IR and IW): what the guest's DTE says now, at every use.
   */
  private auditStage2(domain: IommuDomain, request: DmaRequest, used: WalkResult): void {
    const device = this.audited.get(request.requesterId);
    if (device === undefined || domain.kind !== "paging" || !(domain instanceof TablePagingDomain)) return;
    const state = device.guestDte(this.auditDte);
    let access = this.stage2Readers.get(domain);
    if (access === undefined) {
      access = new Stage2Access(this.host.memory, domain, this.ownerOf(request.requesterId));
      this.stage2Readers.set(domain, access);
    }
    this.freshWalk(state, access, domain.table.root, request);
    this.report(device, request, used, "context cache");
  }

  /** Stage-2 readers of GCR3 tables for the audit of devices on a plain parent (built once per parent). */
  private readonly stage2Readers = new WeakMap<PagingDomain, Stage2Access>();

  private freshWalk(state: GuestDteState, stage2: Stage2Access, parentRoot: number, request: DmaRequest): void {
    const fresh = this.fresh;
    const view = this.auditView;
    if (view.load(state, this.auditDte) === FreshDte.Blocked) return blocked(fresh, request.iova);
    const tag = AmdViUnit.tagOf(view, request.pasid);
    if (tag < 0) return blocked(fresh, request.iova);
    this.walkNested(view, stage2, parentRoot, tag, request, fresh);
  }

  private report(device: AmdAuditedDevice, request: DmaRequest, used: WalkResult, cache: string): void {
    const site =
      request.pasid === NO_PASID
        ? { vm: device.vm, unit: this.name, cache, rid: device.guestRid, iova: request.iova }
        : { vm: device.vm, unit: this.name, cache, rid: device.guestRid, pasid: request.pasid, iova: request.iova };
    device.audit.check(site, used, this.fresh);
  }

  /**
   * The guest CR3 for `pasid` from the GCR3 table (GLX + 1 levels of 512 entries), every entry fetched by
   * GPA through stage 2. Undefined (with `out` describing the fault) when an entry is missing or unreachable.
   */
  private guestCr3(d: NestedDteView, access: Stage2Access, pasid: number, request: DmaRequest, out: WalkResult): number | undefined {
    let table = d.gcr3Root;
    for (let level = d.glx; level >= 0; level--) {
      const at = table + gcr3Index(pasid, level) * 8;
      if (!access.readEntry(at, this.gcr3Entry)) {
        blocked(out, request.iova);
        out.fault = access.walk.ok ? WalkFault.External : access.walk.fault;
        out.stage = 2;
        out.tableFetch = true;
        out.faultInput = at;
        out.entryAddress = at;
        return undefined;
      }
      if ((this.gcr3Entry[0]! & 1) === 0) {
        blocked(out, request.iova);
        out.entryAddress = at;
        return undefined;
      }
      table = ((this.gcr3Entry[0]! & 0xfffff000) >>> 0) + (this.gcr3Entry[1]! & 0xfffff) * 0x1_0000_0000;
    }
    return table;
  }

  /**
   * SEV-SNP's RMP check of a translated DMA (EFR.SNPSup hosts check every device access against the RMP): a page
   * a confidential guest holds privately is not the device's to touch, whatever the tables say, so the access is
   * refused and the host's log gets RMP_PAGE_FAULT naming the guest-physical address (Linux
   * amd_iommu_report_rmp_fault). The walk and its cached entry stay as they are: a page the guest shares later
   * is reachable again without a flush, as the hardware checks the RMP on every access.
   */
  private rmpCheck(request: DmaRequest, out: WalkResult): void {
    if (!out.ok || !this.rmp.active || !this.rmp.privateOwner(out.output, this.rmpHit)) return;
    out.ok = false;
    out.fault = WalkFault.Permission;
    out.stage = 2;
    out.faultInput = request.iova;
    this.rmpFault.requesterId = request.requesterId;
    this.rmpFault.iova = request.iova;
    this.rmpFault.owner = this.rmpHit.owner;
    this.rmpFault.gpa = this.rmpHit.gpa;
  }

  reportDmaFault(request: DmaRequest, result: WalkResult): void {
    const f = this.rmpFault;
    if (f.requesterId === request.requesterId && f.iova === request.iova && result.fault === WalkFault.Permission) {
      f.requesterId = -1;
      const write = (request.access & Perm.Write) !== 0;
      const record = rmpPageFaultEvent({ deviceId: request.requesterId, vmgTag: f.owner, gpa: f.gpa, write });
      this.hostFaults.push({ requesterId: request.requesterId, pasid: request.pasid, iova: request.iova, write, record, stage: 2 });
      return;
    }
    const device = this.devices.get(request.requesterId);
    const domain = this.domainOf(request.requesterId, request.pasid);
    const write = (request.access & Perm.Write) !== 0;
    const pasid = request.pasid === NO_PASID ? undefined : request.pasid;
    if (domain instanceof AmdNestedDomain && device !== undefined && result.stage === 1) {
      const virtId = domain.owner.core.virtIdOf(device);
      const viommu = domain.owner as AmdViommu;
      if (virtId !== undefined) {
        const record = dmaFaultEvent({ deviceId: virtId, domainId: domain.gdomId, pasid, address: request.iova, write, fault: result.fault, mapped: result.mapped, entryAddress: result.entryAddress });
        if (viommu.deliverGuestEvent(record)) return;
      }
    }
    const hostDomain = domain === undefined ? 0 : domain instanceof AmdNestedDomain ? domain.hdomId : domain.kind === "paging" ? domain.vmid : 0;
    const record = dmaFaultEvent({ deviceId: request.requesterId, domainId: hostDomain, pasid, address: request.iova, write, fault: result.fault, mapped: result.mapped, entryAddress: result.entryAddress });
    this.hostFaults.push({ requesterId: request.requesterId, pasid: request.pasid, iova: request.iova, write, record, stage: result.stage });
  }

  /**
   * A recoverable fault (PCIe PRI): a not-present entry of the guest's own tables for a request with a PASID, from
   * a device that can issue page requests, behind a nested domain whose DTE has PPR set and whose HWPT has a
   * fault queue. The request goes to the host's IOPF, which hands the group to the VMM; the device waits for the
   * response. A request without a PASID is not one: the host driver drops PPRs with GN clear (ppr.c
   * ppr_is_valid) and answers them FAILURE, so it is a final fault. A stage-2 hole or a table fetch the host could
   * not make is the host's, never the guest's to page in.
   */
  private pageRequest(d: AmdNestedDomain, request: DmaRequest, out: WalkResult): void {
    const prgi = request.prgi ?? -1;
    if (prgi < 0 || request.pasid === NO_PASID || !d.ppr || d.iopf === undefined) return;
    if (out.fault !== WalkFault.Translation || out.stage !== 1 || out.tableFetch) return;
    const device = this.devices.get(request.requesterId);
    if (device === undefined) return;
    const a = request.access;
    const perm = (a & Perm.Read ? PgfaultPerm.READ : 0) | (a & Perm.Write ? PgfaultPerm.WRITE : 0) | (a & Perm.Exec ? PgfaultPerm.EXEC : 0) | (a & Perm.User ? 0 : PgfaultPerm.PRIV);
    const page = request.iova - (request.iova % 4096);
    if (d.iopf.report(device, request.pasid, prgi, [{ address: page, perm }])) out.pageRequest = prgi;
  }
}

function blocked(out: WalkResult, iova: number): void {
  out.ok = false;
  out.mapped = false;
  out.output = 0;
  out.pageShift = 0;
  out.perms = 0;
  out.fault = WalkFault.Translation;
  out.stage = 1;
  out.level = 0;
  out.faultInput = iova;
  out.tableFetch = false;
  out.fetches = 0;
}
