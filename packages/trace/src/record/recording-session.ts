import {
  err,
  fail,
  GuestPageAllocator,
  ok,
  type GuestEvent,
  type GuestInitOptions,
  type GuestIommuDriver,
  type GuestMemory,
  type MsiMessage,
  type Result,
  type TranslationMode,
  type VendorPlugin,
  type VirtualMachine,
} from "@viommu/core";
import { TRACE_FORMAT, TRACE_VERSION, type Trace, type TraceHeader, type TraceModelConfig } from "../format/trace-header.js";
import type { DmaAnswer, InterruptSeen, TraceOp } from "../format/trace-op.js";
import { ModelMachine } from "../model/model-machine.js";
import { recordingMemory, type OpSink } from "./recording-memory.js";
import { recordingVm } from "./recording-vm.js";

/** Guest RAM the reference drivers take their structures from: the top 32 MiB (as core's Testbed gives them). */
export const DRIVER_POOL_BYTES = 32 * 2 ** 20;

export interface RecordOptions {
  readonly plugin: VendorPlugin;
  /** Other installed plugins (a parent vendor, for an extension). */
  readonly plugins?: readonly VendorPlugin[];
  /** Guest RAM: one range. */
  readonly ram: { readonly base: number; readonly size: number };
  /** Requester ids of the DMA-capable devices, as the guest and the IOMMU see them. */
  readonly rids: readonly number[];
  readonly mode?: TranslationMode;
  readonly seed?: number;
  readonly vcpus?: number;
  readonly eventInterrupts?: "vmm" | "direct";
  /** Passthrough devices (default) or devices the VMM emulates (see TraceModelConfig.dma). */
  readonly dma?: "passthrough" | "emulated";
  /** How the driver brings the IOMMU up (translation on unless ir-only; interrupt remapping where the vendor has it). */
  readonly guest?: Partial<GuestInitOptions>;
  readonly description?: string;
  /** Skip the driver's bring-up (a workload that programs the unit by hand through `memory` and `vm`). */
  readonly noInit?: boolean;
}

/**
 * A recording in progress: the model system, the vendor's reference guest driver running on recording views of
 * the VM and its memory, and the device side (DMA, MSIs) and time, each recorded as the trace operation it is
 * with the model's answer as the expectation. A workload drives it; `trace()` is the result.
 */
export class RecordingSession implements OpSink {
  private readonly ops: TraceOp[] = [];
  /** The reference driver, recorded. */
  readonly driver: GuestIommuDriver;
  /** Guest memory as the guest sees it, recorded (a workload's own guest writes go through here). */
  readonly memory: GuestMemory;
  /** The VM as the guest sees it, recorded (register accesses a workload makes by hand). */
  readonly vm: VirtualMachine;

  private constructor(
    readonly machine: ModelMachine,
    readonly header: TraceHeader,
    readonly plugin: VendorPlugin,
  ) {
    this.memory = recordingMemory(machine.vm.vm.memory, this);
    this.vm = recordingVm(machine.vm.vm, this.memory, this);
    const iommu = machine.vm.iommus[0]!;
    const mem = machine.vm.vm.memory;
    const pages = new GuestPageAllocator(this.memory, mem.end - DRIVER_POOL_BYTES, mem.end);
    this.driver = plugin.createDriver({ vm: this.vm, memory: this.memory, pages, acpi: iommu.acpiTables?.() ?? [], mmioBase: iommu.mmioBase }, iommu);
  }

