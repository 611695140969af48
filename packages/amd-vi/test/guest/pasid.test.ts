import { describe, expect, it } from "vitest";
import { NO_PASID, Perm, unwrap } from "@viommu/core";
import { createAmdViPlugin } from "../../src/plugin.js";
import { decodeCommand } from "../../src/format/command.js";
import { decodeDte, DTE_BYTES } from "../../src/format/device-table-entry.js";
import { efrLayout } from "../../src/format/extended-feature-register.js";
import { MmioOffset } from "../../src/format/mmio-register-map.js";
import type { AmdViGuestDriver } from "../../src/guest/amd-vi-driver.js";
import { amdBed, DATA_GPA, IOVA, oneVm, pattern } from "../support.js";

const PAGE = 4096;
const pasidDevices = (n: number): { rid: number; guestRid: number; pasidBits: number }[] => Array.from({ length: n }, (_, i) => ({ rid: 0x100 + i, guestRid: 0x10 + i, pasidBits: 20 }));

function dte(t: { v: ReturnType<typeof oneVm>["v"]; driver: AmdViGuestDriver }, rid: number): Record<string, unknown> {
  return decodeDte(t.v.vm.memory.readWords(t.driver.structures.deviceTable + rid * DTE_BYTES, new Uint32Array(8)));
}

/** The commands the driver queued since `from` (a byte offset into its command buffer). */
function commandsSince(t: ReturnType<typeof oneVm>, from: number): ReturnType<typeof decodeCommand>[] {
  const base = t.driver.structures.commandBuffer;
  const tail = Number(t.v.vm.mmioRead(t.device.mmioBase + MmioOffset.CommandBufferTail, 4));
  const out = [];
  for (let at = from; at !== tail; at = (at + 16) % 8192) out.push(decodeCommand(t.v.vm.memory.readWords(base + at, new Uint32Array(4))));
  return out;
}

function tail(t: ReturnType<typeof oneVm>): number {
  return Number(t.v.vm.mmioRead(t.device.mmioBase + MmioOffset.CommandBufferTail, 4));
}

