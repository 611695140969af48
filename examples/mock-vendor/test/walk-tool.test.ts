/**
 * `viommu walk` / `viommu mappings` for the mock: a guest's tables built by the reference driver, the VM's RAM as
 * the memory image and the registers the driver wrote. The emulated device's own translation is the oracle.
 */
import fc from "fast-check";
import { describe, expect, it } from "vitest";
import { Testbed } from "@viommu/conformance";
import { newWalkResult, NO_PASID, Perm, unwrap, type MappingLeaf, type WalkAnswer } from "@viommu/core";
import { MockFaultReason } from "../src/format/event.js";
import { MockReg } from "../src/format/registers.js";
import { mockPlugin } from "../src/plugin.js";
import { mockWalkTool } from "../src/tools/walk-tool.js";
import type { MockDevice } from "../src/vmm/mock-device.js";

const seed = Number(process.env.VIOMMU_SEED ?? Date.now() % 2 ** 31);

function guest() {
  const bed = unwrap(Testbed.create({ plugin: mockPlugin, vms: [{ devices: [{ rid: 0x100, guestRid: 0x10 }] }] }));
  const v = bed.vms[0]!;
  const driver = v.drivers[0]!;
  const a = unwrap(driver.createDomain());
  unwrap(driver.attach(0x10, a));
  unwrap(driver.map(a, 0x40_0000, 0x100_0000, 0x2000, Perm.ReadWrite));
  unwrap(driver.map(a, 0x80_0000, 0x200_0000, 0x20_0000, Perm.ReadWrite));
  unwrap(driver.map(a, 0x1000_0000, 0x300_0000, 0x1000, Perm.Read));
  unwrap(driver.map(a, 0x8000_0000, 0x4000_0000, 0x4000_0000, Perm.ReadWrite));
  const device = v.iommus[0] as MockDevice;
  const registers = { DEVTAB_BASE: v.vm.mmioRead(device.mmioBase + MockReg.DEVTAB_BASE, 8), CONTROL: v.vm.mmioRead(device.mmioBase + MockReg.CONTROL, 8) };
  return { bed, v, driver, a, device, memory: v.vm.memory, registers };
}

