import { describe, expect, it } from "vitest";
import { fromWords64, Perm, unwrap, type DmaDevice, type GuestEvent } from "@viommu/core";
import { decodeCdSettings } from "../../src/translate/cd-config.js";
import { smmuFeatures } from "../../src/translate/smmu-features.js";
import { decodeEvent, decodePriEntry, decodeSte, encodeCd, encodeCommand, PriResp, ResumeAction } from "../../src/format/index.js";
import { hostConfig, smmuBed } from "../support.js";

const PAGE = 4096;
const RID = 0x10;
const USER_VA = 0x7f12_3456_7000;
const GPA = 0x2000_0000;
/** A host that can stall (STALL_MODEL 0) and has no PRI: the emulated SMMU offers the stall model. */
const STALL_HOST = hostConfig({ idr0: { STALL_MODEL: 0, PRI: 0 }, idr1: { PRIQS: 0 } });

/** A nested guest with a process bound at PASID 9 of a 20-bit-PASID device (PRI-capable unless `stall`). */
function guest(stall: boolean, enable = true) {
  const s = smmuBed({ vms: [{ devices: [{ rid: 0x100, guestRid: RID, pasidBits: 20, pri: !stall }] }] }, stall ? STALL_HOST : undefined);
  const process = unwrap(s.driver.createProcess!());
  unwrap(process.map(USER_VA, GPA, PAGE, Perm.ReadWrite));
  if (enable) unwrap(s.driver.enablePageRequests!(RID));
  unwrap(s.driver.bindProcess!(RID, 9, process));
  const events = (): GuestEvent[] => {
    s.bed.poll();
    return s.driver.readEvents();
  };
  const requests = () => events().filter((e) => e.kind === "page-request");
  const fault = (device: DmaDevice, va: number) => {
    const r = device.write(va + 0x40, Uint8Array.of(1, 2), 9);
    return r.ok ? undefined : r.pageRequest;
  };
  const steWords = () => s.vm.memory.readWords(s.driver.streamTableBase! + RID * 64, new Uint32Array(16));
  return { ...s, process, events, requests, fault, steWords };
}

