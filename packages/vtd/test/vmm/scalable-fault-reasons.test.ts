import { describe, expect, it } from "vitest";
import { GuestMemory, HostMemory, newWalkResult, NO_PASID, WalkFault } from "@viommu/core";
import { encodePasidDirEntry } from "../../src/format/pasid-dir-entry.js";
import { encodePasidEntry, PasidGranularTranslationType } from "../../src/format/pasid-entry.js";
import { encodeSmContextEntry } from "../../src/format/sm-context-entry.js";
import { encodeSmRootEntry } from "../../src/format/sm-root-entry.js";
import { hostFaultReason } from "../../src/hw/host-fault-reason.js";
import { FL_GEOMETRY_4, hostSlGeometry } from "../../src/hw/host-formats.js";
import { emulatedRegisters } from "../../src/vmm/emulated-capabilities.js";
import { scalableSecondLevelReason } from "../../src/vmm/guest-fault-reason.js";
import { GuestTranslation, GuestTranslator, translatorConfig } from "../../src/vmm/guest-translator.js";

/**
 * Scalable-mode fault reasons for a structure the unit cannot read, each the code the VT-d specification's
 * fault-condition table gives (codes and condition ids as VirtualBox's VTDADDRFAULT enum in
 * include/VBox/iommu-intel.h lists them, names as Linux's dma_remap_sm_fault_reasons in
 * drivers/iommu/intel/dmar.c prints them). The expected values are literals on purpose: a changed code in
 * fault-reasons.ts turns these red.
 *
 * The guest's structures live in 64 MiB of RAM; one pointer at a time is aimed at 1 GiB, where no memory is.
 */
const MIB = 2 ** 20;
const NOWHERE = 0x4000_0000;
const ROOT = 0x10_0000;
const CONTEXT = 0x11_0000;
const PASID_DIR = 0x12_0000;
const PASID_TABLE = 0x13_0000;
/** Four table pages, top first (levels 4, 3, 2, 1), for either stage. */
const TABLES = [0x20_0000, 0x21_0000, 0x22_0000, 0x23_0000];
const DATA = 0x40_0000;
const IOVA = 0x1234_5000;
const SID = 0x0010;
const DID = 7;

type Pointer = "root table" | "context table" | "PASID directory" | "PASID table" | "top table" | "level-3 table" | "level-1 table";

/** A scalable-mode guest whose RID_PASID (0) entry translates IOVA to DATA through a 4-level table of `pgtt`, with `broken` aimed at no memory. */
function guest(pgtt: number, broken?: Pointer): GuestTranslator {
  const memory = new GuestMemory(new HostMemory(), 1, { sizeBytes: 64 * MIB });
  const at = (p: Pointer, address: number): bigint => BigInt(p === broken ? NOWHERE : address);
  memory.writeWords(ROOT, encodeSmRootEntry({ LP: 1, LCTP: at("context table", CONTEXT) }));
  memory.writeWords(CONTEXT + (SID & 0x7f) * 32, encodeSmContextEntry({ P: 1, PASIDE: 1, PDTS: 0, PASIDDIRPTR: at("PASID directory", PASID_DIR), RID_PASID: 0 }));
  memory.writeWords(PASID_DIR, encodePasidDirEntry({ P: 1, SMPTBLPTR: at("PASID table", PASID_TABLE) }));
  const top = at("top table", TABLES[0]!);
  const entry =
    pgtt === PasidGranularTranslationType.FL_ONLY
      ? encodePasidEntry({ P: 1, PGTT: pgtt, DID, FLPM: 0, FLPTPTR: top })
      : encodePasidEntry({ P: 1, PGTT: pgtt, DID, AW: 2, SLPTPTR: top });
  memory.writeWords(PASID_TABLE, entry);
  // Table entries: present, writable and (first level) user; second level R | W.
  const flags = pgtt === PasidGranularTranslationType.FL_ONLY ? 0x7 : 0x3;
  const next: (number | bigint)[] = [at("level-3 table", TABLES[1]!), TABLES[2]!, at("level-1 table", TABLES[3]!), DATA];
  for (let level = 4; level >= 1; level--) {
    const index = Math.floor(IOVA / 2 ** (12 + 9 * (level - 1))) % 512;
    memory.write64(TABLES[4 - level]! + index * 8, BigInt(next[4 - level]!) | BigInt(flags));
  }
  const regs = emulatedRegisters("nested");
  // Both stages offered (ECAP.SLTS as well as FLTS), so a second-stage PASID entry is valid.
  const t = new GuestTranslator(memory, { ...translatorConfig(regs.cap, regs.ecap, 48), slts: true, flts: true });
  t.setRootTable(BigInt(ROOT) | (1n << 10n));
  return t;
}

