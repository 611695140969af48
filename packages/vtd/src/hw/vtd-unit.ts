import {
  ANY_ASID,
  cacheTranslation,
  copyStructFromUser,
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
  StageTwoCacheWatcher,
  TablePagingDomain,
  translateFromIotlb,
  WalkFault,
  type DmaRequest,
  type HostServices,
  type HwInfo,
  type InterruptResult,
  type IommuDomain,
  type MsiMessage,
  type NestedDomain,
  type OwnerId,
  type PagingDomain,
  type PhysicalDevice,
  type PhysicalIommu,
  type Result,
  type StageConfig,
  type UserData,
  type WalkResult,
} from "@viommu/core";
import { encodeFaultRecord, faultPageAddress } from "../format/fault-record.js";
import { FaultStage, type VtdHostFaultBatch, type VtdHostFaultSource } from "../format/host-fault-report.js";
import {
  decodeVtdS1,
  encodeHwInfoVtd,
  IOMMU_HW_INFO_TYPE_INTEL_VTD,
  IOMMU_HWPT_DATA_VTD_S1,
  VTD_S1_BYTES,
  VTD_S1_MIN_BYTES,
} from "../format/uapi.js";
import { slDirtyBits } from "../format/sl-pte.js";
import { HOST_CAP, HOST_ECAP, hostFeatures, hostRegister, type HostFeatures } from "./host-capabilities.js";
import { HostCpus } from "./host-cpus.js";
import { hostFaultReason } from "./host-fault-reason.js";
import { HostInterruptRemapping } from "./host-interrupt-remapping.js";
import { HostFaultLog } from "./host-fault-log.js";
import { hostFlFormat, hostSlFormat, hostSlGeometry } from "./host-formats.js";
import type { AuditableUnit, TranslationAuditor } from "./translation-auditor.js";
import { checkNestedConfig, nestedTag, VtdNestedDomain } from "./vtd-nested-domain.js";

/** IOTLB address-space tag of a single-stage (paging) attachment: nested tags are ≥ 2^21, so these never collide. */
function pagingTag(pasid: number): number {
  return pasid + 1;
}

/** Domain ids 0 and 1 are reserved (Linux keeps 0 for caching mode and 1 for FLPT_DEFAULT_DID). */
const FIRST_DOMAIN_ID = 2;

/** A unit other than the default one (tests of a host without some feature): its CAP and ECAP registers. */
export interface VtdUnitRegisters {
  readonly cap?: Uint32Array;
  readonly ecap?: Uint32Array;
}

/**
 * The physical VT-d unit and its host driver: paging domains in second-level format (the nesting parents),
 * nested domains from `iommu_hwpt_vtd_s1` (PASID entry PGTT = nested: the guest's first-level table over the
 * shared second-level parent), per-device and per-PASID attachments, an IOTLB tagged by the parent's VMID and
 * (domain id, PASID), and primary fault logging with VM-owned faults queued for their VMM.
 */
export class VtdUnit implements PhysicalIommu, VtdHostFaultSource, AuditableUnit {
  readonly vendor = "vtd";
  readonly name: string;
  readonly cap: Uint32Array;
  readonly ecap: Uint32Array;
  /** What the host driver makes of `cap` and `ecap`. */
  readonly features: HostFeatures;
  /** The host's CPUs, as this unit's posted-interrupt notification events reach them. */
  readonly cpus = new HostCpus();
  /** The host driver's interrupt remapping table and this unit's remapping (and posting) of device MSIs. */
  readonly interrupts: HostInterruptRemapping;
  readonly iotlb = new Iotlb(8192);
  readonly faults = new HostFaultLog();
  private readonly attachments = new Map<number, Map<number, IommuDomain>>();
  private readonly devices = new Map<number, PhysicalDevice>();
  private readonly walker: NestedWalker;
  private readonly hit = newIotlbHit();
  private readonly domainIds = new IdAllocator("VT-d domain id", FIRST_DOMAIN_ID, 0xffff);
  /**
   * A stage-2 unmap under a nested domain can change any combined translation cached through it (its output or
   * a first-level table fetch), so a nesting parent drops its whole VMID; a single-stage domain drops just the
   * range, for every PASID.
   */
  private readonly stage2Cache = new StageTwoCacheWatcher(this.iotlb, { singleStageAsid: ANY_ASID });
  private readonly stages = new WeakMap<VtdNestedDomain, { s1: StageConfig; s2: StageConfig }>();
  /**
   * The stale-translation audit of devices whose VMM asked for it, by requester id; undefined while no device
   * is audited, so an unaudited translation pays one comparison for it.
   */
  private auditors: Map<number, TranslationAuditor> | undefined;

