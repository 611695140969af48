import { describe, expect, it } from "vitest";
import { err, fromBytes, Perm, unwrap, type VirtualMachine } from "@viommu/core";
import { encodeCommand } from "../../src/format/command.js";
import { smmuBed } from "../support.js";

const IOVA = 0x10_0000;
const DATA = 0x2000_0000;
/** An opcode the architecture does not define: CERROR_ILL. */
const ILLEGAL = Uint32Array.of(0x7f, 0, 0, 0);

/** Clears the 4 KiB stage-1 leaf of `iova` behind the driver's back (a guest unmap before its TLBI). */
function clearLeaf(vm: VirtualMachine, root: number, iova: number): void {
  let table = root;
  for (const shift of [39, 30, 21]) table = Number(vm.memory.read64(table + (Math.floor(iova / 2 ** shift) % 512) * 8) & 0x0000_ffff_ffff_f000n);
  vm.memory.write64(table + (Math.floor(iova / 4096) % 512) * 8, 0n);
}

function mapped(mode: "nested" | "shadow" = "nested", memoryBytes?: number) {
  const s = smmuBed({ vms: [{ devices: [{ rid: 0x100, guestRid: 0x10 }], ...(memoryBytes !== undefined ? { memoryBytes } : {}) }], mode });
  const domain = unwrap(s.driver.createDomain());
  unwrap(s.driver.attach(0x10, domain));
  unwrap(s.driver.map(domain, IOVA, DATA, 0x4000, Perm.ReadWrite));
  // The device's DMA fills the host IOTLB with the translations.
  for (let p = 0; p < 4; p++) expect(s.device.read(IOVA + p * 0x1000, 4).ok).toBe(true);
  const info = s.driver.domainInfo(domain)!;
  return { ...s, domain, asid: info.asid, root: info.root };
}

function tlbiVa(asid: number, iova: number): Uint32Array {
  return encodeCommand("CMD_TLBI_NH_VA", { ASID: asid, Leaf: 1, Addr: BigInt(iova) });
}

describe("a command error never loses the invalidations issued before it", () => {
  it("TLBIs ahead of an illegal command reach the host: after Linux's skip-and-acknowledge recovery the unmapped page faults", () => {
    const s = mapped();
    for (let p = 0; p < 4; p++) clearLeaf(s.vm, s.root, IOVA + p * 0x1000);
    const before = s.iommu.stats.forwarded;
    // One batch: four TLBIs, an illegal command, then the driver's CMD_SYNC. The SMMU stops at the illegal one;
    // the driver overwrites it with a CMD_SYNC and acknowledges GERROR (arm_smmu_cmdq_skip_err), the SYNC completes.
    unwrap(s.driver.submitCommands([0, 1, 2, 3].map((p) => tlbiVa(s.asid, IOVA + p * 0x1000)).concat([ILLEGAL])));
    expect(s.driver.readEvents()).toMatchObject([{ kind: "command-error", name: "CERROR_ILL" }]);
    for (let p = 0; p < 4; p++) expect(s.device.read(IOVA + p * 0x1000, 4).ok).toBe(false);
    expect(s.iommu.stats.forwarded - before).toBe(4);
  });

  it("a command that cannot be fetched (CERROR_ABT) also lets the TLBIs before it take effect", () => {
    // RAM ends 4 KiB past 1 GiB: a 512-entry CMDQ at 1 GiB has its second half outside guest RAM.
    const s = mapped("nested", 2 ** 30 + 0x1000);
    clearLeaf(s.vm, s.root, IOVA);
    const reg = (o: number) => s.iommu.mmioBase + o;
    s.vm.mmioWrite(reg(0x20), 4, Number(s.vm.mmioRead(reg(0x20), 4)) & ~(1 << 3));
    s.vm.mmioWrite(reg(0x90), 8, BigInt(2 ** 30) | 9n);
    s.vm.mmioWrite(reg(0x98), 4, 255);
    s.vm.mmioWrite(reg(0x9c), 4, 255);
    s.vm.mmioWrite(reg(0x20), 4, Number(s.vm.mmioRead(reg(0x20), 4)) | (1 << 3));
    s.vm.memory.writeWords(2 ** 30 + 255 * 16, tlbiVa(s.asid, IOVA));
    s.vm.mmioWrite(reg(0x98), 4, 257);
    const cons = Number(s.vm.mmioRead(reg(0x9c), 4));
    expect([cons & 0xfffff, (cons >>> 24) & 0x7f]).toEqual([256, 2]);
    expect(s.device.read(IOVA, 4).ok).toBe(false);
  });

  it("a CMD_SYNC completes only once every command before it took effect, across the host's 63-command batches", () => {
    const s = mapped();
    for (let p = 0; p < 4; p++) clearLeaf(s.vm, s.root, IOVA + p * 0x1000);
    // 70 commands: the first 63 go to the host as one batch, the rest with the SYNC.
    const commands = Array.from({ length: 66 }, () => encodeCommand("CMD_TLBI_NH_ASID", { ASID: 0x7777 }));
    commands.push(...[0, 1, 2, 3].map((p) => tlbiVa(s.asid, IOVA + p * 0x1000)));
    unwrap(s.driver.submitCommands(commands));
    for (let p = 0; p < 4; p++) expect(s.device.read(IOVA + p * 0x1000, 4).ok).toBe(false);
  });
});