describe("PASID attachment through the device's GCR3 table (nested, v2 tables)", () => {
  it("installs a v2 root per PASID, growing the GCR3 table to three levels for a 20-bit PASID, and flushes each PASID with GN and the DTE's DomainID", () => {
    const t = oneVm({}, { devices: pasidDevices(1) });
    const rid = unwrap(t.driver.createDomain());
    unwrap(t.driver.attach(0x10, rid));
    const before = dte(t, 0x10);
    expect(before).toMatchObject({ GV: 1, GIoV: 1, GLX: 0 });
    const d = unwrap(t.driver.createDomain());
    unwrap(t.driver.map(d, IOVA, DATA_GPA, PAGE, Perm.ReadWrite));
    const from = tail(t);
    unwrap(t.driver.attachPasid!(0x10, 0x8_0001, d));
    const after = dte(t, 0x10);
    // 20-bit PASIDs need GLX = 2 (Linux get_gcr3_levels: DIV_ROUND_UP(20, 9) − 1); the DomainID stays the device's.
    expect(after).toMatchObject({ GV: 1, GIoV: 1, GLX: 2, DomainID: before["DomainID"] });
    const sent = commandsSince(t, from);
    expect(sent.map((c) => c.name)).toEqual(["INVALIDATE_DEVTAB_ENTRY", "INVALIDATE_IOMMU_PAGES", "COMPLETION_WAIT"]);
    expect(sent[1]!.fields).toMatchObject({ DomainID: before["DomainID"], GN: 1, PASID: 0x8_0001, S: 1, Address: 0x7fff_ffff_ffff_f000n });
    // The GCR3 walk a hardware IOMMU does: top index PASID[19:18], then [17:9], then [8:0].
    const read = (table: number, index: number): number => Number(t.v.vm.memory.read64(table + index * 8) & 0x000f_ffff_ffff_f000n);
    const root = after["GCR3TableRootPointer"] as number;
    const leaf = read(read(root, 2), 0);
    expect(t.v.vm.memory.read64(leaf + 8) & 1n).toBe(1n);
    // PASID 0 is still found through the old one-level table, now under index 0 of each new level.
    expect(read(read(read(root, 0), 0), 0)).not.toBe(0);
    const dev = t.v.devices[0]!.device;
    t.v.vm.memory.writeBytes(DATA_GPA, pattern(32, 9));
    const r = dev.read(IOVA, 32, 0x8_0001);
    expect(r.ok && Array.from(r.data)).toEqual(Array.from(pattern(32, 9)));
  });

  it("gives each device its own DomainID, so two devices' translations at one PASID never alias in the IOTLB", () => {
    const bed = amdBed({ vms: [{ devices: pasidDevices(2) }] });
    const v = bed.vms[0]!;
    const driver = v.drivers[0] as AmdViGuestDriver;
    const shared = unwrap(driver.createDomain());
    unwrap(driver.attach(0x10, shared));
    unwrap(driver.attach(0x11, shared));
    const [b, c] = [unwrap(driver.createDomain()), unwrap(driver.createDomain())];
    unwrap(driver.map(b, IOVA, DATA_GPA, PAGE, Perm.ReadWrite));
    unwrap(driver.map(c, IOVA, DATA_GPA + PAGE, PAGE, Perm.ReadWrite));
    unwrap(driver.attachPasid!(0x10, 1, b));
    unwrap(driver.attachPasid!(0x11, 1, c));
    v.vm.memory.writeBytes(DATA_GPA, pattern(16, 1));
    v.vm.memory.writeBytes(DATA_GPA + PAGE, pattern(16, 2));
    const [x, y] = [v.devices[0]!.device, v.devices[1]!.device];
    // x's translation is cached first; y must not hit it.
    expect(x.read(IOVA, 16, 1)).toMatchObject({ ok: true, data: pattern(16, 1) });
    expect(y.read(IOVA, 16, 1)).toMatchObject({ ok: true, data: pattern(16, 2) });
    const ids = [0x10, 0x11].map((r) => v.vm.memory.read32(driver.structures.deviceTable + r * DTE_BYTES + 8) & 0xffff);
    expect(ids[0]).not.toBe(ids[1]);
  });

  it("detaching a PASID clears its entry and flushes it: that PASID's DMA faults with GN and the PASID in IO_PAGE_FAULT, the others go on", () => {
    const t = oneVm({}, { devices: pasidDevices(1) });
    const [a, b] = [unwrap(t.driver.createDomain()), unwrap(t.driver.createDomain())];
    unwrap(t.driver.map(a, IOVA, DATA_GPA, PAGE, Perm.ReadWrite));
    unwrap(t.driver.map(b, IOVA, DATA_GPA + PAGE, PAGE, Perm.ReadWrite));
    unwrap(t.driver.attach(0x10, a));
    unwrap(t.driver.attachPasid!(0x10, 7, b));
    const dev = t.v.devices[0]!.device;
    expect(dev.read(IOVA, 4, 7).ok).toBe(true);
    unwrap(t.driver.detachPasid!(0x10, 7));
    expect(dev.read(IOVA, 4, 7).ok).toBe(false);
    expect(dev.read(IOVA, 4).ok).toBe(true);
    t.bed.poll();
    const e = t.driver.readEvents().find((x) => x.name === "IO_PAGE_FAULT");
    expect(e).toMatchObject({ rid: 0x10, address: IOVA });
    const decoded = BigInt(e!.raw[0]!);
    // GN (flag bit 0 = QW0 bit 48) with PASID[15:0] in [47:32].
    expect(Number((decoded >> 48n) & 1n)).toBe(1);
    expect(Number((decoded >> 32n) & 0xffffn)).toBe(7);
    expect(t.driver.detachPasid!(0x10, 7)).toMatchObject({ ok: false, error: { errno: "ENOENT" } });
  });

  it("detaching the requester id keeps the PASIDs: DMA without a PASID then faults (GIoV finds no PASID 0 entry)", () => {
    const t = oneVm({}, { devices: pasidDevices(1) });
    const [a, b] = [unwrap(t.driver.createDomain()), unwrap(t.driver.createDomain())];
    unwrap(t.driver.map(a, IOVA, DATA_GPA, PAGE, Perm.ReadWrite));
    unwrap(t.driver.map(b, IOVA, DATA_GPA, PAGE, Perm.ReadWrite));
    unwrap(t.driver.attach(0x10, a));
    unwrap(t.driver.attachPasid!(0x10, 3, b));
    const dev = t.v.devices[0]!.device;
    unwrap(t.driver.detach(0x10));
    expect(dev.read(IOVA, 4, NO_PASID).ok).toBe(false);
    expect(dev.read(IOVA, 4, 3).ok).toBe(true);
    unwrap(t.driver.detachPasid!(0x10, 3));
    expect(dte(t, 0x10)).toMatchObject({ V: 1, TV: 1, GV: 0, IR: 0, IW: 0 });
  });

  it("refuses PASID 0, PASIDs beyond PASmax and v1 (shadow) domains with EINVAL, as Linux's is_pasid_valid and its GCR3-only PASID support do", () => {
    const t = oneVm({}, { devices: pasidDevices(1) });
    const d = unwrap(t.driver.createDomain());
    expect(t.driver.attachPasid!(0x10, 0, d)).toMatchObject({ ok: false, error: { errno: "EINVAL" } });
    expect(t.driver.attachPasid!(0x10, 2 ** 20 - 1, d)).toMatchObject({ ok: false, error: { errno: "EINVAL" } });
    expect(t.driver.attachPasid!(0x10, 1.5, d)).toMatchObject({ ok: false, error: { errno: "EINVAL" } });
    const s = oneVm({ mode: "shadow" }, { devices: pasidDevices(1) });
    const sd = unwrap(s.driver.createDomain());
    expect(s.driver.attachPasid!(0x10, 1, sd)).toMatchObject({ ok: false, error: { errno: "EINVAL" } });
  });

  it("offers 16-bit PASIDs when configured for Linux guests (EFR.PASmax 15, GLXSup 1): PASID 0x8001 attaches, 0x80001 is EINVAL", () => {
    const plugin = createAmdViPlugin({ pasidBits: 16 });
    const t = oneVm({ plugin }, { devices: pasidDevices(1) });
    const efr = t.v.vm.mmioRead(t.device.mmioBase + MmioOffset.ExtendedFeature, 8);
    const field = (name: "PASmax" | "GLXSup"): number => Number((efr >> BigInt(efrLayout.field(name).bit)) & ((1n << BigInt(efrLayout.field(name).width)) - 1n));
    expect([field("PASmax"), field("GLXSup")]).toEqual([15, 1]);
    const d = unwrap(t.driver.createDomain());
    unwrap(t.driver.map(d, IOVA, DATA_GPA, PAGE, Perm.ReadWrite));
    expect(t.driver.attachPasid!(0x10, 0x8_0001, d)).toMatchObject({ ok: false, error: { errno: "EINVAL" } });
    unwrap(t.driver.attachPasid!(0x10, 0x8001, d));
    expect(t.v.devices[0]!.device.read(IOVA, 4, 0x8001).ok).toBe(true);
  });

  it("a GCR3 entry the guest points outside its RAM blocks that PASID's DMA as a fault, never an exception, and leaves other VMs alone", () => {
    const t = oneVm({}, { devices: pasidDevices(1) });
    const d = unwrap(t.driver.createDomain());
    unwrap(t.driver.map(d, IOVA, DATA_GPA, PAGE, Perm.ReadWrite));
    unwrap(t.driver.attach(0x10, d));
    unwrap(t.driver.attachPasid!(0x10, 5, d));
    const root = dte(t, 0x10)["GCR3TableRootPointer"] as number;
    const dev = t.v.devices[0]!.device;
    for (const hostile of [0x000f_ffff_ffff_f001n, 0xffff_ffff_ffff_ffffn, BigInt(t.v.vm.memory.end) | 1n]) {
      t.v.vm.memory.write64(root + 5 * 8, hostile);
      unwrap(t.driver.flush(d));
      expect(() => dev.read(IOVA, 4, 5)).not.toThrow();
      expect(dev.read(IOVA, 4, 5).ok).toBe(false);
    }
    expect(t.bed.platform.host.memory.violations).toEqual([]);
  });
});

