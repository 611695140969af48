import fc from "fast-check";
import { checkProperty } from "../support.js";
import { describe, expect, it } from "vitest";
import { EntryKind, Perm, fromWords64, newEntryDecode, toWords64, type Layout } from "@viommu/core";
import {
  agawFromAw,
  contextEntryHasReservedBits,
  contextEntryLayout,
  ContextTranslationType,
  decodeContextEntry,
  decodePasidDirEntry,
  decodePasidEntry,
  decodeRootEntry,
  decodeSmContextEntry,
  decodeSmRootEntry,
  encodeContextEntry,
  encodePasidDirEntry,
  encodePasidEntry,
  encodeRootEntry,
  encodeSmContextEntry,
  encodeSmRootEntry,
  levelsFromAw,
  pasidDirEntryOffset,
  pasidEntryHasReservedBits,
  pasidEntryLayout,
  pasidEntryOffset,
  rootEntryHasReservedBits,
  rootEntryLayout,
  SlPteFormat,
  smContextEntryHasReservedBits,
  smContextEntryLayout,
  smRootEntryHasReservedBits,
  vtdStructures,
} from "../../src/format/index.js";
import { readJsonGz } from "./fixtures.js";

const hex = (words: readonly bigint[]): string[] => words.map((w) => `0x${w.toString(16).padStart(16, "0")}`);
const ONES = (1n << 64n) - 1n;

describe("legacy root and context entries (VT-d §9.1, §9.3)", () => {
  it("decodes the root entry for bus 2 the real guest wrote", () => {
    expect(decodeRootEntry(fromWords64([0x0399_6001n, 0n]))).toEqual({ P: 1, CTP: 0x0399_6000n });
    expect(hex(toWords64(encodeRootEntry({ P: 1, CTP: 0x0399_6000n })))).toEqual(hex([0x0399_6001n, 0n]));
  });

  /** Context entries QEMU traced for the fixture's devices (translations.json qemu_context_entries). */
  const contexts = [
    { sid: "02:00.0 NVMe with ATS", words: [0x0399_5005n, 0x902n], fields: { P: 1, FPD: 0, TT: ContextTranslationType.DEV_IOTLB, SLPTPTR: 0x0399_5000n, AW: 2, AVAIL: 0, DID: 9 } },
    { sid: "00:06.0", words: [0x0394_1001n, 0x402n], fields: { P: 1, FPD: 0, TT: ContextTranslationType.MULTI_LEVEL, SLPTPTR: 0x0394_1000n, AW: 2, AVAIL: 0, DID: 4 } },
    { sid: "01:00.0", words: [0x0399_1001n, 0x802n], fields: { P: 1, FPD: 0, TT: 0, SLPTPTR: 0x0399_1000n, AW: 2, AVAIL: 0, DID: 8 } },
    {
      sid: "hand-built: FPD, pass-through, AW 3, AVAIL 0xF, DID 0xFFFF",
      words: [0x000f_ffff_ffff_f00bn, 0x0000_0000_00ff_ff7bn],
      fields: { P: 1, FPD: 1, TT: ContextTranslationType.PASS_THROUGH, SLPTPTR: 0x000f_ffff_ffff_f000n, AW: 3, AVAIL: 0xf, DID: 0xffff },
    },
  ];
  for (const c of contexts) {
    it(`decodes and encodes the context entry of ${c.sid}`, () => {
      expect(decodeContextEntry(fromWords64(c.words))).toEqual(c.fields);
      expect(hex(toWords64(encodeContextEntry(c.fields)))).toEqual(hex(c.words));
    });
  }

  it("reads AW as 4-level / 48-bit for the guest's AW = 2", () => {
    expect(levelsFromAw(2)).toBe(4);
    expect(agawFromAw(2)).toBe(48);
    expect(agawFromAw(1)).toBe(39);
    expect(agawFromAw(3)).toBe(57);
  });

  it("has QEMU's reserved masks (root: [11:1] and the whole high qword; context: 0xFF0 and 0xFFFF_FFFF_FF00_0080)", () => {
    expect(hex(toWords64(rootEntryLayout.reservedMask))).toEqual(hex([0xffen, ONES]));
    expect(hex(toWords64(contextEntryLayout.reservedMask))).toEqual(hex([0xff0n, 0xffff_ffff_ff00_0080n]));
  });

  const reservedCases = [
    { what: "root entry with bit 1", check: () => rootEntryHasReservedBits(fromWords64([0x0399_6003n, 0n]), 48), expected: true },
    { what: "root entry with a high-qword bit", check: () => rootEntryHasReservedBits(fromWords64([0x0399_6001n, 1n]), 48), expected: true },
    { what: "root entry CTP bit 48 with HAW 48", check: () => rootEntryHasReservedBits(fromWords64([(1n << 48n) | 1n, 0n]), 48), expected: true },
    { what: "root entry CTP bit 48 with HAW 52", check: () => rootEntryHasReservedBits(fromWords64([(1n << 48n) | 1n, 0n]), 52), expected: false },
    { what: "context entry with bit 4", check: () => contextEntryHasReservedBits(fromWords64([0x0399_5015n, 0x902n]), 48), expected: true },
    { what: "context entry with bit 71", check: () => contextEntryHasReservedBits(fromWords64([0x0399_5005n, 0x982n]), 48), expected: true },
    { what: "context entry with bit 88", check: () => contextEntryHasReservedBits(fromWords64([0x0399_5005n, 0x100_0902n]), 48), expected: true },
    { what: "context entry SLPTPTR above HAW 39", check: () => contextEntryHasReservedBits(fromWords64([(1n << 40n) | 1n, 0x902n]), 39), expected: true },
    { what: "the real NVMe context entry", check: () => contextEntryHasReservedBits(fromWords64([0x0399_5005n, 0x902n]), 48), expected: false },
  ];
  for (const c of reservedCases) {
    it(`${c.expected ? "flags" : "accepts"} ${c.what}`, () => expect(c.check()).toBe(c.expected));
  }
});

