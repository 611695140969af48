import { err, fail, ok, Testbed, type AssignedDevice, type Result, type TestVm, type VendorPlugin } from "@viommu/core";
import type { TraceHeader } from "../format/trace-header.js";

/** The physical requester id the model gives the trace's n-th device (any unique id works: the guest never sees it). */
export function physicalRid(index: number): number {
  return 0x100 + index;
}

/** A default seed for a model built from a trace that names none. */
const DEFAULT_SEED = 1;

/**
 * The model system a trace's header describes: one VM with one RAM range, the vendor's emulated IOMMU(s) at the
 * header's blocks, and a passthrough device at each of the header's requester ids, with no guest driver (the
 * trace is the guest). Recording builds its system through here too, so a recorded trace replays on exactly
 * the system that answered it.
 */
export class ModelMachine {
  private constructor(
    readonly bed: Testbed,
    readonly vm: TestVm,
    readonly header: TraceHeader,
  ) {}

  /**
   * Builds the system. EINVAL when the header asks for something the model cannot be (several RAM ranges, an
   * IOMMU of another vendor than `plugin`, no device); ENOENT when the vendor is not `plugin`.
   */
  static create(plugin: VendorPlugin, plugins: readonly VendorPlugin[], header: TraceHeader): Result<ModelMachine> {
    const m = header.machine;
    if (m.ram.length !== 1) return err("EINVAL", `the model has one RAM range; the trace has ${m.ram.length}`);
    if (m.iommus.length === 0) return err("EINVAL", "the trace names no IOMMU");
    const other = m.iommus.find((b) => b.vendor !== plugin.id);
    if (other !== undefined) return err("ENOENT", `the trace programs a ${other.vendor} IOMMU; the model given is ${plugin.id}`);
    if (m.devices.length === 0) return err("EINVAL", "the trace names no device");
    const rids = new Set(m.devices.map((d) => d.rid));
    if (rids.size !== m.devices.length) return err("EINVAL", "the trace names a requester id twice");
    const ram = m.ram[0]!;
    const model = header.model ?? {};
    const instances = m.iommus.length;
    const bed = Testbed.create({
      plugin,
      plugins: plugins.filter((p) => p !== plugin),
      seed: model.seed ?? DEFAULT_SEED,
      mode: model.mode ?? "nested",
      shadowBackend: model.shadowBackend,
      eventInterrupts: model.eventInterrupts,
      noInit: true,
      vms: [
        {
          memoryBytes: ram.size,
          memoryBase: ram.base,
          vcpus: model.vcpus,
          instances,
          // Devices sit behind the first IOMMU (a trace names requester ids, not which unit serves them).
          devices: m.devices.map((d, i) => ({ rid: physicalRid(i), guestRid: d.rid, instance: 0 })),
        },
      ],
    });
    if (!bed.ok) return fail(bed);
    const vm = bed.value.vms[0]!;
    return ok(new ModelMachine(bed.value, vm, header));
  }

  /** Where the model put each IOMMU of the header, in the header's order. */
  get iommuBases(): number[] {
    return this.vm.iommus.map((i) => i.mmioBase);
  }

  device(rid: number): AssignedDevice | undefined {
    return this.vm.devices.find((d) => d.guestRid === rid);
  }

  /** The VMM's event loops run once: host fault reports reach the guest-visible log. */
  poll(): void {
    this.bed.poll();
  }

  /** Time passes: the clock advances and the VMM's event loops catch up. */
  advance(ns: number): void {
    this.bed.platform.host.clock.advance(ns);
    this.bed.poll();
  }

  /** Tears the system down; the leftovers a clean teardown must not have. */
  dispose(): string[] {
    return this.bed.dispose().flatMap((l) => l.objects.map((o) => `vm ${l.vm}: ${o}`));
  }
}
