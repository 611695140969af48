import type { GuestMemory, VirtualMachine } from "@viommu/core";
import type { AccessSize } from "../format/trace-op.js";
import type { OpSink } from "./recording-memory.js";

/**
 * A view of `vm` for a guest driver that records its register accesses and hypercalls into `sink`, and gives
 * it `memory` (a recording view of the VM's memory) wherever it asks for the VM's memory. Its `container` is a
 * child of the VM's, so what a driver registers there for itself (a per-VM driver instance) belongs to the
 * recorded driver and not to one created before it. Everything else (the VMM's side of the VM) passes through
 * unrecorded.
 */
export function recordingVm(vm: VirtualMachine, memory: GuestMemory, sink: OpSink): VirtualMachine {
  const methods = new Map<PropertyKey, unknown>();
  let container: VirtualMachine["container"] | undefined;
  methods.set("mmioRead", (address: number, size: 4 | 8): bigint => {
    const value = vm.mmioRead(address, size);
    sink.record({ op: "mmio-read", addr: address, size: size as AccessSize, expect: value });
    return value;
  });
  methods.set("mmioWrite", (address: number, size: 4 | 8, value: bigint | number): void => {
    vm.mmioWrite(address, size, value);
    sink.record({ op: "mmio-write", addr: address, size: size as AccessSize, value: BigInt.asUintN(size * 8, BigInt(value)) });
  });
  methods.set("hypercall", (input: bigint, inputGpa: number, outputGpa: number): bigint => {
    const result = vm.hypercall(input, inputGpa, outputGpa);
    sink.record({ op: "hypercall", input: BigInt.asUintN(64, input), inputGpa, outputGpa, expect: BigInt.asUintN(64, result) });
    return result;
  });
  return new Proxy(vm, {
    get(target, prop) {
      if (prop === "memory") return memory;
      if (prop === "container") return (container ??= target.container.createChildContainer());
      const own = methods.get(prop);
      if (own !== undefined) return own;
      const value: unknown = Reflect.get(target, prop, target);
      if (typeof value !== "function") return value;
      let bound = methods.get(prop);
      if (bound === undefined) {
        bound = (value as (...a: unknown[]) => unknown).bind(target);
        methods.set(prop, bound);
      }
      return bound;
    },
  });
}
