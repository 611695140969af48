import { describe, expect, it } from "vitest";
import { fromWords64 } from "@viommu/core";
import { encodeCommand, SyncCs } from "../../src/format/command.js";
import { gicrSetlpirAddress } from "../../src/format/gic-doorbell.js";
import { fixtureJsonLines } from "../format/fixtures.js";
import { rawSmmu } from "../raw-smmu.js";
import { NO_PRI_HOST } from "../support.js";

const SYNC = encodeCommand("CMD_SYNC", {});

describe("emulated SMMUv3 command queue", () => {
  it("advances CONS past every command it executes, up to PROD", () => {
    const s = rawSmmu();
    s.submit(encodeCommand("CMD_TLBI_NH_ASID", { ASID: 1 }), encodeCommand("CMD_PREFETCH_CONFIG", { SID: 0x10 }), SYNC);
    expect(s.cons()).toBe(3);
    expect(s.consErr()).toBe(0);
    expect(s.iommu.stats.trapped).toBe(3);
  });

  it("executes every command a real Linux 6.1 guest left in its queue without an error", () => {
    const s = rawSmmu({}, 8);
    const recorded = fixtureJsonLines<{ words: string[] }>("cmdq-commands.jsonl.gz");
    for (const c of recorded) {
      s.submit(fromWords64(c.words));
      expect(s.cmdqError()).toBe(false);
    }
    expect(s.iommu.stats.trapped).toBe(recorded.length);
  });

  it.each([
    ["an undefined opcode", Uint32Array.of(0x7f, 0, 0, 0)],
    ["reserved bits set", Uint32Array.of(0x10, 0, 0, 1)],
    ["SSec from the Non-secure queue", Uint32Array.of(0x03 | (1 << 10), 0x10, 1, 0)],
    ["an EL2 TLBI without IDR0.HYP", encodeCommand("CMD_TLBI_EL2_ALL", {})],
    ["a stage-2 TLBI on a stage-1-only SMMU", encodeCommand("CMD_TLBI_S12_VMALL", {})],
    ["PRI_RESP without PRI", encodeCommand("CMD_PRI_RESP", { SID: 0x10 })],
    ["RESUME on an SMMU without the stall model (IHI0070 §4.7.1)", encodeCommand("CMD_RESUME", { SID: 0x10, STAG: 1 })],
    ["STALL_TERM on an SMMU without the stall model (§4.7.2)", encodeCommand("CMD_STALL_TERM", { SID: 0x10 })],
    ["CFGI_STE beyond SIDSIZE", encodeCommand("CMD_CFGI_STE", { SID: 0x1_0000 })],
    ["CMD_SYNC with the reserved CS 3", encodeCommand("CMD_SYNC", { CS: 3 })],
    ["a range TLBI with NUM = SCALE = TTL = 0 (Reserved, IHI0070 §4.4.1)", encodeCommand("CMD_TLBI_NH_VA", { ASID: 1, TG: 1 })],
    ["a TLBI with a TTL hint but TG 0 (RES0)", encodeCommand("CMD_TLBI_NH_VAA", { TTL: 2 })],
    ["a 16K range TLBI with TTL 1 without IDR5.DS", encodeCommand("CMD_TLBI_NH_VA", { ASID: 1, TG: 2, TTL: 1 })],
  ])("stops at %s with CERROR_ILL in CMDQ_CONS.ERR and GERROR.CMDQ_ERR, until acknowledged", (_what, bad) => {
    const s = rawSmmu({}, 4, 3, NO_PRI_HOST);
    s.submit(encodeCommand("CMD_TLBI_NH_ALL", {}), bad, SYNC);
    expect(s.cons()).toBe(1);
    expect(s.consErr()).toBe(1);
    expect(s.cmdqError()).toBe(true);
    // The emulated SMMU judged it itself: nothing illegal went to the host to be refused there.
    expect(s.bed.platform.host.log.entries()).toEqual([]);
    // Nothing more is consumed while the error is active, even on a new doorbell.
    s.submit(SYNC);
    expect(s.cons()).toBe(1);
    s.patch(1, SYNC);
    s.ack();
    expect(s.cons()).toBe(4);
    expect(s.consErr()).toBe(1); // ERR keeps the last error while CONS moves on
  });

  it("reports CERROR_ABT when the command cannot be fetched (queue base outside guest RAM)", () => {
    const s = rawSmmu();
    s.w32("CR0", 0);
    s.w64("CMDQ_BASE", 0x2_0000_0000n | 4n);
    s.w32("CMDQ_PROD", 0);
    s.w32("CMDQ_CONS", 0);
    s.w32("CR0", 1 << 3);
    s.w32("CMDQ_PROD", 1);
    expect([s.cons(), s.consErr(), s.cmdqError()]).toEqual([0, 2, true]);
  });

  it("completes a CMD_SYNC with an MSI write into guest memory (Linux's MSIPOLL)", () => {
    const s = rawSmmu();
    const slot = s.cmdq;
    s.submit(encodeCommand("CMD_SYNC", { CS: SyncCs.SigIrq, MSIAddress: slot, MSIData: 0 }));
    expect(s.vm.memory.read32(slot)).toBe(0);
  });

  it("signals a CMD_SYNC by SEV, or by MSI to a CPU's GICR_SETLPIR doorbell", () => {
    const s = rawSmmu();
    s.submit(encodeCommand("CMD_SYNC", { CS: SyncCs.SigSev }));
    expect(s.iommu.sevEvents).toBe(1);
    s.vm.interrupts.take();
    s.submit(encodeCommand("CMD_SYNC", { CS: SyncCs.SigIrq, MSIAddress: gicrSetlpirAddress(3), MSIData: 0x2001 }));
    expect(s.vm.interrupts.take()).toEqual([{ vector: 0x2001, destination: 3, path: "vmm", source: "smmuv3-sync" }]);
  });

  it("raises GERROR.MSI_CMDQ_ABT_ERR when a CMD_SYNC MSI goes nowhere", () => {
    const s = rawSmmu();
    s.submit(encodeCommand("CMD_SYNC", { CS: SyncCs.SigIrq, MSIAddress: 0x3_0000_0000, MSIData: 1 }));
    expect((s.r32("GERROR") >>> 4) & 1).toBe(1);
    expect(s.cmdqError()).toBe(false);
  });

  it("raises the wired sync interrupt for a SIG_IRQ CMD_SYNC when it offers no MSIs", () => {
    const s = rawSmmu({ msi: false });
    s.vm.interrupts.take();
    s.submit(encodeCommand("CMD_SYNC", { CS: SyncCs.SigIrq }));
    expect(s.vm.interrupts.take()).toEqual([{ vector: s.iommu.gsivs.sync, destination: 0, path: "vmm", source: "smmuv3-sync" }]);
  });

  it("latches doorbells while frozen and processes them on thaw", () => {
    const s = rawSmmu();
    s.iommu.freeze();
    s.submit(encodeCommand("CMD_TLBI_NH_ALL", {}), SYNC);
    expect(s.cons()).toBe(0);
    s.iommu.thaw();
    expect(s.cons()).toBe(2);
  });

  it("wraps around the queue with the wrap bit", () => {
    const s = rawSmmu();
    for (let i = 0; i < 40; i++) s.submit(SYNC);
    expect(s.cons()).toBe(40 % 32);
    expect(s.cmdqError()).toBe(false);
  });
});
