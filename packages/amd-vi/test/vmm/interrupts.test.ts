import { describe, expect, it } from "vitest";
import { encodeIrte128Remap, irte128Layout } from "../../src/format/irte128.js";
import { linuxIrte32 } from "../../src/format/irte32.js";
import type { AmdViDevice } from "../../src/vmm/amd-vi-device.js";
import { Ctl, RawGuest } from "../raw-guest.js";
import { amdBed } from "../support.js";

function rawVm(control: bigint): { g: RawGuest; device: AmdViDevice; irt: number } {
  const bed = amdBed({ vms: [{ devices: [{ rid: 0x100, guestRid: 0x10 }], vcpus: 512 }], noInit: true, eventInterrupts: "vmm" });
  const v = bed.vms[0]!;
  const device = v.iommus[0] as AmdViDevice;
  const g = new RawGuest(v, device.mmioBase).setUp({ control: Ctl.IommuEn | Ctl.CmdBufEn | Ctl.EventLogEn | control });
  return { g, device, irt: g.alloc(8) };
}

/** DTE with IV, IntTabLen `len`, the IRT at `irt`, IntCtl and pass bits in DTE[191:184]. */
function irqDte(irt: number, len = 9, intCtl = 2, passBits = 0): number[] {
  return [3, 0, 0, 0, (irt | (len << 1) | 1) >>> 0, (Math.floor(irt / 2 ** 32) | (intCtl << 28) | (passBits << 24)) >>> 0, 0, 0];
}

function deliver(g: RawGuest, device: AmdViDevice, address: number, data: number): ReturnType<AmdViDevice["deliverMsi"]> {
  g.v.vm.interrupts.take();
  return device.deliverMsi(0x10, { address, data });
}

describe("interrupt remapping through the guest's IRT", () => {
  it("32-bit IRTEs (GAEn clear): vector and 8-bit destination from the entry the MSI data indexes", () => {
    const { g, device, irt } = rawVm(0n);
    g.dte(0x10, irqDte(irt));
    g.v.vm.memory.write32(irt + 5 * 4, linuxIrte32({ vector: 0x33, destination: 7 }));
    const r = deliver(g, device, 0xfee00000, 5);
    expect(r).toMatchObject({ ok: true, irq: { vector: 0x33, destination: 7, destinationMode: "physical" } });
    expect(g.v.vm.interrupts.take()).toEqual([expect.objectContaining({ vector: 0x33, destination: 7, source: "msi:10" })]);
  });

  it("128-bit IRTEs with XTEn give 32-bit x2APIC destinations; without XTEn only Destination[7:0] counts", () => {
    for (const xt of [true, false]) {
      const { g, device, irt } = rawVm(Ctl.GAEn | (xt ? Ctl.XTEn : 0n));
      g.dte(0x10, irqDte(irt));
      g.v.vm.memory.writeWords(irt + 3 * 16, encodeIrte128Remap({ RemapEn: 1, Vector: 0x44, Destination_23_0: 0x01_2c, Destination_31_24: 0x01 }));
      const r = deliver(g, device, 0xfee00000, 3);
      expect(r).toMatchObject({ ok: true, irq: { vector: 0x44, destination: xt ? 0x0100_012c : 0x2c } });
    }
    expect(irte128Layout(new Uint32Array([0x80, 0, 0, 0])).name).toBe("IRTE128_VAPIC");
  });

  it("a DTE without IV lets the MSI through unremapped (compatibility format)", () => {
    const { g, device } = rawVm(0n);
    g.dte(0x10, [3, 0, 0, 0, 0, 0, 0, 0]);
    expect(deliver(g, device, 0xfee0_2000, 0x4021)).toMatchObject({ ok: true, irq: { vector: 0x21, destination: 2 } });
  });

  it("IntCtl 0 aborts, an index beyond IntTabLen and a cleared entry are IO_PAGE_FAULT events with I set", () => {
    const { g, device, irt } = rawVm(0n);
    g.dte(0x10, irqDte(irt, 1, 0));
    expect(deliver(g, device, 0xfee00000, 0).ok).toBe(false);
    g.dte(0x10, irqDte(irt, 1, 2));
    expect(deliver(g, device, 0xfee00000, 2)).toMatchObject({ ok: false, fault: { index: 2 } });
    expect(deliver(g, device, 0xfee00000, 1)).toMatchObject({ ok: false, fault: { name: "IO_PAGE_FAULT", index: 1 } });
    const events = g.events();
    expect(events).toHaveLength(3);
    for (const e of events) expect(e).toMatchObject({ name: "IO_PAGE_FAULT", fields: { I: 1, DeviceID: 0x10 } });
  });

  it("SupIOPF silences the event of a cleared entry, but the interrupt is still blocked", () => {
    const { g, device, irt } = rawVm(0n);
    g.dte(0x10, irqDte(irt));
    g.v.vm.memory.write32(irt, 2);
    expect(deliver(g, device, 0xfee00000, 0).ok).toBe(false);
    expect(g.events()).toHaveLength(0);
  });

  it("NMI, INIT and ExtINT pass only with the DTE's NMIPass, InitPass and EIntPass bits", () => {
    const { g, device, irt } = rawVm(0n);
    for (const [mode, pass] of [
      [4, 4],
      [5, 1],
      [7, 2],
    ] as const) {
      g.dte(0x10, irqDte(irt));
      expect(deliver(g, device, 0xfee00000, (mode << 8) | 2).ok).toBe(false);
      g.dte(0x10, irqDte(irt, 9, 2, pass));
      expect(deliver(g, device, 0xfee00000, (mode << 8) | 2)).toMatchObject({ ok: true, irq: { deliveryMode: mode } });
    }
  });

  it("an interrupt table outside guest RAM gives PAGE_TAB_HARDWARE_ERROR with I, never a read outside the VM", () => {
    const { g, device } = rawVm(0n);
    g.dte(0x10, irqDte(0x7_0000_0000));
    expect(deliver(g, device, 0xfee00000, 1)).toMatchObject({ ok: false, fault: { name: "PAGE_TAB_HARDWARE_ERROR" } });
    expect(g.events()).toEqual([expect.objectContaining({ name: "PAGE_TAB_HARDWARE_ERROR", fields: expect.objectContaining({ I: 1 }) })]);
    expect(device.refusals.interruptTable).toBe(1);
  });

  it("interrupts pass as written while the IOMMU is disabled", () => {
    const bed = amdBed({ vms: [{ devices: [{ rid: 0x100, guestRid: 0x10 }] }], noInit: true });
    const device = bed.vms[0]!.iommus[0] as AmdViDevice;
    expect(device.deliverMsi(0x10, { address: 0xfee0_3000, data: 0x31 })).toMatchObject({ ok: true, irq: { vector: 0x31, destination: 3 } });
  });
});
