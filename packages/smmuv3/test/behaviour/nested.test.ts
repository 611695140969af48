import { describe, expect, it } from "vitest";
import { err, IoasMapFlag, IommufdObjectType, Perm, unwrap } from "@viommu/core";
import { decodeEvent, decodeSte, encodeCommand, EventType, SteConfig, STE_NESTING_ALLOWED_MASK } from "../../src/format/index.js";
import { VEVENTQ_DEPTH } from "../../src/vmm/nested-host.js";
import { smmuBed } from "../support.js";

const IOVA = 0x10_0000;
const DATA = 0x2000_0000;

function mapped() {
  const s = smmuBed();
  const domain = unwrap(s.driver.createDomain());
  unwrap(s.driver.attach(0x10, domain));
  unwrap(s.driver.map(domain, IOVA, DATA, 0x4000, Perm.ReadWrite));
  return { ...s, domain };
}

describe("nested SMMUv3: the guest's STE on the host", () => {
  it("installs the guest's STE, reduced to the nesting-allowed fields, as the host's nested STE on CFGI_STE", () => {
    const s = mapped();
    const cdTable = s.driver.cdTableOf(0x10)!;
    const vste = s.iommu.hostVste(0x10)!;
    for (let i = 0; i < 4; i++) expect(vste[i]! & ~STE_NESTING_ALLOWED_MASK[i]!).toBe(0);
    expect(decodeSte(s.unit.steOf(0x100)!)).toMatchObject({ V: 1, Config: SteConfig.Nested, S1ContextPtr: cdTable, S1DSS: 2, MEV: 1 });
  });

  it("applies GBPA while the guest's SMMU is disabled: bypass through stage 2, or abort once GBPA.ABORT is updated", () => {
    const s = smmuBed({ vms: [{ devices: [{ rid: 0x100, guestRid: 0x10 }] }], noInit: true });
    s.vm.memory.write32(DATA, 0x1234_5678);
    expect(s.device.read(DATA, 4)).toMatchObject({ ok: true });
    expect(decodeSte(s.unit.steOf(0x100)!).Config).toBe(SteConfig.S2Translate);
    s.vm.mmioWrite(s.iommu.mmioBase + 0x44, 4, 1 << 20); // no UPDATE: ignored
    expect(s.device.read(DATA, 4).ok).toBe(true);
    s.vm.mmioWrite(s.iommu.mmioBase + 0x44, 4, (1 << 31) | (1 << 20));
    expect(s.device.read(DATA, 4).ok).toBe(false);
    expect(decodeSte(s.unit.steOf(0x100)!).Config).toBe(SteConfig.Abort);
  });

  it("aborts a stream whose guest STE has a reserved Config (0b0xx behaves as abort): the host gets an abort vSTE", () => {
    const s = mapped();
    const ste = s.driver.streamTableBase! + 0x10 * 64;
    s.vm.memory.write32(ste, (s.vm.memory.read32(ste) & ~0xe) | (0b010 << 1));
    unwrap(s.driver.submitCommands([encodeCommand("CMD_CFGI_STE", { SID: 0x10, Leaf: 1 })]));
    expect([...s.iommu.hostVste(0x10)!]).toEqual([1, 0, 0, 0]);
    expect(decodeSte(s.unit.steOf(0x100)!).Config).toBe(SteConfig.Abort);
    expect(s.device.read(IOVA, 4).ok).toBe(false);
    s.bed.poll();
    expect(s.driver.readEvents()).toEqual([]);
  });

  it("blocks a stream whose guest STE is ILLEGAL (S1CDMax beyond SSIDSIZE): the host gets a V=0 vSTE", () => {
    const s = mapped();
    const ste = s.driver.streamTableBase! + 0x10 * 64;
    s.vm.memory.write32(ste + 4, (s.vm.memory.read32(ste + 4) & 0x07ff_ffff) | (31 << 27));
    unwrap(s.driver.submitCommands([encodeCommand("CMD_CFGI_STE", { SID: 0x10, Leaf: 1 })]));
    expect([...s.iommu.hostVste(0x10)!]).toEqual([0, 0, 0, 0]);
    expect(s.device.read(IOVA, 4).ok).toBe(false);
  });
});

