import {
  ANY_ASID,
  cacheTranslation,
  err,
  fail,
  HOST_OWNER,
  HwCapability,
  HwptAllocFlag,
  PgfaultPerm,
  Iotlb,
  NestedWalker,
  newIotlbHit,
  newWalkResult,
  NO_PASID,
  ok,
  Perm,
  StageTwoCacheWatcher,
  StaleTranslationAudit,
  HostTableReader,
  PageWalker,
  rawEquals,
  toBytes,
  translateFromIotlb,
  WalkFault,
  type DirtyBitFormat,
  type DmaRequest,
  type HostServices,
  type HwInfo,
  type IommuDomain,
  type OwnerId,
  type PagingDomain,
  type PhysicalDevice,
  type PhysicalIommu,
  type RawBits,
  type Result,
  type StageConfig,
  type TablePagingDomain,
  type UserData,
  type ViommuCore,
  type ViommuOps,
  type WalkResult,
} from "@viommu/core";
import { cfgiSteRangeStreams, CFGI_ALL_RANGE, commandName, commandSetsUndefinedBits } from "../format/command.js";
import { cmdAsid, cmdLeaf, cmdOpcode, cmdRange, cmdSid, cmdSsid, cmdVmid, tlbiRange, type NumberRange } from "../format/command-fields.js";
import { EventClass, EventType, VEVENTQ_FORWARDED_EVENTS, withStreamId } from "../format/event-record.js";
import { IdrHttu } from "../format/id-registers.js";
import { CmdqError } from "../format/queue-registers.js";
import { SteConfig } from "../format/stream-table-entry.js";
import { encodeHwInfoArmSmmuv3, IOMMU_HW_INFO_TYPE_ARM_SMMUV3, IOMMU_VEVENTQ_TYPE_ARM_SMMUV3, IOMMU_VIOMMU_TYPE_ARM_SMMUV3 } from "../format/uapi.js";
import { CD_BYPASS, decodeCdSettings, readCd, type CdSettings } from "../translate/cd-config.js";
import { faultRecord } from "../translate/fault-record.js";
import { smmuFeatures, type SmmuFeatures } from "../translate/smmu-features.js";
import { decodeSteSettings, type SteStage1 } from "../translate/ste-config.js";
import { walkStage1 } from "../translate/stage1-walk.js";
import { bypassChecked, configFault, isInputAddress, newSmmuWalkInfo, resetSmmuWalkInfo, walkFaultEvent, type SmmuWalkInfo } from "../translate/walk-info.js";
import { DEFAULT_SMMUV3_HW, type Smmuv3HwConfig } from "./smmuv3-hw-config.js";
import type { Smmuv3Extension } from "./smmuv3-extension.js";
import { Smmuv3NestedDomain } from "./smmuv3-nested-domain.js";
import { ARM_VSMMU_SIZE, ArmVsmmu } from "./smmuv3-viommu.js";
import { stage1DirtyBits } from "../format/vmsa-stage1.js";
import { stage2DirtyBits } from "../format/vmsa-stage2.js";
import { HostSubstreams } from "./host-substreams.js";
import { isSmmuStage1Domain } from "./stage1-domain.js";
import { abortSte, createStage2Domain, isSmmuStage2Domain, stage2Ste } from "./stage2-domain.js";
import { Stage2FetchReader } from "./stage2-fetch-reader.js";
import { FreshNestedWalk } from "./fresh-nested-walk.js";
import { CdCache } from "./cd-cache.js";
import { HostFaultQueue } from "./host-fault-queue.js";

/** IOTLB tag of stage-2-only translations: ASIDs are 16-bit, so this never collides with a CD's. */
const S2_ONLY_TAG = 0x1_0000;
/** Events the host keeps (those not forwarded to a guest), newest last. */
const HOST_EVENT_LOG_ENTRIES = 1024;

/** The faults a transaction can stall on or a PRI-capable device can ask to have paged in (IHI0070 §5.5). */
const RECOVERABLE_EVENTS: ReadonlySet<number> = new Set([EventType.F_TRANSLATION, EventType.F_ADDR_SIZE, EventType.F_ACCESS, EventType.F_PERMISSION]);

/** Stage-1 descriptor bits HTTU updates (IHI0070 §3.13): AF (bit 10), AP[2] (bit 7), DBM (bit 51, in the high half). */
const S1_AF = 1 << 10;
const S1_AP2 = 1 << 7;
const S1_DBM_HI = 1 << (51 - 32);

/** IOTLB VMID of host stage-1 translations: Linux's CD-table STEs carry S2VMID 0, which no stage-2 domain takes. */
const S1_HOST_VMID = 0;

/**
 * What an installed STE does: abort silently, translate stage 2 only, nest, translate the host's stage 1 through
 * its CD table, or nothing (an ILLEGAL STE: C_BAD_STE).
 */
const StreamKind = { Abort: 0, Stage2: 1, Nested: 2, Illegal: 3, HostStage1: 4 } as const;

interface CachedCd {
  readonly settings: CdSettings;
  readonly stage1: StageConfig;
  /** The CD as fetched (16 halves), for the stale-translation audit's comparison with memory. */
  readonly words: Uint32Array;
}

/** One StreamID's entry in the physical stream table, with what translation caches of it. */
interface StreamState {
  readonly device: PhysicalDevice;
  kind: number;
  /** The STE as the host driver wrote it (16 halves). */
  ste: RawBits;
  s2: TablePagingDomain | undefined;
  s2Stage: StageConfig | undefined;
  nested: Smmuv3NestedDomain | undefined;
  stage1: SteStage1 | undefined;
  /** CD cache (configuration cache): by SSID + 1 (0 for no SubstreamID); invalidated by CFGI_CD/STE. */
  readonly cds: CdCache<CachedCd | number>;
}

export interface Smmuv3UnitOptions {
  /** An SMMUv3 implementation's additions (Tegra241 CMDQV); absent for a plain SMMUv3. */
  readonly extension?: Smmuv3Extension;
  /** ID registers (default DEFAULT_SMMUV3_HW). */
  readonly config?: Smmuv3HwConfig;
  readonly iotlbEntries?: number;
}

/** Whether two fetched CDs are the same 16 halves. */
function sameWords(a: Uint32Array, b: Uint32Array): boolean {
  for (let i = 0; i < 16; i++) if (a[i] !== b[i]) return false;
  return true;
}

