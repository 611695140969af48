import { describe, expect, it } from "vitest";
import { GuestMemory, HostMemory, unwrap, type MappingLeaf, type WalkStep } from "@viommu/core";
import { smmuv3Plugin } from "../../src/plugin.js";
import { EventType } from "../../src/format/event-record.js";
import { fixtureBytes, fixtureJson } from "../format/fixtures.js";

interface RecordedRead {
  readonly what: "l1_std" | "ste" | "cd" | "pte";
  readonly addr: string;
  readonly val: string | readonly string[];
  readonly level?: number;
}

interface Recorded {
  readonly sid: string;
  readonly iova: string;
  readonly translated: string;
  readonly at_dump: { readonly fault: string | null; readonly translated: string; readonly page_size: number; readonly asid: number; readonly leaf_pte: string; readonly walk: readonly RecordedRead[] };
}

interface Recording {
  readonly memory_base: string;
  readonly strtab_base: string;
  readonly strtab_base_cfg: string;
  readonly translations: readonly Recorded[];
}

const recording = fixtureJson<Recording>("translations.json");
const registers = { STRTAB_BASE: BigInt(recording.strtab_base), STRTAB_BASE_CFG: BigInt(recording.strtab_base_cfg) };

/** The real guest's RAM (QEMU 7.2 virt, Linux 6.1) from 0x40000000, a private copy per test. */
function image(): GuestMemory {
  const bytes = fixtureBytes("memdump-iommu.raw.gz");
  const memory = new GuestMemory(new HostMemory(), 1, { sizeBytes: bytes.length, base: Number(BigInt(recording.memory_base)) });
  memory.loadImage(bytes);
  return memory;
}

const hex64 = (x: string): string => `0x${BigInt(x).toString(16).padStart(16, "0")}`;
const NAMES: Record<RecordedRead["what"], string> = { l1_std: "L1STD", ste: "STE", cd: "CD", pte: "" };