interface WalkStep {
  what: "root_entry" | "context_entry" | "slpte";
  addr: string;
  lo?: string;
  hi?: string;
  val?: string;
  level?: number;
}

interface Translation {
  sid: string;
  iova: string;
  at_dump: { fault: string | null; translated: string; page_size: number; read: boolean; write: boolean; domain: number; walk: WalkStep[] };
}

describe("every root, context and second-level entry on the real guest's walks (translations.json)", () => {
  const { translations, rtaddr } = readJsonGz<{ translations: Translation[]; rtaddr: string }>("translations.json.gz");
  const sl = new SlPteFormat({ haw: 48 });
  const out = newEntryDecode();

  it("decodes each step to the address of the next step's table and the translation QEMU made", () => {
    expect(translations).toHaveLength(203);
    for (const t of translations) {
      const walk = t.at_dump.walk;
      const root = fromWords64([walk[0]!.lo!, walk[0]!.hi!]);
      const bus = Number(BigInt(t.sid) >> 8n);
      expect(BigInt(walk[0]!.addr)).toBe(BigInt(rtaddr) + BigInt(16 * bus));
      expect(rootEntryHasReservedBits(root, 48)).toBe(false);
      const r = decodeRootEntry(root);
      expect(r.P).toBe(1);
      const devfn = Number(BigInt(t.sid) & 0xffn);
      expect(BigInt(walk[1]!.addr)).toBe(r.CTP + BigInt(16 * devfn));
      const contextRaw = fromWords64([walk[1]!.lo!, walk[1]!.hi!]);
      expect(contextEntryHasReservedBits(contextRaw, 48)).toBe(false);
      const ctx = decodeContextEntry(contextRaw);
      expect(ctx).toMatchObject({ P: 1, AW: 2, DID: t.at_dump.domain });
      let table = ctx.SLPTPTR;
      let perms: number = Perm.All;
      for (const step of walk.slice(2)) {
        const entryIndex = (BigInt(t.iova) >> BigInt(12 + 9 * (step.level! - 1))) & 0x1ffn;
        expect(BigInt(step.addr)).toBe(table + 8n * entryIndex);
        const v = BigInt(step.val!);
        sl.decodeEntry(Number(v & 0xffffffffn), Number(v >> 32n), step.level!, out);
        perms &= out.perms;
        if (step.level! > 1) {
          expect(out.kind).toBe(EntryKind.Table);
          expect(out.nextLevel).toBe(step.level! - 1);
        } else {
          expect(out.kind).toBe(EntryKind.Leaf);
          expect(out.pageShift).toBe(12);
          expect(BigInt(out.address)).toBe(BigInt(t.at_dump.translated) & ~0xfffn);
        }
        table = BigInt(out.address);
      }
      expect({ read: (perms & Perm.Read) !== 0, write: (perms & Perm.Write) !== 0 }).toEqual({ read: t.at_dump.read, write: t.at_dump.write });
    }
  });
});