/** A plain SMMUv3 unit, or one extended by an implementation (see `Smmuv3Extension`). */
export function createSmmuv3Unit(host: HostServices, index: number, options: Smmuv3UnitOptions = {}): Smmuv3Unit {
  const unit = new Smmuv3Unit(host, index, options);
  options.extension?.probe?.(unit);
  return unit;
}

/**
 * A physical SMMUv3 and its host driver (Linux arm-smmu-v3 with arm-smmu-v3-iommufd): a stream table of STEs
 * built as Linux builds them (abort, stage-2, nested), stage-2 paging domains in the VMSAv8-64 stage-2 format,
 * vSMMUs (type ARM_SMMUV3, or an extension's type), an IOTLB tagged by (VMID, ASID), a CD cache, the physical
 * command queue's effect on those caches, and the translation of device DMA: nested (guest CD and stage-1
 * tables fetched through stage 2), stage-2 only, or abort. Faults become event records; stage-1 records of a
 * stream with a vDEVICE go to the vSMMU's vEVENTQ with the vSID, the rest stay in the host's log.
 */
export class Smmuv3Unit implements PhysicalIommu {
  readonly vendor = "smmuv3";
  readonly name: string;
  readonly config: Smmuv3HwConfig;
  readonly features: SmmuFeatures;
  readonly extension: Smmuv3Extension | undefined;
  readonly iotlb: Iotlb;
  /** Event records the host driver keeps (not forwarded), newest last, at most HOST_EVENT_LOG_ENTRIES. */
  readonly hostEvents: RawBits[] = [];
  /**
   * Faults of VM devices in tables the host owns (a shadow of the guest's tables, a stage-2 domain), for the VM's
   * VMM to read on its poll: without it a shadowed guest would never learn of its device's faults.
   */
  readonly vmFaults = new HostFaultQueue();
  /** Commands the host driver skipped because the hardware flagged them CERROR_ILL. */
  skippedCommands = 0;
  /** Events delivered to vEVENTQs. */
  forwardedEvents = 0;

  private readonly streams = new Map<number, StreamState>();
  /** The stream the last transaction used (most DMA comes from one StreamID at a time); -1 after any STE change. */
  private hotSid = -1;
  private hotStream: StreamState | undefined;
  /** What each master's RID is attached to (absent: blocked). */
  private readonly ridDomains = new Map<PhysicalDevice, IommuDomain>();
  /** Host stage-1 domains, CD tables and PASID attachments. */
  readonly substreams: HostSubstreams;
  private readonly hostReader: HostTableReader;
  private readonly s1Walker = new PageWalker();
  /** Masters with other than their requester id alone as StreamIDs (firmware's ID mappings: IORT, DT iommu-map). */
  private readonly masterStreams = new Map<PhysicalDevice, readonly number[]>();
  /**
   * Stage-2 changes reach every cached translation through the domain: a nesting parent's unmap drops its whole
   * VMID and the CD cache (CDs are fetched through stage 2); a stage-2-only domain's unmap drops just the range.
   */
  private readonly stage2Cache: StageTwoCacheWatcher;
  private readonly nested: NestedWalker;
  private readonly fetchReader: Stage2FetchReader;
  private readonly hit = newIotlbHit();
  private readonly info: SmmuWalkInfo = newSmmuWalkInfo();
  private readonly cdWords = new Uint32Array(16);
  private readonly leafWords = new Uint32Array(2);
  private readonly s1Scratch = newWalkResult();
  private readonly s2Scratch = newWalkResult();
  private readonly scratch = newWalkResult();
  private readonly last = { sid: -1, pasid: 0, iova: -1, access: -1 };
  private readonly range: NumberRange = { first: 0, length: 0 };
  private readonly syncCommand = Uint32Array.of(0x46, 0, 0, 0);
  /** The next stall tag (STAG, 16 bits, cycled). */
  private nextStag = 0;
  private reporting = false;
  /**
   * The stale-translation audit (VmmDeviceOptions.audit), once a VMM asked for it, and the VMs it covers. Only
   * nested streams are audited: their CD cache and IOTLB entries hold what the guest's own structures said, which
   * the guest must invalidate (CMD_CFGI_CD / CFGI_STE, CMD_TLBI_*); host tables are the host driver's. SMMUv3 has
   * no interrupt-entry cache (an MSI is a write the GIC ITS remaps), so "iotlb" and "context" are its classes.
   */
  private audit: StaleTranslationAudit | undefined;
  private readonly auditedOwners = new Set<OwnerId>();
  private fresh: FreshNestedWalk | undefined;
  private readonly auditTables = newWalkResult();
  private readonly auditHit = newIotlbHit();

  constructor(
    readonly host: HostServices,
    index: number,
    options: Smmuv3UnitOptions = {},
  ) {
    this.name = `smmu${index}`;
    this.config = options.config ?? DEFAULT_SMMUV3_HW;
    this.features = smmuFeatures(this.config.idr);
    this.extension = options.extension;
    this.iotlb = new Iotlb(options.iotlbEntries ?? 8192);
    this.stage2Cache = new StageTwoCacheWatcher(this.iotlb, {
      singleStageAsid: S2_ONLY_TAG,
      dropNested: (vmid) => {
        this.iotlb.invalidateVmid(vmid);
        this.dropAllCds();
      },
    });
    this.nested = new NestedWalker(host.memory, HOST_OWNER);
    this.fetchReader = new Stage2FetchReader(host.memory);
    this.hostReader = new HostTableReader(host.memory, HOST_OWNER);
    this.substreams = new HostSubstreams({
      unit: this,
      host,
      features: this.features,
      streamIdsOf: (device) => this.streamIdsOf(device),
      executeCommands: (commands, sync) => this.executeCommands(commands, sync),
    });
  }

  // ---- driver: hw_info, domains, vIOMMUs ----

  hwInfo(device: PhysicalDevice, requestedType: number | undefined): Result<HwInfo> {
    if (requestedType !== undefined && requestedType !== 0 && requestedType !== IOMMU_HW_INFO_TYPE_ARM_SMMUV3) {
      const viaExtension = this.extension?.hwInfo?.(this, device, requestedType);
      return viaExtension ?? err("EOPNOTSUPP", `hw_info type ${requestedType}`);
    }
    const data = encodeHwInfoArmSmmuv3({ flags: 0, reserved: 0, idr: this.config.idr, iidr: this.config.iidr, aidr: this.config.aidr });
    const capabilities = this.dirtyCapable ? HwCapability.DIRTY_TRACKING : 0;
    return ok({ type: IOMMU_HW_INFO_TYPE_ARM_SMMUV3, data, maxPasidLog2: Math.min(device.pasidBits, this.features.ssidBits), capabilities });
  }

