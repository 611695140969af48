import { describe, expect, it } from "vitest";
import { exitCostProblem, exitNanoseconds, KVM_EXIT_COST, NO_EXIT_COST, Platform } from "../src/index.js";

describe("VM exit cost", () => {
  it("charges each kind of exit its cost, by default the cited KVM round trip, and nothing under NO_EXIT_COST", () => {
    const platform = new Platform({ plugins: [] });
    const vm = platform.createVm({ memoryBytes: 2 ** 24 });
    expect(vm.exitCost).toBe(KVM_EXIT_COST);
    vm.mmioWrite(0x1000, 4, 1); // unclaimed: no exit
    expect(vm.exitNanoseconds).toBe(0);
    vm.mapMmio(0x1000, 0x1000, { read: () => 0n, write: () => undefined });
    vm.mmioWrite(0x1000, 4, 1);
    vm.mmioRead(0x1004, 4);
    vm.hypercall(1n, 0, 0);
    vm.pciConfigRead(0, 0, 0, 4);
    expect(vm.exitNanoseconds).toBe(2 * KVM_EXIT_COST.mmioNs + KVM_EXIT_COST.hypercallNs + KVM_EXIT_COST.pciConfigNs);
    const free = platform.createVm({ memoryBytes: 2 ** 24, exitCost: NO_EXIT_COST });
    free.hypercall(1n, 0, 0);
    expect(free.exitNanoseconds).toBe(0);
    expect(exitNanoseconds({ mmio: 3, hypercall: 0, injections: 5, pciConfig: 0 }, { ...NO_EXIT_COST, mmioNs: 10, injectionNs: 1 })).toBe(35);
    platform.dispose();
  });

  it("refuses a cost that is negative or not a number", () => {
    expect(exitCostProblem(KVM_EXIT_COST)).toBeUndefined();
    expect(exitCostProblem({ ...KVM_EXIT_COST, mmioNs: -1 })).toMatch(/mmioNs/);
    expect(exitCostProblem({ ...KVM_EXIT_COST, hypercallNs: Number.NaN })).toMatch(/hypercallNs/);
  });
});
