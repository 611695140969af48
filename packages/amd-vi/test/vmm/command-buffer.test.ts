import { describe, expect, it } from "vitest";
import { buildCompletionWait, buildInvalidateDevtabEntry, buildInvalidateIommuAll } from "../../src/format/command.js";
import { MmioOffset } from "../../src/format/mmio-register-map.js";
import { StatusBit } from "../../src/format/status-register.js";
import type { AmdViDevice } from "../../src/vmm/amd-vi-device.js";
import { Ctl, RawGuest } from "../raw-guest.js";
import { amdBed } from "../support.js";

function rawVm(commandBuffer: "trapped" | "hw-vqueue" = "trapped", mode: "nested" | "shadow" = "nested"): { g: RawGuest; device: AmdViDevice } {
  const bed = amdBed({ vms: [{ devices: [{ rid: 0x100, guestRid: 0x10 }] }], noInit: true, mode, eventInterrupts: commandBuffer === "trapped" ? "vmm" : "direct" });
  const v = bed.vms[0]!;
  const device = v.iommus[0] as AmdViDevice;
  return { g: new RawGuest(v, device.mmioBase), device };
}

const illegal = (): Uint32Array => Uint32Array.of(0, 0xf000_0000, 0, 0);

for (const path of ["trapped", "hw-vqueue"] as const) {
  describe(`command buffer (${path})`, () => {
    it("consumes commands across the ring's end: head follows tail through the wrap", () => {
      const { g } = rawVm(path);
      g.setUp({ cmdCode: 8 });
      const sem = g.alloc(1);
      for (let i = 1; i <= 300; i++) g.submit(buildInvalidateIommuAll(), buildCompletionWait(sem, BigInt(i)));
      expect(g.v.vm.memory.read64(sem)).toBe(300n);
      expect(Number(g.read(MmioOffset.CommandBufferHead, 4))).toBe(g.tail);
      expect(g.tail).toBe((600 * 16) % 4096);
      expect(g.status() & StatusBit.CmdBufRun).toBe(StatusBit.CmdBufRun);
    });

    it("an unknown opcode logs ILLEGAL_COMMAND_ERROR with the command's address and halts with the head on it", () => {
      const { g } = rawVm(path);
      g.setUp();
      const sem = g.alloc(1);
      g.submit(illegal(), buildCompletionWait(sem, 5n));
      const events = g.events();
      expect(events.map((e) => e.name)).toEqual(["ILLEGAL_COMMAND_ERROR"]);
      expect(events[0]!.fields["Address"]).toBe(BigInt(g.cmd));
      expect(g.status() & StatusBit.CmdBufRun).toBe(0);
      expect(Number(g.read(MmioOffset.CommandBufferHead, 4))).toBe(0);
      expect(g.v.vm.memory.read64(sem)).toBe(0n);
      // Toggling CmdBufEn with the head moved past the bad command restarts the buffer.
      g.setControl(g.control & ~Ctl.CmdBufEn);
      g.write(MmioOffset.CommandBufferHead, 16, 4);
      g.setControl(g.control | Ctl.CmdBufEn);
      expect(g.v.vm.memory.read64(sem)).toBe(5n);
      expect(g.status() & StatusBit.CmdBufRun).toBe(StatusBit.CmdBufRun);
    });

    it("the IOMMU fetches whenever head and tail differ: moving the head back re-runs what lies between them", () => {
      const { g } = rawVm(path);
      g.setUp();
      const sem = g.alloc(1);
      g.submit(buildCompletionWait(sem, 5n));
      expect(g.v.vm.memory.read64(sem)).toBe(5n);
      g.v.vm.memory.write64(sem, 0n);
      g.write(MmioOffset.CommandBufferHead, (g.tail - 16 + g.cmdBytes) % g.cmdBytes, 4);
      expect(g.v.vm.memory.read64(sem)).toBe(5n);
      expect(Number(g.read(MmioOffset.CommandBufferHead, 4))).toBe(g.tail);
    });

    it("reserved bits in a known command are an ILLEGAL_COMMAND_ERROR too", () => {
      const { g } = rawVm(path);
      g.setUp();
      const bad = buildInvalidateDevtabEntry(0x10);
      bad[2] = 1;
      g.submit(bad);
      expect(g.events().map((e) => e.name)).toEqual(["ILLEGAL_COMMAND_ERROR"]);
    });

    it("COMPLETION_WAIT with I sets ComWaitInt and interrupts only with ComWaitIntEn", () => {
      const { g } = rawVm(path);
      g.setUp();
      g.write(MmioOffset.MsiAddressLow, 0xfee0_3000, 4);
      g.write(MmioOffset.MsiData, 0x55, 4);
      // MsiEn through the MSI capability header\'s MMIO mirror (0x158, bit 16).
      g.write(MmioOffset.MsiData - 0xc, 1 << 16, 4);
      g.v.vm.interrupts.take();
      g.submit(buildCompletionWait(0, 0n, { interrupt: true, store: false }));
      expect(g.status() & StatusBit.ComWaitInt).toBe(StatusBit.ComWaitInt);
      expect(g.v.vm.interrupts.take().filter((i) => i.vector === 0x55)).toHaveLength(0);
      g.write(MmioOffset.Status, StatusBit.ComWaitInt, 4);
      expect(g.status() & StatusBit.ComWaitInt).toBe(0);
      g.setControl(g.control | Ctl.ComWaitIntEn);
      g.submit(buildCompletionWait(0, 0n, { interrupt: true, store: false }));
      const got = g.v.vm.interrupts.take().filter((i) => i.vector === 0x55);
      expect(got).toEqual([expect.objectContaining({ destination: 3, path: path === "trapped" ? "vmm" : "direct" })]);
    });

    it("nothing runs until both IommuEn and CmdBufEn are set", () => {
      const { g } = rawVm(path);
      g.setUp({ control: Ctl.CmdBufEn });
      const sem = g.alloc(1);
      g.submit(buildCompletionWait(sem, 9n));
      expect(g.v.vm.memory.read64(sem)).toBe(0n);
      g.setControl(Ctl.CmdBufEn | Ctl.IommuEn);
      expect(g.v.vm.memory.read64(sem)).toBe(9n);
    });

    it("a COMPLETION_WAIT store outside guest RAM is a COMMAND_HARDWARE_ERROR, not an access outside the VM", () => {
      const { g } = rawVm(path);
      g.setUp();
      g.submit(buildCompletionWait(2 ** 40, 1n));
      expect(g.events().map((e) => e.name)).toEqual(["COMMAND_HARDWARE_ERROR"]);
      expect(g.status() & StatusBit.CmdBufRun).toBe(0);
    });
  });
}

describe("the trapped command buffer and the hardware vIOMMU count exits differently", () => {
  it("a tail write is a VM exit on the trapped path and none on the hardware vIOMMU's VF-MMIO page", () => {
    for (const path of ["trapped", "hw-vqueue"] as const) {
      const { g } = rawVm(path);
      g.setUp();
      const sem = g.alloc(1);
      const before = g.v.vm.exits.mmio;
      g.submit(buildInvalidateIommuAll(), buildCompletionWait(sem, 1n));
      expect(g.v.vm.exits.mmio - before, path).toBe(path === "trapped" ? 1 : 0);
    }
  });
});
