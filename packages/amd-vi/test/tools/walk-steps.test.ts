import { describe, expect, it } from "vitest";
import fc from "fast-check";
import { GuestMemory, HostMemory, newWalkResult, Perm, unwrap, type MappingLeaf, type WalkAnswer } from "@viommu/core";
import type { TestVm } from "@viommu/conformance";
import { EventCode } from "../../src/format/event-log-entry.js";
import { MmioOffset } from "../../src/format/mmio-register-map.js";
import { amdViWalkTool } from "../../src/tools/walk-tool.js";
import { WalkExplainer } from "../../src/tools/walk-explainer.js";
import { GuestDteWalker, newDteWalkOutcome } from "../../src/vmm/guest-dte-walker.js";
import type { AmdViDevice } from "../../src/vmm/amd-vi-device.js";
import { fuzzParams, oneVm } from "../support.js";

/** The guest's memory as a raw image, loaded the way `viommu walk --memory` loads one. */
function image(v: TestVm): GuestMemory {
  const copy = new GuestMemory(new HostMemory(), 1, { sizeBytes: v.vm.memory.sizeBytes });
  for (const page of v.vm.memory.writtenPages()) copy.writeBytes(page, v.vm.memory.readBytes(page, 4096));
  return copy;
}

function devTabBase(v: TestVm): bigint {
  const device = v.iommus[0] as AmdViDevice;
  return v.vm.mmioRead(device.mmioBase + MmioOffset.DeviceTableBase, 8);
}

const table = { base: 0x1000, entries: 256 };

describe("the walk explainer agrees with the emulated IOMMU's walker on every input below 2^53", () => {
  it("random DTEs (V, TV, Mode 0–7, GV, GIoV, GLX, 5-level, IR/IW, reserved bits) over random tables, both 4 KiB and large leaves, skips and faults", () => {
    const memory = new GuestMemory(new HostMemory(), 1, { sizeBytes: 2 ** 22 });
    const page = fc.integer({ min: 2, max: 63 });
    // A table entry: present mostly, any NextLevel / PS, a page inside the image, permission bits, now and then a reserved bit.
    const entry = fc.record({ pr: fc.integer({ min: 0, max: 9 }), next: fc.integer({ min: 0, max: 7 }), page, ps: fc.boolean(), ir: fc.boolean(), iw: fc.boolean(), rsvd: fc.integer({ min: 0, max: 15 }), ones: fc.integer({ min: 0, max: 3 }) });
    const dte = fc.record({ v: fc.integer({ min: 0, max: 9 }), tv: fc.integer({ min: 0, max: 9 }), mode: fc.integer({ min: 0, max: 7 }), gv: fc.boolean(), giov: fc.boolean(), glx: fc.integer({ min: 0, max: 1 }), five: fc.boolean(), ir: fc.boolean(), iw: fc.boolean(), root: page, gcr3: page, rsvd: fc.integer({ min: 0, max: 15 }) });
    const iova = fc.oneof(fc.integer({ min: 0, max: 2 ** 32 }), fc.integer({ min: 0, max: 2 ** 24 }).map((x) => x * 4096), fc.maxSafeNat());
    fc.assert(
      fc.property(dte, fc.array(entry, { minLength: 16, maxLength: 16 }), iova, fc.oneof(fc.constant(undefined), fc.integer({ min: 0, max: 3 })), fc.boolean(), (d, entries, address, pasid, write) => {
        const w = new Uint32Array(8);
        w[0] = ((d.v > 0 ? 1 : 0) | (d.tv > 0 ? 2 : 0) | (d.mode << 9) | (d.root << 12)) >>> 0;
        w[1] = ((d.giov ? 1 << 22 : 0) | (d.gv ? 1 << 23 : 0) | (d.glx << 24) | (d.ir ? 1 << 29 : 0) | (d.iw ? 1 << 30 : 0) | ((d.gcr3 & 7) << 26)) >>> 0;
        w[2] = (7 | ((d.gcr3 >>> 3) << 16)) >>> 0;
        w[3] = d.rsvd === 0 ? 1 << 10 : 0;
        w[5] = d.five ? 1 << 22 : 0;
        memory.writeWords(0x1000 + 0x10 * 32, w);
        // Every table page holds the same 16 entries, repeated: whatever the walk reads is one of them.
        for (let p = 2; p < 64; p++) {
          for (let i = 0; i < 512; i++) {
            const e = entries[i % 16]!;
            const lo = ((e.pr > 0 ? 1 : 0) | (e.next << 9) | (e.ps ? 0x80 : 0) | 2 | (e.page << 12) | (e.next === 7 ? ((1 << e.ones) - 1) << 12 : 0)) >>> 0;
            const hi = ((e.ir ? 1 << 29 : 0) | (e.iw ? 1 << 30 : 0) | (e.rsvd === 0 ? 1 << 20 : 0)) >>> 0;
            memory.write64Halves(p * 4096 + i * 8, lo, hi);
          }
        }
        const model = newWalkResult();
        const outcome = newDteWalkOutcome();
        new GuestDteWalker(memory).translate(table, 0x10, pasid, address, write ? Perm.Write : Perm.Read, model, outcome);
        const explained = new WalkExplainer(memory).explain(table, 0x10, pasid, BigInt(address), write);
        const seen = { ok: explained.ok, event: explained.eventCode, ...(explained.ok ? { output: explained.output, pageShift: explained.pageShift, perms: explained.perms & 3 } : {}) };
        const expected = { ok: model.ok, event: model.ok ? 0 : outcome.eventCode, ...(model.ok ? { output: model.output, pageShift: model.pageShift, perms: model.perms & 3 } : {}) };
        expect(seen).toEqual(expected);
      }),
      fuzzParams(3000),
    );
  });
});