describe("shared virtual addressing: a process's CPU page table bound at a PASID", () => {
  const USER_VA = 0x7f12_3456_7000;

  it("builds the process table in the x86-64 CPU format (user leaves P|R/W|U/S|A|D with XD, tables P|R/W|U/S|A) and installs its root in the GCR3 entry", () => {
    const t = oneVm({}, { devices: pasidDevices(1) });
    const p = unwrap(t.driver.createProcess!());
    unwrap(p.map(USER_VA, DATA_GPA, PAGE, Perm.ReadWrite));
    const idx = (level: number): number => Math.floor(USER_VA / 2 ** (12 + 9 * (level - 1))) % 512;
    let table = p.root;
    for (let level = 4; level > 1; level--) {
      const e = t.v.vm.memory.read64(table + idx(level) * 8);
      expect(e & 0xfffn).toBe(0x27n);
      table = Number(e & 0x000f_ffff_ffff_f000n);
    }
    expect(t.v.vm.memory.read64(table + idx(1) * 8)).toBe(BigInt(DATA_GPA) | 0x67n | (1n << 63n));
    unwrap(t.driver.bindProcess!(0x10, 5, p));
    const root = dte(t, 0x10)["GCR3TableRootPointer"] as number;
    expect(t.v.vm.memory.read64(root + 5 * 8)).toBe(BigInt(p.root) | 1n);
  });

  it("invalidateProcess sends what the MMU notifier sends: one INVALIDATE_IOMMU_PAGES per bound device PASID with GN, the PASID, the DTE's DomainID and the range, then COMPLETION_WAIT", () => {
    const t = oneVm({}, { devices: pasidDevices(1) });
    const p = unwrap(t.driver.createProcess!());
    unwrap(p.map(USER_VA, DATA_GPA, 2 * PAGE, Perm.ReadWrite));
    unwrap(t.driver.bindProcess!(0x10, 5, p));
    const dev = t.v.devices[0]!.device;
    expect(dev.read(USER_VA + PAGE, 4, 5).ok).toBe(true);
    unwrap(p.unmap(USER_VA + PAGE, PAGE));
    // Without the invalidation the IOMMU still has the translation (a CPU unmap alone does not reach it).
    expect(dev.read(USER_VA + PAGE, 4, 5).ok).toBe(true);
    const from = tail(t);
    unwrap(t.driver.invalidateProcess!(p, USER_VA + PAGE, PAGE));
    const sent = commandsSince(t, from);
    expect(sent.map((c) => c.name)).toEqual(["INVALIDATE_IOMMU_PAGES", "COMPLETION_WAIT"]);
    expect(sent[0]!.fields).toMatchObject({ DomainID: dte(t, 0x10)["DomainID"], GN: 1, PASID: 5, S: 0, Address: BigInt(USER_VA + PAGE) });
    expect(dev.read(USER_VA + PAGE, 4, 5).ok).toBe(false);
    expect(dev.read(USER_VA, 4, 5).ok).toBe(true);
    unwrap(t.driver.unbindProcess!(0x10, 5));
    expect(dev.read(USER_VA, 4, 5).ok).toBe(false);
    expect(t.driver.unbindProcess!(0x10, 5)).toMatchObject({ ok: false, error: { errno: "ENOENT" } });
  });

  it("refuses a process it did not create and addresses outside the user half", () => {
    const t = oneVm({}, { devices: pasidDevices(1) });
    const forged = { root: DATA_GPA, asid: 1, map: () => ({ ok: true as const, value: undefined }), unmap: () => ({ ok: true as const, value: undefined }) };
    expect(t.driver.bindProcess!(0x10, 5, forged)).toMatchObject({ ok: false, error: { errno: "EINVAL" } });
    const p = unwrap(t.driver.createProcess!());
    expect(p.map(2 ** 47, DATA_GPA, PAGE, Perm.Read)).toMatchObject({ ok: false, error: { errno: "EINVAL" } });
    expect(t.driver.invalidateProcess!(p, -1, PAGE)).toMatchObject({ ok: false, error: { errno: "EINVAL" } });
  });
});
