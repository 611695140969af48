import { err, fail, HOST_OWNER, HostTableStore, IdAllocator, NO_PASID, ok, type HostServices, type PhysicalDevice, type PhysicalIommu, type RawBits, type Result, type TablePagingDomain } from "@viommu/core";
import { CdTable } from "../format/cd-table.js";
import { linuxCdTableShape } from "../format/cd-table-shape.js";
import { encodeCommand } from "../format/command.js";
import { Shareability } from "../format/control-registers.js";
import { encodeSte, SteConfig, SteS1Dss } from "../format/stream-table-entry.js";
import { tlbiRangeCommands } from "../format/tlbi-commands.js";
import type { SmmuFeatures } from "../translate/smmu-features.js";
import { createStage1Domain, stage1Asid, stage1Cd } from "./stage1-domain.js";

/** STE.S1CIR/S1COR write-back read-allocate (Linux STRTAB_STE_1_S1C_CACHE_WBRA). */
const S1C_CACHE_WBRA = 1;
/** Ranges longer than this are invalidated by ASID (CMD_TLBI_NH_ASID) rather than by address. */
const RANGE_LIMIT = 2 ** 30;

/** What the host driver's substream half needs of its SMMU. */
export interface SubstreamSmmu {
  readonly unit: PhysicalIommu;
  readonly host: HostServices;
  readonly features: SmmuFeatures;
  /** The StreamIDs of a master. */
  streamIdsOf(device: PhysicalDevice): readonly number[];
  /** Runs commands on the physical command queue, then a CMD_SYNC. */
  executeCommands(commands: readonly RawBits[], sync: boolean): number;
}

/** A master's host-owned CD table and what is attached through it. */
interface MasterCds {
  readonly table: CdTable;
  /** The stage-1 domain at the RID (CD 0), if any. */
  rid: TablePagingDomain | undefined;
  readonly pasids: Map<number, TablePagingDomain>;
}

/**
 * The host driver's stage-1 and SubstreamID half (Linux arm-smmu-v3's CD tables and set_dev_pasid): stage-1 paging
 * domains, each with an ASID from the SMMU's ASID space and VMID 0 in its STEs (arm_smmu_make_cdtable_ste), so
 * its IOTLB entries are tagged (0, ASID); a CD table per master in host memory, shaped as Linux shapes it for the
 * master's SSID width, holding the CD of the RID's stage-1 domain at SubstreamID 0 and one CD per attached PASID.
 * Every CD write is followed by CMD_CFGI_CD (and a CMD_SYNC) on the physical queue for each of the master's
 * StreamIDs; an unmap of a stage-1 domain sends CMD_TLBI_NH_VA for its ASID over the range (CMD_TLBI_NH_ASID for
 * long ranges), and its end a CMD_TLBI_NH_ASID before the ASID is reused.
 */
export class HostSubstreams {
  private readonly asids: IdAllocator;
  private readonly masters = new Map<PhysicalDevice, MasterCds>();
  private readonly byAsid = new Map<number, TablePagingDomain>();
  private readonly store: HostTableStore;

  constructor(private readonly smmu: SubstreamSmmu) {
    this.asids = new IdAllocator("ASID", 1, smmu.features.asid16 ? 0xffff : 0xff);
    this.store = new HostTableStore(smmu.host.memory, HOST_OWNER);
  }

  /** A stage-1 domain with a fresh ASID (ENOSPC when every ASID is held); `dirty` for HA/HD dirty tracking. */
  allocDomain(dirty: boolean): Result<TablePagingDomain> {
    const asid = this.asids.allocate();
    if (!asid.ok) return fail(asid);
    const domain = createStage1Domain(this.smmu.unit, this.smmu.host, asid.value, dirty);
    if (!domain.ok) {
      this.asids.release(asid.value);
      return fail(domain);
    }
    const id = asid.value;
    this.byAsid.set(id, domain.value);
    domain.value.watch({
      unmapped: (_vmid, iova, length) => this.invalidateRange(id, iova, length),
      destroyed: () => {
        this.smmu.executeCommands([encodeCommand("CMD_TLBI_NH_ASID", { ASID: id, VMID: 0 })], true);
        this.byAsid.delete(id);
        this.asids.release(id);
      },
    });
    return ok(domain.value);
  }

  /** The host stage-1 domain a CD's ASID belongs to (the hardware's dirty update needs its table). */
  domainOfAsid(asid: number): TablePagingDomain | undefined {
    return this.byAsid.get(asid);
  }

  private invalidateRange(asid: number, iova: number, length: number): void {
    const f = this.smmu.features;
    const commands = length <= RANGE_LIMIT ? tlbiRangeCommands(asid, iova, length, 12, undefined, f.rangeInvalidation) : undefined;
    this.smmu.executeCommands(commands ?? [encodeCommand("CMD_TLBI_NH_ASID", { ASID: asid, VMID: 0 })], true);
  }

  /** Whether the master has PASIDs attached (Linux arm_smmu_ssids_in_use). */
  ssidsInUse(device: PhysicalDevice): boolean {
    return (this.masters.get(device)?.pasids.size ?? 0) > 0;
  }

  /** Whether `pasid` of the master has a domain attached. */
  hasPasid(device: PhysicalDevice, pasid: number): boolean {
    return this.masters.get(device)?.pasids.has(pasid) === true;
  }

