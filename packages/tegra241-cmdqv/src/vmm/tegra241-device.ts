import {
  decodeState,
  StateReader,
  encodeState,
  err,
  fail,
  ok,
  type AcpiTableBlob,
  type DmaDevice,
  type GuestQueueView,
  type EmulatedIommu,
  type InterruptResult,
  type MsiMessage,
  type Result,
  type StateValue,
  type TranslationMode,
  type VmmDeviceOptions,
  type VmmStats,
  type WalkResult,
} from "@viommu/core";
import { Smmuv3Device } from "@viommu/smmuv3";
import type { HwInfoTegra241Cmdqv } from "../format/iommufd-uapi.js";
import { cmdqvAcpiTable } from "./cmdqv-acpi.js";
import { CmdqvVmm, type CmdqvVmmPlacement } from "./cmdqv-vmm.js";

/** Where the VMM puts the CMDQV in the guest's physical map: a 1 MiB window per instance, clear of the SMMUs. */
export const DEFAULT_CMDQV_BASE = 0x0b00_0000;
export const CMDQV_WINDOW = 0x10_0000;
/** GSIV of instance 0's CMDQV error interrupt (SPI 112), after the SMMUs' four each. */
export const DEFAULT_CMDQV_GSIV = 0x90;

const STATE_KIND = "tegra241-cmdqv";
const STATE_VERSION = 1;

export function defaultCmdqvPlacement(instance: number): CmdqvVmmPlacement {
  return { base: DEFAULT_CMDQV_BASE + instance * CMDQV_WINDOW, gsiv: DEFAULT_CMDQV_GSIV + instance };
}

/**
 * The guest-visible SMMUv3 with a Tegra241 CMDQV, as a VMM builds it (QEMU's smmuv3-accel with tegra241-cmdqv):
 * the SMMUv3 half (registers, the trapped CMDQ, stream table → nested HWPTs, event queue, IORT) runs unchanged on
 * a TEGRA241_CMDQV vIOMMU; the CMDQV half adds the aperture with the VINTF page mapped straight into the guest,
 * HW queues for the guest's VCMDQs, the CMDQV error interrupt and the NVDA200C device in an SSDT. When the host
 * has no CMDQV, or the mode is not nested (a shadowing VMM has no vIOMMU to hang queues on), the guest gets a
 * plain SMMUv3 and finds no NVDA200C device.
 */
export class Tegra241Device implements EmulatedIommu {
  readonly vendor = "tegra241-cmdqv";

  private constructor(
    readonly smmu: Smmuv3Device,
    /** The CMDQV half; undefined when the VM got a plain SMMUv3. */
    readonly cmdqv: CmdqvVmm | undefined,
    private readonly instance: number,
  ) {}

  static create(options: VmmDeviceOptions): Result<Tegra241Device> {
    const instance = options.instance ?? 0;
    let info: HwInfoTegra241Cmdqv | undefined;
    if (options.mode === "nested") {
      const probed = CmdqvVmm.probe(options.iommufd, options.anchorDevId);
      if (probed.ok) info = probed.value;
      else if (probed.error.errno !== "EOPNOTSUPP") return fail(probed);
    }
    if (info === undefined) {
      const plain = Smmuv3Device.create(options);
      return plain.ok ? ok(new Tegra241Device(plain.value, undefined, instance)) : fail(plain);
    }
    // The SMMUv3 half allocates its vIOMMU as a TEGRA241_CMDQV one (QEMU's CMDQV ops' alloc_viommu): the Tegra
    // vIOMMU serves it unchanged (nested HWPTs from vSTEs, raw-command invalidation, SMMUv3 vEVENTs), and the
    // kernel writes the VINTF page's mmap offset back into `data`.
    const data = CmdqvVmm.viommuData();
    const smmu = Smmuv3Device.create(options, { viommuType: data.type, viommuData: data });
    if (!smmu.ok) return fail(smmu);
    const viommuId = smmu.value.viommuId;
    if (viommuId === undefined) {
      smmu.value.destroy();
      return err("EOPNOTSUPP", "the SMMUv3 half allocated no vIOMMU");
    }
    const cmdqv = CmdqvVmm.attach(options.vm, options.iommufd, viommuId, data, info, defaultCmdqvPlacement(instance));
    if (!cmdqv.ok) {
      smmu.value.destroy();
      return fail(cmdqv);
    }
    return ok(new Tegra241Device(smmu.value, cmdqv.value, instance));
  }

  get mode(): TranslationMode {
    return this.smmu.mode;
  }

  get mmioBase(): number {
    return this.smmu.mmioBase;
  }

  /** The SMMUv3 half's counters, with the CMDQV aperture's trapped accesses added to `trapped`. */
  get stats(): VmmStats {
    const s = this.smmu.stats;
    return { trapped: s.trapped + (this.cmdqv?.stats.trapped ?? 0), forwarded: s.forwarded, eventsInjected: s.eventsInjected, shadowMappings: s.shadowMappings };
  }