  /**
   * Linux `arm_smmu_dbm_capable`: hardware update of the dirty state (IDR0.HTTU = 2) on a coherent SMMU. It answers
   * IOMMU_CAP_DIRTY_TRACKING (`arm_smmu_capable`), which GET_HW_INFO reports and IOMMU_HWPT_ALLOC_DIRTY_TRACKING needs.
   */
  get dirtyCapable(): boolean {
    return this.features.httu >= IdrHttu.AccessAndDirty && this.features.coherent;
  }

  /**
   * Paging domains, by Linux's `arm_smmu_domain_alloc_paging_flags`: IOMMU_HWPT_ALLOC_PASID and
   * IOMMU_HWPT_ALLOC_DIRTY_TRACKING (alone or together) give a stage-1 domain (an ASID, CD.HA/HD with dirty
   * tracking; EOPNOTSUPP without stage 1); NEST_PARENT a stage-2 nesting parent, with DIRTY_TRACKING one whose STEs
   * set S2HA/S2HD (Linux refuses that combination, having no stage-2 dirty tracking; the architecture has it and a
   * VMM migrating a nested guest tracks its stage-2 parent); NEST_PARENT with PASID, or unknown flags, EOPNOTSUPP.
   * Flags 0 give a stage-2 domain here (Linux prefers stage 1 when the SMMU has it; the model's host paging
   * domains, shadows included, keep the stage-2 form). DIRTY_TRACKING on an SMMU that cannot track (`dirtyCapable`)
   * is EOPNOTSUPP, as iommufd_hwpt_paging_alloc answers when the device lacks IOMMU_CAP_DIRTY_TRACKING.
   */
  domainAllocPaging(_device: PhysicalDevice, flags: number, _owner: OwnerId): Result<PagingDomain> {
    if ((flags & ~(HwptAllocFlag.NEST_PARENT | HwptAllocFlag.PASID | HwptAllocFlag.DIRTY_TRACKING)) !== 0) return err("EOPNOTSUPP", `paging flags 0x${flags.toString(16)}`);
    const dirty = (flags & HwptAllocFlag.DIRTY_TRACKING) !== 0;
    const parent = (flags & HwptAllocFlag.NEST_PARENT) !== 0;
    if (dirty && !this.dirtyCapable) return err("EOPNOTSUPP", "dirty tracking needs IDR0.HTTU access and dirty on a coherent SMMU");
    if (parent && (flags & HwptAllocFlag.PASID) !== 0) return err("EOPNOTSUPP", "a nesting parent cannot be attached at PASIDs");
    if (!parent && flags !== 0) {
      if (!this.features.stage1) return err("EOPNOTSUPP", "PASID and dirty-tracking domains are stage 1, which this SMMU lacks");
      return this.substreams.allocDomain(dirty);
    }
    const r = createStage2Domain(this, this.host, parent, dirty);
    if (!r.ok) return fail(r);
    this.stage2Cache.use(r.value, false);
    return ok(r.value);
  }

  /**
   * Linux `arm_smmu_get_viommu_size`: 0 unless the SMMU can nest (both stages) and can keep the guest from
   * making memory non-coherent (S2FWB, or coherent); ARM_SMMUV3 is the unit's own type, any other type is the
   * extension's to size.
   */
  getViommuSize(device: PhysicalDevice, type: number): number {
    const f = this.features;
    if (!f.stage1 || !f.stage2 || !(f.forcedWriteBack || f.coherent)) return 0;
    if (type === IOMMU_VIOMMU_TYPE_ARM_SMMUV3) return ARM_VSMMU_SIZE;
    return this.extension?.getViommuSize?.(this, device, type) ?? 0;
  }

  /**
   * Linux `arm_vsmmu_init`: the parent must be an SMMUv3 stage-2 domain (EINVAL otherwise); its VMID is the
   * vSMMU's. Linux also requires the parent to come from the same SMMU instance; here any SMMUv3 unit can walk
   * the parent's table, so one stage-2 parent serves every vSMMU of a VM (one VMID per VM, as the design asks).
   */
  viommuInit(core: ViommuCore, parent: PagingDomain, data: UserData | undefined): Result<ViommuOps> {
    if (!isSmmuStage2Domain(parent) || !parent.nestParent) return err("EINVAL", "the nesting parent is not an SMMUv3 stage-2 domain");
    this.stage2Cache.use(parent, true);
    const vsmmu = new ArmVsmmu(this, core, parent);
    if (core.viommuType === IOMMU_VIOMMU_TYPE_ARM_SMMUV3) return ok(vsmmu);
    const init = this.extension?.viommuInit;
    return init === undefined ? err("EOPNOTSUPP", `vIOMMU type ${core.viommuType}`) : init.call(this.extension, vsmmu, data);
  }

  // ---- stream table ----

