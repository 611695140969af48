/**
 * `viommu walk` / `viommu mappings` for the pvIOMMU: a device domain's x86-64 stage-1 table built by the reference
 * driver, the VM's RAM as the memory image, and the root and paging mode HVCALL_CONFIGURE_DEVICE_DOMAIN passed.
 * The partition's own translation of the guest's tables is the oracle.
 */
import fc from "fast-check";
import { describe, expect, it } from "vitest";
import { newWalkResult, NO_PASID, Perm, unwrap, WalkFault, type MappingLeaf, type WalkAnswer } from "@viommu/core";
import { HypervNestedDomain } from "../../src/hw/hyperv-nested-domain.js";
import { hypervPlugin } from "../../src/plugin.js";
import { hypervWalkTool } from "../../src/tools/walk-tool.js";
import { hvBed, fiveLevelPlugin } from "../support.js";

const seed = Number(process.env.VIOMMU_SEED ?? Date.now() % 2 ** 31);

function domainBed(fiveLevel = false) {
  const b = hvBed(fiveLevel ? { plugin: fiveLevelPlugin } : {});
  const d = unwrap(b.driver.createDomain());
  unwrap(b.driver.attach(0x10, d));
  unwrap(b.driver.map(d, 0x40_0000, 0x100_0000, 0x2000, Perm.ReadWrite));
  unwrap(b.driver.map(d, 0x80_0000, 0x200_0000, 0x20_0000, Perm.ReadWrite));
  unwrap(b.driver.map(d, 0x1000_0000, 0x300_0000, 0x1000, Perm.Read));
  unwrap(b.driver.map(d, 0x4000_0000, 0x4000_0000, 0x4000_0000, Perm.ReadWrite));
  const domain = b.unit.domainOf(0x100) as HypervNestedDomain;
  const registers = { PAGE_TABLE_ROOT: BigInt(domain.s1Root), FIRST_STAGE_PAGING_MODE: fiveLevel ? 1n : 0n, DEVICE_ID: 0x10n, DOMAIN_ID: BigInt(domain.domainId) };
  return { ...b, d, domain, registers, memory: b.v.vm.memory };
}

