import {
  ok,
  type GuestContext,
  type GuestDomainId,
  type GuestEvent,
  type GuestIommuDriver,
  type GuestInitOptions,
  type GuestProcess,
  type PermBits,
  type Result,
} from "@viommu/core";
import type { Smmuv3GuestDriver } from "@viommu/smmuv3";
import { findCmdqvDevices } from "./cmdqv-acpi-probe.js";
import { GuestCmdqv } from "./guest-cmdqv.js";

export interface Tegra241DriverOptions {
  /** log2 of entries per VCMDQ (default 8). */
  readonly queueLog2?: number;
  /** The CPU the driver issues from (Linux picks logical VCMDQ cpu % count). */
  readonly cpu?: number;
  /**
   * Linux's `bypass_vcmdq` module parameter ("for debugging use or perf comparison"): the CMDQV is still reset,
   * but every command goes to the SMMU's own, trapped queue.
   */
  readonly bypassVcmdq?: boolean;
}

/**
 * The guest's SMMUv3 driver with the Tegra241 CMDQV extension, as Linux runs arm-smmu-v3 with tegra241-cmdqv in
 * a VM: the SMMUv3 driver does everything (stream table, CDs, page tables, its command and event queues); once
 * it has reset the SMMU, the CMDQV found in the firmware's NVDA200C device (whose _UID names the IORT SMMU) is
 * reset and its VCMDQs brought up, and from then on every command batch Linux's `get_secondary_cmdq` would hand
 * a guest VCMDQ — only TLBI_NH_ASID, TLBI_NH_VA and ATC_INV — goes there without a VM exit; the rest (CFGI_*,
 * TLBI_NSNH_ALL, PREFETCH, …) keeps to the trapped SMMU queue. Without a CMDQV in the firmware it is the plain
 * SMMUv3 driver. The CMDQV driver plugs in as the SMMUv3 driver's implementation ops (`setImplOps`, Linux's
 * `impl_ops->get_secondary_cmdq`). `readEvents` also runs the CMDQV interrupt handler.
 */
export class Tegra241GuestDriver implements GuestIommuDriver {
  readonly vendor = "tegra241-cmdqv";
  private cmdqvDriver: GuestCmdqv | undefined;

  constructor(
    private readonly context: GuestContext,
    /** The SMMUv3 driver it extends. */
    readonly smmu: Smmuv3GuestDriver,
    private readonly options: Tegra241DriverOptions = {},
  ) {}

  /** The CMDQV driver, once init found and reset a CMDQV. */
  get cmdqv(): GuestCmdqv | undefined {
    return this.cmdqvDriver;
  }

  init(options: GuestInitOptions): Result<void> {
    // A re-init starts as the plain SMMUv3 driver: the CMDQV takes batches again only once it is reset.
    this.smmu.setImplOps(undefined);
    this.cmdqvDriver = undefined;
    const r = this.smmu.init(options);
    if (!r.ok) return r;
    const smmu = this.smmu.probeInfo;
    const found = smmu === undefined ? undefined : this.findCmdqv(smmu.iortIdentifier);
    if (smmu === undefined || found === undefined) return ok();
    const probed = GuestCmdqv.probe({
      vm: this.context.vm,
      memory: this.context.memory,
      pages: this.context.pages,
      base: found.base,
      cmdqs: smmu.cmdqs,
      msiPoll: smmu.msiPoll,
      mainQueue: (commands) => this.smmu.submitOnMainCmdq(commands),
      queueLog2: this.options.queueLog2,
      cpu: this.options.cpu,
    });
    // A CMDQV that does not come up leaves the SMMU's own queue in charge, as Linux falls back to it.
    if (!probed.ok || probed.value.enabledQueues === 0) return ok();
    this.cmdqvDriver = probed.value;
    // bypass_vcmdq: Linux's get_secondary_cmdq answers NULL, so the SMMU driver keeps every batch.
    if (this.options.bypassVcmdq !== true) this.smmu.setImplOps(probed.value);
    return ok();
  }

  /** The NVDA200C device whose _UID is the SMMU's IORT identifier (the first one when the IORT names none). */
  private findCmdqv(smmuId: number | undefined): { base: number } | undefined {
    for (const t of this.context.acpi) {
      if (t.signature !== "SSDT" && t.signature !== "DSDT") continue;
      const match = findCmdqvDevices(t.bytes).find((d) => smmuId === undefined || d.uid === smmuId);
      if (match !== undefined) return match;
    }
    return undefined;
  }

  createDomain(): Result<GuestDomainId> {
    return this.smmu.createDomain();
  }

  attach(rid: number, domain: GuestDomainId): Result<void> {
    return this.smmu.attach(rid, domain);
  }

  detach(rid: number): Result<void> {
    return this.smmu.detach(rid);
  }

  map(domain: GuestDomainId, iova: number, gpa: number, length: number, perms: PermBits): Result<void> {
    return this.smmu.map(domain, iova, gpa, length, perms);
  }

  unmap(domain: GuestDomainId, iova: number, length: number): Result<void> {
    return this.smmu.unmap(domain, iova, length);
  }

  flush(domain: GuestDomainId, iova?: number, length?: number): Result<void> {
    return this.smmu.flush(domain, iova, length);
  }

  attachPasid(rid: number, pasid: number, domain: GuestDomainId): Result<void> {
    return this.smmu.attachPasid(rid, pasid, domain);
  }

  detachPasid(rid: number, pasid: number): Result<void> {
    return this.smmu.detachPasid(rid, pasid);
  }

  createProcess(): Result<GuestProcess> {
    return this.smmu.createProcess();
  }

  bindProcess(rid: number, pasid: number, process: GuestProcess): Result<void> {
    return this.smmu.bindProcess(rid, pasid, process);
  }

  unbindProcess(rid: number, pasid: number): Result<void> {
    return this.smmu.unbindProcess(rid, pasid);
  }

  /** The MMU notifier's TLBIs: TLBI_NH_VA / NH_ASID, which the CMDQV takes on a VCMDQ. */
  invalidateProcess(process: GuestProcess, va: number, length: number): Result<void> {
    return this.smmu.invalidateProcess(process, va, length);
  }

  enablePageRequests(rid: number): Result<void> {
    return this.smmu.enablePageRequests(rid);
  }

  /** CMD_PRI_RESP / CMD_RESUME, which stay on the trapped SMMU queue (the VMM relays them to the fault queue). */
  respondPageRequest(request: GuestEvent, success: boolean): Result<void> {
    return this.smmu.respondPageRequest(request, success);
  }

  /** The SMMU's events, then the VCMDQ errors the CMDQV interrupt handler cleared. */
  readEvents(): GuestEvent[] {
    return [...this.smmu.readEvents(), ...(this.cmdqvDriver?.handleInterrupt() ?? [])];
  }

  takeOverflow(): boolean {
    return this.smmu.takeOverflow();
  }

  resetEventLog(entries: number): Result<void> {
    return this.smmu.resetEventLog(entries);
  }

  submitIllegalCommand(): Result<void> {
    return this.smmu.submitIllegalCommand();
  }
}
