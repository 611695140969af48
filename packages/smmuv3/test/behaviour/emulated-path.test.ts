import { describe, expect, it } from "vitest";
import { newWalkResult, NO_PASID, Perm, unwrap } from "@viommu/core";
import { EventClass, EventType } from "../../src/format/event-record.js";
import { registerByName } from "../../src/format/register-map.js";
import { smmuBed } from "../support.js";

const SID = 0x28;
const IOVA = 0x40_0000;
const DATA = 0x2000_0000;

/** A VMM-emulated device at StreamID 0x28 with one read-write and one read-only page mapped by the guest driver. */
function emulated(variant?: string) {
  const s = smmuBed({ vms: [{ devices: [{ rid: 0x100, guestRid: 0x10 }] }], ...(variant !== undefined ? { guest: { variant } } : {}) });
  const domain = unwrap(s.driver.createDomain());
  unwrap(s.driver.attach(SID, domain));
  unwrap(s.driver.map(domain, IOVA, DATA, 0x1000, Perm.ReadWrite));
  unwrap(s.driver.map(domain, IOVA + 0x1000, DATA + 0x1000, 0x1000, Perm.Read));
  const out = newWalkResult();
  const translate = (iova: number, write = false, pasid = NO_PASID) => {
    s.iommu.translateEmulated(SID, pasid, iova, write, out);
    return out;
  };
  const events = () => s.driver.readEvents();
  const cd = s.driver.cdTableOf(SID)!;
  const ste = s.driver.streamTableBase! + SID * 64;
  return { ...s, domain, translate, events, cd, ste };
}

/** The stage-1 leaf of an IOVA in the driver's table (4K granule, 4 levels). */
function leafAddress(s: ReturnType<typeof emulated>, iova: number): number {
  let table = s.driver.domainInfo(s.domain)!.root;
  for (const shift of [39, 30, 21]) {
    const e = s.vm.memory.read64(table + (Math.floor(iova / 2 ** shift) % 512) * 8);
    table = Number(e & 0x0000_ffff_ffff_f000n);
  }
  return table + (Math.floor(iova / 4096) % 512) * 8;
}