  constructor(
    private readonly host: HostServices,
    index: number,
    registers: VtdUnitRegisters = {},
  ) {
    this.name = `dmar${index}`;
    this.cap = registers.cap ?? HOST_CAP;
    this.ecap = registers.ecap ?? HOST_ECAP;
    this.features = hostFeatures(this.cap, this.ecap);
    this.interrupts = new HostInterruptRemapping(host.memory, this.cpus);
    this.walker = new NestedWalker(host.memory, HOST_OWNER);
  }

  private seen(device: PhysicalDevice): void {
    this.devices.set(device.requesterId, device);
  }

  hwInfo(device: PhysicalDevice, requestedType: number | undefined): Result<HwInfo> {
    if (requestedType !== undefined && requestedType !== 0 && requestedType !== IOMMU_HW_INFO_TYPE_INTEL_VTD) return err("EOPNOTSUPP", `hw_info type ${requestedType}`);
    this.seen(device);
    const data = encodeHwInfoVtd({ flags: 0, capReg: hostRegister(this.cap), ecapReg: hostRegister(this.ecap) });
    // IOMMU_HW_CAP_DIRTY_TRACKING: iommufd asks the driver's capable(IOMMU_CAP_DIRTY_TRACKING), which is
    // ssads_supported (intel_iommu_capable, drivers/iommu/intel/iommu.c).
    const capabilities = this.features.ssads ? HwCapability.DIRTY_TRACKING : 0;
    return ok({ type: IOMMU_HW_INFO_TYPE_INTEL_VTD, data, maxPasidLog2: device.pasidBits > 0 ? Math.min(device.pasidBits, 20) : 0, capabilities });
  }

  /**
   * `intel_iommu_domain_alloc_paging_flags`, in its order: flags other than NEST_PARENT, DIRTY_TRACKING and
   * PASID are EOPNOTSUPP; so is a nesting parent without nested support, dirty tracking without
   * ssads_supported (scalable mode and ECAP.SLADS), and either of them without second-level tables. A
   * dirty-tracking domain gets dirty ops that keep D (bit 9) in its second-level leaves.
   */
  domainAllocPaging(device: PhysicalDevice, flags: number, _owner: OwnerId): Result<PagingDomain> {
    if ((flags & ~(HwptAllocFlag.NEST_PARENT | HwptAllocFlag.DIRTY_TRACKING | HwptAllocFlag.PASID)) !== 0) return err("EOPNOTSUPP", "unknown paging flags");
    const nestParent = (flags & HwptAllocFlag.NEST_PARENT) !== 0;
    const dirty = (flags & HwptAllocFlag.DIRTY_TRACKING) !== 0;
    if (nestParent && !this.features.nested) return err("EOPNOTSUPP", "this unit has no nested translation (ECAP.NEST = 0)");
    if (dirty && !this.features.ssads) return err("EOPNOTSUPP", "this unit has no second-level dirty tracking (ECAP.SLADS = 0)");
    if ((nestParent || dirty) && !(this.features.sm && this.features.slts)) return err("EOPNOTSUPP", "this unit has no scalable-mode second-level tables");
    this.seen(device);
    const r = TablePagingDomain.create(this, this.host, hostSlFormat, hostSlGeometry, { nestParent, dirty: dirty ? slDirtyBits : undefined });
    if (!r.ok) return fail(r);
    this.stage2Cache.use(r.value, false);
    return ok(r.value);
  }

