import { describe, expect, it } from "vitest";
import fc from "fast-check";
import { fromWords64, toHex64 } from "@viommu/core";
import {
  CFGI_ALL_RANGE,
  CommandOpcode,
  atcInvAddressRange,
  cfgiSteRangeStreams,
  commandLayouts,
  commandName,
  commandSetsUndefinedBits,
  decodeCommand,
  encodeCommand,
  tlbiAddressRange,
  VIOMMU_INVALIDATE_COMMANDS,
  type CommandName,
} from "../../src/format/index.js";
import { fixtureJsonLines } from "./fixtures.js";

interface FixtureCommand {
  readonly slot: number;
  readonly words: [string, string];
  readonly opcode: number;
  readonly opcode_name: string;
  readonly [key: string]: unknown;
}

const fixtureCommands = fixtureJsonLines<FixtureCommand>("cmdq-commands.jsonl.gz");

/**
 * How QEMU's trace names each field, and ours (spec §1.8 names). QEMU prints asid/vmid for every TLBI and leaf
 * for PREFETCH_CONFIG from its generic extractors; for commands that do not define those fields the trace value
 * must be 0 (and is then not a field here).
 */
const FIELD_NAMES: Record<string, string> = {
  sid: "SID",
  range: "Range",
  leaf: "Leaf",
  cs: "CS",
  msh: "MSH",
  msiattr: "MSIAttr",
  msidata: "MSIData",
  msiaddr: "MSIAddress",
  asid: "ASID",
  vmid: "VMID",
};
const NOT_FIELDS = new Set(["slot", "words", "opcode", "opcode_name", "trace_seq", "matches_trace"]);

describe("command queue entries against a real Linux guest's CMDQ (spec §1.8)", () => {
  it("has the commands the fixture README describes", () => {
    expect(fixtureCommands).toHaveLength(859);
    expect(new Set(fixtureCommands.map((c) => c.opcode_name))).toEqual(
      new Set(["CMD_CFGI_STE_RANGE", "CMD_SYNC", "CMD_TLBI_NSNH_ALL", "CMD_CFGI_STE", "CMD_PREFETCH_CONFIG", "CMD_TLBI_NH_ASID"]),
    );
  });

  it("agrees with QEMU's decoding of every command: opcode name and every field", () => {
    for (const c of fixtureCommands) {
      const decoded = decodeCommand(fromWords64(c.words));
      expect(decoded.name, `slot ${c.slot}`).toBe(c.opcode_name);
      expect(decoded.code).toBe(c.opcode);
      const fields = decoded.fields as Record<string, number | bigint>;
      for (const [key, value] of Object.entries(c)) {
        if (NOT_FIELDS.has(key)) continue;
        const ours = FIELD_NAMES[key];
        expect(ours, `unmapped trace field ${key}`).toBeDefined();
        const expected = typeof value === "string" ? BigInt(value) : BigInt(value as number);
        if (ours! in fields) expect(BigInt(fields[ours!]!), `slot ${c.slot} ${key}`).toBe(expected);
        else expect(expected, `slot ${c.slot}: ${key} is not a field of ${c.opcode_name}`).toBe(0n);
      }
      expect(commandSetsUndefinedBits(fromWords64(c.words)), `slot ${c.slot}`).toBe(false);
    }
  });

  it("reads Linux 6.1's CMD_SYNC without MSI: CS=SIG_SEV, MSH=ISH, MSIAttr=0xF, no MSI target", () => {
    const sync = decodeCommand(fromWords64(["0x000000000fc02046", "0"]));
    expect(sync).toEqual({ name: "CMD_SYNC", code: 0x46, fields: { Opcode: 0x46, CS: 2, MSH: 3, MSIAttr: 0xf, MSIData: 0, MSIAddress: 0 } });
  });

  it("reads CMD_CFGI_ALL as CMD_CFGI_STE_RANGE with Range 31 covering every StreamID", () => {
    const all = decodeCommand(fromWords64(["0x0000000000000004", "0x000000000000001f"]));
    expect(all.name).toBe("CMD_CFGI_STE_RANGE");
    if (all.name === "CMD_CFGI_STE_RANGE") {
      expect(all.fields.Range).toBe(CFGI_ALL_RANGE);
      expect(cfgiSteRangeStreams(all.fields.SID, all.fields.Range)).toEqual({ first: 0, last: 0xffffffff });
    }
    expect(cfgiSteRangeStreams(0x123, 3)).toEqual({ first: 0x120, last: 0x12f });
  });
});