describe("SMMUv3 PRI: page requests through the guest's PRI queue and CMD_PRI_RESP", () => {
  it("writes the PRI queue entry of IHI0070 Chapter 8: StreamID the vSID, SSV and SubstreamID, Write, Last, PRGIndex, page address", () => {
    const g = guest(false);
    expect(decodeSte(g.steWords()).EATS).toBe(1);
    const group = g.fault(g.device, USER_VA + PAGE);
    expect(group).toBeDefined();
    const [pr] = g.requests();
    expect(pr).toMatchObject({ name: "PRIQ_ENTRY", rid: RID, pasid: 9, address: USER_VA + PAGE, write: true, last: true, group });
    const e = decodePriEntry(fromWords64(pr!.raw as string[]));
    expect(e).toEqual({ StreamID: RID, SubstreamID: 9, Priv: 0, Exec: 0, Read: 0, Write: 1, Last: 1, SSV: 1, PRGIndex: group, PageAddress: BigInt(USER_VA + PAGE) });
    // dw0: SSV (63), Last (62), Write (61), SubstreamID at 32, StreamID at 0.
    expect(BigInt(pr!.raw[0]!)).toBe((1n << 63n) | (1n << 62n) | (1n << 61n) | (9n << 32n) | BigInt(RID));
  });

  it("matches CMD_PRI_RESP by StreamID and PRGIndex: a wrong one has no effect, Resp 0b11 is CERROR_ILL, InvalidRequest fails the device", () => {
    const g = guest(false);
    const group = g.fault(g.device, USER_VA + PAGE)!;
    const [pr] = g.requests();
    unwrap(g.driver.submitCommands([encodeCommand("CMD_PRI_RESP", { SID: RID + 1, PRGIndex: group, Resp: PriResp.Success })]));
    unwrap(g.driver.submitCommands([encodeCommand("CMD_PRI_RESP", { SID: RID, PRGIndex: (group + 1) & 0x1ff, Resp: PriResp.Success })]));
    g.bed.poll();
    expect(g.device.pageRequestStatus(group)).toBe("waiting");
    unwrap(g.driver.submitCommands([encodeCommand("CMD_PRI_RESP", { SID: RID, PRGIndex: group, Resp: 3 })]));
    expect(g.events().filter((e) => e.kind === "command-error").map((e) => e.name)).toEqual(["CERROR_ILL"]);
    expect(g.device.pageRequestStatus(group)).toBe("waiting");
    unwrap(g.driver.respondPageRequest!(pr!, false));
    expect(g.device.pageRequestStatus(group)).toBe("invalid");
    // Answered once: a second response names nothing.
    unwrap(g.driver.submitCommands([encodeCommand("CMD_PRI_RESP", { SID: RID, PRGIndex: group, Resp: PriResp.Success })]));
    expect(g.device.pageRequestStatus(group)).toBe("invalid");
  });

  it("gives a device the guest did not enable (STE without EATS) final faults: no page request, an F_TRANSLATION event", () => {
    const g = guest(false, false);
    expect(decodeSte(g.steWords()).EATS).toBe(0);
    expect(g.fault(g.device, USER_VA + PAGE)).toBeUndefined();
    const evs = g.events();
    expect(evs.filter((e) => e.kind === "page-request")).toEqual([]);
    expect(evs).toContainEqual(expect.objectContaining({ kind: "dma-fault", name: "F_TRANSLATION", rid: RID, pasid: 9 }));
  });

  it("answers Response Failure for requests while the PRI queue is disabled, and raises the PRI queue interrupt on the entry it writes", () => {
    const g = guest(false);
    g.vm.interrupts.take();
    const group = g.fault(g.device, USER_VA + PAGE)!;
    g.bed.poll();
    expect(g.vm.interrupts.take()).toContainEqual(expect.objectContaining({ vector: g.iommu.gsivs.pri, source: "smmuv3-priq" }));
    g.driver.readEvents();
    const cr0 = Number(g.vm.mmioRead(g.iommu.mmioBase + 0x20, 4));
    g.vm.mmioWrite(g.iommu.mmioBase + 0x20, 4, BigInt(cr0 & ~0b10));
    // The nested HWPT lost its fault queue with PRIQEN: the outstanding group was answered INVALID by the host.
    expect(g.device.pageRequestStatus(group)).toBe("invalid");
    expect(g.fault(g.device, USER_VA + 2 * PAGE)).toBeUndefined();
  });

  it("overflows a full PRI queue as §8.1 says: OVFLG toggled, the lost group answered Success, nothing written until acknowledged", () => {
    const g = guest(false);
    const at = (off: number) => g.iommu.mmioBase + off;
    const cr0 = Number(g.vm.mmioRead(at(0x20), 4));
    // A one-entry queue at the driver's own base: PRIQEN off, PRIQ_BASE with LOG2SIZE 0, back on.
    g.vm.mmioWrite(at(0x20), 4, BigInt(cr0 & ~0b10));
    const base = g.vm.mmioRead(at(0xc0), 8) & ~0x1fn;
    g.vm.mmioWrite(at(0xc0), 8, base);
    g.vm.mmioWrite(at(0x100c8), 4, 0n);
    g.vm.mmioWrite(at(0x100cc), 4, 0n);
    g.vm.mmioWrite(at(0x20), 4, BigInt(cr0));
    const first = g.fault(g.device, USER_VA + PAGE)!;
    g.bed.poll();
    const second = g.fault(g.device, USER_VA + 2 * PAGE)!;
    g.bed.poll();
    expect(Number(g.vm.mmioRead(at(0x100c8), 4))).toBe(0x8000_0001);
    expect([g.device.pageRequestStatus(first), g.device.pageRequestStatus(second)]).toEqual(["waiting", "success"]);
    // Software consumes the entry but has not acknowledged (OVACKFLG ≠ OVFLG): the overflow stays active, so a
    // request finding room is lost all the same, and OVFLG is not toggled again; one lands after the ack.
    g.vm.mmioWrite(at(0x100cc), 4, 0x1n);
    const third = g.fault(g.device, USER_VA + 3 * PAGE)!;
    g.bed.poll();
    expect(g.device.pageRequestStatus(third)).toBe("success");
    expect(Number(g.vm.mmioRead(at(0x100c8), 4))).toBe(0x8000_0001);
    g.vm.mmioWrite(at(0x100cc), 4, 0x8000_0001n);
    const fourth = g.fault(g.device, USER_VA + 4 * PAGE)!;
    g.bed.poll();
    expect(g.device.pageRequestStatus(fourth)).toBe("waiting");
    expect(Number(g.vm.mmioRead(at(0x100c8), 4)) & 0x1).toBe(0);
  });
});

