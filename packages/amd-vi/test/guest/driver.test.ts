import { describe, expect, it } from "vitest";
import { Perm, unwrap } from "@viommu/core";
import { MmioOffset } from "../../src/format/mmio-register-map.js";
import { commandName, commandOpcode, decodeCommand } from "../../src/format/command.js";
import { DATA_GPA, IOVA, mapOne, oneVm, qwords } from "../support.js";

function reg(v: ReturnType<typeof oneVm>, offset: number): bigint {
  return v.v.vm.mmioRead(v.device.mmioBase + offset, 8);
}

/** Commands the driver wrote, oldest first, up to the tail register. */
function commands(t: ReturnType<typeof oneVm>): ReturnType<typeof decodeCommand>[] {
  const base = t.driver.structures.commandBuffer;
  const tail = Number(reg(t, MmioOffset.CommandBufferTail));
  const out: ReturnType<typeof decodeCommand>[] = [];
  for (let at = 0; at < tail; at += 16) out.push(decodeCommand(t.v.vm.memory.readWords(base + at, new Uint32Array(4))));
  return out;
}

describe("guest driver bring-up (Linux early_enable_iommu)", () => {
  it("programs device table Size, a 512-entry command buffer and event log, and enables CmdBufEn, EventLogEn, IommuEn with Coherent and a 1 s timeout", () => {
    const t = oneVm();
    const s = t.driver.structures;
    expect(reg(t, MmioOffset.DeviceTableBase)).toBe(BigInt(s.deviceTable) | 1n);
    expect(reg(t, MmioOffset.CommandBufferBase)).toBe(BigInt(s.commandBuffer) | (9n << 56n));
    expect(reg(t, MmioOffset.EventLogBase)).toBe(BigInt(s.eventLog) | (9n << 56n));
    const control = reg(t, MmioOffset.Control);
    for (const b of [0, 2, 10, 12, 17]) expect((control >> BigInt(b)) & 1n, `control bit ${b}`).toBe(1n);
    expect((control >> 5n) & 7n).toBe(4n);
    // HATDis in nested mode: Linux chose v2 tables, so GTEn is on.
    expect((control >> 16n) & 1n).toBe(1n);
    expect(t.driver.mode).toBe("v2");
  });

  it("leaves every unused DeviceID blocked with interrupt remapping valid: qwords 0x3, 0, 0x1, 0 (real Linux 6.1 data)", () => {
    const t = oneVm();
    expect(qwords(t.v, t.driver.structures.deviceTable + 0x42 * 32, 4)).toEqual(["0x3", "0x0", "0x1", "0x0"]);
  });

  it("starts with INVALIDATE_IOMMU_ALL then COMPLETION_WAIT on the semaphore with value 1", () => {
    const t = oneVm();
    const c = commands(t);
    expect(c.slice(0, 2).map((x) => x.name)).toEqual(["INVALIDATE_IOMMU_ALL", "COMPLETION_WAIT"]);
    expect(c[1]!.fields).toMatchObject({ S: 1, StoreAddress: t.driver.structures.semaphore, StoreData: 1n });
    expect(t.v.vm.memory.read64(t.driver.structures.semaphore)).toBe(BigInt(c.filter((x) => x.name === "COMPLETION_WAIT").length));
  });
});

