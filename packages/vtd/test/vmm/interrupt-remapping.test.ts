import { describe, expect, it } from "vitest";
import { unwrap, type MsiMessage } from "@viommu/core";
import { decodeIrteRemapped, encodeIrteRemapped, encodeIrtePosted, irteDst } from "../../src/format/irte.js";
import { encodeCompatMsi, encodeRemappableMsi } from "../../src/format/msi.js";
import { encodeInvDesc } from "../../src/format/inv-desc.js";
import { vtdBed } from "../support.js";

function ir(options: { x2apic?: boolean; mode?: "nested" | "ir-only" } = {}) {
  const b = vtdBed(options.mode ?? "nested", undefined, { guest: { x2apic: options.x2apic } });
  const vm = b.bed.vms[0]!.vm;
  const irt = Number(b.device.remapper.irta & ~0xfffn);
  const deliver = (rid: number, msi: MsiMessage) => {
    vm.interrupts.take();
    const r = b.device.deliverMsi(rid, msi);
    return { result: r, delivered: vm.interrupts.take() };
  };
  const events = () => b.driver.readEvents().map((e) => [e.kind, e.code, e.rid]);
  const msiOf = (index: number, sub = 0): MsiMessage => {
    const m = encodeRemappableMsi(index, sub);
    return { address: m.addressLo, data: m.data };
  };
  return { ...b, vm, irt, deliver, events, msiOf };
}

