import { describe, expect, it } from "vitest";
import { unwrap } from "@viommu/core";
import { vtdWalkTool } from "../../src/vmm/walk-tool.js";
import { DATA_GPA, IOVA, mapped, vtdBed } from "../support.js";

describe("viommu walk on tables the reference driver wrote", () => {
  for (const variant of ["legacy", "scalable"] as const) {
    it(`walks a ${variant}-mode guest from RTADDR (TTM picks the format) and agrees with the emulated unit`, () => {
      const b = vtdBed("shadow", variant);
      const did = mapped(b, 0x10, IOVA, DATA_GPA, 0x20_0000 + 0x3000, 1);
      const r = b.device.registers;
      const walk = unwrap(vtdWalkTool.prepare(b.bed.vms[0]!.vm.memory, { RTADDR: r.read(0x20, 8), CAP: r.read(0x08, 8), ECAP: r.read(0x10, 8) }));
      expect(walk({ rid: 0x10, iova: IOVA + 0x1234, write: false })).toEqual({ ok: true, output: DATA_GPA + 0x1234, pageSize: 4096, read: true, write: false, domain: did });
      expect(walk({ rid: 0x10, iova: IOVA + 0x1234, write: true })).toMatchObject({ ok: false, fault: { code: variant === "legacy" ? 0x5 : 0x85 } });
      expect(walk({ rid: 0x10, iova: IOVA + 0x40_0000, write: false })).toMatchObject({ ok: false, fault: { code: variant === "legacy" ? 0x6 : 0x71 } });
      expect(walk({ rid: 0x18, iova: IOVA, write: false })).toMatchObject({ ok: false, fault: { code: variant === "legacy" ? 0x2 : 0x41 } });
    });
  }

  it("reports a 2 MiB leaf with its page size", () => {
    const b = vtdBed("shadow", "legacy");
    mapped(b, 0x10, 0x4000_0000, DATA_GPA, 0x20_0000);
    const walk = unwrap(vtdWalkTool.prepare(b.bed.vms[0]!.vm.memory, { RTADDR: b.device.registers.read(0x20, 8) }));
    expect(walk({ rid: 0x10, iova: 0x4012_3456, write: true })).toMatchObject({ ok: true, output: DATA_GPA + 0x12_3456, pageSize: 0x20_0000 });
  });

  it("answers EINVAL without RTADDR", () => {
    const b = vtdBed("shadow", "legacy");
    expect(vtdWalkTool.prepare(b.bed.vms[0]!.vm.memory, {})).toMatchObject({ ok: false, error: { errno: "EINVAL" } });
  });
});
