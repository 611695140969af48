import { describe, expect, it } from "vitest";
import { HOST_OWNER, Platform, Testbed, unwrap, type Hpa } from "@viommu/core";
import { decodeCap, encodeCap } from "../../src/format/cap.js";
import { encodeInvDesc } from "../../src/format/inv-desc.js";
import { decodeIrtePosted, encodeIrteRemapped, irteDst, SourceValidationType } from "../../src/format/irte.js";
import { decodePostedInterruptDescriptor, encodePostedInterruptDescriptor, PiDescOffset } from "../../src/format/posted-interrupt-descriptor.js";
import { HOST_CAP } from "../../src/hw/host-capabilities.js";
import { VtdUnit } from "../../src/hw/vtd-unit.js";
import { vtdPlugin } from "../../src/plugin.js";
import { MAX_POSTED_ROUTES, POSTED_INTR_VECTOR, POSTED_INTR_WAKEUP_VECTOR } from "../../src/vmm/posted-interrupts.js";
import { vtdBed, type VtdBed } from "../support.js";

/** A unit, a device on it, and a descriptor in host memory with `fields`; the vectors each host CPU received. */
function hostUnit(capPi = 1) {
  const platform = new Platform({ plugins: [vtdPlugin] });
  const unit = new VtdUnit(platform.host, 0, { cap: encodeCap({ ...decodeCap(HOST_CAP), PI: capPi }) });
  const device = platform.createDevice(unit, 0x100, "nvme");
  const received: [number, number][] = [];
  const cpu = unit.cpus.add((vector) => received.push([cpu, vector]));
  const page = platform.host.memory.allocate(HOST_OWNER, 1)!;
  const descriptor = (fields: Parameters<typeof encodePostedInterruptDescriptor>[0]): number => {
    platform.host.memory.writeBytes(page, new Uint8Array(Uint32Array.from(encodePostedInterruptDescriptor(fields)).buffer));
    return page;
  };
  const read = () => decodePostedInterruptDescriptor(Uint32Array.from({ length: 16 }, (_, i) => platform.host.memory.read32(page + i * 4)));
  return { platform, unit, device, cpu, received, descriptor, read, page: page as Hpa };
}

describe("VT-d physical unit: posting interrupts (VT-d §5.2.3)", () => {
  it("posts through a posted IRTE: PIR bit set, ON set and one notification (NV to NDST) until ON is cleared", () => {
    const h = hostUnit();
    const pda = h.descriptor({ NV: 0xf2, NDST: h.cpu });
    const msi = unwrap(h.unit.postInterrupt(h.device, 0x45, pda, false));
    expect(h.unit.remapInterrupt(h.device, msi)).toMatchObject({ ok: true, irq: { vector: 0x45, destination: h.cpu, posted: { descriptor: pda, urgent: false } } });
    expect(h.read()).toMatchObject({ ON: 1, PIR: [0x45] });
    expect(h.received).toEqual([[h.cpu, 0xf2]]);
    // ON still set: a second posting only sets PIR (the notification is outstanding).
    expect(h.unit.remapInterrupt(h.device, msi).ok).toBe(true);
    expect(h.received.length).toBe(1);
    // The host IRTE is posted format with VV, URG, SID verification and the descriptor address split as the spec has it.
    const index = ((msi.address >>> 5) & 0x7fff) | (((msi.address >>> 2) & 1) << 15);
    expect(index).toBe(0);
  });

  it("suppresses the notification of a non-urgent interrupt while SN is set, and not of an urgent one", () => {
    const h = hostUnit();
    const pda = h.descriptor({ SN: 1, NV: 0xf2, NDST: h.cpu });
    const plain = unwrap(h.unit.postInterrupt(h.device, 0x30, pda, false));
    const urgent = unwrap(h.unit.postInterrupt(h.device, 0x31, pda, true));
    h.unit.remapInterrupt(h.device, plain);
    expect(h.read()).toMatchObject({ ON: 0, SN: 1, PIR: [0x30] });
    expect(h.received).toEqual([]);
    h.unit.remapInterrupt(h.device, urgent);
    expect(h.read()).toMatchObject({ ON: 1, PIR: [0x30, 0x31] });
    expect(h.received).toEqual([[h.cpu, 0xf2]]);
  });

  it("faults a posting it cannot do: another requester (0x26), a descriptor with reserved bits (0x28), a cleared IRTE (0x22)", () => {
    const h = hostUnit();
    const pda = h.descriptor({ NV: 0xf2, NDST: h.cpu });
    const msi = unwrap(h.unit.postInterrupt(h.device, 0x45, pda, false));
    const other = h.platform.createDevice(h.unit, 0x101, "other");
    expect(h.unit.remapInterrupt(other, msi)).toMatchObject({ ok: false, fault: { code: 0x26 } });
    h.platform.host.memory.write32(h.page + PiDescOffset.CONTROL, 0x0000_0004 | (0xf2 << 16));
    expect(h.unit.remapInterrupt(h.device, msi)).toMatchObject({ ok: false, fault: { code: 0x28 } });
    h.unit.releaseInterrupt(msi);
    expect(h.unit.remapInterrupt(h.device, msi)).toMatchObject({ ok: false, fault: { code: 0x22 } });
    expect(h.unit.postInterrupt(h.device, 0x45, 0x1000_0040, false)).toMatchObject({ ok: false, error: { errno: "EINVAL" } });
  });

  it("refuses to post without CAP.PI (EOPNOTSUPP)", () => {
    const h = hostUnit(0);
    expect(h.unit.postInterrupt(h.device, 0x45, h.descriptor({}), false)).toMatchObject({ ok: false, error: { errno: "EOPNOTSUPP" } });
  });
});

