import { describe, expect, it } from "vitest";
import { GuestMemory, HostMemory, Perm, unwrap, type PermBits, type WalkAnswer } from "@viommu/core";
import type { TestVm } from "@viommu/conformance";
import { MmioOffset } from "../../src/format/mmio-register-map.js";
import { amdViWalkTool } from "../../src/tools/walk-tool.js";
import type { AmdViDevice } from "../../src/vmm/amd-vi-device.js";
import { oneVm } from "../support.js";

/** The guest's memory as a raw image, loaded the way `viommu walk --memory` loads one. */
function image(v: TestVm): GuestMemory {
  const copy = new GuestMemory(new HostMemory(), 1, { sizeBytes: v.vm.memory.sizeBytes });
  for (const page of v.vm.memory.writtenPages()) copy.writeBytes(page, v.vm.memory.readBytes(page, 4096));
  return copy;
}

function walker(v: TestVm): (rid: number, iova: number, write?: boolean, pasid?: number) => WalkAnswer {
  const device = v.iommus[0] as AmdViDevice;
  const reg = v.vm.mmioRead(device.mmioBase + MmioOffset.DeviceTableBase, 8);
  const walk = unwrap(amdViWalkTool.prepare(image(v), { DEV_TAB_BASE: reg }));
  // The answers without the entries read (test/tools/walk-steps.test.ts checks those).
  return (rid, iova, write = false, pasid) => withoutSteps(walk({ rid, iova, write, pasid }));
}

function withoutSteps(a: WalkAnswer): WalkAnswer {
  const { steps: _steps, ...rest } = a;
  return rest as WalkAnswer;
}

interface Intent {
  readonly iova: number;
  readonly gpa: number;
  readonly length: number;
  readonly perms: PermBits;
  /** The page size the Linux driver picks for it. */
  readonly pageSize: number;
}

/** Maps every intent through the driver, then checks walks at the start, middle and end of each against it. */
function checkIntents(mode: "shadow" | "nested", intents: Intent[]): void {
  const t = oneVm({ mode });
  const domain = unwrap(t.driver.createDomain());
  unwrap(t.driver.attach(0x10, domain));
  for (const i of intents) unwrap(t.driver.map(domain, i.iova, i.gpa, i.length, i.perms));
  const walk = walker(t.v);
  // The DTE's DomainID: the domain's own for v1, the device's GCR3 table id for v2 (set_dte_gcr3_table).
  const dteDomainId = t.v.vm.memory.read32(t.driver.structures.deviceTable + 0x10 * 32 + 8) & 0xffff;
  if (mode === "shadow") expect(dteDomainId).toBe(domain);
  for (const i of intents) {
    for (const offset of [0, Math.floor(i.length / 2) + 0x123, i.length - 8]) {
      expect(walk(0x10, i.iova + offset), `${mode} 0x${(i.iova + offset).toString(16)}`).toEqual({
        ok: true,
        output: i.gpa + offset,
        pageSize: i.pageSize,
        read: true,
        write: (i.perms & Perm.Write) !== 0,
        domain: dteDomainId,
      });
    }
    if (!(i.perms & Perm.Write)) expect(walk(0x10, i.iova, true)).toEqual({ ok: false, fault: { code: 2, name: "IO_PAGE_FAULT" } });
  }
}

describe("viommu walk --vendor amd-vi on images the reference driver wrote", () => {
  it("v1 tables: 4 KiB, size-encoded 16 KiB and 8 MiB pages, 2 MiB and 1 GiB default leaves, and read-only pages", () => {
    checkIntents("shadow", [
      { iova: 0x10_0000, gpa: 0x2000_0000, length: 0x1000, perms: Perm.ReadWrite, pageSize: 0x1000 },
      { iova: 0x20_4000, gpa: 0x2010_4000, length: 0x4000, perms: Perm.Read, pageSize: 0x4000 },
      { iova: 0x4000_0000, gpa: 0x4000_0000, length: 0x4000_0000, perms: Perm.ReadWrite, pageSize: 0x4000_0000 },
      { iova: 0x1_0000_0000, gpa: 0x2800_0000, length: 0x20_0000, perms: Perm.ReadWrite, pageSize: 0x20_0000 },
      { iova: 0x1_0080_0000, gpa: 0x3000_0000, length: 0x80_0000, perms: Perm.Read, pageSize: 0x80_0000 },
    ]);
  });

  it("v2 tables behind the GCR3 table: 4 KiB and 2 MiB pages", () => {
    checkIntents("nested", [
      { iova: 0x10_0000, gpa: 0x2000_0000, length: 0x3000, perms: Perm.ReadWrite, pageSize: 0x1000 },
      { iova: 0x4000_0000, gpa: 0x2800_0000, length: 0x20_0000, perms: Perm.Read, pageSize: 0x20_0000 },
    ]);
  });

  it("answers the event the IOMMU would log: IO_PAGE_FAULT unmapped or blocked, ILLEGAL_DEV_TABLE_ENTRY beyond the table, and PASID lookups through GCR3", () => {
    const t = oneVm();
    const domain = unwrap(t.driver.createDomain());
    unwrap(t.driver.attach(0x10, domain));
    unwrap(t.driver.map(domain, 0x10_0000, 0x2000_0000, 0x1000, Perm.ReadWrite));
    const walk = walker(t.v);
    expect(walk(0x10, 0x50_0000)).toEqual({ ok: false, fault: { code: 2, name: "IO_PAGE_FAULT" } });
    expect(walk(0x11, 0x10_0000)).toEqual({ ok: false, fault: { code: 2, name: "IO_PAGE_FAULT" } });
    expect(walk(0x1000, 0x10_0000)).toEqual({ ok: false, fault: { code: 1, name: "ILLEGAL_DEV_TABLE_ENTRY" } });
    expect(walk(0x10, 0x10_0010, false, 0)).toMatchObject({ ok: true, output: 0x2000_0010 });
    expect(walk(0x10, 0x10_0010, false, 5)).toEqual({ ok: false, fault: { code: 2, name: "IO_PAGE_FAULT" } });
  });

  it("passes a request through a DTE with V clear (an IR-only guest) untranslated, with no domain", () => {
    const t = oneVm({ mode: "ir-only", guest: { translation: false } });
    expect(walker(t.v)(0x10, 0x1234_5678)).toEqual({ ok: true, output: 0x1234_5678, pageSize: 4096, read: true, write: true });
  });

  it("refuses to prepare without DEV_TAB_BASE (EINVAL)", () => {
    const memory = new GuestMemory(new HostMemory(), 1, { sizeBytes: 2 ** 20 });
    expect(amdViWalkTool.prepare(memory, {})).toMatchObject({ ok: false, error: { errno: "EINVAL" } });
  });
});
