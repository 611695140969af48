import {
  decodeLayout,
  EntryKind,
  err,
  GuestTableReader,
  newEntryDecode,
  newWalkResult,
  ok,
  PageWalker,
  Perm,
  toHex64,
  WalkFault,
  type GuestMemory,
  type MappingLeaf,
  type Result,
  type TableInspector,
  type TranslationContext,
  type WalkAnswer,
  type WalkRequest,
  type WalkStep,
  type WalkTool,
} from "@viommu/core";
import { decodeMockDeviceEntry, MOCK_DTE_BYTES, mockDeviceEntryLayout, mockDeviceEntryMalformed } from "../format/device-entry.js";
import { MockFaultReason } from "../format/event.js";
import { mockGeometry, MockPte, mockPteFormat, mockPteLayout, MOCK_LEVELS } from "../format/pte.js";
import { decodeBase, MockControl } from "../format/registers.js";

const faultNames: Readonly<Record<number, string>> = Object.fromEntries(Object.entries(MockFaultReason).map(([k, v]) => [v, k]));
const fault = (code: number, steps: WalkStep[]): WalkAnswer => ({ ok: false, fault: { code, name: faultNames[code] ?? "UNKNOWN" }, steps });
const hex = (n: number): string => `0x${n.toString(16)}`;
/** Address fields in hex, the rest as numbers. */
const ADDRESS_FIELDS = new Set(["ADDR", "S1ROOT"]);
const fields = (f: Readonly<Record<string, number | bigint>>): Record<string, number | string> =>
  Object.fromEntries(Object.entries(f).map(([k, v]) => [k, ADDRESS_FIELDS.has(k) ? hex(Number(v)) : Number(v)]));

/** The device table as DEVTAB_BASE names it, and whether CONTROL has translation on. */
interface Tables {
  readonly devtab: number;
  readonly entries: number;
  readonly translate: boolean;
}

function tables(registers: Readonly<Record<string, bigint>>): Result<Tables> {
  const base = registers["DEVTAB_BASE"];
  if (base === undefined) return err("EINVAL", "DEVTAB_BASE is required");
  for (const [name, v] of Object.entries(registers)) if (v < 0n || v > 0xffff_ffff_ffff_ffffn) return err("EINVAL", `${name} is not a 64-bit value`);
  const control = registers["CONTROL"];
  const { address, log2 } = decodeBase(base);
  return ok({ devtab: address, entries: 2 ** Math.min(log2, 16), translate: control === undefined || (Number(control & 0x1fn) & MockControl.TRANSLATE_EN) !== 0 });
}

/** The device entry of `rid` as a step, or undefined when it lies beyond the table or outside memory. */
function deviceEntry(memory: GuestMemory, t: Tables, rid: number, words: Uint32Array): WalkStep | undefined {
  const at = t.devtab + rid * MOCK_DTE_BYTES;
  if (rid >= t.entries || !memory.contains(at, MOCK_DTE_BYTES)) return undefined;
  for (let i = 0; i < 4; i++) words[i] = memory.read32(at + 4 * i);
  return { what: "device table entry", address: at, raw: toHex64(words), fields: fields(decodeLayout(mockDeviceEntryLayout, words)) };
}

/**
 * `viommu walk --vendor mock --reg DEVTAB_BASE=V [--reg CONTROL=V] --rid N --iova A`: translation from a memory
 * image through the device table and stage-1 tables, as the emulated device walks them (the answer comes from the
 * same core walk; the steps name each entry read). CONTROL is optional: without it translation is taken as on.
 * Addresses at or above 2^48 are beyond the mock's input width: ADDRESS_SIZE, as the device reports them.
 */
export const mockWalkTool: WalkTool = {
  registers: ["DEVTAB_BASE", "CONTROL"],
  wideAddresses: true,

  prepare(memory: GuestMemory, registers: Readonly<Record<string, bigint>>): Result<(request: WalkRequest) => WalkAnswer> {
    const t = tables(registers);
    if (!t.ok) return t;
    const reader = new GuestTableReader(memory);
    const walker = new PageWalker();
    const out = newWalkResult();
    const words = new Uint32Array(4);
    const decoded = newEntryDecode();
    return ok((request: WalkRequest): WalkAnswer => {
      const steps: WalkStep[] = [];
      const wide = request.address !== undefined && request.address >= 1n << 53n;
      const bypass = (): WalkAnswer =>
        wide || !memory.contains(request.iova) ? fault(MockFaultReason.ADDRESS_SIZE, steps) : { ok: true, output: request.iova, pageSize: 4096, read: true, write: true, steps };
      if (!t.value.translate) return bypass();
      const dte = deviceEntry(memory, t.value, request.rid, words);
      if (dte === undefined || mockDeviceEntryMalformed(words)) return fault(MockFaultReason.BAD_DEVICE_ENTRY, dte === undefined ? steps : [dte]);
      steps.push(dte);
      const entry = decodeMockDeviceEntry(words);
      if (!entry.V || request.pasid !== undefined) return fault(MockFaultReason.BAD_DEVICE_ENTRY, steps);
      if (!entry.TR) return bypass();
      if (wide) return fault(MockFaultReason.ADDRESS_SIZE, steps);
      // The entries on the path, named and decoded, then the answer from the core walk.
      let table = entry.S1ROOT;
      for (let level = MOCK_LEVELS; level >= 1 && request.iova < 2 ** mockGeometry.inputBits; level--) {
        const at = table + (Math.floor(request.iova / 2 ** mockGeometry.levelShift[level]!) % 512) * 8;
        if (!memory.contains(at, 8)) break;
        words[0] = memory.read32(at);
        words[1] = memory.read32(at + 4);
        mockPteFormat.decodeEntry(words[0], words[1], level, decoded);
        const leaf = decoded.kind === EntryKind.Leaf;
        steps.push({ what: `level-${level} PTE`, address: at, raw: toHex64(words.subarray(0, 2)), level, stage: 1, fields: fields(decodeLayout(mockPteLayout, words.subarray(0, 2))), ...(leaf ? { pageSize: 2 ** decoded.pageShift } : {}) });
        if (decoded.kind !== EntryKind.Table) break;
        table = decoded.address;
      }
      walker.walk(mockPteFormat, mockGeometry, entry.S1ROOT, request.iova, request.write ? Perm.Write : Perm.Read, reader, out);
      if (out.ok && !memory.contains(out.output)) return fault(MockFaultReason.ADDRESS_SIZE, steps);
      if (!out.ok) return fault(faultCode(out.fault), steps);
      return { ok: true, output: out.output, pageSize: 2 ** out.pageShift, read: (out.perms & Perm.Read) !== 0, write: (out.perms & Perm.Write) !== 0, asid: entry.ASID, steps };
    });
  },

  inspect(memory: GuestMemory, registers: Readonly<Record<string, bigint>>): Result<TableInspector> {
    const t = tables(registers);
    if (!t.ok) return t;
    return ok(new MockTableInspector(memory, t.value));
  },
};