function postedBed(): VtdBed {
  return vtdBed("nested", undefined, { deviceInterrupts: "posted" });
}

function submit(b: VtdBed, descs: Uint32Array[]): void {
  unwrap((b.driver as unknown as { submit(d: Uint32Array[]): ReturnType<VtdBed["driver"]["flush"]> }).submit(descs));
}

describe("VT-d posted device interrupts: the VMM programs posted IRTEs from the guest's", () => {
  it("posts a passthrough MSI to the running vCPU's descriptor: delivered direct, no VMM intervention", () => {
    const b = postedBed();
    const v = b.bed.vms[0]!;
    const msi = unwrap(b.driver.mapInterrupt(0x10, 0x45, 3));
    const unit = b.bed.units[0] as VtdUnit;
    expect(b.device.posted!.posted).toBe(1);
    v.vm.interrupts.take();
    const before = v.vm.interventions;
    expect(v.devices[0]!.device.signalMsi(msi)).toBe(true);
    expect(v.vm.interventions).toBe(before);
    expect(v.vm.interrupts.take()).toEqual([{ vector: 0x45, destination: 3, path: "direct", source: "msi:posted" }]);
    // What the host IRTE and the vCPU's descriptor hold: posted format, VV 0x45, PDA = vCPU 3's descriptor;
    // the descriptor's NV is KVM's notification vector and its ON cleared by the CPU that took it.
    const pda = b.device.posted!.descriptorOf(3)!;
    const mem = b.bed.platform.host.memory;
    const pd = decodePostedInterruptDescriptor(Uint32Array.from({ length: 16 }, (_, i) => mem.read32(pda + i * 4)));
    expect(pd).toMatchObject({ ON: 0, NV: POSTED_INTR_VECTOR, PIR: [] });
    expect(unit.interrupts.entries).toBe(1);
    const irteWords = Uint32Array.of(0, 0, 0, 0);
    const table = (unit.interrupts as unknown as { table: number }).table;
    mem.read64Halves(table, irteWords);
    mem.read64Halves(table + 8, irteWords.subarray(2));
    const irte = decodeIrtePosted(irteWords);
    expect(irte).toMatchObject({ P: 1, IM: 1, VV: 0x45, URG: 0, SID: 0x100, SVT: 1, SQ: 0 });
    expect((BigInt(irte.PDA_HI) << 32n) | BigInt(irte.PDA_LO)).toBe(BigInt(pda));
  });

  it("wakes a blocked vCPU through the wakeup vector instead: the interrupt is injected (one intervention)", () => {
    const b = postedBed();
    const v = b.bed.vms[0]!;
    const msi = unwrap(b.driver.mapInterrupt(0x10, 0x46, 2));
    b.device.posted!.setRunning(2, false);
    const pda = b.device.posted!.descriptorOf(2)!;
    expect((b.bed.platform.host.memory.read32(pda + PiDescOffset.CONTROL) >>> 16) & 0xff).toBe(POSTED_INTR_WAKEUP_VECTOR);
    v.vm.interrupts.take();
    const before = v.vm.interventions;
    v.devices[0]!.device.signalMsi(msi);
    expect(v.vm.interventions - before).toBe(1);
    expect(v.vm.interrupts.take()).toEqual([{ vector: 0x46, destination: 2, path: "vmm", source: "msi:posted" }]);
    b.device.posted!.setRunning(2, true);
    v.devices[0]!.device.signalMsi(msi);
    expect(v.vm.interrupts.take().map((i) => i.path)).toEqual(["direct"]);
  });

  it("remaps through the VMM what KVM cannot post (logical destination, level trigger, a vCPU the VM lacks) and an unmapped entry's fault", () => {
    const b = postedBed();
    const v = b.bed.vms[0]!;
    const msi = unwrap(b.driver.mapInterrupt(0x10, 0x47, 1));
    const irt = Number(v.vm.mmioRead(b.device.mmioBase + 0xb8, 8) & ~0xfffn);
    for (const irte of [
      encodeIrteRemapped({ P: 1, V: 0x47, DM: 1, DST: irteDst(1, false), SVT: SourceValidationType.VERIFY_SID, SID: 0x10 }),
      encodeIrteRemapped({ P: 1, V: 0x47, TM: 1, DST: irteDst(1, false), SVT: SourceValidationType.VERIFY_SID, SID: 0x10 }),
      encodeIrteRemapped({ P: 1, V: 0x47, DST: irteDst(200, false), SVT: SourceValidationType.VERIFY_SID, SID: 0x10 }),
    ]) {
      v.vm.memory.writeWords(irt, irte);
      submit(b, [encodeInvDesc("IEC_INV", { G: 1, IM: 0, IIDX: 0 })]);
      expect(b.device.posted!.posted).toBe(0);
      v.vm.interrupts.take();
      const before = v.vm.exits.injections;
      v.devices[0]!.device.signalMsi(msi);
      expect(v.vm.exits.injections - before).toBe(1);
      expect(v.vm.interrupts.take().every((i) => i.path === "vmm")).toBe(true);
    }
    unwrap(b.driver.unmapInterrupt(0x10, msi));
    v.vm.interrupts.take();
    v.devices[0]!.device.signalMsi(msi);
    expect(v.vm.interrupts.take()).toEqual([]);
    expect(b.driver.readEvents().map((e) => [e.kind, e.code])).toEqual([["interrupt-fault", 0x22]]);
  });

  it(`posts at most ${MAX_POSTED_ROUTES} of a VM's IRTEs (the host table is shared): the rest are logged and remapped by the VMM`, () => {
    const b = postedBed();
    const v = b.bed.vms[0]!;
    const msis = Array.from({ length: MAX_POSTED_ROUTES + 2 }, (_, i) => unwrap(b.driver.mapInterrupt(0x10, 0x30 + (i % 0x80), i % 8)));
    expect(b.device.posted!.posted).toBe(MAX_POSTED_ROUTES);
    expect(b.bed.platform.host.log.entries({ kind: "configuration-refused" }).length).toBeGreaterThanOrEqual(2);
    v.vm.interrupts.take();
    v.devices[0]!.device.signalMsi(msis.at(-1)!);
    v.devices[0]!.device.signalMsi(msis[0]!);
    expect(v.vm.interrupts.take().map((i) => i.path)).toEqual(["vmm", "direct"]);
  });

  it("refuses posted device interrupts on a host unit without posting (EOPNOTSUPP), and leaves no host IRTE, CPU or descriptor behind", () => {
    const bed = unwrap(Testbed.create({ plugin: vtdPlugin, vms: [{ devices: [{ rid: 0x100, guestRid: 0x10 }] }], deviceInterrupts: "posted" }));
    const unit = bed.units[0] as VtdUnit;
    const v = bed.vms[0]!;
    const bogus = { ...v.iommus[0]!.options, unit: { ...unit, name: "plain", cpus: undefined } as unknown as VtdUnit, instance: 1 };
    expect(vtdPlugin.createDevice(bogus)).toMatchObject({ ok: false, error: { errno: "EOPNOTSUPP" } });
    unwrap(v.drivers[0]!.mapInterrupt!(0x10, 0x45, 1));
    const pages = bed.platform.host.memory.allocatedPages;
    expect(unit.interrupts.entries).toBe(1);
    v.iommus[0]!.destroy();
    expect(unit.interrupts.entries).toBe(0);
    expect(bed.platform.host.memory.allocatedPages).toBeLessThan(pages);
    expect(unit.cpus.interrupt(0, POSTED_INTR_VECTOR)).toBe(false);
  });
});