describe("VT-d interrupt remapping", () => {
  it("delivers a remappable MSI through its IRTE to the programmed vector and APIC id (xAPIC: DST[15:8])", () => {
    const t = ir();
    const msi = unwrap(t.driver.mapInterrupt(0x10, 0x41, 5));
    expect(t.vm.memory.read32(t.irt + 4)).toBe(irteDst(5, false));
    const { delivered } = t.deliver(0x10, msi);
    expect(delivered.map((i) => [i.vector, i.destination])).toEqual([[0x41, 5]]);
  });

  it("uses 32-bit destination ids in x2APIC mode (IRTA.EIME)", () => {
    const t = ir({ x2apic: true, mode: "ir-only" });
    const msi = unwrap(t.driver.mapInterrupt(0x10, 0x51, 299));
    expect(t.device.remapper.eime).toBe(true);
    expect(t.deliver(0x10, msi).delivered.map((i) => i.destination)).toEqual([299]);
  });

  it("verifies the source id (SVT 1, SQ masks; SVT 2 bus range) and reports 0x26 for another requester", () => {
    const t = ir();
    const msi = unwrap(t.driver.mapInterrupt(0x10, 0x41, 1));
    expect(t.deliver(0x11, msi).result).toMatchObject({ ok: false, fault: { code: 0x26, name: "IR_SID_ERR", index: 0 } });
    t.vm.memory.writeWords(t.irt + 16, encodeIrteRemapped({ P: 1, V: 0x42, SVT: 1, SQ: 3, SID: 0x10 }));
    // SVT 2: buses 2 (SID[15:8], start) to 4 (SID[7:0], end).
    t.vm.memory.writeWords(t.irt + 32, encodeIrteRemapped({ P: 1, V: 0x43, SVT: 2, SID: 0x0204 }));
    expect(t.deliver(0x17, t.msiOf(1)).result.ok).toBe(true);
    expect(t.deliver(0x18, t.msiOf(1)).result.ok).toBe(false);
    expect(t.deliver(0x0310, t.msiOf(2)).result.ok).toBe(true);
    expect(t.deliver(0x0510, t.msiOf(2)).result.ok).toBe(false);
    expect(t.events()).toEqual([
      ["interrupt-fault", 0x26, 0x11],
      ["interrupt-fault", 0x26, 0x18],
      ["interrupt-fault", 0x26, 0x510],
    ]);
  });

  it("verifies a bus range the way Linux writes it for a device behind a bridge (SVT 2, start bus in SID[15:8])", () => {
    const t = ir();
    // 06:02.0 behind a PCIe-to-PCI bridge whose requests carry the alias 05:00.0: Linux's set_msi_sid calls
    // set_irte_verify_bus(irte, 5, 6), an IRTE with SID (5 << 8) | 6.
    const msi = unwrap(t.driver.mapInterrupt(0x0610, 0x47, 2, 0x0500));
    const irte = decodeIrteRemapped(t.vm.memory.readWords(t.irt, new Uint32Array(4)));
    expect([irte.SVT, irte.SQ, irte.SID]).toEqual([2, 0, 0x0506]);
    expect(t.deliver(0x0500, msi).delivered.map((i) => i.vector)).toEqual([0x47]);
    expect(t.deliver(0x0610, msi).delivered.map((i) => i.vector)).toEqual([0x47]);
    expect(t.deliver(0x0410, msi).result).toMatchObject({ ok: false, fault: { code: 0x26 } });
    expect(t.deliver(0x0700, msi).result).toMatchObject({ ok: false, fault: { code: 0x26 } });
    expect(t.events()).toEqual([
      ["interrupt-fault", 0x26, 0x410],
      ["interrupt-fault", 0x26, 0x700],
    ]);
    // An alias on the device's own bus verifies that one bus.
    const same = unwrap(t.driver.mapInterrupt(0x0618, 0x48, 2, 0x0600));
    expect(decodeIrteRemapped(t.vm.memory.readWords(t.irt + 16, new Uint32Array(4))).SID).toBe(0x0606);
    expect(t.deliver(0x0600, same).result.ok).toBe(true);
    expect(t.deliver(0x0500, same).result.ok).toBe(false);
  });

  it("faults reserved request bits (0x20), an index beyond IRTA.S (0x21), a clear P (0x22), reserved IRTE bits or posted format (0x24)", () => {
    const t = ir();
    unwrap(t.driver.mapInterrupt(0x10, 0x41, 1));
    expect(t.deliver(0x10, { address: 0x1_fee0_0018, data: 0 }).result).toMatchObject({ ok: false, fault: { code: 0x20 } });
    expect(t.deliver(0x10, { address: encodeRemappableMsi(1).addressLo, data: 0x1_0000 }).result).toMatchObject({ ok: false, fault: { code: 0x20 } });
    t.vm.mmioWrite(t.device.mmioBase + 0xb8, 8, t.device.remapper.irta & ~0xfn);
    t.vm.mmioWrite(t.device.mmioBase + 0x18, 4, (1 << 24) | (1 << 25));
    expect(t.deliver(0x10, t.msiOf(2)).result).toMatchObject({ ok: false, fault: { code: 0x21, index: 2 } });
    expect(t.deliver(0x10, t.msiOf(1)).result).toMatchObject({ ok: false, fault: { code: 0x22 } });
    t.vm.memory.writeWords(t.irt, encodeIrteRemapped({ P: 1, V: 0x41, DST: 0x1ff }));
    t.vm.mmioWrite(t.device.mmioBase + 0x18, 4, 1 << 25);
    t.device.remapper.invalidate();
    expect(t.deliver(0x10, t.msiOf(0)).result).toMatchObject({ ok: false, fault: { code: 0x24 } });
    t.vm.memory.writeWords(t.irt, encodeIrtePosted({ P: 1, VV: 0x41, pda: 0x1000n }));
    t.device.remapper.invalidate();
    expect(t.deliver(0x10, t.msiOf(0)).result).toMatchObject({ ok: false, fault: { code: 0x24 } });
  });

  it("reports an IRT outside guest RAM as 0x23, which FPD cannot suppress", () => {
    const t = ir();
    t.vm.mmioWrite(t.device.mmioBase + 0xb8, 8, 0x7_0000_0000_f000n | 0xfn);
    t.vm.mmioWrite(t.device.mmioBase + 0x18, 4, (1 << 24) | (1 << 25));
    t.device.remapper.invalidate();
    expect(t.deliver(0x10, t.msiOf(0)).result).toMatchObject({ ok: false, fault: { code: 0x23 } });
    expect(t.events()).toEqual([["interrupt-fault", 0x23, 0x10]]);
  });

  it("suppresses 0x22 / 0x24 / 0x26 when the IRTE sets FPD", () => {
    const t = ir();
    t.vm.memory.writeWords(t.irt, encodeIrteRemapped({ P: 1, FPD: 1, V: 0x41, SVT: 1, SID: 0x33 }));
    expect(t.deliver(0x10, t.msiOf(0)).result).toMatchObject({ ok: false, fault: { code: 0x26 } });
    expect(t.events()).toEqual([]);
  });

  it("blocks compatibility-format MSIs (0x25) once Linux has cleared CFI, passes them with CFI set in xAPIC mode, never with EIME", () => {
    const t = ir();
    const compat = encodeCompatMsi({ DEST_ID: 3 }, { VECTOR: 0x30 });
    expect(t.deliver(0x10, { address: compat.addressLo, data: compat.data }).result).toMatchObject({ ok: false, fault: { code: 0x25 } });
    t.vm.mmioWrite(t.device.mmioBase + 0x18, 4, (1 << 25) | (1 << 23));
    expect(t.deliver(0x10, { address: compat.addressLo, data: compat.data }).delivered.map((i) => [i.vector, i.destination])).toEqual([[0x30, 3]]);
    const x = ir({ x2apic: true });
    x.vm.mmioWrite(x.device.mmioBase + 0x18, 4, (1 << 25) | (1 << 23));
    expect(x.deliver(0x10, { address: compat.addressLo, data: compat.data }).result).toMatchObject({ ok: false, fault: { code: 0x25 } });
  });

  it("keeps using a cached IRTE until an interrupt-entry-cache invalidation covers its index", () => {
    const t = ir();
    const msi = unwrap(t.driver.mapInterrupt(0x10, 0x41, 1));
    t.deliver(0x10, msi);
    t.vm.memory.writeWords(t.irt, encodeIrteRemapped({ P: 1, V: 0x77, DST: irteDst(1, false), SVT: 1, SID: 0x10 }));
    expect(t.deliver(0x10, msi).delivered.map((i) => i.vector)).toEqual([0x41]);
    // An index-selective flush of another block leaves it; one covering index 0 (IM 1: entries 0..1) drops it.
    t.device.execute(4, encodeInvDesc("IEC_INV", { G: 1, IM: 0, IIDX: 5 }));
    expect(t.deliver(0x10, msi).delivered.map((i) => i.vector)).toEqual([0x41]);
    t.device.execute(4, encodeInvDesc("IEC_INV", { G: 1, IM: 1, IIDX: 1 }));
    expect(t.deliver(0x10, msi).delivered.map((i) => i.vector)).toEqual([0x77]);
  });

  it("blocks an MSI through an entry the driver cleared and invalidated", () => {
    const t = ir();
    const msi = unwrap(t.driver.mapInterrupt(0x10, 0x41, 1));
    unwrap(t.driver.unmapInterrupt(0x10, msi));
    expect(t.deliver(0x10, msi).delivered).toEqual([]);
    expect(t.events()).toEqual([["interrupt-fault", 0x22, 0x10]]);
  });

  it("passes interrupts untranslated while remapping is off", () => {
    const b = vtdBed("nested", undefined, { guest: { interruptRemapping: false } });
    const compat = encodeCompatMsi({ DEST_ID: 2 }, { VECTOR: 0x31 });
    expect(b.device.deliverMsi(0x10, { address: compat.addressLo, data: compat.data })).toMatchObject({ ok: true, irq: { vector: 0x31, destination: 2 } });
  });
});