describe("command encodings worked out from the bit positions (IHI0070 §4, spec §1.8)", () => {
  const vectors: readonly [CommandName, Record<string, number | bigint>, [string, string]][] = [
    ["CMD_PREFETCH_CONFIG", { SID: 0x20 }, ["0x0000002000000001", "0x0000000000000000"]],
    ["CMD_PREFETCH_ADDR", { SSV: 1, SSID: 3, SID: 0x28, Size: 4, Addr: 0xffff0000n }, ["0x0000002800003802", "0x00000000ffff0004"]],
    ["CMD_CFGI_STE", { SID: 0x20, Leaf: 1 }, ["0x0000002000000003", "0x0000000000000001"]],
    ["CMD_CFGI_STE_RANGE", { SID: 0, Range: 31 }, ["0x0000000000000004", "0x000000000000001f"]],
    ["CMD_CFGI_CD", { SID: 0x20, SSID: 0x12345, Leaf: 1 }, ["0x0000002012345005", "0x0000000000000001"]],
    ["CMD_CFGI_CD_ALL", { SID: 0x20 }, ["0x0000002000000006", "0x0000000000000000"]],
    ["CMD_CFGI_STE", { SSec: 1, SID: 7 }, ["0x0000000700000403", "0x0000000000000000"]],
    ["CMD_TLBI_NH_ALL", { VMID: 7 }, ["0x0000000700000010", "0x0000000000000000"]],
    ["CMD_TLBI_NH_ASID", { VMID: 0, ASID: 1 }, ["0x0001000000000011", "0x0000000000000000"]],
    // 16 4K pages at 0x10000000 for ASID 1, leaf-only, last level: TG=1, NUM=15, SCALE=0, TTL=3.
    ["CMD_TLBI_NH_VA", { NUM: 15, SCALE: 0, VMID: 0, ASID: 1, Leaf: 1, TTL: 3, TG: 1, Addr: 0x10000000n }, ["0x000100000000f012", "0x0000000010000701"]],
    ["CMD_TLBI_NH_VA", { ASID: 0xffff, Addr: 0xffff_ffff_ffff_f000n }, ["0xffff000000000012", "0xfffffffffffff000"]],
    ["CMD_TLBI_NH_VAA", { NUM: 1, SCALE: 2, VMID: 3, TG: 3, Addr: 0x40000000n }, ["0x0000000300201013", "0x0000000040000c00"]],
    ["CMD_TLBI_EL3_ALL", {}, ["0x0000000000000018", "0x0000000000000000"]],
    ["CMD_TLBI_EL3_VA", { Leaf: 1, Addr: 0x8000n * 4096n }, ["0x000000000000001a", "0x0000000008000001"]],
    ["CMD_TLBI_EL2_ALL", {}, ["0x0000000000000020", "0x0000000000000000"]],
    ["CMD_TLBI_EL2_ASID", { ASID: 9 }, ["0x0009000000000021", "0x0000000000000000"]],
    ["CMD_TLBI_EL2_VA", { ASID: 9, SCALE: 31, NUM: 31, TG: 2, TTL: 2, Addr: 0x4000n }, ["0x0009000001f1f022", "0x0000000000004a00"]],
    ["CMD_TLBI_EL2_VAA", { Addr: 0x1000n }, ["0x0000000000000023", "0x0000000000001000"]],
    ["CMD_TLBI_S12_VMALL", { VMID: 7 }, ["0x0000000700000028", "0x0000000000000000"]],
    ["CMD_TLBI_S2_IPA", { VMID: 3, Leaf: 1, IPA: 0x80000000 }, ["0x000000030000002a", "0x0000000080000001"]],
    ["CMD_TLBI_S2_IPA", { VMID: 0xffff, IPA: 2 ** 52 - 4096 }, ["0x0000ffff0000002a", "0x000ffffffffff000"]],
    ["CMD_TLBI_NSNH_ALL", {}, ["0x0000000000000030", "0x0000000000000000"]],
    ["CMD_ATC_INV", { SID: 0x100, Size: 52, Addr: 0n }, ["0x0000010000000040", "0x0000000000000034"]],
    ["CMD_ATC_INV", { Global: 1, SSV: 1, SSID: 1, SID: 0x100, Size: 4, Addr: 0x12340000n }, ["0x0000010000001a40", "0x0000000012340004"]],
    ["CMD_PRI_RESP", { SSV: 1, SSID: 5, SID: 0x28, PRGIndex: 0x1ff, Resp: 2 }, ["0x0000002800005841", "0x00000000000021ff"]],
    ["CMD_RESUME", { SID: 0x20, Action: 1, STAG: 0x1234 }, ["0x0000002000001044", "0x0000000000001234"]],
    ["CMD_RESUME", { SID: 0x20, Action: 2, STAG: 0 }, ["0x0000002000002044", "0x0000000000000000"]],
    ["CMD_STALL_TERM", { SID: 0x20 }, ["0x0000002000000045", "0x0000000000000000"]],
    // Linux MSIPOLL: MSIAddress is the CMD_SYNC slot itself, MSIData 0, CS=SIG_IRQ.
    ["CMD_SYNC", { CS: 1, MSH: 3, MSIAttr: 0xf, MSIData: 0, MSIAddress: 0x54500040 }, ["0x000000000fc01046", "0x0000000054500040"]],
    ["CMD_SYNC", { CS: 1, MSIData: 0xdeadbeef, MSIAddress: 2 ** 52 - 4 }, ["0xdeadbeef00001046", "0x000ffffffffffffc"]],
  ];

  it.each(vectors)("%s %o is %s", (name, fields, hex) => {
    expect(toHex64(encodeCommand(name, fields as never))).toEqual(hex);
    const decoded = decodeCommand(fromWords64(hex));
    expect(decoded.name).toBe(name);
    expect(decoded.fields).toMatchObject({ Opcode: CommandOpcode[name], ...fields });
  });

  it("has an opcode for every layout and a layout for every opcode", () => {
    for (const [name, op] of Object.entries(CommandOpcode)) {
      expect(commandName(op)).toBe(name);
      expect(commandLayouts[name as CommandName].name).toBe(name);
    }
  });

  it.each([0x00, 0x07, 0x0f, 0x19, 0x29, 0x42, 0x47, 0xff])("decodes opcode 0x%s as UNKNOWN with its code", (op) => {
    const d = decodeCommand(fromWords64([BigInt(op) | 0xabc00n, "0x1"]));
    expect(d).toEqual({ name: "UNKNOWN", code: op, fields: { Opcode: op } });
    expect(commandSetsUndefinedBits(fromWords64([BigInt(op), "0"]))).toBe(false);
    expect(commandSetsUndefinedBits(fromWords64([BigInt(op), "0x1"]))).toBe(true);
  });

  it.each([
    ["CFGI_STE with a dw1 bit above Leaf", ["0x0000002000000003", "0x0000000000000002"]],
    ["TLBI_NH_ASID with SSV", ["0x0001000000000811", "0"]],
    ["TLBI_NH_VA with SCALE bit 25 (needs IDR5.DS)", ["0x0000000002000012", "0"]],
    ["CMD_SYNC with MSIAddress bit 52", ["0x0000000000000046", "0x0010000000000000"]],
    ["CFGI_CD with SSV (CFGI_CD has none)", ["0x0000002000000805", "0"]],
  ])("flags undefined bits: %s", (_what, hex) => {
    expect(commandSetsUndefinedBits(fromWords64(hex))).toBe(true);
  });

  it("decodes any 128 bits, and re-encodes exactly the bits its opcode defines", () => {
    fc.assert(
      fc.property(fc.array(fc.integer({ min: 0, max: 0xffffffff }), { minLength: 4, maxLength: 4 }), (halves) => {
        const raw = Uint32Array.from(halves);
        const d = decodeCommand(raw);
        expect(d.code).toBe(raw[0]! & 0xff);
        if (d.name === "UNKNOWN") return;
        const layout = commandLayouts[d.name];
        const { Opcode: _op, ...rest } = d.fields as Record<string, number | bigint>;
        const again = encodeCommand(d.name, rest as never);
        expect([...again]).toEqual([...raw.map((w, i) => w & ~layout.reservedMask[i]!)]);
      }),
    );
  });
});