  /** Builds the system and brings the driver up (recorded). Errors from either are returned, not thrown. */
  static start(options: RecordOptions): Result<RecordingSession> {
    if (options.ram.size < 2 * DRIVER_POOL_BYTES) return err("EINVAL", `guest RAM of ${options.ram.size} bytes leaves the driver no room`);
    const mode = options.mode ?? "nested";
    const model: TraceModelConfig = {
      mode,
      seed: options.seed ?? 1,
      ...(options.vcpus === undefined ? {} : { vcpus: options.vcpus }),
      ...(options.eventInterrupts === undefined ? {} : { eventInterrupts: options.eventInterrupts }),
      ...(options.dma === undefined ? {} : { dma: options.dma }),
    };
    const provisional: TraceHeader = {
      format: TRACE_FORMAT,
      version: TRACE_VERSION,
      machine: { ram: [options.ram], iommus: [{ vendor: options.plugin.id, base: 0, size: 0 }], devices: options.rids.map((rid) => ({ rid })) },
      model,
    };
    const machine = ModelMachine.create(options.plugin, options.plugins ?? [], provisional);
    if (!machine.ok) return fail(machine);
    const m = machine.value;
    const iommus = m.vm.iommus.map((iommu) => {
      const region = m.vm.vm.mmioRegions().find((r) => r.base === iommu.mmioBase);
      return { vendor: options.plugin.id, base: iommu.mmioBase, size: region?.size ?? 0 };
    });
    const header: TraceHeader = {
      ...provisional,
      machine: { ...provisional.machine, iommus },
      producer: `viommu model ${options.plugin.id} ${mode}`,
      ...(options.description === undefined ? {} : { description: options.description }),
    };
    const session = new RecordingSession(m, header, options.plugin);
    if (!options.noInit) {
      session.mark("driver init");
      const init = session.driver.init({ translation: mode !== "ir-only", interruptRemapping: options.plugin.capabilities.interruptRemapping, ...options.guest });
      if (!init.ok) {
        m.dispose();
        return err(init.error.errno, `driver init: ${init.error.message}`);
      }
    }
    return ok(session);
  }

  record(op: TraceOp): void {
    this.ops.push(op);
  }

  /** A label in the trace. */
  mark(label: string): void {
    this.record({ op: "mark", label });
  }

  /** The device at `rid` reads `len` bytes at `iova`; the model's answer becomes the expectation. */
  dmaRead(rid: number, iova: number, len: number, pasid?: number): DmaAnswer {
    const r = this.machine.dma(rid, iova, false, len, pasid);
    if (r === undefined) throw new RangeError(`no device at requester id 0x${rid.toString(16)} in this recording`);
    const answer: DmaAnswer = r.ok ? { ok: true, data: r.data.slice() } : { ok: false };
    this.record({ op: "dma", dir: "read", rid, ...(pasid === undefined ? {} : { pasid }), iova, len, expect: answer });
    return answer;
  }

  /** The device at `rid` writes `data` at `iova`. */
  dmaWrite(rid: number, iova: number, data: Uint8Array, pasid?: number): DmaAnswer {
    const r = this.machine.dma(rid, iova, true, data.slice(), pasid);
    if (r === undefined) throw new RangeError(`no device at requester id 0x${rid.toString(16)} in this recording`);
    const answer: DmaAnswer = r.ok ? { ok: true } : { ok: false };
    this.record({ op: "dma", dir: "write", rid, ...(pasid === undefined ? {} : { pasid }), iova, data: data.slice(), expect: answer });
    return answer;
  }

  /** The device at `rid` signals `msi`. */
  msi(rid: number, msi: MsiMessage): void {
    if (!this.machine.msi(rid, msi)) throw new RangeError(`no device at requester id 0x${rid.toString(16)} in this recording`);
    this.record({ op: "msi", rid, address: msi.address, data: msi.data });
  }

  /** The interrupts vCPUs received since the last call. */
  interrupts(): InterruptSeen[] {
    const seen = this.machine.vm.vm.interrupts.take().map((i) => ({ vector: i.vector, destination: i.destination }));
    this.record({ op: "interrupts", expect: seen });
    return seen;
  }

  /** Time passes; the VMM catches up. */
  advance(ns: number): void {
    this.machine.advance(ns);
    this.record({ op: "advance", ns });
  }

  /** The guest reads its IOMMU's events (after the VMM caught up). */
  events(): GuestEvent[] {
    return this.driver.readEvents();
  }

  /** The trace so far. */
  trace(): Trace {
    return { header: this.header, ops: this.ops.slice() };
  }

  /** Ends the recording and tears the model down; the leftovers of the teardown (empty when clean). */
  finish(): { trace: Trace; leftovers: string[] } {
    return { trace: this.trace(), leftovers: this.machine.dispose() };
  }
}