const smRoot = { words: [0x1234_5001n, 0xabcd_e001n], fields: { LP: 1, LCTP: 0x1234_5000n, UP: 1, UCTP: 0xabcd_e000n } };

describe("scalable-mode root and context entries, PASID directory and PASID entries (VT-d §9.2, §9.4–9.6)", () => {

  it("decodes a scalable-mode root entry's lower and upper context-table pointers", () => {
    expect(decodeSmRootEntry(fromWords64(smRoot.words))).toEqual(smRoot.fields);
    expect(hex(toWords64(encodeSmRootEntry(smRoot.fields)))).toEqual(hex(smRoot.words));
  });

  it("checks only the half of a scalable-mode root entry the devfn uses", () => {
    const upperBad = fromWords64([0x1234_5001n, 0xabcd_e003n]);
    expect(smRootEntryHasReservedBits(upperBad, 0x7f, 48)).toBe(false);
    expect(smRootEntryHasReservedBits(upperBad, 0x80, 48)).toBe(true);
    expect(smRootEntryHasReservedBits(fromWords64([(1n << 50n) | 1n, 0n]), 0, 48)).toBe(true);
  });

  const smContext = {
    words: [0x0000_0001_2345_6e1fn, 0x1f_ffffn, 0n, 0n],
    fields: { P: 1, FPD: 1, DTE: 1, PASIDE: 1, PRE: 1, PDTS: 7, PASIDDIRPTR: 0x1_2345_6000n, RID_PASID: 0xfffff, RID_PRIV: 1 },
  };

  it("decodes and encodes a scalable-mode context entry", () => {
    expect(decodeSmContextEntry(fromWords64(smContext.words))).toEqual(smContext.fields);
    expect(hex(toWords64(encodeSmContextEntry(smContext.fields)))).toEqual(hex(smContext.words));
  });

  it("has QEMU's scalable-mode context reserved masks (QW0 0x1E0, QW1 0xFFFF_FFFF_FFE0_0000, QW2/QW3 all)", () => {
    expect(hex(toWords64(smContextEntryLayout.reservedMask))).toEqual(hex([0x1e0n, 0xffff_ffff_ffe0_0000n, ONES, ONES]));
    expect(smContextEntryHasReservedBits(fromWords64([0x1n, 0n, 0n, 1n]), 48)).toBe(true);
    expect(smContextEntryHasReservedBits(fromWords64(smContext.words), 48)).toBe(false);
  });

  it("decodes a PASID directory entry and locates PASID 0x12345's entries", () => {
    expect(decodePasidDirEntry(fromWords64([0xfedc_b003n]))).toEqual({ P: 1, FPD: 1, SMPTBLPTR: 0xfedc_b000n });
    expect(hex(toWords64(encodePasidDirEntry({ P: 1, FPD: 1, SMPTBLPTR: 0xfedc_b000n })))).toEqual(hex([0xfedc_b003n]));
    expect(pasidDirEntryOffset(0x12345)).toBe(8 * 0x48d);
    expect(pasidEntryOffset(0x12345)).toBe(64 * 0x05);
  });

  const pasidEntry = {
    words: [0x0000_0000_0399_52e9n, 0x0007_0406_f780_0009n, 0x0000_0007_ffff_f0f7n, 0n, 0n, 0n, 0n, 0n],
    fields: {
      P: 1,
      FPD: 0,
      AW: 2,
      SLEE: 1,
      PGTT: 3,
      SLADE: 1,
      SLPTPTR: 0x0399_5000n,
      DID: 9,
      PWSNP: 1,
      PGSNP: 1,
      CD: 1,
      EMTE: 1,
      EMT: 6,
      PWT: 1,
      PCD: 1,
      PAT: 0x0007_0406,
      SRE: 1,
      ERE: 1,
      FLPM: 1,
      WPE: 1,
      NXE: 1,
      SMEP: 1,
      EAFE: 1,
      FLPTPTR: 0x7_ffff_f000n,
    },
  };

  it("decodes and encodes a 512-bit nested PASID entry with every field set", () => {
    expect(decodePasidEntry(fromWords64(pasidEntry.words))).toEqual(pasidEntry.fields);
    expect(hex(toWords64(encodePasidEntry(pasidEntry.fields)))).toEqual(hex(pasidEntry.words));
  });

  it("reserves PASID-entry bits [11:10], [86:80], [139:136] and QW3..QW7, and pointer bits above HAW", () => {
    const [qw0, qw1, qw2, ...rest] = toWords64(pasidEntryLayout.reservedMask);
    expect(hex([qw0!, qw1!, qw2!])).toEqual(hex([0xc00n, 0x7f_0000n, 0xf00n]));
    expect(rest).toEqual([ONES, ONES, ONES, ONES, ONES]);
    const flptrHigh = fromWords64([0x1n, 0n, 1n << 52n, 0n, 0n, 0n, 0n, 0n]);
    expect(pasidEntryHasReservedBits(flptrHigh, 52)).toBe(true);
    expect(pasidEntryHasReservedBits(fromWords64(pasidEntry.words), 48)).toBe(false);
  });
});