describe("viommu walk --vendor amd-vi: the entries read, by the specification's names", () => {
  it("v1 (shadow guest, Mode 3): DTE, PDE level 3, PDE level 2, then a 4 KiB PTE; a size-encoded 16 KiB page is a PTE with Next Level 7", () => {
    const t = oneVm({ mode: "shadow" });
    const domain = unwrap(t.driver.createDomain());
    unwrap(t.driver.attach(0x10, domain));
    unwrap(t.driver.map(domain, 0x10_0000, 0x2000_0000, 0x1000, Perm.ReadWrite));
    unwrap(t.driver.map(domain, 0x20_4000, 0x2010_4000, 0x4000, Perm.Read));
    const walk = unwrap(amdViWalkTool.prepare(image(t.v), { DEV_TAB_BASE: devTabBase(t.v) }));
    const a = walk({ rid: 0x10, iova: 0x10_0123, write: false });
    expect(a).toMatchObject({ ok: true, output: 0x2000_0123, pageSize: 4096 });
    const steps = a.steps!;
    const mode = Number(steps[0]!.fields!["Mode"]);
    expect(steps.map((s) => [s.what, s.level])).toEqual([["DTE", undefined], ...Array.from({ length: mode - 1 }, (_, i) => ["PDE", mode - i]), ["PTE", 1]]);
    expect(steps[0]).toMatchObject({ address: t.driver.structures.deviceTable + 0x10 * 32, fields: { V: 1, TV: 1, IR: 1, IW: 1, DomainID: domain } });
    expect(steps[0]!.raw).toHaveLength(4);
    expect(steps[1]!.fields).toMatchObject({ PR: 1, "Next Level": mode - 1, IR: 1, IW: 1 });
    const leaf = steps.at(-1)!;
    expect(leaf).toMatchObject({ pageSize: 4096, fields: { PR: 1, "Next Level": 0, "Page Address": "0x20000000", IR: 1, IW: 1 } });
    expect(BigInt(leaf.raw[0]!)).toBe(t.v.vm.memory.read64(leaf.address));
    const big = walk({ rid: 0x10, iova: 0x20_6010, write: false });
    expect(big).toMatchObject({ ok: true, output: 0x2010_6010, pageSize: 0x4000, write: false });
    // 16 KiB: address bits [13:12] = 01b (spec B4.1: the first 0 at or above bit 12 is at bit 13).
    expect(big.steps!.at(-1)).toMatchObject({ what: "PTE", level: 1, pageSize: 0x4000, fields: { "Next Level": 7, "Page Address": "0x20105000", IW: 0 } });
  });

  it("v2 (nested guest): DTE, the GCR3 table entry for PASID 0, then PML4E, PDPE, PDE, PTE", () => {
    const t = oneVm();
    const domain = unwrap(t.driver.createDomain());
    unwrap(t.driver.attach(0x10, domain));
    unwrap(t.driver.map(domain, 0x10_0000, 0x2000_0000, 0x1000, Perm.ReadWrite));
    const walk = unwrap(amdViWalkTool.prepare(image(t.v), { DEV_TAB_BASE: devTabBase(t.v) }));
    const a = walk({ rid: 0x10, iova: 0x10_0008, write: true });
    expect(a).toMatchObject({ ok: true, output: 0x2000_0008 });
    expect(a.steps!.map((s) => [s.what, s.level])).toEqual([["DTE", undefined], ["GCR3 table entry", 0], ["PML4E", 4], ["PDPE", 3], ["PDE", 2], ["PTE", 1]]);
    expect(a.steps![0]!.fields).toMatchObject({ GV: 1, GIoV: 1, Mode: 0 });
    expect(a.steps![1]!.fields).toMatchObject({ V: 1 });
    expect(a.steps!.at(-1)).toMatchObject({ pageSize: 4096, fields: { P: 1, "R/W": 1, PS: 0, Address: "0x20000000" } });
    // A fault still lists what was read: the walk stops at the entry that is not present.
    const miss = walk({ rid: 0x10, iova: 0x4000_0000_0000 - 0x1000, write: false });
    expect(miss).toMatchObject({ ok: false, fault: { code: EventCode.IO_PAGE_FAULT } });
    expect(miss.steps!.at(-1)!.fields).toMatchObject({ P: 0 });
  });
});