describe("the VMM's emulated-device path walks the guest's tables", () => {
  it("translates to the GPA the guest mapped, with the page's permissions", () => {
    const s = emulated();
    expect(s.translate(IOVA + 0x123)).toMatchObject({ ok: true, output: DATA + 0x123, pageShift: 12 });
    expect(s.translate(IOVA + 0x1123).perms & Perm.Write).toBe(0);
    expect(s.events()).toEqual([]);
  });

  it("records F_TRANSLATION for an unmapped IOVA, with StreamID, InputAddr, RnW and CLASS IN", () => {
    const s = emulated();
    expect(s.translate(IOVA + 0x8000, true).ok).toBe(false);
    const [e] = s.events();
    expect(e).toMatchObject({ kind: "dma-fault", code: EventType.F_TRANSLATION, rid: SID, address: IOVA + 0x8000, write: true });
  });

  it("records F_PERMISSION for a write to a read-only page", () => {
    const s = emulated();
    expect(s.translate(IOVA + 0x1000, true).ok).toBe(false);
    expect(s.events()).toEqual([expect.objectContaining({ code: EventType.F_PERMISSION, name: "F_PERMISSION", write: true })]);
  });

  it("records F_ACCESS for a leaf whose access flag is clear", () => {
    const s = emulated();
    const leaf = leafAddress(s, IOVA);
    s.vm.memory.write32(leaf, s.vm.memory.read32(leaf) & ~(1 << 10));
    expect(s.translate(IOVA).ok).toBe(false);
    expect(s.events()).toEqual([expect.objectContaining({ code: EventType.F_ACCESS, name: "F_ACCESS" })]);
  });

  it("fails a transfer translated to where no memory answers, at its target, and records nothing (the walk succeeded)", () => {
    // Found by difftest (seed 4000, cases 819, 2840, 6931): a leaf pointing past RAM let the access reach guest memory
    // outside it, an exception out of guest input. The SMMU translated; the access then aborts at its target (as
    // QEMU's edu transfer does there), and no event is recorded: every event record is for a failed translation
    // (IHI 0070 7.3) and none failed.
    const s = emulated();
    unwrap(s.driver.map(s.domain, IOVA + 0x3000, 0x2_0000_0000, 0x1000, Perm.ReadWrite));
    expect(s.vm.memory.contains(0x2_0000_0000)).toBe(false);
    expect(s.translate(IOVA + 0x3010).ok).toBe(false);
    expect(s.translate(IOVA + 0x3010, true).ok).toBe(false);
    expect(s.events()).toEqual([]);
    expect(s.translate(IOVA + 0x10).ok).toBe(true);
  });

  it("records F_ADDR_SIZE for an output address beyond the CD's IPS", () => {
    const s = emulated();
    unwrap(s.driver.map(s.domain, IOVA + 0x2000, 0x1_0000_0000, 0x1000, Perm.ReadWrite));
    const hi = s.vm.memory.read32(s.cd + 4);
    s.vm.memory.write32(s.cd + 4, hi & ~0x7); // IPS 0: 32-bit output
    expect(s.translate(IOVA + 0x2000).ok).toBe(false);
    expect(s.events()).toEqual([expect.objectContaining({ code: EventType.F_ADDR_SIZE, name: "F_ADDR_SIZE" })]);
  });

  it("records F_WALK_EABT (CLASS TT, with the fetch address) when a table lies outside guest RAM", () => {
    const s = emulated();
    s.vm.memory.write32(s.cd + 8, 0);
    s.vm.memory.write32(s.cd + 12, 0x2); // TTB0 = 0x2_0000_0000, beyond the 4 GiB of RAM
    expect(s.translate(IOVA).ok).toBe(false);
    const [e] = s.events();
    expect(e).toMatchObject({ code: EventType.F_WALK_EABT, name: "F_WALK_EABT", rid: SID, address: IOVA });
    const raw = e!.raw.map((w) => BigInt(w));
    expect(Number((raw[1]! >> 40n) & 3n)).toBe(EventClass.TT);
    expect(raw[3]! & 0x000f_ffff_ffff_fff8n).toBe(0x2_0000_0000n);
  });

  it("records C_BAD_CD for an invalid CD, and terminates a reserved STE Config (0b001–0b011) as abort without a record", () => {
    const s = emulated();
    s.vm.memory.write32(s.cd, s.vm.memory.read32(s.cd) & ~(1 << 31));
    expect(s.translate(IOVA).ok).toBe(false);
    // IHI0070 §5.2 STE.Config: 0b0xx is Reserved and behaves as 0b000, abort with no event recorded.
    for (const config of [0b001, 0b010, 0b011]) {
      s.vm.memory.write32(s.ste, (s.vm.memory.read32(s.ste) & ~0xe) | (config << 1));
      expect(s.translate(IOVA).ok).toBe(false);
    }
    expect(s.events().map((e) => e.name)).toEqual(["C_BAD_CD"]);
  });

  it("ignores S1Fmt and S1DSS without substreams (S1CDMax 0), and takes the reserved S1Fmt 0b11 as linear", () => {
    const s = emulated();
    const dw0 = s.vm.memory.read32(s.ste);
    // S1Fmt = 0b01 (2-level, 4K leaves) with S1CDMax 0: the context pointer still points at one CD.
    for (const fmt of [0b01, 0b10, 0b11]) {
      s.vm.memory.write32(s.ste, (dw0 & ~0x30) | (fmt << 4));
      expect(s.translate(IOVA).ok).toBe(true);
    }
    s.vm.memory.write32(s.ste + 8, (s.vm.memory.read32(s.ste + 8) & ~0b11) | 0b11);
    expect(s.translate(IOVA).ok).toBe(true);
    expect(s.events()).toEqual([]);
  });

  it("with substreams: S1DSS 0b11 terminates untagged traffic like 0b00, and SubstreamID 0 under S1DSS = SSID0 is F_STREAM_DISABLED", () => {
    const s = emulated();
    // S1CDMax 1: a linear table of two CDs, CD 0 the driver's.
    s.vm.memory.write32(s.ste + 4, (s.vm.memory.read32(s.ste + 4) & 0x07ff_ffff) | (1 << 27));
    const dw1 = s.vm.memory.read32(s.ste + 8) & ~0b11;
    s.vm.memory.write32(s.ste + 8, dw1 | 0b11);
    expect(s.translate(IOVA).ok).toBe(false);
    s.vm.memory.write32(s.ste + 8, dw1 | 0b10);
    expect(s.translate(IOVA).ok).toBe(true);
    expect(s.translate(IOVA, false, 0).ok).toBe(false);
    expect(s.events().map((e) => e.name)).toEqual(["F_STREAM_DISABLED", "F_STREAM_DISABLED"]);
  });

  it("records F_CD_FETCH when the CD table lies outside guest RAM, and C_BAD_SUBSTREAMID for a SubstreamID with S1CDMax 0", () => {
    const s = emulated();
    expect(s.translate(IOVA, false, 5).ok).toBe(false);
    s.vm.memory.write32(s.ste + 4, 0x2);
    expect(s.translate(IOVA).ok).toBe(false);
    expect(s.events().map((e) => e.name)).toEqual(["C_BAD_SUBSTREAMID", "F_CD_FETCH"]);
  });

  it("passes a bypass STE through untranslated and terminates an abort STE without a record", () => {
    const s = emulated();
    const dw0 = s.vm.memory.read32(s.ste);
    s.vm.memory.write32(s.ste, (dw0 & ~0xe) | (0b100 << 1));
    expect(s.translate(0x1234_5678)).toMatchObject({ ok: true, output: 0x1234_5678 });
    s.vm.memory.write32(s.ste, (dw0 & ~0xe) | 0);
    expect(s.translate(IOVA).ok).toBe(false);
    expect(s.events()).toEqual([]);
  });

  it("records C_BAD_STREAMID for a StreamID beyond the table only while CR2.RECINVSID is set", () => {
    const s = emulated();
    s.iommu.translateEmulated(0x1_0000, NO_PASID, IOVA, false, newWalkResult());
    expect(s.events().map((e) => e.name)).toEqual(["C_BAD_STREAMID"]);
    s.vm.mmioWrite(s.iommu.mmioBase + registerByName("CR2")!.offset, 4, 0);
    s.iommu.translateEmulated(0x1_0000, NO_PASID, IOVA, false, newWalkResult());
    expect(s.events()).toEqual([]);
  });

  it("does not record translation faults of a CD with R = 0 (the transaction still fails)", () => {
    const s = emulated();
    const hi = s.vm.memory.read32(s.cd + 4);
    s.vm.memory.write32(s.cd + 4, hi & ~(1 << 13));
    expect(s.translate(IOVA + 0x8000).ok).toBe(false);
    expect(s.events()).toEqual([]);
  });

  it("walks a 2-level stream table", () => {
    const s = emulated("2level");
    expect(s.translate(IOVA + 8)).toMatchObject({ ok: true, output: DATA + 8 });
    const cfg = Number(s.vm.mmioRead(s.iommu.mmioBase + 0x88, 4));
    expect({ log2: cfg & 0x3f, split: (cfg >> 6) & 0x1f, fmt: (cfg >> 16) & 3 }).toEqual({ log2: 16, split: 8, fmt: 1 });
  });
});
