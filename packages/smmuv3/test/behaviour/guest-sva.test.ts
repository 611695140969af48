import { describe, expect, it } from "vitest";
import { decodeLayout, encodeLayout, fromWords64, newEntryDecode, NO_PASID, Perm, toHex64, unwrap, VendorPlugin, type RawBits } from "@viommu/core";
import { Testbed } from "@viommu/conformance";
import { decodeCd, decodeCommand, idr3Layout, LINUX_MAIR_EL1, vmsaStage1Format } from "../../src/format/index.js";
import type { GuestCpuProcess } from "../../src/guest/guest-process.js";
import type { Smmuv3GuestDriver } from "../../src/guest/smmuv3-driver.js";
import { DEFAULT_SMMUV3_HW } from "../../src/hw/smmuv3-hw-config.js";
import { createSmmuv3Unit } from "../../src/hw/smmuv3-unit.js";
import { smmuv3Plugin } from "../../src/plugin.js";

const PAGE = 4096;
const RID = 0x10;
const USER_VA = 0x7f12_3456_7000;
const GPA = 0x2000_0000;

/** SMMUv3 with the host's IDR3.RIL as given. */
function plugin(rangeInvalidation: boolean): VendorPlugin {
  const idr3 = encodeLayout(idr3Layout, { ...decodeLayout(idr3Layout, Uint32Array.of(DEFAULT_SMMUV3_HW.idr[3]!)), RIL: rangeInvalidation ? 1 : 0 })[0]!;
  const config = { ...DEFAULT_SMMUV3_HW, idr: [...DEFAULT_SMMUV3_HW.idr.slice(0, 3), idr3, ...DEFAULT_SMMUV3_HW.idr.slice(4)] };
  const p: VendorPlugin = { ...smmuv3Plugin, createUnit: (host, index) => createSmmuv3Unit(host, index, { config }), register: (c) => void c.register(VendorPlugin, { useValue: p }) };
  return p;
}

/** A nested VM with a 20-bit PASID device; every command batch the driver issues is recorded. */
function svaGuest(rangeInvalidation = true) {
  const bed = unwrap(Testbed.create({ plugin: plugin(rangeInvalidation), vms: [{ devices: [{ rid: 0x100, guestRid: RID, pasidBits: 20 }] }] }));
  const v = bed.vms[0]!;
  const driver = v.drivers[0] as Smmuv3GuestDriver;
  const batches: RawBits[][] = [];
  driver.setImplOps({ getSecondaryCmdq: (_d, commands) => void batches.push([...commands]) });
  const named = (batch: RawBits[]) => batch.map((c) => decodeCommand(c));
  return { bed, v, driver, device: v.devices[0]!.device, memory: v.vm.memory, batches, named };
}

