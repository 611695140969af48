import {
  decodeLayout,
  err,
  fail,
  ok,
  type GuestContext,
  type GuestDomainId,
  type GuestEvent,
  type GuestIommuDriver,
  type GuestInitOptions,
  type PermBits,
  type RawBits,
  type Result,
} from "@viommu/core";
import { decodeIort, idr0Layout, idr1Layout, type Smmuv3GuestDriver } from "@viommu/smmuv3";
import { findCmdqvDevices } from "./cmdqv-acpi-probe.js";
import { GuestCmdqv } from "./guest-cmdqv.js";

/** The SMMU driver's command queue as far as the CMDQV routes around it. */
interface CommandQueue {
  submit(commands: readonly RawBits[]): Result<void>;
}

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
 * SMMUv3 driver. `readEvents` also runs the CMDQV interrupt handler.
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
    const r = this.smmu.init(options);
    if (!r.ok) return r;
    const found = this.findCmdqv();
    if (found === undefined) return ok();
    const queue = this.smmuCommandQueue();
    if (queue === undefined) return err("ENODEV", "the SMMUv3 driver's command queue is not reachable");
    const submit = queue.submit.bind(queue);
    const idr = this.smmuIdRegisters();
    const probed = GuestCmdqv.probe({
      vm: this.context.vm,
      memory: this.context.memory,
      pages: this.context.pages,
      base: found.base,
      cmdqs: idr.cmdqs,
      msiPoll: idr.msiPoll,
      mainQueue: submit,
      queueLog2: this.options.queueLog2,
      cpu: this.options.cpu,
    });
    // A CMDQV that does not come up leaves the SMMU's own queue in charge, as Linux falls back to it.
    if (!probed.ok || probed.value.enabledQueues === 0) return ok();
    const cmdqv = probed.value;
    this.cmdqvDriver = cmdqv;
    if (this.options.bypassVcmdq === true) return ok();
    queue.submit = (commands: readonly RawBits[]): Result<void> => {
      const issued = cmdqv.issue(commands);
      if (!issued.ok) return fail(issued);
      return issued.value ? ok() : submit(commands);
    };
    return ok();
  }

  /** The NVDA200C device whose _UID is the SMMU's IORT identifier (the first one when the IORT names none). */
  private findCmdqv(): { base: number } | undefined {
    let smmuId: number | undefined;
    for (const t of this.context.acpi) {
      if (t.signature !== "IORT") continue;
      const iort = decodeIort(t.bytes);
      const node = iort.ok ? iort.table.nodes.find((n) => n.type === "smmuv3") : undefined;
      if (node !== undefined) smmuId = node.identifier;
    }
    for (const t of this.context.acpi) {
      if (t.signature !== "SSDT" && t.signature !== "DSDT") continue;
      const match = findCmdqvDevices(t.bytes).find((d) => smmuId === undefined || d.uid === smmuId);
      if (match !== undefined) return match;
    }
    return undefined;
  }

  /** The SMMU's base from the IORT (else the VMM's address) and what IDR0/IDR1 say about queues and MSIs. */
  private smmuIdRegisters(): { cmdqs: number; msiPoll: boolean } {
    let base = this.context.mmioBase;
    for (const t of this.context.acpi) {
      if (t.signature !== "IORT") continue;
      const iort = decodeIort(t.bytes);
      const node = iort.ok ? iort.table.nodes.find((n) => n.type === "smmuv3") : undefined;
      if (node !== undefined && node.type === "smmuv3") base = Number(node.baseAddress);
    }
    const idr0 = decodeLayout(idr0Layout, Uint32Array.of(Number(this.context.vm.mmioRead(base, 4))));
    const idr1 = decodeLayout(idr1Layout, Uint32Array.of(Number(this.context.vm.mmioRead(base + 4, 4))));
    return { cmdqs: idr1.CMDQS, msiPoll: idr0.MSI === 1 && idr0.COHACC === 1 };
  }

  /**
   * Where Linux asks `impl_ops->get_secondary_cmdq` for a queue, the SMMUv3 reference driver offers no hook: the
   * CMDQV routes around its command queue object instead (see the package report's request for a hook).
   */
  private smmuCommandQueue(): CommandQueue | undefined {
    const queue = (this.smmu as unknown as { cmdq?: unknown }).cmdq;
    if (typeof queue !== "object" || queue === null || typeof (queue as { submit?: unknown }).submit !== "function") return undefined;
    return queue as CommandQueue;
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