describe("guest invalidations through iommufd (iommufd.md §5.3)", () => {
  it("accepts only the stage-1 TLBIs, ATC_INV and CFGI_CD(_ALL), with Linux's rewrite for each", () => {
    expect(Object.keys(VIOMMU_INVALIDATE_COMMANDS).map((n) => CommandOpcode[n as CommandName]).sort((a, b) => a - b)).toEqual([0x05, 0x06, 0x10, 0x11, 0x12, 0x13, 0x30, 0x40]);
    expect(VIOMMU_INVALIDATE_COMMANDS.CMD_TLBI_NSNH_ALL).toBe("nh-all-for-vmid");
    expect(VIOMMU_INVALIDATE_COMMANDS.CMD_CFGI_STE).toBeUndefined();
    expect(VIOMMU_INVALIDATE_COMMANDS.CMD_SYNC).toBeUndefined();
  });
});

describe("address ranges of invalidation commands (IHI0070 §4.4.1.1, §4.5)", () => {
  it.each([
    // NUM, SCALE, TG, TTL, Leaf, Addr, first, last, ranged
    [0, 0, 0, 0, 0, 0xfffff040n, 0xfffff040n, 0x10000003fn, false],
    [15, 0, 1, 3, 1, 0x10000000n, 0x10000000n, 0x1000ffffn, true],
    [1, 2, 3, 0, 0, 0x40000000n, 0x40000000n, 0x4007ffffn, true],
    [0, 0, 2, 2, 0, 0x4000n, 0x4000n, 0x7fffn, true],
    [31, 31, 3, 0, 0, 0n, 0n, (1n << 52n) - 1n, true],
    [31, 31, 3, 0, 0, 0xffff_ffff_ffff_0000n, 0xffff_ffff_ffff_0000n, (1n << 64n) - 1n, true],
  ])("NUM %d SCALE %d TG %d TTL %d Leaf %d at 0x%s", (NUM, SCALE, TG, TTL, Leaf, Addr, first, last, ranged) => {
    const r = tlbiAddressRange({ NUM, SCALE, TG, TTL, Leaf, Addr });
    expect(r.first).toBe(first);
    expect(r.last).toBe(last);
    expect(r.ranged).toBe(ranged);
    expect(r.leafOnly).toBe(Leaf === 1);
    expect(r.granuleShift).toBe(ranged ? 2 * TG + 10 : undefined);
  });

  it("ranges a TLBI_S2_IPA over IPAs", () => {
    expect(tlbiAddressRange({ NUM: 1, SCALE: 0, TG: 1, TTL: 0, Leaf: 0, IPA: 0x80000000 })).toMatchObject({ first: 0x80000000n, last: 0x80001fffn });
  });

  it("aligns ATC_INV spans naturally, Size 52 meaning everything", () => {
    expect(atcInvAddressRange(0x12345000n, 4)).toEqual({ first: 0x12340000n, last: 0x1234ffffn });
    expect(atcInvAddressRange(0x12345000n, 0)).toEqual({ first: 0x12345000n, last: 0x12345fffn });
    expect(atcInvAddressRange(0x12345000n, 52)).toEqual({ first: 0n, last: (1n << 64n) - 1n });
  });
});