  /**
   * `intel_iommu_domain_alloc_nested`: flags other than PASID or a data type other than VTD_S1 are EOPNOTSUPP;
   * a parent that is not a VT-d nesting parent is EINVAL; the data is copied with the single-struct helper
   * (EINVAL for a wrong size). The configuration itself is checked when the domain is attached, as Linux does.
   */
  domainAllocNested(device: PhysicalDevice, parent: PagingDomain, flags: number, data: UserData): Result<NestedDomain> {
    if ((flags & ~HwptAllocFlag.PASID) !== 0) return err("EOPNOTSUPP", "nested flags other than PASID");
    if (data.type !== IOMMU_HWPT_DATA_VTD_S1) return err("EOPNOTSUPP", `HWPT data type ${data.type}`);
    if (parent.unit.vendor !== this.vendor || !parent.nestParent || !(parent instanceof TablePagingDomain)) return err("EINVAL", "parent is not a VT-d nesting parent");
    const bytes = copyStructFromUser(data, IOMMU_HWPT_DATA_VTD_S1, VTD_S1_MIN_BYTES, VTD_S1_BYTES);
    if (!bytes.ok) return fail(bytes);
    const s1 = decodeVtdS1(bytes.value);
    const did = this.domainIds.allocate();
    if (!did.ok) return fail(did);
    this.seen(device);
    this.stage2Cache.use(parent, true);
    // FLPTPTR holds address bits [63:12]; a root no stage 2 can reach still walks (and faults) like hardware.
    const root = s1.pgtblAddr < 1n << 52n ? Number(s1.pgtblAddr & ~0xfffn) : 2 ** 52;
    const domain = new VtdNestedDomain(this, parent, { flags: Number(s1.flags & 0xffff_ffffn), root, addrWidth: s1.addrWidth }, did.value, this.iotlb, (d) => {
      this.domainIds.release(d.hostDid);
      this.stages.delete(d);
    });
    this.stages.set(domain, {
      s1: { format: hostFlFormat, geometry: domain.geometry, root },
      s2: { format: parent.table.format, geometry: parent.table.geometry, root: parent.table.root },
    });
    return ok(domain);
  }

  attachDevice(device: PhysicalDevice, domain: IommuDomain, pasid: number): Result<void> {
    if (domain.unit.vendor !== this.vendor) return err("EINVAL", "domain belongs to another driver");
    // paging_domain_compatible: a dirty-tracking domain needs a unit that sets D.
    if (domain.kind === "paging" && domain.dirtyOps !== undefined && !this.features.ssads) return err("EINVAL", "a dirty-tracking domain on a unit without ECAP.SLADS");
    if (pasid !== NO_PASID && (pasid < 0 || pasid >= 2 ** Math.min(device.pasidBits, 20))) return err("EINVAL", `PASID ${pasid} beyond the device's PASID width`);
    if (domain instanceof VtdNestedDomain) {
      const valid = checkNestedConfig(domain.s1, this.cap, this.ecap);
      if (!valid.ok) return valid;
      this.stage2Cache.use(domain.parent, true);
      domain.pasids.add(pasid);
    } else if (domain.kind === "paging") this.stage2Cache.use(domain, false);
    this.seen(device);
    this.flushAttachment(device.requesterId, pasid);
    let byPasid = this.attachments.get(device.requesterId);
    if (byPasid === undefined) {
      byPasid = new Map();
      this.attachments.set(device.requesterId, byPasid);
    }
    byPasid.set(pasid, domain);
    return ok();
  }

  detachDevice(device: PhysicalDevice, pasid: number): void {
    this.flushAttachment(device.requesterId, pasid);
    const byPasid = this.attachments.get(device.requesterId);
    byPasid?.delete(pasid);
    if (byPasid !== undefined && byPasid.size === 0) this.attachments.delete(device.requesterId);
  }