/** Why decodeEntry faults a present entry (the Reserved cases of the mock PTE). */
function malformed(lo: number, hi: number, level: number, at: number): string {
  if ((lo & MockPte.RESERVED_LO) !== 0 || (hi & MockPte.RESERVED_HI) !== 0) return `level-${level} entry at ${hex(at)} has reserved bits set`;
  if (level > 1 && (lo & MockPte.L) === 0) return `level-${level} table entry at ${hex(at)} has D set (reserved in a table entry)`;
  if (level > 3) return `level-${level} entry at ${hex(at)} is a leaf where the format has none`;
  return `level-${level} leaf at ${hex(at)} is not aligned to its page size`;
}

function faultCode(f: WalkFault): number {
  switch (f) {
    case WalkFault.Permission:
      return MockFaultReason.PERMISSION;
    case WalkFault.Reserved:
      return MockFaultReason.RESERVED;
    case WalkFault.AddressSize:
      return MockFaultReason.ADDRESS_SIZE;
    default:
      return MockFaultReason.NOT_PRESENT;
  }
}

/** Every valid device entry and every leaf of its stage-1 table, read from a memory image. */
class MockTableInspector implements TableInspector {
  private readonly words = new Uint32Array(4);

  constructor(
    private readonly memory: GuestMemory,
    private readonly t: Tables,
  ) {}

  contexts(): readonly TranslationContext[] {
    const out: TranslationContext[] = [];
    if (!this.t.translate) return out;
    for (let rid = 0; rid < this.t.entries; rid++) {
      const step = deviceEntry(this.memory, this.t, rid, this.words);
      if (step === undefined) break;
      if ((this.words[0]! & 1) === 0) continue;
      const anomalies: string[] = [];
      if (mockDeviceEntryMalformed(this.words)) anomalies.push(`device table entry at ${hex(step.address)} has reserved bits set`);
      const e = decodeMockDeviceEntry(this.words);
      if (e.TR && !this.memory.contains(e.S1ROOT, 4096)) anomalies.push(`stage-1 root ${hex(e.S1ROOT)} lies outside guest RAM`);
      out.push({ rid, domain: e.ASID, root: e.S1ROOT, mode: e.TR ? "stage 1" : "passthrough", ...(anomalies.length > 0 ? { anomalies } : {}) });
    }
    return out;
  }

  leaves(context: TranslationContext, visit: (leaf: MappingLeaf) => void): number {
    if (context.mode !== "stage 1") return 0;
    return this.table(context.root, MOCK_LEVELS, 0, Perm.ReadWrite, visit);
  }

  /** The leaves under one table, in IOVA order; `perms` is what the tables above allow. */
  private table(address: number, level: number, base: number, perms: number, visit: (leaf: MappingLeaf) => void): number {
    if (!this.memory.contains(address, 4096)) return 0;
    const decoded = newEntryDecode();
    const span = 2 ** mockGeometry.levelShift[level]!;
    let count = 0;
    for (let i = 0; i < 512; i++) {
      const at = address + i * 8;
      const lo = this.memory.read32(at);
      const hi = this.memory.read32(at + 4);
      if ((lo & 1) === 0) continue;
      const iova = base + i * span;
      mockPteFormat.decodeEntry(lo, hi, level, decoded);
      if (decoded.kind === EntryKind.Table) {
        if (this.memory.contains(decoded.address, 4096)) count += this.table(decoded.address, level - 1, iova, perms & decoded.perms, visit);
        else {
          // A pointer the walk cannot follow: listed as the range it would have mapped, with nothing granted.
          visit({ iova, output: decoded.address, size: span, read: false, write: false, entryAddress: at, anomalies: [`level-${level} table pointer ${hex(decoded.address)} lies outside guest RAM`] });
          count++;
        }
        continue;
      }
      // A present entry the walk faults on is listed too, granting nothing, with why.
      const leaf = decoded.kind === EntryKind.Leaf;
      const granted = leaf ? perms & decoded.perms : 0;
      const output = (hi & 0xfffff) * 2 ** 32 + ((lo & 0xffff_f000) >>> 0);
      const anomalies = leaf ? undefined : [malformed(lo, hi, level, at)];
      visit({ iova, output, size: span, read: (granted & Perm.Read) !== 0, write: (granted & Perm.Write) !== 0, entryAddress: at, ...(anomalies ? { anomalies } : {}) });
      count++;
    }
    return count;
  }
}