describe("hyperv walk tool", () => {
  it("is the plugin's walk tool", () => {
    expect(hypervPlugin.walk).toBe(hypervWalkTool);
  });

  it("answers as the partition translates the guest's table, for any address and access (fuzzed)", () => {
    const g = domainBed();
    const walk = unwrap(hypervWalkTool.prepare(g.memory, g.registers));
    const out = newWalkResult();
    const seen = new Set<string>();
    const r = fc.check(
      fc.property(
        fc.oneof(fc.constantFrom(0x40_0000, 0x40_1ff8, 0x80_0000, 0x9f_f000, 0x1000_0000, 0x4000_0000, 0x7fff_f000, 0x42_0000, 2 ** 48, 2 ** 48 - 4096), fc.integer({ min: 0, max: 2 ** 49 })),
        fc.boolean(),
        (iova, write) => {
          const answer = walk({ rid: 0x10, iova, write });
          g.iommu.translateEmulated(0x10, NO_PASID, iova, write, out);
          expect(answer.ok).toBe(out.ok);
          if (answer.ok) expect([answer.output, answer.pageSize, answer.write]).toEqual([out.output, 2 ** out.pageShift, (out.perms & Perm.Write) !== 0]);
          else expect(answer.fault.code).toBe(out.fault);
          seen.add(answer.ok ? `ok ${answer.pageSize}` : `fault ${answer.fault.code}`);
        },
      ),
      { seed, numRuns: 2000 },
    );
    if (r.failed) throw new Error(`VIOMMU_SEED=${seed}: ${fc.defaultReportMessage(r)}`);
    for (const k of ["ok 4096", "ok 2097152", "ok 1073741824", `fault ${WalkFault.Translation}`, `fault ${WalkFault.Permission}`, `fault ${WalkFault.AddressSize}`]) expect([...seen]).toContain(k);
    g.bed.dispose();
  });

  it("names each entry as the SDM does, with raw words, fields, level and the leaf's page size", () => {
    const g = domainBed();
    const walk = unwrap(hypervWalkTool.prepare(g.memory, g.registers));
    const small = walk({ rid: 0x10, iova: 0x40_1008, write: true }) as Extract<WalkAnswer, { ok: true }>;
    expect(small).toMatchObject({ ok: true, output: 0x100_1008, pageSize: 4096, write: true, domain: g.domain.domainId });
    expect(small.steps!.map((s) => [s.what, s.level])).toEqual([["PML4E", 4], ["PDPTE", 3], ["PDE", 2], ["PTE", 1]]);
    expect(small.steps![0]!.address - (small.steps![0]!.address % 4096)).toBe(g.domain.s1Root);
    for (const s of small.steps!) expect(BigInt(s.raw[0]!)).toBe(g.memory.read64(s.address));
    for (let i = 0; i < 3; i++) expect(small.steps![i]!.fields!.ADDR).toBe(`0x${(small.steps![i + 1]!.address - (small.steps![i + 1]!.address % 4096)).toString(16)}`);
    expect(small.steps![3]).toMatchObject({ stage: 1, pageSize: 4096, fields: { P: 1, RW: 1, PS: 0, ADDR: "0x1001000" } });
    expect((walk({ rid: 0x10, iova: 0x81_0000, write: false }) as Extract<WalkAnswer, { ok: true }>).steps!.at(-1)).toMatchObject({ what: "PDE", pageSize: 2 ** 21, fields: { PS: 1 } });
    expect((walk({ rid: 0x10, iova: 0x4123_4000, write: false }) as Extract<WalkAnswer, { ok: true }>).steps!.at(-1)).toMatchObject({ what: "PDPTE", pageSize: 2 ** 30 });
    expect(walk({ rid: 0x10, iova: 0x1000_0000, write: true })).toMatchObject({ ok: false, fault: { code: WalkFault.Permission } });
    const hole = walk({ rid: 0x10, iova: 0x42_0000, write: false });
    expect(hole).toMatchObject({ ok: false, fault: { code: WalkFault.Translation } });
    expect(hole.steps!.at(-1)!.fields).toMatchObject({ P: 0 });
    g.bed.dispose();
  });

  it("takes 64-bit addresses: beyond 48 bits (57 with 5 levels) AddressSize, as the unit faults them; a 5-level table walks through PML5E", () => {
    const g = domainBed();
    const walk = unwrap(hypervWalkTool.prepare(g.memory, g.registers));
    for (const address of [1n << 53n, 0xffff_8000_0040_0000n]) expect(walk({ rid: 0x10, iova: Number(address), address, write: false })).toMatchObject({ ok: false, fault: { code: WalkFault.AddressSize }, steps: [] });
    expect(walk({ rid: 0x10, iova: 2 ** 48, write: false })).toMatchObject({ ok: false, fault: { code: WalkFault.AddressSize } });
    g.bed.dispose();
    const five = domainBed(true);
    const walk5 = unwrap(hypervWalkTool.prepare(five.memory, five.registers));
    expect((walk5({ rid: 0x10, iova: 0x40_0000, write: false }) as Extract<WalkAnswer, { ok: true }>).steps!.map((s) => s.what)).toEqual(["PML5E", "PML4E", "PDPTE", "PDE", "PTE"]);
    expect(walk5({ rid: 0x10, iova: 2 ** 48, write: false })).toMatchObject({ ok: false, fault: { code: WalkFault.Translation } });
    five.bed.dispose();
  });

  it("refuses a missing, misaligned or out-of-range register with EINVAL", () => {
    const g = domainBed();
    expect(hypervWalkTool.prepare(g.memory, {})).toMatchObject({ ok: false, error: { errno: "EINVAL", message: expect.stringMatching(/PAGE_TABLE_ROOT/) } });
    expect(hypervWalkTool.prepare(g.memory, { PAGE_TABLE_ROOT: 0x1008n })).toMatchObject({ ok: false, error: { errno: "EINVAL" } });
    expect(hypervWalkTool.prepare(g.memory, { PAGE_TABLE_ROOT: 0x1000n, FIRST_STAGE_PAGING_MODE: 2n })).toMatchObject({ ok: false, error: { errno: "EINVAL" } });
    g.bed.dispose();
  });

  it("inspect lists the domain's leaves in IOVA order, each reproduced by walk, and flags malformed entries", () => {
    const g = domainBed();
    const inspector = unwrap(hypervWalkTool.inspect!(g.memory, g.registers));
    const [context] = inspector.contexts();
    expect(context).toMatchObject({ rid: 0x10, domain: g.domain.domainId, root: g.domain.s1Root, mode: "stage 1 (4-level)" });
    const leaves: MappingLeaf[] = [];
    inspector.leaves(context!, (l) => leaves.push(l));
    expect(leaves.map((l) => [l.iova, l.output, l.size, l.write])).toEqual([
      [0x40_0000, 0x100_0000, 4096, true],
      [0x40_1000, 0x100_1000, 4096, true],
      [0x80_0000, 0x200_0000, 2 ** 21, true],
      [0x1000_0000, 0x300_0000, 4096, false],
      [0x4000_0000, 0x4000_0000, 2 ** 30, true],
    ]);
    const walk = unwrap(hypervWalkTool.prepare(g.memory, g.registers));
    for (const l of leaves) {
      const a = walk({ rid: 0x10, iova: l.iova, write: false });
      expect(a).toMatchObject({ ok: true, output: l.output, pageSize: l.size });
      expect(a.steps!.at(-1)!.address).toBe(l.entryAddress);
    }
    // PS in a PML4E is reserved; a PDE pointing beyond RAM cannot be followed.
    const steps = walk({ rid: 0x10, iova: 0x40_0000, write: false }).steps!;
    g.memory.write32(steps[2]!.address + 4, 0x8_0000);
    const bad: MappingLeaf[] = [];
    inspector.leaves(context!, (l) => bad.push(l));
    expect(bad.find((l) => l.iova === 0x40_0000)).toMatchObject({ size: 2 ** 21, read: false, anomalies: [expect.stringMatching(/PDE 0x[0-9a-f]+ points to a table at 0x80000[0-9a-f]+ outside guest RAM/)] });
    g.memory.write32(steps[0]!.address, g.memory.read32(steps[0]!.address) | 0x80);
    const reserved: MappingLeaf[] = [];
    inspector.leaves(context!, (l) => reserved.push(l));
    expect(reserved).toMatchObject([{ iova: 0, size: 2 ** 39, read: false, write: false, anomalies: [expect.stringMatching(/PML4E 0x[0-9a-f]+ has reserved bits set/)] }]);
    g.bed.dispose();
  });
});