  /** A PASID-entry change: the driver flushes what was cached under the old entry. */
  private flushAttachment(requesterId: number, pasid: number): void {
    const old = this.attachments.get(requesterId)?.get(pasid);
    if (old instanceof VtdNestedDomain) this.iotlb.invalidateAsid(old.parent.vmid, nestedTag(old.hostDid, pasid));
    else if (old !== undefined && old.kind === "paging") this.iotlb.invalidateAsid(old.vmid, pagingTag(pasid));
  }

  setAuditor(requesterId: number, auditor: TranslationAuditor | undefined): void {
    if (auditor !== undefined) (this.auditors ??= new Map()).set(requesterId, auditor);
    else if (this.auditors !== undefined) {
      this.auditors.delete(requesterId);
      if (this.auditors.size === 0) this.auditors = undefined;
    }
  }

  domainOf(requesterId: number, pasid: number): IommuDomain | undefined {
    return this.attachments.get(requesterId)?.get(pasid);
  }

  translate(request: DmaRequest, out: WalkResult): void {
    if (this.auditors === undefined) {
      this.translateOnce(request, out);
      return;
    }
    const hit = this.translateOnce(request, out);
    this.auditors.get(request.requesterId)?.audited(request, out, hit);
  }

  /** One translation; true when it came from the IOTLB. */
  private translateOnce(request: DmaRequest, out: WalkResult): boolean {
    const pasid = request.pasid;
    const domain = this.attachments.get(request.requesterId)?.get(pasid);
    if (domain === undefined) {
      blocked(out, request.iova);
      return false;
    }
    // Every request is a user request. One without PASID takes the RID_PASID entry's privilege (RID_PRIV = 0);
    // one with PASID carries its own in the PASID prefix's privileged-mode bit, which the model's devices never
    // set (PMR = 0: a DmaRequest has no way to ask for it), so SRE never comes into play on this path.
    const access = request.access | Perm.User;
    const nested = domain instanceof VtdNestedDomain ? domain : undefined;
    const vmid = nested !== undefined ? nested.parent.vmid : (domain as PagingDomain).vmid;
    const tag = nested !== undefined ? nestedTag(nested.hostDid, pasid) : pagingTag(pasid);
    if (translateFromIotlb(this.iotlb, vmid, tag, request.iova, access, this.hit, out)) return true;
    const stage2 = nested !== undefined ? nested.parent : (domain as PagingDomain);
    if (nested !== undefined) {
      const stages = this.stages.get(nested)!;
      this.walker.translate(stages.s1, stages.s2, this.devices.get(request.requesterId)?.owner ?? HOST_OWNER, request.iova, access, out);
    } else {
      stage2.table.walk(request.iova, access, out);
      if (!out.ok) out.stage = 2;
    }
    if (!out.ok) {
      this.pageRequest(domain, request, out);
      return false;
    }
    // Second-level A/D (SLADE, which Linux sets in the PASID entries of every device on a tracking domain and on
    // the nested domains over it): a write sets D in the second-level leaf it went through, large leaves
    // included; a read leaves a writable leaf's translation cached as clean, so the first write after it walks.
    const dirty = stage2.dirtyOps;
    const tracking = dirty !== undefined && dirty.tracking;
    const write = (request.access & Perm.Write) !== 0;
    if (tracking && write) dirty.markWritten(out);
    // Only complete translations are cached (VT-d caches no not-present entries outside caching mode).
    cacheTranslation(this.iotlb, vmid, tag, request.iova, out, 0, tracking && !write);
    return false;
  }

