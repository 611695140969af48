import { describe, expect, it } from "vitest";
import { registerByName } from "../../src/format/register-map.js";
import { NO_PRI_HOST, smmuBed } from "../support.js";

/** The emulated SMMU by hand; by default over a host without PRI, so it offers none. */
function raw(pri = false) {
  const s = smmuBed({ vms: [{ devices: [{ rid: 0x100, guestRid: 0x10 }] }], noInit: true }, pri ? undefined : NO_PRI_HOST);
  const at = (name: string): number => s.iommu.mmioBase + registerByName(name)!.offset;
  return {
    ...s,
    r32: (name: string): number => Number(s.vm.mmioRead(at(name), 4)),
    w32: (name: string, v: number): void => s.vm.mmioWrite(at(name), 4, v >>> 0),
    r64: (name: string): bigint => s.vm.mmioRead(at(name), 8),
    w64: (name: string, v: bigint): void => s.vm.mmioWrite(at(name), 8, v),
    at,
  };
}

describe("emulated SMMUv3 register file", () => {
  it("acknowledges CR0 in CR0ACK with only the implemented bits (no PRIQEN without PRI, no VMW)", () => {
    const s = raw();
    s.w32("CR0", 0xffff_ffff);
    expect(s.r32("CR0")).toBe(0b11101);
    expect(s.r32("CR0ACK")).toBe(0b11101);
    s.w32("CR0", 0);
    expect(s.r32("CR0ACK")).toBe(0);
  });

  it("acknowledges IRQ_CTRL in IRQ_CTRLACK (GERROR and EVTQ interrupts; PRIQ_IRQEN is RES0)", () => {
    const s = raw();
    s.w32("IRQ_CTRL", 0b111);
    expect(s.r32("IRQ_CTRL")).toBe(0b101);
    expect(s.r32("IRQ_CTRLACK")).toBe(0b101);
  });

  it("with PRI (a host that has it, nested): CR0.PRIQEN and IRQ_CTRL.PRIQ_IRQEN, PRIQ_BASE and PRIQ_PROD writable only while the PRI queue is off, PRIQ_IRQ_CFG2 with LO", () => {
    const s = raw(true);
    expect((s.r32("IDR0") >>> 16) & 1).toBe(1);
    expect((s.r32("IDR1") >>> 11) & 0x1f).toBe(19);
    s.w32("IRQ_CTRL", 0b111);
    expect(s.r32("IRQ_CTRLACK")).toBe(0b111);
    s.w64("PRIQ_BASE", 0xffff_ffff_ffff_ffffn);
    expect(s.r64("PRIQ_BASE")).toBe((((1n << 52n) - 1n) & ~0x1fn) | 0x1fn | (1n << 62n));
    s.w64("PRIQ_BASE", 0x4000_0004n);
    s.w32("PRIQ_PROD", 0x8000_0003);
    s.w32("PRIQ_IRQ_CFG2", 0xffff_ffff);
    expect([s.r32("PRIQ_PROD"), s.r32("PRIQ_IRQ_CFG2")]).toEqual([0x8000_0003, 0x8000_003f]);
    s.w32("CR0", 0b10);
    expect(s.r32("CR0ACK")).toBe(0b10);
    s.w64("PRIQ_BASE", 0x5000_0004n);
    s.w32("PRIQ_PROD", 0);
    s.w32("PRIQ_CONS", 0x8000_0001);
    // PRIQ_CONS keeps only its wrap, index and OVACKFLG bits for a 16-entry queue.
    s.w32("PRIQ_CONS", 0x8000_0fff);
    expect([s.r64("PRIQ_BASE"), s.r32("PRIQ_PROD"), s.r32("PRIQ_CONS")]).toEqual([0x4000_0004n, 0x8000_0003, 0x8000_001f]);
  });

  it("ignores writes to read-only registers and to offsets it does not implement", () => {
    const s = raw();
    const idr0 = s.r32("IDR0");
    s.w32("IDR0", 0);
    s.w32("CR0ACK", 0xf);
    s.w32("GERROR", 0x1);
    expect([s.r32("IDR0"), s.r32("CR0ACK"), s.r32("GERROR")]).toEqual([idr0, 0, 0]);
    s.vm.mmioWrite(s.iommu.mmioBase + 0xc0, 8, 0x1234_5000n); // PRIQ_BASE: no PRI
    s.vm.mmioWrite(s.iommu.mmioBase + 0x200, 4, 0xffff_ffff);
    expect(s.vm.mmioRead(s.iommu.mmioBase + 0xc0, 8)).toBe(0n);
    expect(s.vm.mmioRead(s.iommu.mmioBase + 0x200, 4)).toBe(0n);
  });

  it("offers a stage-1-only SMMU with MSIs, SEV, 2-level stream tables and 16-bit StreamIDs", () => {
    const s = raw();
    const idr0 = s.r32("IDR0");
    expect({ s2p: idr0 & 1, s1p: (idr0 >> 1) & 1, ttf: (idr0 >> 2) & 3, msi: (idr0 >> 13) & 1, sev: (idr0 >> 14) & 1, stLevel: (idr0 >> 27) & 3, hyp: (idr0 >> 9) & 1 }).toEqual({
      s2p: 0,
      s1p: 1,
      ttf: 2,
      msi: 1,
      sev: 1,
      stLevel: 1,
      hyp: 0,
    });
    expect(s.r32("IDR1") & 0x3f).toBe(16);
  });

  it("takes a GBPA write only with UPDATE set, and reads UPDATE back as 0 (the update completed)", () => {
    const s = raw();
    s.w32("GBPA", 1 << 20);
    expect(s.r32("GBPA")).toBe(0);
    s.w32("GBPA", (1 << 31) | (1 << 20) | (1 << 12));
    expect(s.r32("GBPA")).toBe((1 << 20) | (1 << 12));
  });

  it("reads and writes a 64-bit register whole or as two 32-bit halves", () => {
    const s = raw();
    s.w64("STRTAB_BASE", 0x4000_0000_1234_5000n);
    expect(s.r64("STRTAB_BASE")).toBe(0x4000_0000_1234_5000n);
    s.vm.mmioWrite(s.at("STRTAB_BASE") + 4, 4, 0x0000_0001);
    expect(s.r64("STRTAB_BASE")).toBe(0x0000_0001_1234_5000n);
    expect(s.vm.mmioRead(s.at("STRTAB_BASE") + 4, 4)).toBe(1n);
  });

  it("keeps RES0 bits of address registers clear (STRTAB_BASE ADDR[51:6], RA)", () => {
    const s = raw();
    s.w64("STRTAB_BASE", 0xffff_ffff_ffff_ffffn);
    expect(s.r64("STRTAB_BASE")).toBe(0x400f_ffff_ffff_ffc0n);
  });

  it("ignores stream table base writes while the SMMU is enabled, and queue base writes while that queue is", () => {
    const s = raw();
    s.w64("STRTAB_BASE", 0x1000n);
    s.w64("CMDQ_BASE", 0x2000n | 4n);
    s.w64("EVTQ_BASE", 0x3000n | 4n);
    s.w32("CR0", 0b1101);
    s.w64("STRTAB_BASE", 0x8000n);
    s.w64("CMDQ_BASE", 0x9000n);
    s.w64("EVTQ_BASE", 0xa000n);
    s.w32("EVTQ_PROD", 5);
    s.w32("CMDQ_CONS", 5);
    expect([s.r64("STRTAB_BASE"), s.r64("CMDQ_BASE"), s.r64("EVTQ_BASE"), s.r32("EVTQ_PROD"), s.r32("CMDQ_CONS")]).toEqual([0x1000n, 0x2004n, 0x3004n, 0, 0]);
  });

  it("toggles GERRORN as the acknowledgement: an error is active while GERROR and GERRORN differ", () => {
    const s = raw();
    s.w32("GERRORN", 0xffff_ffff);
    expect(s.r32("GERRORN")).toBe(0x1fd);
    s.w32("GERRORN", 0);
    // A command-queue error (an undefined opcode) toggles GERROR.CMDQ_ERR.
    const page = s.v.pages.allocate(1)!;
    s.vm.memory.writeWords(page, Uint32Array.of(0x7f, 0, 0, 0));
    s.w64("CMDQ_BASE", BigInt(page) | 4n);
    s.w32("CR0", 1 << 3);
    s.w32("CMDQ_PROD", 1);
    expect(s.r32("GERROR") & 1).toBe(1);
    expect(s.r32("GERRORN") & 1).toBe(0);
    // Acknowledging without fixing the command runs it again: the error is raised again (GERROR toggles back).
    s.w32("GERRORN", 1);
    expect((s.r32("GERROR") ^ s.r32("GERRORN")) & 1).toBe(1);
    s.vm.memory.writeWords(page, Uint32Array.of(0x46, 0, 0, 0));
    s.w32("GERRORN", s.r32("GERROR"));
    expect((s.r32("GERROR") ^ s.r32("GERRORN")) & 1).toBe(0);
    expect(s.r32("CMDQ_CONS") & 0xff).toBe(1);
  });
});
