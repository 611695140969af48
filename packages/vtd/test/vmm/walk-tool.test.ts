import fc from "fast-check";
import { describe, expect, it } from "vitest";
import { GuestMemory, HostMemory, NO_PASID, unwrap } from "@viommu/core";
import { encodeCap, sagawFor } from "../../src/format/cap.js";
import { vtdWalkTool } from "../../src/vmm/walk-tool.js";
import { checkProperty, DATA_GPA, IOVA, mapped, vtdBed } from "../support.js";

describe("viommu walk on tables the reference driver wrote", () => {
  for (const variant of ["legacy", "scalable"] as const) {
    it(`walks a ${variant}-mode guest from RTADDR (TTM picks the format) and agrees with the emulated unit`, () => {
      const b = vtdBed("shadow", variant);
      const did = mapped(b, 0x10, IOVA, DATA_GPA, 0x20_0000 + 0x3000, 1);
      const r = b.device.registers;
      const walk = unwrap(vtdWalkTool.prepare(b.bed.vms[0]!.vm.memory, { RTADDR: r.read(0x20, 8), CAP: r.read(0x08, 8), ECAP: r.read(0x10, 8) }));
      const { steps: _steps, ...answer } = walk({ rid: 0x10, iova: IOVA + 0x1234, write: false });
      expect(answer).toEqual({ ok: true, output: DATA_GPA + 0x1234, pageSize: 4096, read: true, write: false, domain: did });
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

  it("takes a 57-bit CAP (MGAW 56) with 52-bit tables, and refuses a CAP whose width no table can have", () => {
    const b = vtdBed("shadow", "legacy");
    mapped(b, 0x10, IOVA, DATA_GPA, 0x1000);
    const memory = b.bed.vms[0]!.vm.memory;
    const RTADDR = b.device.registers.read(0x20, 8);
    const cap57 = encodeCap({ ND: 6, SAGAW: sagawFor([3, 4, 5]), MGAW: 56, SLLPS: 3, PSI: 1, MAMV: 18 });
    const walk = unwrap(vtdWalkTool.prepare(memory, { RTADDR, CAP: (BigInt(cap57[1]!) << 32n) | BigInt(cap57[0]!) }));
    expect(walk({ rid: 0x10, iova: IOVA, write: false })).toMatchObject({ ok: true, output: DATA_GPA });
    expect(vtdWalkTool.prepare(memory, { RTADDR, CAP: 0n })).toMatchObject({ ok: false, error: { errno: "EINVAL", message: expect.stringContaining("MGAW") } });
  });

  it("answers any RTADDR, CAP, ECAP and table contents with a translation or a fault, never an exception", () => {
    const u64 = fc.bigInt({ min: 0n, max: (1n << 64n) - 1n });
    checkProperty(
      fc.property(u64, u64, u64, fc.array(fc.tuple(fc.nat(4095), fc.nat(0xffff_ffff), fc.nat(0xffff_ffff)), { maxLength: 60 }), fc.oneof(fc.nat(2 ** 48), fc.constantFrom(2 ** 53, 2 ** 64)), (cap, ecap, rtaddr, writes, iova) => {
        const memory = new GuestMemory(new HostMemory(), 1, { sizeBytes: 64 * 2 ** 20 });
        for (const [slot, lo, hi] of writes) memory.write64Halves(0x10_0000 + slot * 8, lo, hi);
        const prepared = vtdWalkTool.prepare(memory, { RTADDR: 0x10_0000n | (rtaddr & 0xc00n) | (rtaddr & (0xfffn << 52n)), CAP: cap, ECAP: ecap });
        if (!prepared.ok) {
          expect(prepared.error.errno).toBe("EINVAL");
          return;
        }
        for (const rid of [0, 0x10, 0xffff]) {
          for (const pasid of [NO_PASID, 0, 0xfffff]) {
            const a = prepared.value({ rid, pasid, iova, write: (rid & 1) === 1 });
            if (a.ok) expect(Number.isSafeInteger(a.output)).toBe(true);
            else expect(a.fault.name).not.toBe("UNKNOWN");
          }
        }
      }),
      { numRuns: 500 },
    );
  });
});
