import { readFileSync } from "node:fs";
import { gunzipSync } from "node:zlib";
import { beforeAll, describe, expect, it } from "vitest";
import { GuestMemory, HostMemory, unwrap, type MappingLeaf, type TableInspector, type TranslationContext, type WalkAnswer, type WalkRequest } from "@viommu/core";
import { encodeCap, sagawFor } from "../../src/format/cap.js";
import { decodeContextEntry, encodeContextEntry } from "../../src/format/context-entry.js";
import { encodeSlPte } from "../../src/format/sl-pte.js";
import { vtdWalkTool } from "../../src/vmm/walk-tool.js";
import { fixturePath, readJsonGz } from "../format/fixtures.js";
import { DATA_GPA, IOVA, mapped, vtdBed } from "../support.js";

interface QemuRead {
  readonly what: "root_entry" | "context_entry" | "slpte";
  readonly addr: string;
  readonly lo?: string;
  readonly hi?: string;
  readonly val?: string;
  readonly level?: number;
}

interface FixtureTranslation {
  readonly sid: string;
  readonly iova: string;
  readonly domain: number;
  readonly at_dump: { readonly fault: string | null; readonly translated?: string; readonly page_size?: number; readonly read?: boolean; readonly write?: boolean; readonly walk?: readonly QemuRead[] };
}

const NAMES = { root_entry: "root entry", context_entry: "context entry", slpte: "SL-PTE" } as const;

/** The real Linux 6.1 guest under QEMU 7.2 (../shared/fixtures/real-guest/vtd-legacy): steps and mappings. */
describe("viommu walk steps and mappings on the real-guest VT-d legacy image", () => {
  let walk: (request: WalkRequest) => WalkAnswer;
  let inspector: TableInspector;
  let translations: readonly FixtureTranslation[];

  beforeAll(() => {
    const memory = new GuestMemory(new HostMemory(), 1, { sizeBytes: 256 * 2 ** 20 });
    memory.loadImage(gunzipSync(readFileSync(fixturePath("memdump-iommu.raw.gz"))));
    const fixture = readJsonGz<{ rtaddr_reg: string; translations: FixtureTranslation[] }>("translations.json.gz");
    translations = fixture.translations;
    walk = unwrap(vtdWalkTool.prepare(memory, { RTADDR: BigInt(fixture.rtaddr_reg) }));
    inspector = unwrap(vtdWalkTool.inspect!(memory, { RTADDR: BigInt(fixture.rtaddr_reg) }));
  });

  it("reads, for every translation, exactly the entries QEMU's walk read: structure, address and raw words, with the level of each SL-PTE", () => {
    expect(translations.length).toBeGreaterThan(100);
    for (const t of translations) {
      const answer = walk({ rid: Number(t.sid), iova: Number(t.iova), write: false });
      expect(answer.ok, `${t.sid} ${t.iova}`).toBe(true);
      const expected = t.at_dump.walk!.map((r) => ({
        what: NAMES[r.what],
        address: Number(r.addr),
        raw: r.val !== undefined ? [BigInt(r.val)] : [BigInt(r.lo!), BigInt(r.hi!)],
        ...(r.level !== undefined ? { level: r.level } : {}),
      }));
      const got = answer.steps!.map((s) => ({ what: s.what, address: s.address, raw: s.raw.map((x) => BigInt(x)), ...(s.level !== undefined ? { level: s.level } : {}) }));
      expect(got, `${t.sid} ${t.iova}`).toEqual(expected);
      const leaf = answer.steps![answer.steps!.length - 1]!;
      expect(leaf.pageSize).toBe(t.at_dump.page_size);
    }
  });

  it("decodes each entry by the specification's field names (P, CTP; P, TT, SLPTPTR, AW, DID; R, W, ADDR)", () => {
    const t = translations[0]!;
    const steps = walk({ rid: Number(t.sid), iova: Number(t.iova), write: false }).steps!;
    expect(steps[0]!.fields).toMatchObject({ P: 1, CTP: expect.stringMatching(/^0x/) });
    const context = steps[1]!;
    const raw = context.raw.map((x) => BigInt(x));
    const words = Uint32Array.of(Number(raw[0]! & 0xffff_ffffn), Number(raw[0]! >> 32n), Number(raw[1]! & 0xffff_ffffn), Number(raw[1]! >> 32n));
    const decoded = decodeContextEntry(words);
    expect(context.fields).toMatchObject({ P: 1, TT: decoded.TT, AW: decoded.AW, DID: t.domain, SLPTPTR: `0x${decoded.SLPTPTR.toString(16)}` });
    expect(steps[steps.length - 1]!.fields).toMatchObject({ R: 1 });
  });

  it("lists every translation QEMU made as a leaf of its device's context, with the output QEMU gave", () => {
    const contexts = inspector.contexts();
    expect(contexts.length).toBeGreaterThan(0);
    const rids = contexts.map((c) => c.rid);
    expect([...rids].sort((a, b) => a - b)).toEqual(rids);
    const leavesOf = new Map<TranslationContext, MappingLeaf[]>();
    for (const c of contexts) {
      const leaves: MappingLeaf[] = [];
      const n = inspector.leaves(c, (l) => leaves.push(l));
      expect(n).toBe(leaves.length);
      for (let i = 1; i < leaves.length; i++) expect(leaves[i]!.iova).toBeGreaterThan(leaves[i - 1]!.iova);
      leavesOf.set(c, leaves);
    }
    for (const t of translations) {
      const c = contexts.find((x) => x.rid === Number(t.sid));
      expect(c, t.sid).toBeDefined();
      expect(c!.domain).toBe(t.domain);
      const iova = Number(t.iova);
      const leaf = leavesOf.get(c!)!.find((l) => l.iova <= iova && iova < l.iova + l.size);
      expect(leaf, `${t.sid} ${t.iova}`).toBeDefined();
      expect(leaf!.output + (iova - leaf!.iova)).toBe(Number(t.at_dump.translated));
      expect([leaf!.size, leaf!.read, leaf!.write]).toEqual([t.at_dump.page_size, t.at_dump.read, t.at_dump.write]);
      expect(leaf!.anomalies).toBeUndefined();
    }
  });
});

