import { describe, expect, it } from "vitest";
import { decodeLayout, encodeLayout, errnoOf, NO_PASID, Perm, unwrap, VendorPlugin } from "@viommu/core";
import { Testbed } from "@viommu/conformance";
import { decodeCd, decodeSte, idr1Layout, l1CdLayout, SteS1Dss, SteS1Fmt, SteConfig } from "../../src/format/index.js";
import { createSmmuv3Unit } from "../../src/hw/smmuv3-unit.js";
import { DEFAULT_SMMUV3_HW } from "../../src/hw/smmuv3-hw-config.js";
import type { Smmuv3GuestDriver } from "../../src/guest/smmuv3-driver.js";
import { smmuv3Plugin } from "../../src/plugin.js";
import { smmuBed } from "../support.js";

const PAGE = 4096;
const IOVA = 0x10_0000;
const GPAS = [0x2000_0000, 0x2010_0000, 0x2020_0000];
const RID = 0x10;

/** A plugin whose host SMMU has `ssidBits` SubstreamID bits. */
function withSsidBits(ssidBits: number): VendorPlugin {
  const idr1 = encodeLayout(idr1Layout, { ...decodeLayout(idr1Layout, Uint32Array.of(DEFAULT_SMMUV3_HW.idr[1]!)), SSIDSIZE: ssidBits })[0]!;
  const config = { ...DEFAULT_SMMUV3_HW, idr: [DEFAULT_SMMUV3_HW.idr[0]!, idr1, ...DEFAULT_SMMUV3_HW.idr.slice(2)] };
  const plugin: VendorPlugin = {
    ...smmuv3Plugin,
    createUnit: (host, index) => createSmmuv3Unit(host, index, { config }),
    register: (container) => void container.register(VendorPlugin, { useValue: plugin }),
  };
  return plugin;
}

/** A VM with a 20-bit PASID device and three domains mapping IOVA to a page each. */
function setup(mode: "nested" | "shadow" = "nested") {
  const s = smmuBed({ mode, vms: [{ devices: [{ rid: 0x100, guestRid: RID, pasidBits: 20 }] }] });
  GPAS.forEach((gpa, i) => s.vm.memory.writeBytes(gpa, Uint8Array.of(0xc0 + i)));
  const domains = GPAS.map((gpa) => {
    const d = unwrap(s.driver.createDomain());
    unwrap(s.driver.map(d, IOVA, gpa, PAGE, Perm.ReadWrite));
    return d;
  });
  const read = (pasid: number): number | undefined => {
    const r = s.device.read(IOVA, 1, pasid);
    return r.ok ? r.data[0] : undefined;
  };
  const steAddress = () => {
    const base = s.driver.streamTableBase!;
    return base + RID * 64;
  };
  const ste = () => decodeSte(s.vm.memory.readWords(steAddress(), new Uint32Array(16)));
  return { ...s, domains, read, ste };
}