describe("a forwarded invalidation the host refuses", () => {
  /** Sets STE.EATS = 1 (full ATS) in the guest's STE of StreamID 0x10 and tells the SMMU. */
  function enableAts(s: ReturnType<typeof mapped>): void {
    const ste = s.driver.streamTableBase! + 0x10 * 64;
    s.vm.memory.write32(ste + 8, (s.vm.memory.read32(ste + 8) | (1 << 28)) >>> 0);
    unwrap(s.driver.submitCommands([encodeCommand("CMD_CFGI_STE", { SID: 0x10, Leaf: 1 })]));
  }

  it("becomes CERROR_ILL at the refused entry; the entries before it take effect, forwarded counts only those, the host log says why", () => {
    const s = mapped();
    enableAts(s);
    for (let p = 0; p < 3; p++) clearLeaf(s.vm, s.root, IOVA + p * 0x1000);
    const before = s.iommu.stats.forwarded;
    // Size 53 is permitted to raise CERROR_ILL (IHI0070 §4.5.1); the emulated SMMU leaves it to the host, which
    // refuses it with EIO (arm_vsmmu_validate_user_cmd) together with its whole batch.
    const refused = encodeCommand("CMD_ATC_INV", { SID: 0x10, Size: 53 });
    const cons = Number(s.vm.mmioRead(s.iommu.mmioBase + 0x9c, 4)) & 0xfffff;
    unwrap(s.driver.submitCommands([tlbiVa(s.asid, IOVA), tlbiVa(s.asid, IOVA + 0x1000), refused, tlbiVa(s.asid, IOVA + 0x2000)]));
    const events = s.driver.readEvents();
    expect(events).toMatchObject([{ kind: "command-error", name: "CERROR_ILL" }]);
    // The guest saw the error at the ATC_INV itself: the slot it reported holds that command.
    expect(events[0]!.raw).toEqual([`0x${((BigInt(refused[1]!) << 32n) | BigInt(refused[0]!)).toString(16).padStart(16, "0")}`, `0x${((BigInt(refused[3]!) << 32n) | BigInt(refused[2]!)).toString(16).padStart(16, "0")}`]);
    for (let p = 0; p < 3; p++) expect(s.device.read(IOVA + p * 0x1000, 4).ok).toBe(false);
    // Two TLBIs before the refusal, then (after the guest's recovery) the third and nothing for the refused one.
    expect(s.iommu.stats.forwarded - before).toBe(3);
    const log = s.bed.platform.host.log.entries({ kind: "invalidation-refused" });
    expect(log).toHaveLength(1);
    expect(log[0]).toMatchObject({ vm: s.vm.id, errno: "EIO", source: `smmuv3@0x${s.iommu.mmioBase.toString(16)}` });
    expect(log[0]!.message).toContain("CMD_ATC_INV");
    expect(log[0]!.message).toContain(`0x${(cons + 2).toString(16)}`);
  });

  it("any host refusal (here ENOMEM on the third entry) stops the queue there, whatever the host reports as handled", () => {
    const s = mapped();
    for (let p = 0; p < 4; p++) clearLeaf(s.vm, s.root, IOVA + p * 0x1000);
    const viommu = unwrap(s.v.iommufd.viommu(s.iommu.viommuId!));
    const original = viommu.ops.cacheInvalidate!.bind(viommu.ops);
    // A host that runs what precedes the TLBI of page 2, then fails for lack of memory and reports nothing handled.
    viommu.ops.cacheInvalidate = (array) => {
      for (let i = 0; i < array.entryNum; i++) {
        const words = fromBytes(array.bytes.subarray(i * 16, i * 16 + 16), 0, 128);
        if ((words[0]! & 0xff) !== 0x12 || (words[2]! & 0xffff_f000) >>> 0 !== IOVA + 0x2000) continue;
        if (i > 0) original({ ...array, entryNum: i });
        return { handled: 0, result: err("ENOMEM", "no memory for the command array") };
      }
      return original(array);
    };
    const before = s.iommu.stats.forwarded;
    unwrap(s.driver.submitCommands([0, 1, 2, 3].map((p) => tlbiVa(s.asid, IOVA + p * 0x1000))));
    expect(s.driver.readEvents()).toMatchObject([{ kind: "command-error", name: "CERROR_ILL" }]);
    // Pages 0 and 1 were invalidated before the refusal; the refused TLBI (page 2) was replaced by a SYNC, so page 2
    // keeps its stale translation, and page 3 was invalidated after the recovery.
    expect([0, 1, 2, 3].map((p) => s.device.read(IOVA + p * 0x1000, 4).ok)).toEqual([false, false, true, false]);
    expect(s.iommu.stats.forwarded - before).toBe(3);
    expect(s.bed.platform.host.log.entries({ kind: "invalidation-refused" })).toMatchObject([{ errno: "ENOMEM" }]);
  });
});