  /**
   * Installs the STE for a device's domain (Linux attach_dev, set_dev_pasid). At the RID: a stage-2 STE for a
   * stage-2 domain, the master's CD-table STE with the domain's CD at SubstreamID 0 for a stage-1 one, the nested
   * STE for a nested one; a stage-2 or nested domain while PASIDs are attached is EBUSY (arm_smmu_attach_dev: the
   * STE cannot point at the CD table then). At a PASID: only a stage-1 domain (EINVAL otherwise), its CD at that
   * SubstreamID of the CD table, and only while the RID is blocked or stage 1 (EINVAL, as arm_smmu_set_pasid
   * refuses another RID domain). A nested domain of another unit's vSMMU is EINVAL; an S1-translating one needs the
   * device's vDEVICE on that vSMMU (ENOENT), abort and bypass ones do not (the VMM uses them for the guest's GBPA).
   */
  attachDevice(device: PhysicalDevice, domain: IommuDomain, pasid: number): Result<void> {
    if (pasid !== NO_PASID) {
      if (!isSmmuStage1Domain(domain)) return err("EINVAL", "only a stage-1 domain can be attached at a PASID");
      const rid = this.ridDomains.get(device);
      if (rid !== undefined && !isSmmuStage1Domain(rid)) return err("EINVAL", "the RID's domain leaves no CD table for PASIDs");
      const ste = this.substreams.attachPasid(device, pasid, domain);
      if (!ste.ok) return fail(ste);
      this.install(device, ste.value, undefined, undefined);
      return ok();
    }
    if (isSmmuStage1Domain(domain)) {
      const ste = this.substreams.attachRid(device, domain);
      if (!ste.ok) return fail(ste);
      this.install(device, ste.value, undefined, undefined);
      this.ridDomains.set(device, domain);
      return ok();
    }
    if (this.substreams.ssidsInUse(device)) return err("EBUSY", "PASIDs are attached: the RID needs a stage-1 domain");
    if (domain.kind === "paging") {
      if (!isSmmuStage2Domain(domain)) return err("EINVAL", "not an SMMUv3 stage-2 domain");
      this.stage2Cache.use(domain, false);
      this.substreams.ridReplaced(device);
      this.install(device, stage2Ste(domain, this.features.forcedWriteBack), domain, undefined);
      this.ridDomains.set(device, domain);
      return ok();
    }
    if (!(domain instanceof Smmuv3NestedDomain)) return err("EINVAL", "not an SMMUv3 nested domain");
    if (domain.vsmmu.unit !== this) return err("EINVAL", "nested domain of a vSMMU on another SMMU");
    if (domain.config === SteConfig.S1Translate && domain.vsmmu.core.virtIdOf(device) === undefined) {
      return err("ENOENT", "a translating nested domain needs the device's vDEVICE first");
    }
    this.stage2Cache.use(domain.parent, true);
    this.substreams.ridReplaced(device);
    this.install(device, domain.physicalSte(this.features.forcedWriteBack), domain.parent, domain);
    this.ridDomains.set(device, domain);
    return ok();
  }

  /**
   * Blocks the RID (an abort STE, or the CD-table STE with S1DSS terminate while PASIDs are attached) or a PASID (its
   * CD cleared; the abort STE once nothing is attached through the CD table).
   */
  detachDevice(device: PhysicalDevice, pasid: number): void {
    if (pasid !== NO_PASID && !this.substreams.hasPasid(device, pasid)) return;
    if (pasid === NO_PASID) this.ridDomains.delete(device);
    const ste = this.substreams.detach(device, pasid);
    if (pasid !== NO_PASID && ste === undefined && this.ridDomains.has(device)) return;
    this.install(device, ste ?? abortSte(), undefined, undefined);
  }

  /**
   * The StreamIDs a master emits (Linux `master->streams`, from the firmware's ID mappings): its requester id,
   * unless the platform declared others with `setStreamIds`.
   */
  streamIdsOf(device: PhysicalDevice): readonly number[] {
    return this.masterStreams.get(device) ?? [device.requesterId];
  }

  /**
   * Declares the StreamIDs of a master, as the platform firmware does (a device behind a bridge that aliases
   * several, a platform device with several ID mappings; none for one the firmware gives no mapping). Every
   * STE the driver installs for the device is written at each of them. EINVAL for a StreamID beyond SIDSIZE.
   */
  setStreamIds(device: PhysicalDevice, sids: readonly number[]): Result<void> {
    for (const sid of sids) {
      if (!Number.isSafeInteger(sid) || sid < 0 || sid >= 2 ** this.features.sidBits) return err("EINVAL", `StreamID ${sid} beyond SIDSIZE`);
    }
    let installed: StreamState | undefined;
    for (const sid of this.streamIdsOf(device)) {
      const state = this.streams.get(sid);
      if (state?.device !== device) continue;
      installed = state;
      this.streams.delete(sid);
      this.hotSid = -1;
    }
    this.masterStreams.set(device, [...sids]);
    if (installed !== undefined) for (const sid of sids) this.streams.set(sid, installed);
    this.hotSid = -1;
    return ok();
  }

  /**
   * Writes a master's STE at each of its StreamIDs. The STE the stream already has, for the same domains, is left as
   * it is (Linux writes and invalidates nothing then), so what the SMMU cached of it stays until the commands that
   * invalidate it (CMD_CFGI_CD for a CD written under an unchanged CD-table STE).
   */
  private install(device: PhysicalDevice, ste: RawBits, s2: TablePagingDomain | undefined, nested: Smmuv3NestedDomain | undefined): void {
    const sids = this.streamIdsOf(device);
    const current = this.streams.get(sids[0]!);
    if (current !== undefined && current.device === device && current.s2 === s2 && current.nested === nested && rawEquals(current.ste, ste) && sids.every((sid) => this.streams.get(sid) === current)) return;
    // The STE is judged as the SMMU judges it: a nested STE carrying an out-of-range guest field (S1CDMax beyond
    // SSIDSIZE, a reserved S1Fmt) is ILLEGAL, and its traffic records C_BAD_STE.
    const settings = decodeSteSettings(ste, this.features);
    const config = typeof settings === "number" ? -1 : settings.config;
    const kind =
      config === -1
        ? StreamKind.Illegal
        : config === SteConfig.Nested
          ? StreamKind.Nested
          : config === SteConfig.S2Translate
            ? StreamKind.Stage2
            : config === SteConfig.S1Translate
              ? StreamKind.HostStage1
              : StreamKind.Abort;
    const s2Stage = s2 === undefined ? undefined : { format: s2.table.format, geometry: s2.table.geometry, root: s2.table.root };
    const state: StreamState = { device, kind, ste, s2, s2Stage, nested, stage1: typeof settings === "number" ? undefined : settings.stage1, cds: new CdCache() };
    for (const sid of this.streamIdsOf(device)) this.streams.set(sid, state);
    this.hotSid = -1;
  }

  /** The STE installed for a StreamID (16 halves), for inspection. */
  steOf(sid: number): RawBits | undefined {
    return this.streams.get(sid)?.ste;
  }

  /**
   * Turns the stale-translation audit on for one VM's streams (its emulated SMMU was created with `audit`): every
   * use of a cached CD or IOTLB entry of its nested streams is compared with the guest's structures as they are
   * now, a difference published as a `staleTranslation` event; the invalidations this unit performs are noted.
   */
  enableAudit(owner: OwnerId): StaleTranslationAudit {
    this.auditedOwners.add(owner);
    this.fresh ??= new FreshNestedWalk(this.host.memory);
    this.audit ??= new StaleTranslationAudit(this.host.events, this.host.clock);
    return this.audit;
  }

