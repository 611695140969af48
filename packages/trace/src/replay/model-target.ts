import { fail, ok, type Result, type VendorPlugin } from "@viommu/core";
import type { TraceHeader } from "../format/trace-header.js";
import type { TraceOp } from "../format/trace-op.js";
import { ModelMachine } from "../model/model-machine.js";
import type { ReplayTarget, TargetResult } from "./replay-target.js";

const DONE: TargetResult = { status: "done" };

function outsideRam(what: string, addr: number, len: number): TargetResult {
  return { status: "failed", message: `${what} [0x${addr.toString(16)}, +0x${len.toString(16)}) is outside guest RAM`, fatal: false };
}

/**
 * The model as a replay target: the system the trace's header describes (`ModelMachine`), driven by the trace
 * instead of a guest driver. After every DMA and MSI the VMM's event loop runs, as it does when recording, so a
 * fault is in the guest-visible log before the guest's next access (QEMU records it synchronously too).
 */
export class ModelTarget implements ReplayTarget {
  readonly name: string;
  private closed = false;

  private constructor(readonly machine: ModelMachine) {
    this.name = `model ${machine.bed.plugin.id} ${machine.header.model?.mode ?? "nested"}`;
  }

  static create(plugin: VendorPlugin, plugins: readonly VendorPlugin[], header: TraceHeader): Result<ModelTarget> {
    const m = ModelMachine.create(plugin, plugins, header);
    return m.ok ? ok(new ModelTarget(m.value)) : fail(m);
  }

  get iommuBases(): readonly number[] {
    return this.machine.iommuBases;
  }

  execute(op: TraceOp): Promise<TargetResult> {
    return Promise.resolve(this.answer(op));
  }

  /** The model's answer to `op`, at once (the model has no concurrency). */
  answer(op: TraceOp): TargetResult {
    try {
      return this.run(op);
    } catch (e) {
      // A model must answer any guest input with the architecture's response; an exception is a defect to report.
      const message = e instanceof Error ? `${e.message}\n${e.stack ?? ""}` : String(e);
      return { status: "failed", message: `exception escaped the model: ${message}`, fatal: false };
    }
  }

  private run(op: TraceOp): TargetResult {
    const vm = this.machine.vm.vm;
    const mem = vm.memory;
    switch (op.op) {
      case "mem-write":
        if (!mem.contains(op.addr, op.data.length)) return outsideRam("write", op.addr, op.data.length);
        mem.writeBytes(op.addr, op.data);
        return DONE;
      case "mem-fill":
        if (!mem.contains(op.addr, op.len)) return outsideRam("fill", op.addr, op.len);
        mem.fill(op.addr, op.len, op.byte);
        return DONE;
      case "mem-read":
        if (!mem.contains(op.addr, op.len)) return outsideRam("read", op.addr, op.len);
        return { status: "answered", answer: mem.readBytes(op.addr, op.len) };
      case "mem-share":
        if (!mem.contains(op.addr, op.len)) return outsideRam("sharing change", op.addr, op.len);
        mem.setShared(op.addr, op.len, op.shared);
        return DONE;
      case "mmio-write":
        if (op.size !== 4 && op.size !== 8) return { status: "unsupported", reason: `the model's registers take 4- and 8-byte accesses, not ${op.size}` };
        vm.mmioWrite(op.addr, op.size, op.value);
        return DONE;
      case "mmio-read":
        if (op.size !== 4 && op.size !== 8) return { status: "unsupported", reason: `the model's registers take 4- and 8-byte accesses, not ${op.size}` };
        return { status: "answered", answer: vm.mmioRead(op.addr, op.size) };
      case "pci-write":
      case "pci-read":
        return { status: "unsupported", reason: "the model has no PCI configuration space" };
      case "dma": {
        const r = this.machine.dma(op.rid, op.iova, op.dir === "write", op.dir === "write" ? op.data : op.len, op.pasid);
        if (r === undefined) return { status: "failed", message: `no device at requester id 0x${op.rid.toString(16)}`, fatal: false };
        if (!r.ok) return { status: "answered", answer: { ok: false } };
        return { status: "answered", answer: op.dir === "read" ? { ok: true, data: r.data } : { ok: true } };
      }
      case "msi":
        if (!this.machine.msi(op.rid, { address: op.address, data: op.data })) return { status: "failed", message: `no device at requester id 0x${op.rid.toString(16)}`, fatal: false };
        return DONE;
      case "interrupts":
        return { status: "answered", answer: vm.interrupts.take().map((i) => ({ vector: i.vector, destination: i.destination })) };
      case "advance":
        this.machine.advance(op.ns);
        return DONE;
      case "hypercall":
        return { status: "answered", answer: BigInt.asUintN(64, vm.hypercall(op.input, op.inputGpa, op.outputGpa)) };
      case "mark":
        return DONE;
    }
  }

  /** Leftovers of the model's teardown (a leak in a vendor's destroy when not empty). */
  dispose(): string[] {
    if (this.closed) return [];
    this.closed = true;
    return this.machine.dispose();
  }

  close(): Promise<void> {
    this.dispose();
    return Promise.resolve();
  }
}