describe("nested SMMUv3: a configuration the host refuses", () => {
  it("fails the CFGI_STE with CERROR_ILL (as QEMU's smmuv3-accel does), blocks the stream and writes configuration-refused", () => {
    const s = mapped();
    expect(s.device.read(IOVA, 4).ok).toBe(true);
    const viommu = unwrap(s.v.iommufd.viommu(s.iommu.viommuId!));
    const original = viommu.ops.allocDomainNested!.bind(viommu.ops);
    viommu.ops.allocDomainNested = () => {
      viommu.ops.allocDomainNested = original;
      return err("ENOMEM", "no memory for the nested domain");
    };
    // The guest changes its STE (S1CIR) and tells the SMMU.
    const ste = s.driver.streamTableBase! + 0x10 * 64;
    s.vm.memory.write32(ste + 8, s.vm.memory.read32(ste + 8) ^ (0b11 << 2));
    unwrap(s.driver.submitCommands([encodeCommand("CMD_CFGI_STE", { SID: 0x10, Leaf: 1 })]));
    expect(s.driver.readEvents()).toMatchObject([{ kind: "command-error", name: "CERROR_ILL" }]);
    expect(s.bed.platform.host.log.entries({ kind: "configuration-refused" })).toMatchObject([{ vm: s.vm.id, errno: "ENOMEM" }]);
    expect([...s.iommu.hostVste(0x10)!]).toEqual([0, 0, 0, 0]);
    expect(s.device.read(IOVA, 4).ok).toBe(false);
  });

  it("gives the host EATS as its effective value: 0b11 behaves as 0b00 (no DPT), which the host would otherwise refuse", () => {
    const s = mapped();
    const ste = s.driver.streamTableBase! + 0x10 * 64;
    s.vm.memory.write32(ste, s.vm.memory.read32(ste) | (0b11 << 4));
    s.vm.memory.write32(ste + 8, (s.vm.memory.read32(ste + 8) | (0b11 << 28) | 0b11) >>> 0);
    unwrap(s.driver.submitCommands([encodeCommand("CMD_CFGI_STE", { SID: 0x10, Leaf: 1 })]));
    expect(s.driver.readEvents()).toEqual([]);
    expect(decodeSte(Uint32Array.of(...s.iommu.hostVste(0x10)!, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0))).toMatchObject({ Config: SteConfig.S1Translate, S1Fmt: 3, S1DSS: 3, EATS: 0 });
    expect(s.device.read(IOVA, 4).ok).toBe(true);
  });
});

