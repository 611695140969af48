import { iasl as findIasl } from "../../../../test-support/external-tools.js";
import { execFileSync } from "node:child_process";
import { existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { describe, expect, it } from "vitest";
import { Testbed } from "@viommu/conformance";
import { newWalkResult, NO_PASID, Perm, unwrap } from "@viommu/core";
import { decodeDmar, DeviceScopeType, DmarFlags, DrhdFlags } from "../../src/format/dmar.js";
import { vtdPlugin } from "../../src/plugin.js";
import { VtdDevice } from "../../src/vmm/vtd-device.js";
import { DATA_GPA, IOVA, mapped, vtdBed } from "../support.js";

/** ACPICA's iasl on PATH (CI requires it; locally its absence skips these checks). */
const IASL_TOOL = findIasl();
const IASL = IASL_TOOL.command ?? "iasl";

function iaslProblems(bytes: Uint8Array): string[] {
  const dir = mkdtempSync(join(tmpdir(), "vtd-dmar-"));
  try {
    writeFileSync(join(dir, "dmar.bin"), bytes);
    const console = execFileSync(IASL, ["-d", join(dir, "dmar.bin")], { cwd: dir, encoding: "utf8", stdio: ["ignore", "pipe", "pipe"] });
    const dsl = readFileSync(join(dir, "dmar.dsl"), "utf8");
    return [...console.split("\n"), ...dsl.split("\n")].filter((l) => /\berror\b|\bwarning\b|\*\*\*\*|unknown|invalid/i.test(l));
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}

describe("VT-d DMAR", () => {
  it("publishes one DRHD at the register base with INCLUDE_PCI_ALL and the I/O APIC scope, interrupt remapping flagged", () => {
    const b = vtdBed("nested");
    const [table] = b.device.acpiTables();
    const decoded = decodeDmar(table!.bytes);
    expect(decoded.ok).toBe(true);
    if (!decoded.ok) return;
    expect(decoded.table.hostAddressWidth).toBe(48);
    expect(decoded.table.flags).toBe(DmarFlags.INTR_REMAP);
    expect(decoded.table.structures).toMatchObject([{ type: "DRHD", flags: DrhdFlags.INCLUDE_PCI_ALL, registerBase: BigInt(b.device.mmioBase), scopes: [{ type: DeviceScopeType.IOAPIC, startBus: 0xff }] }]);
  });

  it("lists the devices of a second unit as endpoint scopes, without INCLUDE_PCI_ALL", () => {
    const bed = unwrap(
      Testbed.create({ plugin: vtdPlugin, vms: [{ instances: 2, devices: [{ rid: 0x100, guestRid: 0x10, instance: 0 }, { rid: 0x300, guestRid: 0x0218, instance: 1 }] }] }),
    );
    const second = bed.vms[0]!.iommus[1] as VtdDevice;
    const decoded = decodeDmar(second.acpiTables()[0]!.bytes);
    expect(decoded.ok && decoded.table.structures).toMatchObject([
      { type: "DRHD", flags: 0, registerBase: BigInt(second.mmioBase), scopes: [{ type: DeviceScopeType.PCI_ENDPOINT, startBus: 2, path: [{ device: 3, function: 0 }] }] },
    ]);
    expect(second.mmioBase).not.toBe((bed.vms[0]!.iommus[0] as VtdDevice).mmioBase);
  });

  it.skipIf(IASL_TOOL.command === undefined)("generates a DMAR (plugin.acpi and a device's own) that iasl -d disassembles without errors or warnings", () => {
    expect(iaslProblems(vtdPlugin.acpi!.generate())).toEqual([]);
    expect(iaslProblems(vtdBed("shadow").device.acpiTables()[0]!.bytes)).toEqual([]);
  });
});

describe("VT-d save and restore", () => {
  it("restores registers, latched tables, pending fault records and interrupt remapping into a fresh device", () => {
    const b = vtdBed("nested");
    const v = b.bed.vms[0]!;
    mapped(b, 0x10, IOVA, DATA_GPA, 0x2000);
    const msi = unwrap(b.driver.mapInterrupt(0x10, 0x44, 3));
    v.devices[0]!.device.read(0x7000_0000, 4);
    b.bed.poll();
    const regs = (d: VtdDevice): bigint[] => [0x1c, 0x20, 0x34, 0x90, 0xb8, 0x220, 0x228, 0x80, 0x88].map((o) => d.registers.read(o, o === 0x1c || o === 0x34 ? 4 : 8));
    const before = regs(b.device);
    const blob = b.device.save();
    b.device.destroy();
    const fresh = unwrap(
      vtdPlugin.createDevice({ vm: v.vm, iommufd: v.iommufd, unit: b.bed.units[0]!, ioasId: v.ioasId, parentHwptId: v.parentHwptId, anchorDevId: v.devices[0]!.devId, mode: "nested" }),
    ) as VtdDevice;
    unwrap(fresh.assignDevice(v.devices[0]!.device, v.devices[0]!.devId, 0x10));
    unwrap(fresh.restore(blob));
    expect(regs(fresh)).toEqual(before);
    const out = newWalkResult();
    expect(v.devices[0]!.device.translate(IOVA + 0x1000, true, NO_PASID, out).ok).toBe(true);
    expect(out.perms & Perm.Write).toBe(Perm.Write);
    v.vm.interrupts.take();
    expect(v.devices[0]!.device.signalMsi(msi)).toBe(true);
    expect(v.vm.interrupts.take().map((i) => [i.vector, i.destination])).toEqual([[0x44, 3]]);
  });

  it("refuses a corrupted state, and a state of another kind, with EINVAL", () => {
    const b = vtdBed("nested");
    const blob = b.device.save();
    const bad = blob.slice();
    bad[bad.length - 2]! ^= 0x40;
    expect(b.device.restore(bad)).toMatchObject({ ok: false, error: { errno: "EINVAL" } });
    expect(b.device.restore(new TextEncoder().encode("not a state"))).toMatchObject({ ok: false, error: { errno: "EINVAL" } });
  });
});

describe("VT-d save and restore of the issue-11 features", () => {
  it("rebuilds host PASID attachments, the page-request fault queue and posted IRTEs from the guest's state in a fresh device", () => {
    const b = vtdBed("nested", undefined, { deviceInterrupts: "posted" }, [{ rid: 0x100, guestRid: 0x10, pasidBits: 20, pri: true }]);
    const v = b.bed.vms[0]!;
    mapped(b, 0x10, IOVA, DATA_GPA, 0x1000);
    const d1 = unwrap(b.driver.createDomain());
    unwrap(b.driver.map(d1, IOVA, DATA_GPA + 0x1000, 0x1000, 3));
    unwrap(b.driver.attachPasid(0x10, 7, d1));
    unwrap(b.driver.enablePageRequests(0x10));
    const msi = unwrap(b.driver.mapInterrupt(0x10, 0x44, 2));
    v.vm.memory.writeBytes(DATA_GPA + 0x1000, Uint8Array.of(7, 7));
    const blob = b.device.save();
    b.device.destroy();
    expect(v.devices[0]!.device.read(IOVA, 2, 7).ok).toBe(false);
    const fresh = unwrap(vtdPlugin.createDevice({ ...b.device.options })) as VtdDevice;
    unwrap(fresh.assignDevice(v.devices[0]!.device, v.devices[0]!.devId, 0x10));
    unwrap(fresh.restore(blob));
    const r = v.devices[0]!.device.read(IOVA, 2, 7);
    expect(r.ok && [...r.data]).toEqual([7, 7]);
    expect(v.devices[0]!.device.read(IOVA, 2).ok).toBe(true);
    expect(fresh.posted!.posted).toBe(1);
    v.vm.interrupts.take();
    v.devices[0]!.device.signalMsi(msi);
    expect(v.vm.interrupts.take().map((i) => [i.vector, i.destination, i.path])).toEqual([[0x44, 2, "direct"]]);
    // Page requests reach the fresh device's queue: the restored context has PRE.
    const miss = v.devices[0]!.device.read(IOVA + 0x10_0000, 4, 7);
    expect(!miss.ok && miss.pageRequest).toBeGreaterThanOrEqual(0);
    b.bed.poll();
    fresh.poll();
    expect(fresh.pageRequests.pending).toBe(1);
  });
});
