import {
  HwCapability,
  PgfaultPerm,
  copyStructFromUser,
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
  cacheTranslation,
  translateFromIotlb,
  toBytes,
  WalkFault,
  type DmaRequest,
  type HostServices,
  type HwInfo,
  type IommuDomain,
  type NestedDomain,
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
import { encodeMockEvent, MockEventType } from "../format/event.js";
import { mockDirtyBits, mockGeometry, mockPteFormat } from "../format/pte.js";
import { decodeMockS1, MOCK_HW_INFO_BYTES, MOCK_HW_INFO_TYPE, MOCK_HWPT_DATA_TYPE, MOCK_S1_BYTES, MOCK_S1_MIN_BYTES, MOCK_VEVENTQ_TYPE, MOCK_VIOMMU_TYPE } from "../format/uapi.js";
import { mockFaultReason } from "./mock-fault.js";
import { MockNestedDomain, type MockTlb } from "./mock-nested-domain.js";
import { MOCK_VIOMMU_SIZE, MockViommu } from "./mock-viommu.js";

/** IOTLB tag of a paging (single-stage) attachment: ASIDs are 16-bit, so this never collides. */
const ASID_PAGING = 0x1_0000;

/** Host faults kept per owner until read; more are counted lost. */
const HOST_FAULTS_KEPT = 256;
const NO_HOST_FAULTS = { faults: [], lost: 0 } as const;

/** A fault the unit kept for the host (stage-2 faults, devices without a vIOMMU). */
export interface MockHostFault {
  readonly requesterId: number;
  readonly iova: number;
  readonly write: boolean;
  readonly reason: number;
  readonly stage: 1 | 2;
}

/** `MockAuditedDevice.guestStage1Root` when the guest's device entry blocks the device (V clear or malformed). */
export const GUEST_BLOCKED = -1;
/** `MockAuditedDevice.guestStage1Root` when the guest's device entry passes DMA through untranslated (TR clear). */
export const GUEST_BYPASS = -2;

/**
 * A device whose cached translations are audited, as its VMM describes it: where findings go, the id the guest
 * knows it by, and what the guest's device entry says now (read from guest memory at each audited use).
 */
export interface MockAuditedDevice {
  readonly audit: StaleTranslationAudit;
  readonly vm: number;
  readonly guestRid: number;
  /** The stage-1 root the guest's device entry names now, or GUEST_BLOCKED / GUEST_BYPASS. */
  guestStage1Root(): number;
}

/**
 * The mock physical IOMMU: per-device (and per-PASID) attachments, a VMID/ASID-tagged IOTLB, two-stage
 * translation in the mock format, faults reported to the owning vIOMMU's vEVENTQ (stage 1) or kept for the
 * host (stage 2), and vIOMMUs of type MOCK.
 */
export class MockUnit implements PhysicalIommu {
  readonly vendor = "mock";
  readonly name: string;
  readonly iotlb = new Iotlb(8192);
  /** Faults kept for the host, per owner of the device, until that owner's VMM reads them (bounded). */
  private readonly hostFaults = new Map<OwnerId, { faults: MockHostFault[]; lost: number }>();
  private readonly attachments = new Map<number, Map<number, IommuDomain>>();
  private readonly devices = new Map<number, PhysicalDevice>();
  private readonly nested: NestedWalker;
  private readonly hit = newIotlbHit();
  /** The IOTLB as invalidation commands reach it: every invalidation is reported on the event bus. */
  private readonly tlb: MockTlb = {
    invalidateAsid: (vmid, asid) => this.reported("asid", this.iotlb.invalidateAsid(vmid, asid), vmid, asid, 0, Number.MAX_SAFE_INTEGER),
    invalidateRange: (vmid, asid, address, length) =>
      this.reported("range", this.iotlb.invalidateRange(vmid, asid, address, length), vmid, asid, address, address + length - 1),
  };

  private reported(scope: "asid" | "range", entriesRemoved: number, vmid: number, asid: number, start: number, end: number): number {
    this.host.events.emit("invalidation", { unit: this.name, scope, entriesRemoved });
    if (this.auditing) this.noteInvalidation(scope === "asid" ? `INV_ASID ${asid}` : `INV_RANGE ${asid}`, vmid, asid, start, end);
    return entriesRemoved;
  }

  // ---- stale-translation audit ----

  /** Audited devices by physical requester id. */
  private readonly audited = new Map<number, MockAuditedDevice>();
  /** Whether any device is audited: the one check a translation pays while nobody audits. */
  private auditing = false;
  private readonly fresh = newWalkResult();

  /** The VMM of `requesterId` audits its translations (undefined: stops). */
  auditDevice(requesterId: number, device: MockAuditedDevice | undefined): void {
    if (device === undefined) this.audited.delete(requesterId);
    else this.audited.set(requesterId, device);
    this.auditing = this.audited.size > 0;
  }

  /** An IOTLB invalidation, noted for the audited devices whose attachment it covers. */
  private noteInvalidation(what: string, vmid: number, asid: number, start: number, end: number): void {
    for (const [rid, device] of this.audited) {
      const d = this.domainOf(rid, NO_PASID);
      if (d instanceof MockNestedDomain && d.parent.vmid === vmid && d.asid === asid) device.audit.noteInvalidation(what, { rid: device.guestRid, start, end });
    }
  }

  /**
   * The audit of one translation of an audited device through a nested domain: the translation used (an IOTLB
   * hit, or a walk from the attachment the host still holds) against a walk from what the guest's device entry
   * names now. An attachment whose stage-1 root the guest has since changed is a stale context (a missing
   * INV_DEVICE), checked on every use; otherwise only IOTLB hits can be stale (a missing INV_RANGE / INV_ASID).
   */
  private audit(domain: IommuDomain, request: DmaRequest, used: WalkResult, hit: boolean): void {
    const device = this.audited.get(request.requesterId);
    if (device === undefined || !(domain instanceof MockNestedDomain)) return;
    const root = device.guestStage1Root();
    const staleContext = root !== domain.s1Root;
    if (!hit && !staleContext) return;
    const fresh = this.fresh;
    const parent = domain.parent.table;
    if (root === GUEST_BLOCKED) blocked(fresh, request.iova);
    else if (root === GUEST_BYPASS) parent.walk(request.iova, request.access, fresh);
    else {
      this.nested.translate(
        { format: mockPteFormat, geometry: mockGeometry, root },
        { format: parent.format, geometry: parent.geometry, root: parent.root },
        this.ownerOf(request.requesterId),
        request.iova,
        request.access,
        fresh,
      );
    }
    const site = { vm: device.vm, unit: this.name, cache: staleContext ? "context cache" : "IOTLB", rid: device.guestRid, iova: request.iova };
    device.audit.check(site, used, fresh);
  }

  /**
   * A stage-2 change can invalidate any stage-1 translation through it, so a nesting parent's unmap drops its
   * whole VMID; a single-stage domain's unmap drops just the range.
   */
  private readonly stage2Cache = new StageTwoCacheWatcher(this.iotlb, { singleStageAsid: ASID_PAGING });

  constructor(
    private readonly host: HostServices,
    index: number,
  ) {
    this.name = `mock${index}`;
    this.nested = new NestedWalker(host.memory, HOST_OWNER);
  }

  hwInfo(_device: PhysicalDevice, requestedType: number | undefined): Result<HwInfo> {
    if (requestedType !== undefined && requestedType !== 0 && requestedType !== MOCK_HW_INFO_TYPE) return err("EOPNOTSUPP", `hw_info type ${requestedType}`);
    const data = new Uint8Array(MOCK_HW_INFO_BYTES);
    const v = new DataView(data.buffer);
    v.setUint32(4, 1, true);
    v.setBigUint64(8, 0xdeadbeefn, true);
    return ok({ type: MOCK_HW_INFO_TYPE, data, maxPasidLog2: 20, capabilities: HwCapability.DIRTY_TRACKING });
  }

  domainAllocPaging(_device: PhysicalDevice, flags: number, _owner: OwnerId): Result<PagingDomain> {
    if ((flags & ~(HwptAllocFlag.NEST_PARENT | HwptAllocFlag.PASID | HwptAllocFlag.DIRTY_TRACKING)) !== 0) return err("EOPNOTSUPP", "unknown paging flags");
    const r = TablePagingDomain.create(this, this.host, mockPteFormat, mockGeometry, {
      nestParent: (flags & HwptAllocFlag.NEST_PARENT) !== 0,
      dirty: flags & HwptAllocFlag.DIRTY_TRACKING ? mockDirtyBits : undefined,
    });
    if (!r.ok) return fail(r);
    this.stage2Cache.use(r.value, false);
    return ok(r.value);
  }

  /** The legacy path: a nested domain straight on the parent, no vIOMMU. */
  domainAllocNested(_device: PhysicalDevice, parent: PagingDomain, flags: number, data: UserData): Result<NestedDomain> {
    if ((flags & ~HwptAllocFlag.PASID) !== 0) return err("EOPNOTSUPP", "nested flags other than PASID");
    if (data.type !== MOCK_HWPT_DATA_TYPE) return err("EOPNOTSUPP", `HWPT data type 0x${data.type.toString(16)}`);
    const bytes = copyStructFromUser(data, MOCK_HWPT_DATA_TYPE, MOCK_S1_MIN_BYTES, MOCK_S1_BYTES);
    if (!bytes.ok) return fail(bytes);
    const s1 = decodeMockS1(bytes.value);
    if (!s1.ok) return fail(s1);
    this.stage2Cache.use(parent, true);
    return ok(new MockNestedDomain(this, parent, s1.value.s1Root, s1.value.asid, this.tlb, undefined));
  }

  getViommuSize(_device: PhysicalDevice, type: number): number {
    return type === MOCK_VIOMMU_TYPE ? MOCK_VIOMMU_SIZE : 0;
  }

  viommuInit(viommu: ViommuCore, parent: PagingDomain, _data: UserData | undefined): Result<ViommuOps> {
    // Any mock unit can walk a mock stage 2: one parent may serve every vIOMMU of the VM.
    if (parent.unit.vendor !== this.vendor) return err("EINVAL", "nesting parent belongs to another driver");
    this.stage2Cache.use(parent, true);
    const ops = MockViommu.create(viommu, this.tlb, this.host.memory);
    return ops.ok ? ok(ops.value) : fail(ops);
  }

  attachDevice(device: PhysicalDevice, domain: IommuDomain, pasid: number): Result<void> {
    if (domain.unit.vendor !== this.vendor) return err("EINVAL", "domain belongs to another driver");
    if (domain.kind === "paging") this.stage2Cache.use(domain, false);
    if (domain instanceof MockNestedDomain && domain.viommu !== undefined && domain.viommu.virtIdOf(device) === undefined) {
      return err("ENOENT", "attaching to a vIOMMU domain needs the device's vDEVICE first");
    }
    let byPasid = this.attachments.get(device.requesterId);
    if (byPasid === undefined) {
      byPasid = new Map();
      this.attachments.set(device.requesterId, byPasid);
    }
    byPasid.set(pasid, domain);
    this.devices.set(device.requesterId, device);
    this.lastRid = -1;
    return ok();
  }

  detachDevice(device: PhysicalDevice, pasid: number): void {
    const byPasid = this.attachments.get(device.requesterId);
    byPasid?.delete(pasid);
    if (byPasid !== undefined && byPasid.size === 0) this.attachments.delete(device.requesterId);
    this.lastRid = -1;
  }

  /**
   * The last attachment looked up, with its IOTLB tag (a device's DMA comes in runs): an IOTLB hit then costs two
   * comparisons before the lookup. -1 after any attach or detach.
   */
  private lastRid = -1;
  private lastPasid = -1;
  private lastDomain: IommuDomain | undefined;
  private lastVmid = 0;
  private lastAsid = 0;

  domainOf(requesterId: number, pasid: number): IommuDomain | undefined {
    if (requesterId !== this.lastRid || pasid !== this.lastPasid) this.lookUpAttachment(requesterId, pasid);
    return this.lastDomain;
  }

  private lookUpAttachment(requesterId: number, pasid: number): void {
    const domain = this.attachments.get(requesterId)?.get(pasid);
    this.lastRid = requesterId;
    this.lastPasid = pasid;
    this.lastDomain = domain;
    if (domain === undefined) return;
    this.lastVmid = domain.kind === "paging" ? domain.vmid : domain.parent.vmid;
    this.lastAsid = domain.kind === "paging" ? ASID_PAGING : (domain as MockNestedDomain).asid;
  }

  translate(request: DmaRequest, out: WalkResult): void {
    if (request.requesterId !== this.lastRid || request.pasid !== this.lastPasid) this.lookUpAttachment(request.requesterId, request.pasid);
    const domain = this.lastDomain;
    if (domain === undefined) {
      blocked(out, request.iova);
      return;
    }
    const vmid = this.lastVmid;
    const asid = this.lastAsid;
    if (translateFromIotlb(this.iotlb, vmid, asid, request.iova, request.access, this.hit, out)) {
      if (this.auditing) this.audit(domain, request, out, true);
      return;
    }
    const stage2 = domain.kind === "paging" ? domain : domain.parent;
    if (domain.kind === "paging") domain.table.walk(request.iova, request.access, out);
    else {
      const nested = domain as MockNestedDomain;
      const parent = nested.parent.table;
      this.nested.translate(
        { format: mockPteFormat, geometry: mockGeometry, root: nested.s1Root },
        { format: parent.format, geometry: parent.geometry, root: parent.root },
        this.ownerOf(request.requesterId),
        request.iova,
        request.access,
        out,
      );
    }
    if (this.auditing) this.audit(domain, request, out, false);
    if (!out.ok) {
      this.pageRequest(domain, request, out);
      return;
    }
    // The hardware marks the stage-2 (or only) leaf of a write dirty; a read leaves a clean writable leaf cached so
    // that the first write after it walks and marks.
    const tracking = stage2.dirtyOps?.tracking === true;
    const write = (request.access & Perm.Write) !== 0;
    if (tracking && write) stage2.dirtyOps!.markWritten(out);
    cacheTranslation(this.iotlb, vmid, asid, request.iova, out, 0, tracking && !write);
  }

  /**
   * A translation fault a PRI-capable device can recover from (a not-present entry of the domain the guest or
   * VMM controls, in a domain with a fault queue): the mock forwards it as a one-page request group and the
   * device waits for the response instead of failing.
   */
  private pageRequest(domain: IommuDomain, request: DmaRequest, out: WalkResult): void {
    const prgi = request.prgi ?? -1;
    if (prgi < 0 || out.fault !== WalkFault.Translation || out.tableFetch || domain.iopf === undefined) return;
    // A stage-2 hole is the host's own mapping: never the guest's to page in.
    if (domain.kind === "nested" && out.stage !== 1) return;
    const device = this.devices.get(request.requesterId);
    if (device === undefined) return;
    const perm = (request.access & Perm.Read ? PgfaultPerm.READ : 0) | (request.access & Perm.Write ? PgfaultPerm.WRITE : 0);
    const page = request.iova - (request.iova % 4096);
    if (domain.iopf.report(device, request.pasid === NO_PASID ? undefined : request.pasid, prgi, [{ address: page, perm }])) out.pageRequest = prgi;
  }

  private ownerOf(requesterId: number): OwnerId {
    return this.devices.get(requesterId)?.owner ?? HOST_OWNER;
  }

  reportDmaFault(request: DmaRequest, result: WalkResult): void {
    const device = this.devices.get(request.requesterId);
    const reason = mockFaultReason(result, this.domainOf(request.requesterId, request.pasid) !== undefined);
    const write = (request.access & Perm.Write) !== 0;
    const domain = this.domainOf(request.requesterId, request.pasid);
    const viommu = domain instanceof MockNestedDomain ? domain.viommu : undefined;
    const virtId = viommu !== undefined && device !== undefined ? viommu.virtIdOf(device) : undefined;
    // Stage-1 faults of a device on a vIOMMU go to the guest (through the VMM); everything else is the host's.
    if (viommu !== undefined && virtId !== undefined && result.stage === 1) {
      const record = encodeMockEvent({ TYPE: MockEventType.DMA_FAULT, REASON: reason, RID: virtId, WRITE: write ? 1 : 0, STAGE: 1, ADDR: BigInt(request.iova) });
      if (viommu.reportEvent(MOCK_VEVENTQ_TYPE, toBytes(record)).ok) return;
    }
    const owner = device?.owner ?? HOST_OWNER;
    let queue = this.hostFaults.get(owner);
    if (queue === undefined) {
      queue = { faults: [], lost: 0 };
      this.hostFaults.set(owner, queue);
    }
    if (queue.faults.length < HOST_FAULTS_KEPT) queue.faults.push({ requesterId: request.requesterId, iova: request.iova, write, reason, stage: result.stage });
    else queue.lost++;
  }

  /**
   * The host's faults for `owner`'s devices, oldest first, and how many were dropped because nobody read them
   * (a VMM reading them learns it lost some). Reading empties the queue.
   */
  readHostFaults(owner: OwnerId): { readonly faults: readonly MockHostFault[]; readonly lost: number } {
    const queue = this.hostFaults.get(owner);
    if (queue === undefined) return NO_HOST_FAULTS;
    this.hostFaults.delete(owner);
    return queue;
  }

  /** Every device attachment of this unit, for the host side of tests. */
  attachedRequesterIds(): number[] {
    return [...this.attachments.keys()];
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