describe("nested SMMUv3: events", () => {
  it("delivers stage-1 faults to the guest's event queue with its StreamID, and keeps stage-2 faults on the host", () => {
    const s = mapped();
    expect(s.device.read(IOVA + 0x10_0000, 4).ok).toBe(false);
    s.bed.poll();
    const evs = s.driver.readEvents();
    expect(evs).toEqual([expect.objectContaining({ kind: "dma-fault", code: EventType.F_TRANSLATION, name: "F_TRANSLATION", rid: 0x10, address: IOVA + 0x10_0000, write: false })]);
    // Take the data page away from the VM's stage 2: the walk now fails at stage 2.
    const ctx = s.v.iommufd;
    const mem = s.vm.memory;
    unwrap(ctx.ioasUnmap({ ioasId: s.v.ioasId, iova: 0, length: mem.sizeBytes }));
    const flags = IoasMapFlag.FIXED_IOVA | IoasMapFlag.READABLE | IoasMapFlag.WRITEABLE;
    unwrap(ctx.ioasMap({ ioasId: s.v.ioasId, flags, memory: mem, gpa: 0, length: DATA, iova: 0 }));
    unwrap(ctx.ioasMap({ ioasId: s.v.ioasId, flags, memory: mem, gpa: DATA + 0x20_0000, length: mem.sizeBytes - DATA - 0x20_0000, iova: DATA + 0x20_0000 }));
    expect(s.device.write(IOVA, Uint8Array.of(1)).ok).toBe(false);
    s.bed.poll();
    expect(s.driver.readEvents()).toEqual([]);
    const host = decodeEvent(s.unit.hostEvents.at(-1)!);
    expect(host).toMatchObject({ name: "F_TRANSLATION", fields: { StreamID: 0x100, S2: 1, CLASS: 2, RnW: 0, IPA: DATA } });
  });

  it("reports an invalid CD to the guest as C_BAD_CD, and keeps using a cached CD until CFGI_CD reaches the host", () => {
    const s = mapped();
    const cd = s.driver.cdTableOf(0x10)!;
    expect(s.device.read(IOVA, 4).ok).toBe(true);
    const dw0 = s.vm.memory.read32(cd);
    s.vm.memory.write32(cd, dw0 & ~(1 << 31));
    s.driver.flush(s.domain);
    expect(s.device.read(IOVA, 4).ok).toBe(true);
    unwrap(s.driver.submitCommands([encodeCommand("CMD_CFGI_CD", { SID: 0x10, SSID: 0, Leaf: 1 })]));
    expect(s.device.read(IOVA, 4).ok).toBe(false);
    s.bed.poll();
    expect(s.driver.readEvents()).toEqual([expect.objectContaining({ kind: "dma-fault", code: EventType.C_BAD_CD, name: "C_BAD_CD", rid: 0x10 })]);
  });

  it("shows events the host lost (vEVENTQ overflow) as the guest's EVTQ_PROD.OVFLG", () => {
    const s = smmuBed({ vms: [{ devices: [{ rid: 0x100, guestRid: 0x10 }] }], guest: { eventLogEntries: 4096 } });
    const domain = unwrap(s.driver.createDomain());
    unwrap(s.driver.attach(0x10, domain));
    for (let i = 0; i < VEVENTQ_DEPTH + 20; i++) s.device.read(0x4000_0000 + i * 4096, 4);
    s.bed.poll();
    expect(s.driver.readEvents().length).toBe(VEVENTQ_DEPTH);
    expect(s.driver.takeOverflow()).toBe(true);
    expect(s.driver.takeOverflow()).toBe(false);
  });
});

describe("nested SMMUv3: forwarded invalidations", () => {
  it("turns a command the host refuses into CERROR_ILL at that command, which the guest skips and recovers from", () => {
    const s = mapped();
    // Pull the vDEVICE from under the VMM: the host no longer knows vSID 0x10.
    const vdev = s.v.iommufd.list(IommufdObjectType.VDEVICE)[0]!;
    unwrap(s.v.iommufd.destroy(vdev.id));
    const cfgi = encodeCommand("CMD_CFGI_CD", { SID: 0x10, SSID: 0, Leaf: 1 });
    unwrap(s.driver.submitCommands([encodeCommand("CMD_TLBI_NH_ASID", { ASID: 1 }), cfgi, encodeCommand("CMD_TLBI_NH_ASID", { ASID: 2 })]));
    const errors = s.driver.readEvents().filter((e) => e.kind === "command-error");
    expect(errors).toEqual([expect.objectContaining({ code: 1, name: "CERROR_ILL", raw: ["0x0000001000000005", "0x0000000000000001"] })]);
    expect(s.iommu.stats.forwarded).toBeGreaterThan(0);
  });

  it("fails the CMD_SYNC after an ATC_INV to a stream without ATS with CERROR_ATC_INV_SYNC, and completes the retried SYNC", () => {
    const s = mapped();
    unwrap(s.driver.submitCommands([encodeCommand("CMD_ATC_INV", { SID: 0x10, Size: 52 })]));
    const errors = s.driver.readEvents().filter((e) => e.kind === "command-error");
    expect(errors).toEqual([expect.objectContaining({ code: 3, name: "CERROR_ATC_INV_SYNC" })]);
    expect(decodeSyncOpcode(errors[0]!.raw[0]!)).toBe(0x46);
    expect(s.vm.mmioRead(s.iommu.mmioBase + 0x9c, 4) >> 24n).toBe(3n);
  });
});

function decodeSyncOpcode(word: string): number {
  return Number(BigInt(word) & 0xffn);
}