function reason(t: GuestTranslator, write = false): number {
  const out = new GuestTranslation();
  t.translate(SID, NO_PASID, IOVA, write, out);
  return out.ok ? 0 : out.reason;
}

describe("scalable-mode fault reasons for a structure outside memory", () => {
  const SL = PasidGranularTranslationType.SL_ONLY;
  const FL = PasidGranularTranslationType.FL_ONLY;

  it("both stages translate when every pointer is good (the cases below each break one)", () => {
    for (const pgtt of [SL, FL]) {
      const out = new GuestTranslation();
      guest(pgtt).translate(SID, NO_PASID, IOVA, true, out);
      expect(out.ok).toBe(true);
      expect(out.walk.output).toBe(DATA);
    }
  });

  for (const [pgtt, broken, code, condition] of [
    [SL, "root table", 0x38, "SRT.1: error accessing the root entry"],
    [SL, "context table", 0x40, "SCT.1: error accessing the context entry"],
    [SL, "PASID directory", 0x50, "SPD.1: error accessing the PASID directory entry"],
    [SL, "PASID table", 0x58, "SPT.1: error accessing the PASID table entry"],
    [SL, "top table", 0x7b, "SSL.4: invalid second-level table pointer (SSPTPTR)"],
    [SL, "level-3 table", 0x78, "SSL.1: error accessing a second-level paging entry"],
    [SL, "level-1 table", 0x78, "SSL.1: error accessing a second-level paging entry"],
    [FL, "top table", 0x73, "SFL.4: error accessing the top-level entry (FSPTPTR)"],
    [FL, "level-3 table", 0x70, "SFL.1: error accessing a first-level paging entry"],
    [FL, "level-1 table", 0x70, "SFL.1: error accessing a first-level paging entry"],
  ] as const) {
    it(`${pgtt === SL ? "second" : "first"} stage, ${broken} unreadable: 0x${code.toString(16)} (${condition})`, () => {
      const t = guest(pgtt, broken as Pointer);
      if (broken === "root table") t.setRootTable(BigInt(NOWHERE) | (1n << 10n));
      expect(reason(t)).toBe(code);
      expect(reason(t, true)).toBe(code);
    });
  }
});

describe("the reason functions by walk level", () => {
  function external(level: number, stage: 1 | 2 = 2, tableFetch = false) {
    const walk = newWalkResult();
    walk.fault = WalkFault.External;
    walk.level = level;
    walk.stage = stage;
    walk.tableFetch = tableFetch;
    return walk;
  }

  it("guest second stage: 0x7b at the top level of a 3-, 4- or 5-level table, 0x78 below", () => {
    for (const levels of [3, 4, 5]) {
      expect(scalableSecondLevelReason(external(levels), false, levels)).toBe(0x7b);
      for (let level = levels - 1; level >= 1; level--) expect(scalableSecondLevelReason(external(level), true, levels)).toBe(0x78);
    }
  });

  it("host unit: its stage 2 (single-stage or under a nested stage 1, output or table fetch) 0x7b at the top, 0x78 below; nested stage 1 0x73 / 0x70", () => {
    const top = hostSlGeometry.startLevel;
    expect(hostFaultReason("paging", external(top), false, top)).toBe(0x7b);
    expect(hostFaultReason("paging", external(top - 1), false, top)).toBe(0x78);
    const s1Top = FL_GEOMETRY_4.startLevel;
    expect(hostFaultReason("nested", external(top, 2), true, s1Top)).toBe(0x7b);
    expect(hostFaultReason("nested", external(top, 2, true), false, s1Top)).toBe(0x7b);
    expect(hostFaultReason("nested", external(1, 2, true), false, s1Top)).toBe(0x78);
    expect(hostFaultReason("nested", external(s1Top, 1), false, s1Top)).toBe(0x73);
    expect(hostFaultReason("nested", external(2, 1), false, s1Top)).toBe(0x70);
  });
});