/** A raw image with a DTE at DeviceID 0x10 of Mode `mode` rooted at 0x10000, and the entries given. */
function handImage(mode: number, entries: [number, bigint][]): GuestMemory {
  const memory = new GuestMemory(new HostMemory(), 1, { sizeBytes: 2 ** 22 });
  const w = new Uint32Array(8);
  w[0] = (3 | (mode << 9) | 0x10000) >>> 0;
  w[1] = (1 << 29) | (1 << 30);
  w[2] = 0x42;
  memory.writeWords(0x1000 + 0x10 * 32, w);
  for (const [at, value] of entries) memory.write64Halves(at, Number(value & 0xffff_ffffn), Number(value >> 32n));
  return memory;
}

const IR_IW = 3n << 61n;

describe("viommu walk --vendor amd-vi: 64-bit inputs", () => {
  it("a Mode 6 table translates an IOVA at 2^63 and above (level 6 indexes [63:57]); a level-skipping PDE needs the skipped bits zero", () => {
    // Level 6 index 127 → PDE with Next Level 1 (skipping 5..2) → a level-1 table whose entry 3 is a 4 KiB page.
    const memory = handImage(6, [
      [0x10000 + 127 * 8, IR_IW | 0x11000n | (1n << 9n) | 1n],
      [0x11000 + 3 * 8, IR_IW | 0x20_0000n | 1n],
    ]);
    const walk = unwrap(amdViWalkTool.prepare(memory, { DEV_TAB_BASE: 0x1000n }));
    const address = 0xfe00_0000_0000_3abcn;
    const a = walk({ rid: 0x10, iova: Number(address), address, write: true });
    expect(a).toMatchObject({ ok: true, output: 0x20_0abc, pageSize: 4096, read: true, write: true, domain: 0x42 });
    expect(a.steps!.map((s) => [s.what, s.level])).toEqual([["DTE", undefined], ["PDE", 6], ["PTE", 1]]);
    // Bit 21 is a skipped level's index bit: the IOMMU faults (the AMD level-skipping rule).
    const skipped = 0xfe00_0000_0020_3abcn;
    expect(walk({ rid: 0x10, iova: Number(skipped), address: skipped, write: false })).toMatchObject({ ok: false, fault: { code: EventCode.IO_PAGE_FAULT, name: "IO_PAGE_FAULT" } });
  });

  it("an IOVA beyond a narrower table's width is the IO_PAGE_FAULT the IOMMU logs; Mode 5 takes inputs up to 2^57", () => {
    const mode5 = handImage(5, [
      [0x10000 + 128 * 8, IR_IW | 0x11000n | (1n << 9n) | 1n],
      [0x11000, IR_IW | 0x30_0000n | 1n],
    ]);
    const walk5 = unwrap(amdViWalkTool.prepare(mode5, { DEV_TAB_BASE: 0x1000n }));
    const inside = 1n << 55n;
    expect(walk5({ rid: 0x10, iova: Number(inside), address: inside, write: false })).toMatchObject({ ok: true, output: 0x30_0000 });
    const beyond = 1n << 57n;
    expect(walk5({ rid: 0x10, iova: Number(beyond), address: beyond, write: false })).toMatchObject({ ok: false, fault: { code: EventCode.IO_PAGE_FAULT } });
    const walk4 = unwrap(amdViWalkTool.prepare(handImage(4, []), { DEV_TAB_BASE: 0x1000n }));
    const high = 0xffff_ffff_ffff_f000n;
    const a = walk4({ rid: 0x10, iova: Number(high), address: high, write: false });
    expect(a).toMatchObject({ ok: false, fault: { code: EventCode.IO_PAGE_FAULT } });
    // Only the DTE was read: the table is never indexed with an input it cannot cover.
    expect(a.steps!.map((s) => s.what)).toEqual(["DTE"]);
  });
});