describe("v1 tables (shadow mode, host translation offered)", () => {
  it("attach writes V, TV, IR, IW, Mode 3 and the root, DomainID in qword 1, keeping IV", () => {
    const t = oneVm({ mode: "shadow" });
    expect(t.driver.mode).toBe("v1");
    const domain = mapOne(t.v, 0x10, IOVA, DATA_GPA, 0x1000);
    const dte = qwords(t.v, t.driver.structures.deviceTable + 0x10 * 32, 4);
    const q0 = BigInt(dte[0]!);
    expect(q0 & 0xfffn).toBe(0x603n);
    expect(q0 >> 61n).toBe(3n);
    expect(dte.slice(1)).toEqual([`0x${domain.toString(16)}`, "0x1", "0x0"]);
  });

  it("maps a 16 KiB-aligned 16 KiB range as four identical NextLevel-7 entries with FC, IR and IW", () => {
    const t = oneVm({ mode: "shadow" });
    mapOne(t.v, 0x10, 0x40_0000, DATA_GPA, 0x4000);
    const root = Number(BigInt(qwords(t.v, t.driver.structures.deviceTable + 0x10 * 32, 1)[0]!) & 0x000f_ffff_ffff_f000n);
    const l3 = Number(t.v.vm.memory.read64(root) & 0x000f_ffff_ffff_f000n);
    const l2 = Number(t.v.vm.memory.read64(l3 + 2 * 8) & 0x000f_ffff_ffff_f000n);
    const entries = qwords(t.v, l2, 4);
    const expected = `0x${(0x7000_0000_0000_0000n | BigInt(DATA_GPA + 0x1000) | (7n << 9n) | 1n).toString(16)}`;
    expect(entries).toEqual([expected, expected, expected, expected]);
    expect(qwords(t.v, l2 + 32, 1)).toEqual(["0x0"]);
    // And the device sees all of it.
    const dev = t.v.devices[0]!.device;
    expect(dev.write(0x40_3ff0, new Uint8Array(16).fill(7)).ok).toBe(true);
    expect(t.v.vm.memory.read8(DATA_GPA + 0x3ff0)).toBe(7);
  });

  it("grows the table's top level for an IOVA above 2^39 and moves the DTE to Mode 4 with the new root", () => {
    const t = oneVm({ mode: "shadow" });
    const domain = mapOne(t.v, 0x10, IOVA, DATA_GPA, 0x1000);
    unwrap(t.driver.map(domain, 2 ** 40, DATA_GPA + 0x1000, 0x1000, Perm.Read));
    const q0 = BigInt(qwords(t.v, t.driver.structures.deviceTable + 0x10 * 32, 1)[0]!);
    expect(Number((q0 >> 9n) & 7n)).toBe(4);
    const dev = t.v.devices[0]!.device;
    expect(dev.read(IOVA, 4).ok).toBe(true);
    expect(dev.read(2 ** 40, 4).ok).toBe(true);
    expect(dev.write(2 ** 40, new Uint8Array(4)).ok).toBe(false);
  });

  it("flushes a range in naturally aligned pieces, one INVALIDATE_IOMMU_PAGES each, then one COMPLETION_WAIT (NpCache)", () => {
    const t = oneVm({ mode: "shadow" });
    const domain = mapOne(t.v, 0x10, 0x1000, DATA_GPA, 0x1000);
    const before = commands(t).length;
    unwrap(t.driver.flush(domain, 0x1000, 0x3000));
    const added = commands(t).slice(before);
    expect(added.map((c) => c.name)).toEqual(["INVALIDATE_IOMMU_PAGES", "INVALIDATE_IOMMU_PAGES", "COMPLETION_WAIT"]);
    expect(added[0]!.fields).toMatchObject({ DomainID: domain, S: 0, PDE: 1, GN: 0, Address: 0x1000n });
    // 0x2000..0x3fff: S = 1 and address bit 12 clear (an 8 KiB block), as build_inv_address computes it.
    expect(added[1]!.fields).toMatchObject({ S: 1, Address: 0x2000n });
  });
});

