import { err, fail, newWalkResult, NO_PASID, ok, Testbed, type AssignedDevice, type MsiMessage, type Result, type TestVm, type VendorPlugin, type WalkResult } from "@viommu/core";
import type { TraceHeader } from "../format/trace-header.js";

/** The physical requester id the model gives the trace's n-th device (any unique id works: the guest never sees it). */
export function physicalRid(index: number): number {
  return 0x100 + index;
}

/** What a DMA did on the model: the bytes a read read, or blocked. Undefined: no device at that requester id. */
export type ModelDmaResult = { readonly ok: true; readonly data: Uint8Array } | { readonly ok: false } | undefined;

const PAGE = 4096;

/** A default seed for a model built from a trace that names none. */
const DEFAULT_SEED = 1;

/**
 * The model system a trace's header describes: one VM with one RAM range, the vendor's emulated IOMMU(s) at the
 * header's blocks, and a passthrough device at each of the header's requester ids, with no guest driver (the
 * trace is the guest). Recording builds its system through here too, so a recorded trace replays on exactly
 * the system that answered it.
 */
export class ModelMachine {
  private readonly walk: WalkResult = newWalkResult();

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

  /** Whose DMA the devices are (the header's `model.dma`, passthrough by default). */
  get dmaPath(): "passthrough" | "emulated" {
    return this.header.model?.dma ?? "passthrough";
  }

  /** Whether the trace names a device at `rid`. */
  hasDevice(rid: number): boolean {
    return this.header.machine.devices.some((d) => d.rid === rid);
  }

  /**
   * A DMA of the device at `rid`: through its physical IOMMU (passthrough: core's DmaDevice, which translates
   * every page before any byte moves, so a blocked transfer touches nothing) or translated by the emulated IOMMU
   * (an emulated PCIe device, below). The VMM's event loop runs afterwards.
   */
  dma(rid: number, iova: number, write: boolean, bytes: Uint8Array | number, pasid?: number): ModelDmaResult {
    if (!this.hasDevice(rid)) return undefined;
    const p = pasid ?? NO_PASID;
    let result: ModelDmaResult;
    if (this.dmaPath === "emulated") result = this.emulatedDma(rid, iova, write, bytes, p);
    else {
      const device = this.device(rid)!.device;
      const r = write ? device.write(iova, (bytes as Uint8Array).slice(), p) : device.read(iova, bytes as number, p);
      result = r.ok ? { ok: true, data: write ? new Uint8Array(0) : r.data } : { ok: false };
    }
    this.poll();
    return result;
  }

  /**
   * An emulated PCIe device's transfer: a PCIe request never crosses a 4 KiB boundary, so the transfer is one
   * request per page, each translated (and, when blocked, reported) on its own; the pages that translate are
   * moved, a blocked page is not (a blocked read leaves zeros), nor is one whose target is no memory. The answer is
   * blocked when any page was.
   */
  private emulatedDma(rid: number, iova: number, write: boolean, bytes: Uint8Array | number, pasid: number): ModelDmaResult {
    const iommu = this.vm.iommus[0]!;
    const length = typeof bytes === "number" ? bytes : bytes.length;
    const out = this.walk;
    const memory = this.vm.vm.memory;
    const data = typeof bytes === "number" ? new Uint8Array(length) : bytes;
    let blocked = false;
    for (let done = 0; done < Math.max(length, 1); ) {
      const at = iova + done;
      const n = Math.min(PAGE - (at % PAGE), length - done);
      iommu.translateEmulated(rid, pasid, at, write, out);
      // A page that translates to where no memory is (or that the IOMMU let through untranslated to there) ends
      // as a bus abort: the device's request fails, nothing is moved, and the IOMMU has nothing to record.
      if (!out.ok || (n > 0 && !memory.contains(out.output, n))) blocked = true;
      else if (n > 0) {
        if (write) memory.writeBytes(out.output, data.subarray(done, done + n));
        else memory.readBytes(out.output, n, data.subarray(done, done + n));
      }
      done += Math.max(n, 1);
    }
    return blocked ? { ok: false } : { ok: true, data: write ? new Uint8Array(0) : data };
  }

  /** The device at `rid` signals `msi` (false: no such device); the VMM's event loop runs afterwards. */
  msi(rid: number, msi: MsiMessage): boolean {
    if (!this.hasDevice(rid)) return false;
    if (this.dmaPath === "emulated") this.vm.iommus[0]!.deliverMsi(rid, msi);
    else this.device(rid)!.device.signalMsi(msi);
    this.poll();
    return true;
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