describe("SMMUv3 reference driver: PASIDs in the guest's CD table (nested over the stage-2 parent)", () => {
  it("gives a stream a CD table for the SMMU's 20 SubstreamID bits (S1Fmt 64K leaves, S1CDMax 20) when a PASID is attached, with the domain's CD behind an L1CD", () => {
    const s = setup();
    unwrap(s.driver.attach(RID, s.domains[0]!));
    expect(s.ste()).toMatchObject({ Config: SteConfig.S1Translate, S1Fmt: 0, S1CDMax: 0 });
    unwrap(s.driver.attachPasid(RID, 0x8_0001, s.domains[2]!));
    const ste = s.ste();
    expect(ste).toMatchObject({ V: 1, Config: SteConfig.S1Translate, S1Fmt: SteS1Fmt.TwoLevel64K, S1CDMax: 20, S1DSS: SteS1Dss.Ssid0, S1CIR: 1, S1COR: 1, S1CSH: 3 });
    expect(ste.S1ContextPtr).toBe(s.driver.cdTableOf(RID));
    // L1 index 0x200 (SubstreamID >> 10), CD 1 of that 64 KiB leaf.
    const l1 = decodeLayout(l1CdLayout, s.vm.memory.readWords(ste.S1ContextPtr + 0x200 * 8, new Uint32Array(2)));
    expect(l1.V).toBe(1);
    expect(l1.L2Ptr % 0x1_0000).toBe(0);
    const cd = decodeCd(s.vm.memory.readWords(l1.L2Ptr + 1 * 64, new Uint32Array(16)));
    expect(cd).toMatchObject({ V: 1, ASID: s.driver.domainInfo(s.domains[2]!)!.asid, TTB0: s.driver.domainInfo(s.domains[2]!)!.root, T0SZ: 16, AA64: 1, R: 1, A: 1 });
    // CD 0 moved with the stream: the RID still translates through its domain.
    expect([s.read(NO_PASID), s.read(0x8_0001)]).toEqual([0xc0, 0xc2]);
  });

  it("translates the same IOVA per PASID, and a re-attached PASID uses its new domain (CFGI_CD of that SubstreamID reaches the host)", () => {
    const s = setup();
    unwrap(s.driver.attach(RID, s.domains[0]!));
    unwrap(s.driver.attachPasid(RID, 5, s.domains[1]!));
    unwrap(s.driver.attachPasid(RID, 6, s.domains[2]!));
    expect([s.read(NO_PASID), s.read(5), s.read(6)]).toEqual([0xc0, 0xc1, 0xc2]);
    unwrap(s.driver.attachPasid(RID, 5, s.domains[2]!));
    expect([s.read(5), s.read(6)]).toEqual([0xc2, 0xc2]);
  });

  it("reports a detached PASID's DMA as C_BAD_CD naming the SubstreamID, and keeps the other PASIDs and the RID", () => {
    const s = setup();
    unwrap(s.driver.attach(RID, s.domains[0]!));
    unwrap(s.driver.attachPasid(RID, 5, s.domains[1]!));
    unwrap(s.driver.attachPasid(RID, 9, s.domains[2]!));
    unwrap(s.driver.detachPasid(RID, 5));
    expect([s.read(NO_PASID), s.read(5), s.read(9)]).toEqual([0xc0, undefined, 0xc2]);
    s.bed.poll();
    const events = s.driver.readEvents();
    expect(events).toContainEqual(expect.objectContaining({ kind: "dma-fault", name: "C_BAD_CD", rid: RID, pasid: 5 }));
  });

  it("blocks only traffic without a PASID when the RID is detached (S1DSS terminate: F_STREAM_DISABLED), and writes the abort STE once the last PASID goes", () => {
    const s = setup();
    unwrap(s.driver.attach(RID, s.domains[0]!));
    unwrap(s.driver.attachPasid(RID, 3, s.domains[1]!));
    unwrap(s.driver.detach(RID));
    expect(s.ste()).toMatchObject({ Config: SteConfig.S1Translate, S1DSS: SteS1Dss.Terminate, S1CDMax: 20 });
    expect([s.read(NO_PASID), s.read(3)]).toEqual([undefined, 0xc1]);
    s.bed.poll();
    expect(s.driver.readEvents()).toContainEqual(expect.objectContaining({ name: "F_STREAM_DISABLED", rid: RID }));
    unwrap(s.driver.detachPasid(RID, 3));
    expect(s.ste()).toMatchObject({ V: 1, Config: SteConfig.Abort });
    expect(s.read(3)).toBeUndefined();
  });

  it("attaches a PASID of a blocked stream (S1DSS terminate from the start) and refuses PASID 0 and one beyond the table (EINVAL)", () => {
    const s = setup();
    unwrap(s.driver.attachPasid(RID, 2, s.domains[1]!));
    expect(s.ste()).toMatchObject({ Config: SteConfig.S1Translate, S1DSS: SteS1Dss.Terminate });
    expect([s.read(NO_PASID), s.read(2)]).toEqual([undefined, 0xc1]);
    expect(errnoOf(s.driver.attachPasid(RID, 0, s.domains[0]!))).toBe("EINVAL");
    expect(errnoOf(s.driver.attachPasid(RID, 2 ** 20, s.domains[0]!))).toBe("EINVAL");
  });

  it("sizes the table linear on an SMMU with 10 SubstreamID bits (S1Fmt 0, S1CDMax 10, 1024 CDs)", () => {
    const bed = unwrap(Testbed.create({ plugin: withSsidBits(10), vms: [{ devices: [{ rid: 0x100, guestRid: RID, pasidBits: 20 }] }] }));
    const v = bed.vms[0]!;
    const driver = v.drivers[0]! as Smmuv3GuestDriver;
    const d = unwrap(driver.createDomain());
    unwrap(driver.map(d, IOVA, GPAS[1]!, PAGE, Perm.ReadWrite));
    v.vm.memory.writeBytes(GPAS[1]!, Uint8Array.of(0x77));
    unwrap(driver.attachPasid(RID, 1023, d));
    const ste = decodeSte(v.vm.memory.readWords(driver.streamTableBase! + RID * 64, new Uint32Array(16)));
    expect(ste).toMatchObject({ S1Fmt: SteS1Fmt.Linear, S1CDMax: 10 });
    const r = v.devices[0]!.device.read(IOVA, 1, 1023);
    expect(r.ok && r.data[0]).toBe(0x77);
    expect(errnoOf(driver.attachPasid(RID, 1024, d))).toBe("EINVAL");
    bed.dispose();
  });

  it("has no PASIDs in shadow mode, where the emulated SMMU offers no SubstreamIDs (EOPNOTSUPP)", () => {
    const s = setup("shadow");
    expect(errnoOf(s.driver.attachPasid(RID, 1, s.domains[0]!))).toBe("EOPNOTSUPP");
  });
});