describe("viommu mappings --vendor amd-vi (inspect)", () => {
  function leavesOf(memory: GuestMemory, base: bigint) {
    const inspector = unwrap(amdViWalkTool.inspect!(memory, { DEV_TAB_BASE: base }));
    const contexts = inspector.contexts();
    const leaves = contexts.map((c) => {
      const out: MappingLeaf[] = [];
      inspector.leaves(c, (l) => out.push(l));
      return out;
    });
    return { contexts, leaves };
  }

  it("v1: every mapping the driver made, in IOVA order, a size-encoded page once at its start, and each leaf agrees with walk", () => {
    const t = oneVm({ mode: "shadow" });
    const domain = unwrap(t.driver.createDomain());
    unwrap(t.driver.attach(0x10, domain));
    const maps = [
      { iova: 0x10_0000, gpa: 0x2000_0000, length: 0x1000, perms: Perm.ReadWrite },
      { iova: 0x20_4000, gpa: 0x2010_4000, length: 0x4000, perms: Perm.Read },
      { iova: 0x1_0000_0000, gpa: 0x2800_0000, length: 0x20_0000, perms: Perm.ReadWrite },
    ];
    for (const m of maps) unwrap(t.driver.map(domain, m.iova, m.gpa, m.length, m.perms));
    const memory = image(t.v);
    const { contexts, leaves } = leavesOf(memory, devTabBase(t.v));
    const i = contexts.findIndex((c) => c.rid === 0x10);
    expect(contexts[i]).toMatchObject({ rid: 0x10, domain, mode: expect.stringMatching(/^v1 Mode [1-6]$/) });
    expect(contexts[i]!.anomalies).toBeUndefined();
    expect(leaves[i]!.map((l) => ({ iova: l.iova, output: l.output, size: l.size, write: l.write }))).toEqual(maps.map((m) => ({ iova: m.iova, output: m.gpa, size: m.length, write: (m.perms & Perm.Write) !== 0 })));
    const walk = unwrap(amdViWalkTool.prepare(memory, { DEV_TAB_BASE: devTabBase(t.v) }));
    for (const l of leaves[i]!) expect(walk({ rid: 0x10, iova: l.iova, write: false }) as WalkAnswer).toMatchObject({ ok: true, output: l.output, pageSize: l.size });
  });

  it("v2: one context per valid GCR3 entry, with its leaves; anomalies: a reserved bit, a page outside guest RAM", () => {
    const t = oneVm();
    const domain = unwrap(t.driver.createDomain());
    unwrap(t.driver.attach(0x10, domain));
    unwrap(t.driver.map(domain, 0x10_0000, 0x2000_0000, 0x2000, Perm.ReadWrite));
    const memory = image(t.v);
    const base = devTabBase(t.v);
    let { contexts, leaves } = leavesOf(memory, base);
    const i = contexts.findIndex((c) => c.rid === 0x10);
    expect(contexts[i]).toMatchObject({ rid: 0x10, pasid: 0, mode: "v2 4-level" });
    expect(leaves[i]!.map((l) => [l.iova, l.output, l.size])).toEqual([
      [0x10_0000, 0x2000_0000, 4096],
      [0x10_1000, 0x2000_1000, 4096],
    ]);
    // Corrupt the two leaves the way a bad guest (or a bad dump) would.
    const first = leaves[i]![0]!.entryAddress;
    memory.write64(first, memory.read64(first) | (1n << 52n) | (1n << 51n));
    const second = leaves[i]![1]!.entryAddress;
    memory.write64(second, (memory.read64(second) & ~0x000f_ffff_ffff_f000n) | 0x000f_0000_0000_0000n);
    ({ contexts, leaves } = leavesOf(memory, base));
    const flagged = leaves[contexts.findIndex((c) => c.rid === 0x10)]!;
    expect(flagged[0]!.anomalies?.[0]).toMatch(/reserved bits|outside guest RAM/);
    expect(flagged[1]!.anomalies?.[0]).toMatch(/outside guest RAM/);
  });
});