  // ---- translation ----

  translate(request: DmaRequest, out: WalkResult): void {
    if (this.audit === undefined || this.reporting) this.translateCached(request, out);
    else this.translateAudited(request, out);
  }

  /**
   * A transaction with the audit on: the CD is read and, where a cached CD or an IOTLB entry answers, the walk is
   * done again from memory (`FreshNestedWalk`) and handed to the audit with what the caches gave. A cached CD that
   * no longer matches memory is the CD cache's finding (a missing CMD_CFGI_CD or CFGI_STE); otherwise an IOTLB hit
   * that differs is the IOTLB's (a missing TLBI). The transaction's own outcome is the cached path's, as the
   * hardware's would be. The site names the guest's StreamID (the vSID) where the stream has a vDEVICE.
   */
  private translateAudited(request: DmaRequest, out: WalkResult): void {
    const s = this.streams.get(request.requesterId);
    if (s === undefined || s.kind !== StreamKind.Nested || !this.auditedOwners.has(s.device.owner)) return this.translateCached(request, out);
    const fresh = this.fresh!;
    const pasid = request.pasid;
    const owner = s.device.owner;
    const freshCd = fresh.readCd(s.stage1!, s.s2!, owner, pasid);
    const cached = s.cds.get(pasid + 1);
    const cdStale = cached !== undefined && (typeof cached === "number" ? cached !== freshCd : freshCd !== 0 || !sameWords(cached.words, fresh.words));
    // The ASID the cached path looks up: the cached CD's, else that of the CD it is about to fetch.
    let asid = -1;
    if (cached !== undefined) {
      if (typeof cached !== "number") asid = cached.settings.asid;
    } else if (freshCd === 0) {
      const settings = decodeCdSettings(fresh.words, this.features, s.stage1!.stallDisabled);
      if (typeof settings !== "number") asid = settings.asid;
    }
    const iotlbHit = asid >= 0 && isInputAddress(request.iova) && this.iotlb.lookup(s.s2!.vmid, asid, request.iova, this.auditHit);
    this.translateCached(request, out);
    if (!cdStale && !iotlbHit) return;
    const tables = this.auditTables;
    fresh.translate(freshCd, s.stage1!, this.features, s.s2!, s.s2Stage!, owner, request.iova, request.access, tables);
    const vsid = s.nested?.vsmmu.core.virtIdOf(s.device);
    const site = { vm: owner, unit: this.name, cache: cdStale ? "CD cache" : "IOTLB", rid: vsid ?? request.requesterId, iova: request.iova };
    this.audit!.check(pasid === NO_PASID ? site : { ...site, pasid }, out, tables);
  }

  /** The invalidation a command performs, for the audit's findings ("the last invalidation that covered it"). */
  private noteInvalidation(name: string, raw: RawBits): void {
    const audit = this.audit!;
    switch (name) {
      case "CMD_TLBI_NH_VA":
      case "CMD_TLBI_NH_VAA": {
        tlbiRange(raw, this.range);
        const what = name === "CMD_TLBI_NH_VA" ? `${name} VMID ${cmdVmid(raw)} ASID ${cmdAsid(raw)}` : `${name} VMID ${cmdVmid(raw)}`;
        if (this.range.length > 0) audit.noteInvalidation(what, { start: this.range.first, end: this.range.first + this.range.length - 1 });
        return;
      }
      case "CMD_TLBI_NH_ASID":
        return audit.noteInvalidation(`${name} VMID ${cmdVmid(raw)} ASID ${cmdAsid(raw)}`);
      case "CMD_TLBI_NH_ALL":
      case "CMD_TLBI_S12_VMALL":
      case "CMD_TLBI_S2_IPA":
        return audit.noteInvalidation(`${name} VMID ${cmdVmid(raw)}`);
      case "CMD_TLBI_NSNH_ALL":
      case "CMD_CFGI_STE_RANGE":
        return audit.noteInvalidation(name);
      case "CMD_CFGI_STE":
      case "CMD_CFGI_CD":
      case "CMD_CFGI_CD_ALL": {
        const s = this.streams.get(cmdSid(raw));
        const rid = s?.nested?.vsmmu.core.virtIdOf(s.device) ?? cmdSid(raw);
        return audit.noteInvalidation(name === "CMD_CFGI_CD" ? `${name} SID ${cmdSid(raw)} SSID ${cmdSsid(raw)}` : `${name} SID ${cmdSid(raw)}`, { rid });
      }
      default:
    }
  }

  private translateCached(request: DmaRequest, out: WalkResult): void {
    // The common case first: a nested stream's IOTLB hit through a cached CD, without the event bookkeeping a
    // fault needs. `last` is cleared so a later fault report translates its transaction again.
    let s: StreamState | undefined;
    if (request.requesterId === this.hotSid) s = this.hotStream;
    else {
      s = this.streams.get(request.requesterId);
      this.hotSid = s === undefined ? -1 : request.requesterId;
      this.hotStream = s;
    }
    let looked = false;
    if (s !== undefined && s.kind === StreamKind.Nested) {
      const cd = s.cds.get(request.pasid + 1);
      if (cd !== undefined && typeof cd !== "number") {
        const settings = cd.settings;
        const iova = request.iova;
        if (!settings.epd0 && iova >= 0 && iova < settings.inputLimit && Number.isInteger(iova)) {
          looked = true;
          if (translateFromIotlb(this.iotlb, s.s2!.vmid, settings.asid, iova, request.access, this.hit, out) && out.ok) {
            this.last.sid = -1;
            return;
          }
        }
      }
    }
    this.translateSlow(s, request, out, looked);
  }