  get frozen(): boolean {
    return this.smmu.frozen;
  }

  freeze(): void {
    this.smmu.freeze();
  }

  thaw(): void {
    this.smmu.thaw();
  }

  get options(): VmmDeviceOptions {
    return this.smmu.options;
  }

  assignDevice(device: DmaDevice, devId: number, guestRid: number): Result<void> {
    return this.smmu.assignDevice(device, devId, guestRid);
  }

  /**
   * Hot-unplug through the SMMUv3 half: destroying the device's vDEVICE also clears its SID_MATCH / SID_REPLACE
   * slot in the VINTF (the kernel's vDEVICE destroy), so the guest's VCMDQs cannot name it any more.
   */
  unassignDevice(guestRid: number): Result<void> {
    return this.smmu.unassignDevice(guestRid);
  }

  /** Re-addressing through the SMMUv3 half: the re-created vDEVICE programs the VINTF's slot with the new vSID. */
  renumberDevice(fromRid: number, toRid: number): Result<void> {
    return this.smmu.renumberDevice(fromRid, toRid);
  }

  /** The SMMUv3 half's CMDQ, EVTQ and PRIQ, then the guest's VCMDQs (guest-produced, their page 0 mapped direct). */
  guestQueues(): GuestQueueView[] {
    return this.cmdqv === undefined ? this.smmu.guestQueues() : [...this.smmu.guestQueues(), ...this.cmdqv.guestQueues()];
  }

  translateEmulated(guestRid: number, pasid: number, iova: number, write: boolean, out: WalkResult): void {
    this.smmu.translateEmulated(guestRid, pasid, iova, write, out);
  }

  deliverMsi(guestRid: number, msi: MsiMessage): InterruptResult {
    return this.smmu.deliverMsi(guestRid, msi);
  }

  /** The SMMU's event loop, then the CMDQV's (queue errors into the guest's maps and interrupt). */
  poll(): void {
    this.smmu.poll();
    if (!this.smmu.frozen) this.cmdqv?.poll();
  }

  /** The SMMU's IORT, and with a CMDQV the SSDT declaring its NVDA200C device. */
  acpiTables(): AcpiTableBlob[] {
    const tables = this.smmu.acpiTables();
    return this.cmdqv === undefined ? tables : [...tables, cmdqvAcpiTable(this.instance, this.cmdqv.placement, tables)];
  }

  save(): Uint8Array {
    const smmu = this.smmu.save();
    const state: StateValue = { smmu: Array.from(smmu, (b) => b.toString(16).padStart(2, "0")).join(""), cmdqv: this.cmdqv?.saveState() ?? null };
    return encodeState(STATE_KIND, STATE_VERSION, state);
  }

  /**
   * Restores both halves into a freshly created device of the same configuration, all or nothing: the SMMUv3 half
   * (`Smmuv3Device.parseState`) and the CMDQV half (`CmdqvVmm.parseState`) are both checked before either is
   * applied, so a refused state (EINVAL naming the field) changes nothing.
   */
  restore(blob: Uint8Array): Result<void> {
    const decoded = decodeState(blob, STATE_KIND, [STATE_VERSION]);
    if (!decoded.ok) return fail(decoded);
    const outer = StateReader.read(decoded.value.value, "tegra241-cmdqv", (r) => {
      const hex = r.string("smmu");
      r.check(/^(?:[0-9a-f]{2})*$/.test(hex), "smmu", "is not the SMMU's state as hex bytes");
      r.check(r.has("cmdqv"), "cmdqv", "is missing");
      const cmdqv = (decoded.value.value as { cmdqv: StateValue }).cmdqv;
      r.check((cmdqv === null) === (this.cmdqv === undefined), "cmdqv", this.cmdqv === undefined ? "is present but this device has no CMDQV" : "is null but this device has a CMDQV");
      return { smmu: Uint8Array.from(hex.match(/../g) ?? [], (h) => parseInt(h, 16)), cmdqv };
    });
    if (!outer.ok) return fail(outer);
    const smmu = this.smmu.parseState(outer.value.smmu);
    if (!smmu.ok) return fail(smmu);
    const cmdqv = this.cmdqv === undefined ? undefined : this.cmdqv.parseState(outer.value.cmdqv);
    if (cmdqv !== undefined && !cmdqv.ok) return fail(cmdqv);
    this.smmu.applyState(smmu.value);
    if (cmdqv !== undefined && cmdqv.ok) this.cmdqv!.applyState(cmdqv.value);
    return ok();
  }

  /** The CMDQV half first (its HW queues, vEVENTQ and mapping hold the vIOMMU), then the SMMU half. */
  destroy(): void {
    this.cmdqv?.destroy();
    this.smmu.destroy();
  }
}