  /**
   * A page request (VT-d §7.4, the device's PCIe PRI request after its translation came back not present): for a
   * PRI-capable device whose domain reports to a fault queue, a not-present entry of the table the device's owner
   * controls (the guest's first level of a nested domain; a paging domain's own table) becomes a one-page request
   * group with the device's PRG index, and the device waits for the response instead of failing. A stage-2 hole
   * under a nested domain is the host's own mapping and a first-level table fetch the stage 2 cannot reach is no
   * page a guest can supply: both stay final faults.
   */
  private pageRequest(domain: IommuDomain, request: DmaRequest, out: WalkResult): void {
    const prgi = request.prgi ?? -1;
    if (prgi < 0 || out.fault !== WalkFault.Translation || out.tableFetch || domain.iopf === undefined) return;
    if (domain instanceof VtdNestedDomain && out.stage !== 1) return;
    const device = this.devices.get(request.requesterId);
    if (device === undefined || device.pri !== true) return;
    const perm = (request.access & Perm.Read ? PgfaultPerm.READ : 0) | (request.access & Perm.Write ? PgfaultPerm.WRITE : 0) | (request.access & Perm.Exec ? PgfaultPerm.EXEC : 0);
    const page = request.iova - (request.iova % 4096);
    if (domain.iopf.report(device, request.pasid === NO_PASID ? undefined : request.pasid, prgi & 0x1ff, [{ address: page, perm }])) out.pageRequest = prgi;
  }

  /**
   * The host driver's `intel_ir_set_vcpu_affinity` for a passthrough device's MSI: a posted IRTE (vector `vector`
   * into the descriptor at `descriptor`) verifying the device's requester id; returns the remappable MSI the
   * device's MSI-X entry is programmed with. EOPNOTSUPP without CAP.PI.
   */
  postInterrupt(device: PhysicalDevice, vector: number, descriptor: number, urgent: boolean): Result<MsiMessage> {
    if (!this.features.postedInterrupts) return err("EOPNOTSUPP", "this unit cannot post interrupts (CAP.PI = 0)");
    return this.interrupts.post({ sid: device.requesterId, vector, descriptor, urgent });
  }

  /** Clears the IRTE behind an MSI `postInterrupt` returned. */
  releaseInterrupt(msi: MsiMessage): void {
    this.interrupts.release(msi);
  }

  /** The unit's interrupt remapping of a device MSI (posted IRTEs post it). */
  remapInterrupt(device: PhysicalDevice, msi: MsiMessage): InterruptResult {
    return this.interrupts.remap(device.requesterId, msi);
  }

  /**
   * Primary fault logging: the fault is recorded the way the hardware writes a fault-recording register
   * (reason, page address, source id, PASID, read/write), kept in the host log, and, for a device a VM owns,
   * queued for that VM's VMM.
   */
  reportDmaFault(request: DmaRequest, result: WalkResult): void {
    const domain = this.domainOf(request.requesterId, request.pasid);
    const write = (request.access & Perm.Write) !== 0;
    let reason: number;
    let stage: FaultStage;
    if (domain === undefined) {
      reason = hostFaultReason("blocked", result, write, 0);
      stage = FaultStage.BLOCKED;
    } else if (domain instanceof VtdNestedDomain) {
      reason = hostFaultReason("nested", result, write, domain.geometry.startLevel, domain.s1.root);
      stage = result.stage === 1 ? FaultStage.STAGE1 : FaultStage.STAGE2;
    } else {
      reason = hostFaultReason("paging", result, write, hostSlGeometry.startLevel);
      stage = FaultStage.STAGE2;
    }
    const record = encodeFaultRecord({
      FI: faultPageAddress(request.iova),
      SID: request.requesterId & 0xffff,
      PP: request.pasid !== NO_PASID ? 1 : 0,
      PV: request.pasid !== NO_PASID ? request.pasid & 0xfffff : 0,
      FR: reason,
      T1: write ? 0 : 1,
      F: 1,
    });
    const owner = this.devices.get(request.requesterId)?.owner;
    this.faults.record(owner !== undefined && owner !== HOST_OWNER ? owner : undefined, {
      requesterId: request.requesterId,
      pasid: request.pasid,
      iova: request.iova,
      write,
      stage,
      record,
    });
  }

  readFaultReports(owner: OwnerId, max: number): VtdHostFaultBatch {
    return this.faults.read(owner, max);
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