  /** Everything but the nested IOTLB hit; `looked`: the IOTLB was already consulted for this transaction (and missed or lacked the permission). */
  private translateSlow(s: StreamState | undefined, request: DmaRequest, out: WalkResult, looked: boolean): void {
    const info = this.info;
    resetSmmuWalkInfo(info);
    const last = this.last;
    last.sid = request.requesterId;
    last.pasid = request.pasid;
    last.iova = request.iova;
    last.access = request.access;
    if (s === undefined || s.kind === StreamKind.Abort) return configFault(out, info, 0, request.iova);
    if (s.kind === StreamKind.Illegal) return configFault(out, info, EventType.C_BAD_STE, request.iova);
    if (s.kind === StreamKind.Stage2) {
      if (request.pasid !== NO_PASID) return configFault(out, info, EventType.C_BAD_SUBSTREAMID, request.iova);
      return this.translateStage2(s, request, out);
    }
    if (s.kind === StreamKind.HostStage1) return this.translateHostStage1(s, request, out);
    const cd = this.cdFor(s, request.pasid);
    if (cd === CD_BYPASS) return this.translateStage2(s, request, out);
    if (typeof cd === "number") {
      configFault(out, info, cd, request.iova);
      if (info.stage2) out.stage = 2;
      return;
    }
    const settings = cd.settings;
    info.asid = settings.asid;
    const vmid = s.s2!.vmid;
    // Outside TTB0's range (a fraction, a TTB1-half or sign-extended address, anything at or above 2^53 included):
    // a translation fault before any lookup.
    if (settings.epd0 || !(request.iova >= 0 && request.iova < settings.inputLimit) || !Number.isInteger(request.iova)) {
      configFault(out, info, EventType.F_TRANSLATION, request.iova);
      info.record = settings.record;
      this.recoverable(s.nested!, settings.stall, request, out);
      return;
    }
    // A hit that lacks the permission is walked again: the walk names the fault's level and class for the record.
    if (!looked && translateFromIotlb(this.iotlb, vmid, settings.asid, request.iova, request.access, this.hit, out) && out.ok) return;
    this.nested.translate(cd.stage1, s.s2Stage!, s.device.owner, request.iova, request.access, out);
    let clean = this.hardwareDirty(s.s2!, stage2DirtyBits, request.access, out);
    if (out.ok && (settings.hardwareAccess || settings.hardwareDirty)) clean = this.guestStage1Update(s, cd, request) || clean;
    cacheTranslation(this.iotlb, vmid, settings.asid, request.iova, out, 0, clean);
    if (out.ok) return;
    info.event = walkFaultEvent(out.fault);
    if (out.stage === 2) {
      info.stage2 = true;
      info.ipa = out.faultInput;
      info.eventClass = out.tableFetch ? EventClass.TT : EventClass.IN;
      info.record = true;
    } else {
      info.record = settings.record;
      if (out.fault === WalkFault.External) {
        info.eventClass = EventClass.TT;
        info.fetchAddress = out.entryAddress;
      }
      this.recoverable(s.nested!, settings.stall, request, out);
    }
  }

  private translateStage2(s: StreamState, request: DmaRequest, out: WalkResult): void {
    const domain = s.s2!;
    // Stage 1 bypassed: an input beyond the IAS is a stage-1 F_ADDR_SIZE (IHI0070 §3.4); beyond S2T0SZ, stage 2's
    // translation fault.
    if (!isInputAddress(request.iova) || request.iova >= 2 ** this.features.oasBits) {
      configFault(out, this.info, EventType.F_ADDR_SIZE, request.iova);
      out.fault = WalkFault.AddressSize;
      return;
    }
    this.info.bypass = true;
    if (translateFromIotlb(this.iotlb, domain.vmid, S2_ONLY_TAG, request.iova, request.access, this.hit, out) && out.ok) return;
    domain.table.walk(request.iova, request.access, out);
    cacheTranslation(this.iotlb, domain.vmid, S2_ONLY_TAG, request.iova, out, 0, this.hardwareDirty(domain, stage2DirtyBits, request.access, out));
    if (out.ok) return;
    out.stage = 2;
    const info = this.info;
    info.event = walkFaultEvent(out.fault);
    info.stage2 = true;
    info.ipa = request.iova;
    info.record = true;
    // The stream's only stage: a PRI-capable device asks for the page (the host never sets S2S, so nothing stalls).
    if (s.kind === StreamKind.Stage2) this.recoverable(domain, false, request, out);
  }

  /**
   * A stage-1 translation through the host's own CD table (the master's stage-1 domains at the RID and at PASIDs):
   * the CD for the SubstreamID (C_BAD_SUBSTREAMID, F_STREAM_DISABLED, C_BAD_CD as the architecture says), then the
   * stage-1 walk in host memory, cached under (VMID 0, ASID). A dirty-tracking domain's CD has HD: a write marks the
   * stage-1 leaf dirty (AP[2] cleared).
   */
  private translateHostStage1(s: StreamState, request: DmaRequest, out: WalkResult): void {
    const info = this.info;
    const cd = this.cdFor(s, request.pasid);
    if (cd === CD_BYPASS) return bypassChecked(out, info, request.iova, this.features.oasBits);
    if (typeof cd === "number") return configFault(out, info, cd, request.iova);
    const settings = cd.settings;
    info.asid = settings.asid;
    if (translateFromIotlb(this.iotlb, S1_HOST_VMID, settings.asid, request.iova, request.access, this.hit, out) && out.ok) return;
    walkStage1(settings, request.iova, request.access, this.s1Walker, this.hostReader, out);
    const domain = this.substreams.domainOfAsid(settings.asid);
    const clean = domain !== undefined && this.hardwareDirty(domain, stage1DirtyBits, request.access, out);
    cacheTranslation(this.iotlb, S1_HOST_VMID, settings.asid, request.iova, out, 0, clean);
    if (out.ok) return;
    info.event = walkFaultEvent(out.fault);
    info.record = settings.record;
    if (out.fault === WalkFault.External) {
      info.eventClass = EventClass.TT;
      info.fetchAddress = out.entryAddress;
    }
    if (domain !== undefined) this.recoverable(domain, settings.stall, request, out);
  }