describe("viommu walk beyond 2^53 and mappings with anomalies", () => {
  it("walks a 5-level (57-bit) second-level table at an address at or above 2^53, and faults 0x4 beyond the width", () => {
    const b = vtdBed("shadow", "legacy");
    mapped(b, 0x10, IOVA, DATA_GPA, 0x1000);
    const memory = b.bed.vms[0]!.vm.memory;
    const rtaddr = Number(b.device.registers.read(0x20, 8) & ~0xfffn);
    const ctp = Number(memory.read64(rtaddr) & ~0xfffn);
    const entryAt = ctp + 0x10 * 16;
    const context = decodeContextEntry(memory.readWords(entryAt, new Uint32Array(4)));
    // A fifth level above the driver's 4-level table: its entry 0x20 covers [0x20 << 48, 0x21 << 48).
    const top = 0x3f0_0000;
    memory.fill(top, 4096, 0);
    memory.writeWords(top + 0x20 * 8, encodeSlPte({ R: 1, W: 1, ADDR: Number(context.SLPTPTR) }));
    memory.writeWords(entryAt, encodeContextEntry({ ...context, AW: 3, SLPTPTR: BigInt(top) }));
    const cap = encodeCap({ ND: 6, SAGAW: sagawFor([3, 4, 5]), MGAW: 56, SLLPS: 3, PSI: 1, MAMV: 18 });
    const walk = unwrap(vtdWalkTool.prepare(memory, { RTADDR: BigInt(rtaddr), CAP: (BigInt(cap[1]!) << 32n) | BigInt(cap[0]!) }));
    expect(vtdWalkTool.wideAddresses).toBe(true);
    const address = (0x20n << 48n) | BigInt(IOVA + 0x123);
    const a = walk({ rid: 0x10, iova: Number(address), address, write: false });
    expect(a).toMatchObject({ ok: true, output: DATA_GPA + 0x123, pageSize: 4096 });
    expect(a.steps!.filter((s) => s.what === "SL-PTE").map((s) => s.level)).toEqual([5, 4, 3, 2, 1]);
    const beyond = 1n << 57n;
    expect(walk({ rid: 0x10, iova: Number(beyond), address: beyond, write: false })).toMatchObject({ ok: false, fault: { code: 0x4, name: "ADDR_BEYOND_MGAW" } });
    // The 4-level unit (MGAW 47) answers the same address with the width fault.
    const narrow = unwrap(vtdWalkTool.prepare(memory, { RTADDR: BigInt(rtaddr) }));
    expect(narrow({ rid: 0x10, iova: Number(address), address, write: false })).toMatchObject({ ok: false, fault: { code: 0x3 } });
  });

  it("translates a canonical upper-half first-level address and faults 0x80 for a non-canonical one", () => {
    const b = vtdBed("shadow", "scalable");
    mapped(b, 0x10, IOVA, DATA_GPA, 0x1000);
    const memory = b.bed.vms[0]!.vm.memory;
    const r = b.device.registers;
    const walk = unwrap(vtdWalkTool.prepare(memory, { RTADDR: r.read(0x20, 8), CAP: r.read(0x08, 8), ECAP: r.read(0x10, 8) }));
    const plain = walk({ rid: 0x10, iova: IOVA, write: false });
    expect(plain.ok).toBe(true);
    // The PML4 read is the first FL-PTE: copy its entry 0 to entry 256 (bit 47 set, the canonical upper half).
    const pml4 = plain.steps!.find((s) => s.what === "FL-PTE")!;
    expect(pml4.level).toBe(4);
    memory.write64(pml4.address + 256 * 8, BigInt(pml4.raw[0]!));
    const upper = 0xffff_8000_0000_0000n | BigInt(IOVA + 0x456);
    expect(walk({ rid: 0x10, iova: Number(upper), address: upper, write: false })).toMatchObject({ ok: true, output: DATA_GPA + 0x456 });
    const nonCanonical = 0x8000_0000_0010_0000n;
    expect(walk({ rid: 0x10, iova: Number(nonCanonical), address: nonCanonical, write: false })).toMatchObject({ ok: false, fault: { code: 0x80, name: "FS_NON_CANONICAL" } });
    expect(walk({ rid: 0x10, iova: 2 ** 48, write: false })).toMatchObject({ ok: false, fault: { code: 0x80 } });
    // The inspector lists the upper-half alias at its sign-extended address.
    const inspector = unwrap(vtdWalkTool.inspect!(memory, { RTADDR: r.read(0x20, 8), CAP: r.read(0x08, 8), ECAP: r.read(0x10, 8) }));
    const c = inspector.contexts().find((x) => x.rid === 0x10)!;
    expect(c).toMatchObject({ pasid: 0, mode: "first-level" });
    const leaves: MappingLeaf[] = [];
    inspector.leaves(c, (l) => leaves.push(l));
    expect(leaves.map((l) => [l.iova, l.output])).toEqual([
      [IOVA, DATA_GPA],
      [Number(0xffff_8000_0010_0000n), DATA_GPA],
    ]);
  });

  it("flags reserved bits in a paging entry, a table pointer outside RAM, and a context whose SLPTPTR is outside RAM", () => {
    const b = vtdBed("shadow", "legacy");
    mapped(b, 0x10, IOVA, DATA_GPA, 0x3000);
    const memory = b.bed.vms[0]!.vm.memory;
    const RTADDR = b.device.registers.read(0x20, 8);
    const walk = unwrap(vtdWalkTool.prepare(memory, { RTADDR }));
    const steps = walk({ rid: 0x10, iova: IOVA, write: false }).steps!;
    const pte = steps[steps.length - 1]!;
    // An address bit at or above the host address width (48) is reserved (fault 0xC).
    memory.write64(pte.address, BigInt(pte.raw[0]!) | (1n << 50n));
    const l2 = steps.find((s) => s.level === 2)!;
    memory.write64(l2.address + 8, (1n << 40n) | 3n);
    const inspector = unwrap(vtdWalkTool.inspect!(memory, { RTADDR }));
    const c = inspector.contexts().find((x) => x.rid === 0x10)!;
    const leaves: MappingLeaf[] = [];
    inspector.leaves(c, (l) => leaves.push(l));
    expect(leaves[0]).toMatchObject({ iova: IOVA, anomalies: ["reserved bits set (fault 0xC)"] });
    expect(leaves[1]).toMatchObject({ iova: IOVA + 0x1000, output: DATA_GPA + 0x1000 });
    expect(leaves.find((l) => l.anomalies?.[0]?.startsWith("table pointer 0x10000000000 outside guest RAM"))).toMatchObject({ size: 0x20_0000 });
    // The context's table moved out of RAM.
    const ctp = Number(memory.read64(Number(RTADDR & ~0xfffn)) & ~0xfffn);
    const entry = decodeContextEntry(memory.readWords(ctp + 0x10 * 16, new Uint32Array(4)));
    memory.writeWords(ctp + 0x10 * 16, encodeContextEntry({ ...entry, SLPTPTR: 1n << 44n }));
    const moved = unwrap(vtdWalkTool.inspect!(memory, { RTADDR })).contexts().find((x) => x.rid === 0x10)!;
    expect(moved.anomalies).toEqual(["SLPTPTR 0x100000000000 outside guest RAM"]);
  });
});