describe("table-entry structure decoders", () => {
  const layouts: [string, Layout][] = [
    ["context-entry", contextEntryLayout],
    ["sm-context-entry", smContextEntryLayout],
    ["pasid-entry", pasidEntryLayout],
  ];
  it("accept any bits of their size without throwing", () => {
    for (const id of ["root-entry", "context-entry", "sm-context-entry", "pasid-dir-entry", "pasid-entry"]) {
      const d = vtdStructures.find((s) => s.id === id)!;
      checkProperty(
        fc.property(fc.array(fc.bigInt({ min: 0n, max: ONES }), { minLength: d.words[0]!, maxLength: d.words[0]! }), (words) => {
          d.decode(fromWords64(words));
        }),
        { numRuns: 50 },
      );
    }
  });

  it("re-encode every non-reserved bit", () => {
    for (const [, layout] of layouts) {
      checkProperty(
        fc.property(fc.array(fc.bigInt({ min: 0n, max: ONES }), { minLength: layout.bits / 64, maxLength: layout.bits / 64 }), (words) => {
          const raw = fromWords64(words);
          const enc = layout === contextEntryLayout ? encodeContextEntry(decodeContextEntry(raw)) : layout === smContextEntryLayout ? encodeSmContextEntry(decodeSmContextEntry(raw)) : encodePasidEntry(decodePasidEntry(raw));
          expect([...enc]).toEqual([...raw].map((w, i) => (w & ~layout.reservedMask[i]!) >>> 0));
        }),
        { numRuns: 50 },
      );
    }
  });

  it("root-entry reports both the legacy and the scalable-mode view", () => {
    const d = vtdStructures.find((s) => s.id === "root-entry")!.decode(fromWords64(smRoot.words));
    expect(d.fields).toEqual({ P: 1, CTP: 0x1234_5000n, LP: 1, LCTP: 0x1234_5000n, UP: 1, UCTP: 0xabcd_e000n });
  });
});