  /**
   * A translation-related fault (F_TRANSLATION, F_ADDR_SIZE, F_ACCESS, F_PERMISSION: the faults the A, R and S bits
   * govern, IHI0070 §5.5) of the stream's own translating stage, which the transaction can recover from: with CD.S
   * the SMMU stalls it (§3.12.2) under a new STAG; otherwise a PRI-capable device, whose failed translation it would
   * learn through ATS, issues a page request for the page (§3.9.1, the request carries the device's PRGI). The host
   * driver hands either to the domain's IOPF handler (Linux routes stall events and page requests to
   * iommu_report_device_fault; iommufd queues them in the HWPT's fault queue); the device then waits, and
   * `out.pageRequest` names the group. Without a handler the fault is final: Linux terminates an unhandled stall
   * (CMD_RESUME abort) and denies an unexpected page request. Allocates nothing beyond the report itself.
   */
  private recoverable(domain: IommuDomain, stall: boolean, request: DmaRequest, out: WalkResult): void {
    if (this.reporting || out.tableFetch || !RECOVERABLE_EVENTS.has(this.info.event)) return;
    const iopf = domain.iopf;
    const device = this.streams.get(request.requesterId)?.device;
    if (iopf === undefined || device === undefined) return;
    let group: number;
    if (stall) {
      group = this.nextStag;
      this.nextStag = (this.nextStag + 1) & 0xffff;
    } else {
      group = request.prgi ?? -1;
      if (group < 0 || !isInputAddress(request.iova)) return;
    }
    const perm = (request.access & Perm.Read ? PgfaultPerm.READ : 0) | (request.access & Perm.Write ? PgfaultPerm.WRITE : 0) | (request.access & Perm.Exec ? PgfaultPerm.EXEC : 0);
    const page = isInputAddress(request.iova) ? request.iova - (request.iova % 4096) : 0;
    if (iopf.report(device, request.pasid === NO_PASID ? undefined : request.pasid, group, [{ address: page, perm }])) out.pageRequest = group;
  }

  /**
   * The hardware dirty update (IHI0070 §3.13.3.1) after a walk whose last entry is the leaf of `domain`, a host
   * table of the format `bits` describes: a domain allocated for dirty tracking has S2HD in its STEs (stage 2) or
   * HD in its CDs (stage 1), so a write through a writable-clean leaf marks it writable-dirty there (large leaves
   * whole), and a read leaves it clean. Returns whether the translation is cached as clean-writable (a read
   * through a writable leaf of such a domain), so that the next write walks and marks as the hardware, which never
   * caches a clean leaf as dirty, does. While iommufd's tracking is on, the domain's tracker marks; while it is off
   * the hardware marks all the same (Linux leaves HD set and its set_dirty_tracking does nothing), and enabling
   * cleans every leaf first. Allocates nothing.
   */
  private hardwareDirty(domain: TablePagingDomain, bits: DirtyBitFormat, access: number, out: WalkResult): boolean {
    const dirty = domain.dirtyOps;
    if (dirty === undefined || !out.ok) return false;
    if ((access & Perm.Write) === 0) return true;
    if (dirty.markWritten(out)) return false;
    const memory = this.host.memory;
    const at = out.entryAddress;
    if (!memory.isAllocated(at)) return false;
    memory.read64Halves(at, this.leafWords);
    const lo = this.leafWords[0]!;
    const hi = this.leafWords[1]!;
    if (bits.isDirty(lo, hi, out.level)) return false;
    bits.withDirty(lo, hi, out.level, true, this.leafWords);
    memory.write64Halves(at, this.leafWords[0]!, this.leafWords[1]!);
    return false;
  }

  /**
   * HTTU in the guest's own stage-1 table (a nested CD with HA or HD, which this SMMU implements: IDR0.HTTU): the
   * leaf the transaction used gets AF set (HA) and, for a write through a writable-clean leaf (AP[2] = 1 with DBM),
   * AP[2] cleared (HD; §3.13.2, §3.13.3.1). The update is a write of the descriptor through stage 2 (§3.13.5), so
   * the stage-2 leaf of the table page is marked dirty as any write is. Returns whether the leaf stays
   * writable-clean after a read (the translation is then cached clean, so the next write walks and marks).
   * Only reached for CDs with HA/HD, which a guest of the emulated SMMU (IDR0.HTTU 0) never writes.
   */
  private guestStage1Update(s: StreamState, cd: CachedCd, request: DmaRequest): boolean {
    const settings = cd.settings;
    const reader = this.fetchReader;
    const s2 = s.s2!;
    reader.table = s2.table;
    reader.owner = s.device.owner;
    const leaf = this.s1Scratch;
    this.s1Walker.walk(settings.format, cd.stage1.geometry, cd.stage1.root, request.iova, Perm.Read, reader, leaf);
    if (!leaf.ok) return false;
    const lo = leaf.entryLo;
    const hi = leaf.entryHi;
    const write = (request.access & Perm.Write) !== 0;
    const writableClean = settings.hardwareDirty && (hi & S1_DBM_HI) !== 0 && (lo & S1_AP2) !== 0;
    let updated = lo;
    if (settings.hardwareAccess && (lo & S1_AF) === 0) updated |= S1_AF;
    if (write && writableClean) updated = (updated & ~S1_AP2) | S1_AF;
    updated >>>= 0;
    if (updated !== lo) {
      const at = this.s2Scratch;
      s2.table.walk(leaf.entryAddress, Perm.Write, at);
      // Guest RAM is writable in the host's stage 2; a descriptor outside it is not updated.
      if (at.ok && this.host.memory.ownerOf(at.output) === s.device.owner) {
        this.host.memory.write64Halves(at.output, updated, hi);
        this.hardwareDirty(s2, stage2DirtyBits, Perm.Write, at);
      }
    }
    return !write && writableClean;
  }

  /** The CD a nested stream's transaction uses, from the CD cache or fetched through stage 2. */
  private cdFor(s: StreamState, pasid: number): CachedCd | number {
    const key = pasid + 1;
    const cached = s.cds.get(key);
    if (cached !== undefined) return cached;
    const reader = this.fetchReader;
    const info = this.info;
    if (s.s2 !== undefined) {
      reader.table = s.s2.table;
      reader.owner = s.device.owner;
      reader.s2.ok = true;
      reader.s2.fault = WalkFault.None;
    }
    const read = readCd(s.stage1!, pasid, s.s2 !== undefined ? reader : this.hostReader, this.cdWords, info);
    if (read === EventType.F_CD_FETCH && s.s2 !== undefined && reader.s2.fault !== WalkFault.None) {
      // The CD fetch faulted at stage 2: a stage-2 fault of class CD, the host's to handle.
      info.stage2 = true;
      info.eventClass = EventClass.CD;
      info.ipa = info.fetchAddress;
      return walkFaultEvent(reader.s2.fault);
    }
    if (read === CD_BYPASS) {
      s.cds.set(key, CD_BYPASS);
      return CD_BYPASS;
    }
    if (read !== 0) return read;
    const settings = decodeCdSettings(this.cdWords, this.features, s.stage1!.stallDisabled);
    const result: CachedCd | number =
      typeof settings === "number" ? settings : { settings, stage1: { format: settings.format, geometry: settings.geometry, root: settings.ttb0 }, words: this.cdWords.slice() };
    s.cds.set(key, result);
    return result;
  }