describe("SMMUv3 reference driver: shared virtual addressing with an arm64 process page table", () => {
  it("builds the process's TTBR0 table as arm64 Linux does: 0x00e8…f43 for a written user page, 0x0060…fc3 read-only, PXNTable in table entries", () => {
    const s = svaGuest();
    const p = unwrap(s.driver.createProcess!()) as GuestCpuProcess;
    unwrap(p.map(USER_VA, GPA, PAGE, Perm.ReadWrite));
    unwrap(p.map(USER_VA + PAGE, GPA + PAGE, PAGE, Perm.Read));
    // Walk the four levels by hand: level-0 index bits [47:39], …, level-3 [20:12].
    let table = p.root;
    const entries: string[] = [];
    for (const shift of [39, 30, 21]) {
      const e = s.memory.readWords(table + (Math.floor(USER_VA / 2 ** shift) % 512) * 8, new Uint32Array(2));
      entries.push(toHex64(e)[0]!);
      table = ((e[0]! & 0xfffff000) >>> 0) + (e[1]! & 0xffff) * 2 ** 32;
    }
    for (const e of entries) expect(BigInt(e) & 0xfff0_0000_0000_0fffn).toBe(0x0800_0000_0000_0003n);
    const rw = s.memory.readWords(table + (Math.floor(USER_VA / PAGE) % 512) * 8, new Uint32Array(2));
    const ro = s.memory.readWords(table + (Math.floor((USER_VA + PAGE) / PAGE) % 512) * 8, new Uint32Array(2));
    expect(toHex64(rw)[0]).toBe(`0x00e8${GPA.toString(16).padStart(12, "0").replace(/000$/, "f43")}`);
    expect(toHex64(ro)[0]).toBe(`0x0060${(GPA + PAGE).toString(16).padStart(12, "0").replace(/000$/, "fc3")}`);
    // What an SMMU walking it with a CD of HD = 0 grants: write only where AP[2] is clear.
    const f = vmsaStage1Format({ granuleShift: 12 });
    const d = newEntryDecode();
    f.decodeEntry(rw[0]!, rw[1]!, 1, d);
    expect(d.perms & (Perm.Read | Perm.Write | Perm.Exec)).toBe(Perm.Read | Perm.Write);
    f.decodeEntry(ro[0]!, ro[1]!, 1, d);
    expect(d.perms & (Perm.Read | Perm.Write)).toBe(Perm.Read);
  });

  it("binds with the CD arm_smmu_make_sva_cd writes: T0SZ 16, TG0 4K, WBWA inner shareable walks, EPD1, IPS from the CPU, TTB0 the pgd, MAIR_EL1, the SVA domain's own ASID", () => {
    const s = svaGuest();
    const p = unwrap(s.driver.createProcess!());
    unwrap(s.driver.bindProcess!(RID, 5, p));
    const table = s.driver.cdTableOf(RID)!;
    const l1 = s.memory.readWords(table, new Uint32Array(2));
    const leaf = ((l1[0]! & 0xfffff000) >>> 0) + (l1[1]! & 0xfffff) * 2 ** 32;
    const cd = decodeCd(s.memory.readWords(leaf + 5 * 64, new Uint32Array(16)));
    expect(cd).toMatchObject({ V: 1, T0SZ: 16, TG0: 0, IR0: 1, OR0: 1, SH0: 3, EPD0: 0, EPD1: 1, IPS: 5, AA64: 1, R: 1, A: 1, ASET: 1, HA: 0, HD: 0, S: 0, TTB0: p.root });
    expect((BigInt(cd.MAIR1) << 32n) | BigInt(cd.MAIR0)).toBe(LINUX_MAIR_EL1);
    // The SVA domain's ASID comes from the SMMU's ASID space, not the CPU's: it differs from every DMA domain's.
    const dma = unwrap(s.driver.createDomain());
    expect(cd.ASID).not.toBe(s.driver.domainInfo(dma)!.asid);
    expect(cd.ASID).toBeGreaterThan(0);
  });

  it("shares one SVA domain (one ASID) among every PASID a process is bound at", () => {
    const s = svaGuest();
    const p = unwrap(s.driver.createProcess!());
    unwrap(p.map(USER_VA, GPA, PAGE, Perm.ReadWrite));
    s.memory.writeBytes(GPA, Uint8Array.of(0x5a));
    unwrap(s.driver.bindProcess!(RID, 5, p));
    unwrap(s.driver.bindProcess!(RID, 6, p));
    const r5 = s.device.read(USER_VA, 1, 5);
    const r6 = s.device.read(USER_VA, 1, 6);
    expect([r5.ok && r5.data[0], r6.ok && r6.data[0]]).toEqual([0x5a, 0x5a]);
    s.batches.length = 0;
    unwrap(s.driver.invalidateProcess!(p, USER_VA, PAGE));
    const asids = new Set(s.batches.flat().map((c) => (decodeCommand(c).fields as { ASID?: number }).ASID));
    expect(asids.size).toBe(1);
  });

  it("sends the MMU notifier's invalidation with range invalidation: non-leaf TLBI_NH_VA, TTL 0, a single page widened to two (NUM 0, SCALE 1)", () => {
    const s = svaGuest(true);
    const p = unwrap(s.driver.createProcess!());
    unwrap(s.driver.bindProcess!(RID, 5, p));
    s.batches.length = 0;
    unwrap(s.driver.invalidateProcess!(p, USER_VA, PAGE));
    expect(s.batches.map(s.named)).toEqual([[expect.objectContaining({ name: "CMD_TLBI_NH_VA", fields: expect.objectContaining({ Leaf: 0, TTL: 0, TG: 1, NUM: 0, SCALE: 1, Addr: BigInt(USER_VA) }) })]]);
    s.batches.length = 0;
    unwrap(s.driver.invalidateProcess!(p, USER_VA, 96 * PAGE));
    const cmds = s.batches.flat().map((c) => decodeCommand(c));
    expect(cmds.every((c) => c.name === "CMD_TLBI_NH_VA" && (c.fields as { Leaf: number }).Leaf === 0)).toBe(true);
    expect(cmds.reduce((n, c) => n + ((c.fields as { NUM: number }).NUM + 1) * 2 ** (c.fields as { SCALE: number }).SCALE, 0)).toBe(96);
  });

  it("without range invalidation sends one non-leaf TLBI_NH_VA per page, and TLBI_NH_ASID from CMDQ_MAX_TLBI_OPS (512) pages on", () => {
    const s = svaGuest(false);
    const p = unwrap(s.driver.createProcess!());
    unwrap(s.driver.bindProcess!(RID, 5, p));
    s.batches.length = 0;
    unwrap(s.driver.invalidateProcess!(p, USER_VA, 3 * PAGE));
    expect(s.batches.flat().map((c) => toHex64(c))).toEqual([0, 1, 2].map((i) => {
      const cmd = s.batches.flat()[i]!;
      const f = decodeCommand(cmd).fields as { ASID: number };
      return toHex64(fromWords64([`0x${(BigInt(f.ASID) << 48n | 0x12n).toString(16)}`, `0x${BigInt(USER_VA + i * PAGE).toString(16)}`]));
    }));
    s.batches.length = 0;
    unwrap(s.driver.invalidateProcess!(p, USER_VA, 511 * PAGE));
    const perPage = s.batches.flat().map((c) => decodeCommand(c));
    expect([perPage.length, perPage.every((c) => c.name === "CMD_TLBI_NH_VA")]).toEqual([511, true]);
    s.batches.length = 0;
    unwrap(s.driver.invalidateProcess!(p, USER_VA, 512 * PAGE));
    expect(s.batches.map(s.named)).toEqual([[expect.objectContaining({ name: "CMD_TLBI_NH_ASID" })]]);
  });

  it("frees the SVA domain with a TLBI_NH_ASID when its last binding goes, and the device loses the process", () => {
    const s = svaGuest();
    const p = unwrap(s.driver.createProcess!());
    unwrap(p.map(USER_VA, GPA, PAGE, Perm.ReadWrite));
    unwrap(s.driver.bindProcess!(RID, 5, p));
    unwrap(s.driver.bindProcess!(RID, 6, p));
    s.batches.length = 0;
    unwrap(s.driver.unbindProcess!(RID, 5));
    expect(s.batches.flat().some((c) => decodeCommand(c).name === "CMD_TLBI_NH_ASID")).toBe(false);
    expect(s.device.read(USER_VA, 1, 6).ok).toBe(true);
    unwrap(s.driver.unbindProcess!(RID, 6));
    expect(s.batches.flat().filter((c) => decodeCommand(c).name === "CMD_TLBI_NH_ASID").length).toBe(1);
    expect(s.device.read(USER_VA, 1, 6).ok).toBe(false);
    expect(s.device.read(USER_VA, 1, NO_PASID).ok).toBe(false);
  });
});