  private master(device: PhysicalDevice): Result<MasterCds> {
    const existing = this.masters.get(device);
    if (existing !== undefined) return ok(existing);
    const shape = linuxCdTableShape(Math.min(device.pasidBits, this.smmu.features.ssidBits), this.smmu.features.twoLevelCd);
    const table = CdTable.create(this.store, shape);
    if (table === undefined) return err("ENOMEM", "no host memory for the CD table");
    const m: MasterCds = { table, rid: undefined, pasids: new Map() };
    this.masters.set(device, m);
    return ok(m);
  }

  private writeCd(device: PhysicalDevice, m: MasterCds, ssid: number, domain: TablePagingDomain | undefined): Result<void> {
    if (domain === undefined) m.table.clear(ssid);
    else if (!m.table.write(ssid, stage1Cd(domain, stage1Asid(domain)!))) return err("ENOMEM", "no host memory for the CD table's leaf");
    const cfgi = this.smmu.streamIdsOf(device).map((sid) => encodeCommand("CMD_CFGI_CD", { SID: sid, SSID: ssid, Leaf: 1 }));
    this.smmu.executeCommands(cfgi, true);
    return ok();
  }

  /**
   * The STE for the master's CD table (arm_smmu_make_cdtable_ste): Config S1 translate, S1Fmt, S1ContextPtr,
   * S1CDMax; S1DSS SSID0 when the RID has a stage-1 domain in CD 0, terminate when the RID is blocked and PASIDs
   * are attached; S1CIR/S1COR WBRA, S1CSH ISH; S1STALLD when the SMMU can stall (the master never stalls); STRW
   * NS-EL1 and S2VMID 0.
   */
  private cdTableSte(m: MasterCds): RawBits {
    return encodeSte({
      V: 1,
      Config: SteConfig.S1Translate,
      S1Fmt: m.table.shape.s1fmt,
      S1ContextPtr: m.table.base,
      S1CDMax: m.table.shape.s1cdmax,
      S1DSS: m.rid !== undefined ? SteS1Dss.Ssid0 : SteS1Dss.Terminate,
      S1CIR: S1C_CACHE_WBRA,
      S1COR: S1C_CACHE_WBRA,
      S1CSH: Shareability.ISH,
      S1STALLD: this.smmu.features.stallAndTerminate ? 1 : 0,
    });
  }

  /** A stage-1 domain at the RID: its CD at SubstreamID 0; returns the STE to install. */
  attachRid(device: PhysicalDevice, domain: TablePagingDomain): Result<RawBits> {
    const m = this.master(device);
    if (!m.ok) return fail(m);
    const written = this.writeCd(device, m.value, 0, domain);
    if (!written.ok) return fail(written);
    m.value.rid = domain;
    return ok(this.cdTableSte(m.value));
  }

  /**
   * A stage-1 domain at a PASID (arm_smmu_s1_set_dev_pasid, arm_smmu_set_pasid): EINVAL beyond the master's CD
   * table or at SubstreamID 0 (IOMMU_NO_PASID's CD). The caller has checked the RID is blocked or stage 1.
   * Returns the STE to install.
   */
  attachPasid(device: PhysicalDevice, pasid: number, domain: TablePagingDomain): Result<RawBits> {
    const m = this.master(device);
    if (!m.ok) return fail(m);
    if (!Number.isInteger(pasid) || pasid <= 0 || pasid >= m.value.table.contexts) {
      this.dropIfUnused(device, m.value);
      return err("EINVAL", `PASID ${pasid} outside the master's ${m.value.table.contexts} SubstreamIDs`);
    }
    const written = this.writeCd(device, m.value, pasid, domain);
    if (!written.ok) {
      this.dropIfUnused(device, m.value);
      return fail(written);
    }
    m.value.pasids.set(pasid, domain);
    return ok(this.cdTableSte(m.value));
  }

  /**
   * Detaches the RID (`pasid` NO_PASID) or a PASID. Returns the STE the master needs now: its CD table's while
   * anything is attached through it (a blocked RID with PASIDs: S1DSS terminate), undefined when nothing is left
   * (the caller installs the abort STE; the CD table is freed).
   */
  detach(device: PhysicalDevice, pasid: number): RawBits | undefined {
    const m = this.masters.get(device);
    if (m === undefined) return undefined;
    if (pasid === NO_PASID) {
      if (m.rid !== undefined) this.writeCd(device, m, 0, undefined);
      m.rid = undefined;
    } else if (m.pasids.delete(pasid)) this.writeCd(device, m, pasid, undefined);
    return this.dropIfUnused(device, m) ? undefined : this.cdTableSte(m);
  }

  /** The RID left stage 1 for another kind of domain: CD 0 cleared, the table kept only for attached PASIDs. */
  ridReplaced(device: PhysicalDevice): void {
    const m = this.masters.get(device);
    if (m === undefined || m.rid === undefined) return;
    this.writeCd(device, m, 0, undefined);
    m.rid = undefined;
    this.dropIfUnused(device, m);
  }

  private dropIfUnused(device: PhysicalDevice, m: MasterCds): boolean {
    if (m.rid !== undefined || m.pasids.size > 0) return false;
    m.table.destroy();
    this.masters.delete(device);
    return true;
  }

  /** The master's CD table (for inspection). */
  cdTableOf(device: PhysicalDevice): CdTable | undefined {
    return this.masters.get(device)?.table;
  }
}