describe("SMMUv3 stall model: stall events and CMD_RESUME", () => {
  it("offers the stall model to a nested guest whose host can stall, and a driver leaves S1STALLD set on masters it did not enable", () => {
    const g = guest(true, false);
    expect((Number(g.vm.mmioRead(g.iommu.mmioBase, 4)) >>> 24) & 3).toBe(0);
    expect(decodeSte(g.steWords()).S1STALLD).toBe(1);
    expect(g.fault(g.device, USER_VA + PAGE)).toBeUndefined();
    expect(g.events()).toContainEqual(expect.objectContaining({ kind: "dma-fault", name: "F_TRANSLATION" }));
  });

  it("records a stalled transaction as F_TRANSLATION with Stall = 1 and its STAG (StreamID the vSID, SubstreamID, RnW, InputAddr)", () => {
    const g = guest(true);
    expect(decodeSte(g.steWords()).S1STALLD).toBe(0);
    const stag = g.fault(g.device, USER_VA + PAGE)!;
    expect(g.device.pageRequestStatus(stag)).toBe("waiting");
    const [ev] = g.requests();
    expect(ev).toMatchObject({ name: "F_TRANSLATION", rid: RID, pasid: 9, write: true, group: stag, last: true, address: USER_VA + PAGE });
    const rec = decodeEvent(fromWords64(ev!.raw as string[]));
    expect(rec.fields).toMatchObject({ StreamID: RID, SSV: 1, SubstreamID: 9, Stall: 1, STAG: stag, RnW: 0, S2: 0, CLASS: 2, InputAddr: BigInt(USER_VA + PAGE) });
  });

  it("resumes only what CMD_RESUME names: another STAG or StreamID has no effect; retry lets the device complete once mapped; abort fails it", () => {
    const g = guest(true);
    const stag = g.fault(g.device, USER_VA + PAGE)!;
    const [ev] = g.requests();
    unwrap(g.driver.submitCommands([encodeCommand("CMD_RESUME", { SID: RID, STAG: (stag + 1) & 0xffff, Action: ResumeAction.Retry })]));
    unwrap(g.driver.submitCommands([encodeCommand("CMD_RESUME", { SID: RID + 1, STAG: stag, Action: ResumeAction.Retry })]));
    expect(g.events().filter((e) => e.kind === "command-error")).toEqual([]);
    expect(g.device.pageRequestStatus(stag)).toBe("waiting");
    unwrap(g.process.map(USER_VA + PAGE, GPA + PAGE, PAGE, Perm.ReadWrite));
    unwrap(g.driver.respondPageRequest!(ev!, true));
    expect(g.device.pageRequestStatus(stag)).toBe("success");
    expect(g.device.write(USER_VA + PAGE + 0x40, Uint8Array.of(7), 9).ok).toBe(true);
    const again = g.fault(g.device, USER_VA + 5 * PAGE)!;
    unwrap(g.driver.respondPageRequest!(g.requests()[0]!, false));
    expect(g.device.pageRequestStatus(again)).toBe("invalid");
  });

  it("terminates every stall of a StreamID with CMD_STALL_TERM", () => {
    const g = guest(true);
    const a = g.fault(g.device, USER_VA + PAGE)!;
    const b = g.fault(g.device, USER_VA + 2 * PAGE)!;
    expect(g.requests().length).toBe(2);
    unwrap(g.driver.submitCommands([encodeCommand("CMD_STALL_TERM", { SID: RID })]));
    expect([g.device.pageRequestStatus(a), g.device.pageRequestStatus(b)]).toEqual(["invalid", "invalid"]);
  });

  it("keeps a stall event the disabled event queue cannot take and records it once the queue is on again (§3.12.2)", () => {
    const g = guest(true);
    const cr0 = Number(g.vm.mmioRead(g.iommu.mmioBase + 0x20, 4));
    g.vm.mmioWrite(g.iommu.mmioBase + 0x20, 4, BigInt(cr0 & ~0b100));
    const stag = g.fault(g.device, USER_VA + PAGE)!;
    g.bed.poll();
    g.vm.mmioWrite(g.iommu.mmioBase + 0x20, 4, BigInt(cr0));
    expect(g.requests()).toEqual([expect.objectContaining({ group: stag, name: "F_TRANSLATION" })]);
    expect(g.device.pageRequestStatus(stag)).toBe("waiting");
  });

  it("judges CD.S as §5.5 does: ILLEGAL on a terminate-only SMMU and under S1STALLD, required where stalls are forced", () => {
    const words = encodeCd({ V: 1, AA64: 1, A: 1, R: 1, T0SZ: 16, EPD1: 1, IPS: 5, TTB0: 0x1000, S: 1 });
    const withStall = (model: number) => smmuFeatures(hostConfig({ idr0: { STALL_MODEL: model } }).idr);
    expect(decodeCdSettings(words, withStall(1))).toBe(0x0a);
    expect(decodeCdSettings(words, withStall(0), true)).toBe(0x0a);
    expect(decodeCdSettings(words, withStall(0))).toMatchObject({ stall: true });
    expect(decodeCdSettings(encodeCd({ V: 1, AA64: 1, A: 1, R: 1, T0SZ: 16, EPD1: 1, IPS: 5, TTB0: 0x1000 }), withStall(2))).toBe(0x0a);
  });
});