describe("viommu walk steps, wide addresses and mappings on the real SMMUv3 guest (QEMU's own reads as the reference)", () => {
  const memory = image();
  const walk = unwrap(smmuv3Plugin.walk!.prepare(memory, registers));

  it("every translation QEMU made is reproduced, its steps are exactly the entries QEMU read, named and decoded by IHI0070 / Arm ARM names", () => {
    expect(recording.translations.length).toBe(144);
    for (const t of recording.translations) {
      const answer = walk({ rid: Number(BigInt(t.sid)), iova: Number(BigInt(t.iova)), write: false });
      expect(answer).toMatchObject({ ok: true, output: Number(BigInt(t.translated)), pageSize: t.at_dump.page_size, asid: t.at_dump.asid });
      const steps = answer.steps!;
      expect(steps.map((s) => s.address)).toEqual(t.at_dump.walk.map((r) => Number(BigInt(r.addr))));
      expect(steps.map((s) => s.raw)).toEqual(t.at_dump.walk.map((r) => (typeof r.val === "string" ? [hex64(r.val)] : r.val.map(hex64))));
      t.at_dump.walk.forEach((r, i) => {
        const step: WalkStep = steps[i]!;
        if (r.what !== "pte") return expect(step.what).toBe(NAMES[r.what]);
        // QEMU numbers lookup levels as the Arm ARM does (leaf at 3); the step counts the leaf as level 1.
        expect(step).toMatchObject({ level: 4 - r.level!, stage: 1 });
        expect(step.fields!["lookup level"]).toBe(r.level);
        expect(step.what).toBe(r.level === 3 ? "page descriptor" : "table descriptor");
      });
      const [l1, ste, cd, , , , leaf] = steps;
      expect(l1!.fields).toMatchObject({ Span: expect.any(Number), L2Ptr: expect.any(Number) });
      expect(ste!.fields).toMatchObject({ V: 1, Config: 0b101, S1Fmt: 0, S1CDMax: 0 });
      expect(cd!.fields).toMatchObject({ V: 1, AA64: 1, ASID: t.at_dump.asid, T0SZ: 16, TG0: 0, EPD1: 1 });
      expect(leaf).toMatchObject({ pageSize: t.at_dump.page_size, raw: [hex64(t.at_dump.leaf_pte)] });
      expect(leaf!.fields).toMatchObject({ Valid: 1, Type: 1, AF: 1 });
    }
  });

  it("a 64-bit address beyond TTB0's range, or in TTB1's half while EPD1 disables it, is F_TRANSLATION after the STE and CD are read", () => {
    for (const address of [2n ** 53n, 0x00ff_0000_ffff_f040n, 0xffff_ffff_ffff_f000n, 0x8000_0000_0000_0000n]) {
      const answer = walk({ rid: 0x28, iova: Number(address), address, write: false });
      expect(answer, address.toString(16)).toMatchObject({ ok: false, fault: { code: EventType.F_TRANSLATION, name: "F_TRANSLATION" } });
      expect(answer.steps!.map((s) => s.what)).toEqual(["L1STD", "STE", "CD"]);
    }
    expect(smmuv3Plugin.walk!.wideAddresses).toBe(true);
  });

  it("inspect() lists every stream QEMU translated for, and each recorded translation is one of its leaves", () => {
    const inspector = unwrap(smmuv3Plugin.walk!.inspect!(memory, registers));
    const contexts = inspector.contexts();
    const rids = contexts.map((c) => c.rid);
    expect(rids).toEqual([...rids].sort((a, b) => a - b));
    for (const sid of new Set(recording.translations.map((t) => Number(BigInt(t.sid))))) expect(rids).toContain(sid);
    const leavesOf = new Map<number, MappingLeaf[]>();
    for (const c of contexts) {
      const list: MappingLeaf[] = [];
      inspector.leaves(c, (leaf) => list.push(leaf));
      for (let i = 1; i < list.length; i++) expect(list[i]!.iova).toBeGreaterThan(list[i - 1]!.iova);
      leavesOf.set(c.rid, list);
      expect(c).toMatchObject({ mode: "stage 1" });
      expect(c.anomalies).toBeUndefined();
    }
    for (const t of recording.translations) {
      const iova = Number(BigInt(t.iova));
      const leaf = leavesOf.get(Number(BigInt(t.sid)))!.find((l) => l.iova <= iova && iova < l.iova + l.size);
      expect(leaf, `${t.sid} ${t.iova}`).toBeDefined();
      expect(leaf!.output + (iova - leaf!.iova)).toBe(Number(BigInt(t.translated)));
      expect(leaf!.entryAddress).toBe(Number(BigInt(t.at_dump.walk.at(-1)!.addr)));
    }
  });
});