  /**
   * Records a failed transaction's event (IHI0070 §7.3). Records gated off (CD.R / STE.S2R clear) and silent
   * aborts write nothing. A stage-1 event of the forwarded kinds (Linux `arm_vmaster_report_event`) from a
   * stream with a vDEVICE goes to its vSMMU's vEVENTQ with the StreamID replaced by the vSID; stage-2 faults,
   * other kinds and streams without a vDEVICE stay in the host's log.
   */
  reportDmaFault(request: DmaRequest, _result: WalkResult): void {
    const last = this.last;
    if (last.sid !== request.requesterId || last.pasid !== request.pasid || last.iova !== request.iova || last.access !== request.access) {
      // Only to learn the event: a second look at the transaction raises no page request.
      this.reporting = true;
      this.translate(request, this.scratch);
      this.reporting = false;
    }
    const info = this.info;
    const stream = this.streams.get(request.requesterId);
    if (info.event !== 0 && stream?.kind === StreamKind.Stage2 && stream.device.owner !== HOST_OWNER) {
      this.vmFaults.push(stream.device.owner, { requesterId: request.requesterId, pasid: request.pasid, iova: request.iova, access: request.access });
    }
    if (info.event === 0 || !info.record) return;
    const record = faultRecord(info, { sid: request.requesterId, ssid: request.pasid, iova: request.iova, access: request.access, privileged: request.privileged === true });
    if (record === undefined) return;
    const s = this.streams.get(request.requesterId);
    if (s?.nested !== undefined && !info.stage2 && VEVENTQ_FORWARDED_EVENTS.includes(info.event)) {
      const core = s.nested.vsmmu.core;
      const vsid = core.virtIdOf(s.device);
      if (vsid !== undefined && core.reportEvent(IOMMU_VEVENTQ_TYPE_ARM_SMMUV3, toBytes(withStreamId(record, vsid))).ok) {
        this.forwardedEvents++;
        return;
      }
    }
    this.logHostEvent(record);
  }

  private logHostEvent(record: RawBits): void {
    this.hostEvents.push(record);
    if (this.hostEvents.length > HOST_EVENT_LOG_ENTRIES) this.hostEvents.shift();
  }

  // ---- the physical command queue ----

  /**
   * Runs commands on this SMMU's command queue, as the host driver issues them (with a CMD_SYNC after the
   * batch when `sync`): their effect on the IOTLB and CD cache. A command the hardware flags CERROR_ILL is
   * skipped, as Linux's `arm_smmu_cmdq_skip_err` does, and counted. Returns how many were skipped. `count`: run only
   * the first `count` of `commands` (a caller reusing one batch of buffers).
   */
  executeCommands(commands: readonly RawBits[], sync: boolean, count = commands.length): number {
    let skipped = 0;
    for (let i = 0; i < count; i++) {
      if (this.executeCommand(commands[i]!) !== CmdqError.CERROR_NONE) skipped++;
    }
    if (sync && count > 0) this.executeCommand(this.syncCommand);
    this.skippedCommands += skipped;
    return skipped;
  }

  /** One command's effect; returns its CMDQ error (CERROR_ILL for an unknown opcode or undefined bits). Allocates nothing. */
  executeCommand(raw: RawBits): number {
    if (raw.length !== 4 || commandSetsUndefinedBits(raw)) return CmdqError.CERROR_ILL;
    const name = commandName(cmdOpcode(raw));
    if (this.audit !== undefined && name !== undefined) this.noteInvalidation(name, raw);
    switch (name) {
      case "CMD_TLBI_NH_ALL":
      case "CMD_TLBI_S12_VMALL":
      case "CMD_TLBI_S2_IPA":
        // Entries hold combined stage-1+2 translations: dropping the VMID covers any stage-2 change.
        this.iotlb.invalidateVmid(cmdVmid(raw));
        return CmdqError.CERROR_NONE;
      case "CMD_TLBI_NH_ASID":
        this.iotlb.invalidateAsid(cmdVmid(raw), cmdAsid(raw));
        return CmdqError.CERROR_NONE;
      case "CMD_TLBI_NH_VA":
      case "CMD_TLBI_NH_VAA": {
        tlbiRange(raw, this.range);
        if (this.range.length > 0) this.iotlb.invalidateRange(cmdVmid(raw), name === "CMD_TLBI_NH_VA" ? cmdAsid(raw) : ANY_ASID, this.range.first, this.range.length);
        return CmdqError.CERROR_NONE;
      }
      case "CMD_TLBI_NSNH_ALL":
        this.iotlb.invalidateAll();
        return CmdqError.CERROR_NONE;
      case "CMD_CFGI_STE":
      case "CMD_CFGI_CD_ALL":
        this.streams.get(cmdSid(raw))?.cds.clear();
        return CmdqError.CERROR_NONE;
      case "CMD_CFGI_CD": {
        // The CD of one SubstreamID (SubstreamID 0's also serves traffic without one under S1DSS SSID0); Leaf 0 also
        // covers the L1CD the SubstreamID goes through, so every CD reached through it.
        const s = this.streams.get(cmdSid(raw));
        if (s === undefined) return CmdqError.CERROR_NONE;
        const ssid = cmdSsid(raw);
        if (!cmdLeaf(raw)) s.cds.clear();
        else {
          s.cds.delete(ssid + 1);
          if (ssid === 0) s.cds.delete(0);
        }
        return CmdqError.CERROR_NONE;
      }
      case "CMD_CFGI_STE_RANGE": {
        if (cmdRange(raw) === CFGI_ALL_RANGE) this.dropAllCds();
        else {
          const { first, last } = cfgiSteRangeStreams(cmdSid(raw), cmdRange(raw));
          for (const [sid, s] of this.streams) if (sid >= first && sid <= last) s.cds.clear();
        }
        return CmdqError.CERROR_NONE;
      }
      case undefined:
        return CmdqError.CERROR_ILL;
      default:
        // Prefetches, EL2/EL3 TLBIs, ATC_INV (no ATC in the model), PRI/stall responses, CMD_SYNC: no cached state.
        return CmdqError.CERROR_NONE;
    }
  }

  private dropAllCds(): void {
    for (const s of this.streams.values()) s.cds.clear();
  }
}