describe("v2 tables (nested mode: the IVHD reports HATDis)", () => {
  it("attach gives the device a GCR3 table whose PASID 0 entry is the v2 root, and a DTE with GV, GIoV, GLX 0 and the split GCR3 root", () => {
    const t = oneVm();
    const domain = mapOne(t.v, 0x10, IOVA, DATA_GPA, 0x1000);
    const w = t.v.vm.memory.readWords(t.driver.structures.deviceTable + 0x10 * 32, new Uint32Array(8));
    expect(w[0]! & 3).toBe(3);
    expect((w[1]! >>> 22) & 3).toBe(3);
    expect((w[1]! >>> 24) & 3).toBe(0);
    // The DTE carries the device's own GCR3 DomainID, not the domain's (Linux set_dte_gcr3_table: gcr3_info.domid).
    expect(w[2]! & 0xffff).not.toBe(domain);
    expect(w[2]! & 0xffff).not.toBe(0);
    const gcr3 = ((w[1]! >>> 26) & 7) * 2 ** 12 + (w[2]! >>> 16) * 2 ** 15 + (w[3]! >>> 11) * 2 ** 31;
    const entry = t.v.vm.memory.read64(gcr3);
    expect(entry & 1n).toBe(1n);
    const root = Number(entry & 0x000f_ffff_ffff_f000n);
    // PML4 → PDPT → PD → PT entries: tables P|RW|US|A, the leaf P|RW|US|A|D.
    const pml4e = t.v.vm.memory.read64(root);
    expect(pml4e & 0xfffn).toBe(0x27n);
    const walk = (table: bigint, index: number): bigint => t.v.vm.memory.read64(Number(table & 0x000f_ffff_ffff_f000n) + index * 8);
    const pte = walk(walk(walk(pml4e, 0), 0), 0x100);
    expect(pte).toBe(BigInt(DATA_GPA) | 0x67n);
  });

  it("flushes v2 domains with GN and PASID 0", () => {
    const t = oneVm();
    const domain = mapOne(t.v, 0x10, IOVA, DATA_GPA, 0x1000);
    unwrap(t.driver.flush(domain));
    const base = t.driver.structures.commandBuffer;
    const tail = Number(reg(t, MmioOffset.CommandBufferTail));
    const last = decodeCommand(t.v.vm.memory.readWords(base + tail - 32, new Uint32Array(4)));
    expect(last.name).toBe("INVALIDATE_IOMMU_PAGES");
    const dteDomainId = t.v.vm.memory.read32(t.driver.structures.deviceTable + 0x10 * 32 + 8) & 0xffff;
    expect(dteDomainId).not.toBe(domain);
    expect(last.fields).toMatchObject({ DomainID: dteDomainId, GN: 1, PASID: 0, S: 1, Address: 0x7fff_ffff_ffff_f000n });
  });
});

describe("interrupt remapping tables", () => {
  it("128-bit IRTE (GASup): RemapEn, vector in the high qword, x2APIC destination split; DTE IV, IntTabLen 9, IntCtl 2", () => {
    const t = oneVm({ guest: { x2apic: true } }, { vcpus: 512 });
    const msi = unwrap(t.driver.mapInterrupt(0x10, 0x41, 0x1_23));
    expect(msi).toEqual({ address: 0xfee00000, data: 0 });
    const irt = t.driver.structures.interruptTables[0]!;
    expect(qwords(t.v, irt, 2)).toEqual([`0x${((0x123 & 0xffffff) << 8 | 1).toString(16)}`, "0x41"]);
    const w = t.v.vm.memory.readWords(t.driver.structures.deviceTable + 0x10 * 32, new Uint32Array(8));
    expect(w[4]).toBe(((irt % 2 ** 32) | (9 << 1) | 1) >>> 0);
    expect((w[5]! >>> 28) & 3).toBe(2);
    expect((reg(t, MmioOffset.Control) >> 50n) & 1n).toBe(1n);
  });

  it("32-bit IRTE with variant irte32: RemapEn | Destination << 8 | Vector << 16", () => {
    const t = oneVm({ guest: { variant: "irte32" } });
    unwrap(t.driver.mapInterrupt(0x10, 0x42, 3));
    const irt = t.driver.structures.interruptTables[0]!;
    expect(t.v.vm.memory.read32(irt)).toBe(1 | (3 << 8) | (0x42 << 16));
    expect((reg(t, MmioOffset.Control) >> 17n) & 1n).toBe(0n);
    expect(t.driver.mapInterrupt(0x10, 0x43, 300).ok).toBe(false);
  });

  it("each IRT change is followed by INVALIDATE_INTERRUPT_TABLE and COMPLETION_WAIT", () => {
    const t = oneVm();
    unwrap(t.driver.mapInterrupt(0x10, 0x41, 1));
    const names = commands(t).map((c) => c.name);
    expect(names.slice(-2)).toEqual(["INVALIDATE_INTERRUPT_TABLE", "COMPLETION_WAIT"]);
    expect(names.filter((n) => n === "INVALIDATE_DEVTAB_ENTRY").length).toBeGreaterThan(0);
    expect(commandName(commandOpcode(new Uint32Array([0, 0x5000_0000, 0, 0])))).toBe("INVALIDATE_INTERRUPT_TABLE");
  });
});