describe("mock walk tool", () => {
  it("answers as the emulated device translates, for any address and access (fuzzed)", () => {
    const g = guest();
    const walk = unwrap(mockWalkTool.prepare(g.memory, g.registers));
    const out = newWalkResult();
    const seen = new Set<string>();
    const r = fc.check(
      fc.property(
        fc.oneof(fc.constantFrom(0x40_0000, 0x40_1ff8, 0x80_0000, 0x9f_f000, 0x1000_0000, 0x8000_0000, 0xbfff_f000, 0x42_0000, 2 ** 48, 2 ** 48 - 4096), fc.integer({ min: 0, max: 2 ** 49 })),
        fc.boolean(),
        (iova, write) => {
          const answer = walk({ rid: 0x10, iova, write });
          g.device.translateEmulated(0x10, NO_PASID, iova, write, out);
          expect(answer.ok).toBe(out.ok);
          if (answer.ok) expect([answer.output, answer.pageSize]).toEqual([out.output, 2 ** out.pageShift]);
          seen.add(answer.ok ? `ok ${answer.pageSize}` : answer.fault.name);
        },
      ),
      { seed, numRuns: 2000 },
    );
    if (r.failed) throw new Error(`VIOMMU_SEED=${seed}: ${fc.defaultReportMessage(r)}`);
    for (const k of ["ok 4096", "ok 2097152", "ok 1073741824", "NOT_PRESENT", "PERMISSION", "ADDRESS_SIZE"]) expect([...seen]).toContain(k);
    g.bed.dispose();
  });

  it("names every entry read: the device table entry, then each PTE with its level, raw words, fields and the leaf's page size", () => {
    const g = guest();
    const walk = unwrap(mockWalkTool.prepare(g.memory, g.registers));
    const small = walk({ rid: 0x10, iova: 0x40_1008, write: true }) as Extract<WalkAnswer, { ok: true }>;
    expect(small).toMatchObject({ ok: true, output: 0x100_1008, pageSize: 4096, read: true, write: true, asid: 1 });
    const steps = small.steps!;
    expect(steps.map((s) => [s.what, s.level])).toEqual([["device table entry", undefined], ["level-4 PTE", 4], ["level-3 PTE", 3], ["level-2 PTE", 2], ["level-1 PTE", 1]]);
    const devtab = Number(g.registers.DEVTAB_BASE & 0x000f_ffff_ffff_f000n);
    expect(steps[0]).toMatchObject({ address: devtab + 0x10 * 16, fields: { V: 1, TR: 1, ASID: 1 } });
    for (const s of steps) {
      const words = s.raw.map((w) => BigInt(w));
      expect(words[0]).toBe(g.memory.read64(s.address));
    }
    // Each table entry points at the next step's table; the leaf maps the page.
    for (let i = 1; i < 4; i++) expect(Number(BigInt(steps[i]!.fields!.ADDR as string))).toBe(steps[i + 1]!.address - ((steps[i + 1]!.address % 4096)));
    expect(steps[4]).toMatchObject({ stage: 1, pageSize: 4096, fields: { V: 1, R: 1, W: 1, L: 0, ADDR: "0x1001000" } });
    const large = walk({ rid: 0x10, iova: 0x81_2345, write: false }) as Extract<WalkAnswer, { ok: true }>;
    expect(large).toMatchObject({ ok: true, output: 0x201_2345, pageSize: 2 ** 21 });
    expect(large.steps!.at(-1)).toMatchObject({ what: "level-2 PTE", level: 2, pageSize: 2 ** 21, fields: { L: 1 } });
    const huge = walk({ rid: 0x10, iova: 0x8123_4567, write: true }) as Extract<WalkAnswer, { ok: true }>;
    expect(huge).toMatchObject({ ok: true, output: 0x4123_4567, pageSize: 2 ** 30 });
    expect(huge.steps!.at(-1)).toMatchObject({ level: 3, pageSize: 2 ** 30 });
    // A fault keeps the steps up to the entry that stopped the walk.
    const hole = walk({ rid: 0x10, iova: 0x42_0000, write: false });
    expect(hole).toMatchObject({ ok: false, fault: { code: MockFaultReason.NOT_PRESENT, name: "NOT_PRESENT" } });
    expect(hole.steps!.at(-1)!.fields).toMatchObject({ V: 0 });
    expect(walk({ rid: 0x11, iova: 0x40_0000, write: false })).toMatchObject({ ok: false, fault: { name: "BAD_DEVICE_ENTRY" }, steps: [{ what: "device table entry", fields: { V: 0 } }] });
    g.bed.dispose();
  });

  it("takes 64-bit addresses: at or above 2^48 the mock's input width is exceeded (ADDRESS_SIZE), as the device reports", () => {
    const g = guest();
    expect(mockWalkTool.wideAddresses).toBe(true);
    const walk = unwrap(mockWalkTool.prepare(g.memory, g.registers));
    for (const address of [1n << 53n, 0xffff_8000_0040_0000n, 0xffff_ffff_ffff_f000n]) {
      const answer = walk({ rid: 0x10, iova: Number(address), address, write: false });
      expect(answer).toMatchObject({ ok: false, fault: { name: "ADDRESS_SIZE" }, steps: [{ what: "device table entry" }] });
    }
    expect(walk({ rid: 0x10, iova: 2 ** 48, write: false })).toMatchObject({ ok: false, fault: { code: MockFaultReason.ADDRESS_SIZE } });
    g.bed.dispose();
  });

  it("refuses a missing or out-of-range register with EINVAL", () => {
    const g = guest();
    expect(mockWalkTool.prepare(g.memory, {})).toMatchObject({ ok: false, error: { errno: "EINVAL", message: expect.stringMatching(/DEVTAB_BASE/) } });
    expect(mockWalkTool.prepare(g.memory, { DEVTAB_BASE: 1n << 64n })).toMatchObject({ ok: false, error: { errno: "EINVAL" } });
    g.bed.dispose();
  });

  it("inspect lists each valid device entry in RID order and every leaf in IOVA order, each reproduced by walk", () => {
    const g = guest();
    const b = unwrap(g.driver.createDomain());
    unwrap(g.driver.map(b, 0x5000, 0x500_0000, 0x1000, Perm.Write));
    unwrap(g.driver.attach(0x20, b));
    unwrap(g.driver.attach(0x08, g.a));
    const inspector = unwrap(mockWalkTool.inspect!(g.memory, g.registers));
    const contexts = inspector.contexts();
    expect(contexts.map((c) => [c.rid, c.domain, c.mode])).toEqual([[0x08, 1, "stage 1"], [0x10, 1, "stage 1"], [0x20, 2, "stage 1"]]);
    const walk = unwrap(mockWalkTool.prepare(g.memory, g.registers));
    const leaves: MappingLeaf[] = [];
    inspector.leaves(contexts[1]!, (l) => leaves.push(l));
    expect(leaves.map((l) => [l.iova, l.output, l.size, l.read, l.write])).toEqual([
      [0x40_0000, 0x100_0000, 4096, true, true],
      [0x40_1000, 0x100_1000, 4096, true, true],
      [0x80_0000, 0x200_0000, 2 ** 21, true, true],
      [0x1000_0000, 0x300_0000, 4096, true, false],
      [0x8000_0000, 0x4000_0000, 2 ** 30, true, true],
    ]);
    for (const l of leaves) {
      const answer = walk({ rid: 0x10, iova: l.iova, write: false });
      expect(answer).toMatchObject({ ok: true, output: l.output, pageSize: l.size });
      expect(answer.steps!.at(-1)!.address).toBe(l.entryAddress);
    }
    const other: MappingLeaf[] = [];
    inspector.leaves(contexts[2]!, (l) => other.push(l));
    expect(other).toMatchObject([{ iova: 0x5000, output: 0x500_0000, read: false, write: true }]);
    g.bed.dispose();
  });

  it("inspect flags reserved bits in a leaf and a table pointer outside guest RAM", () => {
    const g = guest();
    const walk = unwrap(mockWalkTool.prepare(g.memory, g.registers));
    const steps = walk({ rid: 0x10, iova: 0x40_0000, write: false }).steps!;
    const leaf = steps[4]!.address;
    g.memory.write32(leaf, g.memory.read32(leaf) | 0x100);
    const l2 = walk({ rid: 0x10, iova: 0x1000_0000, write: false }).steps![3]!.address;
    g.memory.write32(l2, (g.memory.read32(l2) & 0xfff) >>> 0);
    g.memory.write32(l2 + 4, 0x8_0000);
    const inspector = unwrap(mockWalkTool.inspect!(g.memory, g.registers));
    const leaves: MappingLeaf[] = [];
    inspector.leaves(inspector.contexts()[0]!, (x) => leaves.push(x));
    expect(leaves.find((x) => x.iova === 0x40_0000)).toMatchObject({ read: false, write: false, anomalies: [expect.stringMatching(/reserved bits set/)] });
    expect(leaves.find((x) => x.iova === 0x1000_0000)).toMatchObject({ size: 2 ** 21, read: false, anomalies: [expect.stringMatching(/level-2 table pointer 0x8000000000000 lies outside guest RAM/)] });
    expect(walk({ rid: 0x10, iova: 0x40_0000, write: false })).toMatchObject({ ok: false, fault: { name: "RESERVED" } });
    g.bed.dispose();
  });
});