describe("TTB1's half and top-byte-ignore on the same guest's tables (its CD edited to enable TTB1 over TTB0's tables)", () => {
  const memory = image();
  // SID 0x28's CD: EPD1 cleared, T1SZ = 16, TG1 = 4K (0b10), TBI1 set; TTB1 = TTB0.
  const t = recording.translations.find((x) => x.sid === "0x0028")!;
  const cd = Number(BigInt(t.at_dump.walk.find((r) => r.what === "cd")!.addr));
  const halves = new Uint32Array(2);
  memory.read64Halves(cd, halves);
  const lo = ((halves[0]! & ~(1 << 30) & ~(0x3f << 16) & ~(0b11 << 22)) | (16 << 16) | (0b10 << 22)) >>> 0;
  const hi = (halves[1]! | (1 << (39 - 32))) >>> 0;
  memory.write64Halves(cd, lo, hi);
  memory.read64Halves(cd + 8, halves);
  memory.write64Halves(cd + 16, halves[0]!, halves[1]!);
  const walk = unwrap(smmuv3Plugin.walk!.prepare(memory, registers));
  const iova = Number(BigInt(t.iova));
  const high = 0xffff_0000_0000_0000n + BigInt(iova);

  it("an address with bit 55 set walks TTB1 with the bits below 64 − T1SZ; TBI1 ignores the top byte; a hole between the halves faults", () => {
    const answer = walk({ rid: 0x28, iova: Number(high), address: high, write: false });
    expect(answer).toMatchObject({ ok: true, output: Number(BigInt(t.translated)) });
    expect(answer.steps!.slice(3).map((s) => s.what)).toEqual(["table descriptor", "table descriptor", "table descriptor", "page descriptor"]);
    const tagged = (high & ~(0xffn << 56n)) | (0xa5n << 56n);
    expect(walk({ rid: 0x28, iova: Number(tagged), address: tagged, write: false })).toMatchObject({ ok: true, output: Number(BigInt(t.translated)) });
    const hole = 0xfffe_0000_0000_0000n + BigInt(iova);
    expect(walk({ rid: 0x28, iova: Number(hole), address: hole, write: false })).toMatchObject({ ok: false, fault: { name: "F_TRANSLATION" } });
    // TTB0's half is unchanged.
    expect(walk({ rid: 0x28, iova, write: false })).toMatchObject({ ok: true, output: Number(BigInt(t.translated)) });
  });

  it("inspect() gives TTB1's leaves after TTB0's, at 2^64 − 2^48 and up", () => {
    const inspector = unwrap(smmuv3Plugin.walk!.inspect!(memory, registers));
    const context = inspector.contexts().find((c) => c.rid === 0x28)!;
    const leaves: MappingLeaf[] = [];
    inspector.leaves(context, (l) => leaves.push(l));
    const low = leaves.filter((l) => l.iova < 2 ** 63);
    const upper = leaves.filter((l) => l.iova >= 2 ** 63);
    expect(upper.length).toBe(low.length);
    expect(upper[0]!.iova).toBe(2 ** 64 - 2 ** 48 + low[0]!.iova);
    expect(leaves.indexOf(upper[0]!)).toBe(low.length);
  });
});

describe("inspect() anomalies on the same guest's tables, edited", () => {
  const memory = image();
  const bySid = (sid: string) => recording.translations.find((x) => x.sid === sid)!;
  const steOf = (t: Recorded) => Number(BigInt(t.at_dump.walk.find((r) => r.what === "ste")!.addr));
  const halves = new Uint32Array(2);
  // SID 0x20: STE.S1CDMax 31, beyond the SMMU's SSIDSIZE (20): C_BAD_STE.
  const a = bySid("0x0020");
  memory.read64Halves(steOf(a), halves);
  memory.write64Halves(steOf(a), halves[0]!, (halves[1]! | (31 << 27)) >>> 0);
  // SID 0x28: its leaf PTE pointed outside RAM (0x1000).
  const b = bySid("0x0028");
  const leafAt = Number(BigInt(b.at_dump.walk.at(-1)!.addr));
  memory.read64Halves(leafAt, halves);
  memory.write64Halves(leafAt, ((halves[0]! & 0xfff) | 0x1000) >>> 0, halves[1]! & 0xffff0000);

  it("names an STE the SMMU refuses and a leaf whose output is outside guest RAM", () => {
    const inspector = unwrap(smmuv3Plugin.walk!.inspect!(memory, registers));
    const contexts = inspector.contexts();
    const bad = contexts.find((c) => c.rid === 0x20)!;
    expect(bad.mode).toBe("illegal");
    expect(bad.anomalies![0]).toMatch(/^C_BAD_STE: /);
    const leaves: MappingLeaf[] = [];
    inspector.leaves(contexts.find((c) => c.rid === 0x28)!, (l) => leaves.push(l));
    const outside = leaves.find((l) => l.entryAddress === leafAt)!;
    expect(outside).toMatchObject({ output: 0x1000, anomalies: ["output 0x1000 outside guest RAM"] });
    // The other leaf outside RAM is real: Linux's MSI mapping of the GIC ITS doorbell (GITS_TRANSLATER, 0x08090040 on virt).
    expect(leaves.filter((l) => l.anomalies !== undefined).map((l) => l.anomalies![0])).toEqual(["output 0x1000 outside guest RAM", "output 0x8090000 outside guest RAM"]);
  });
});
