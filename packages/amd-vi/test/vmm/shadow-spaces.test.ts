import { describe, expect, it } from "vitest";
import { IommufdContext, Perm, Platform, unwrap } from "@viommu/core";
import { amdV1PageTableEncoder } from "../../src/format/page-table-v1.js";
import { emptyReport, ShadowSpaces } from "../../src/vmm/shadow-spaces.js";

const ROOT = 0x10_0000;
const PAGE = 0x20_0000;

/** A one-level v1 table (DTE Mode 1: 2 MiB of IOVA) written by hand, mirrored through ShadowSpaces. */
function setup(options: { confidential?: boolean } = {}) {
  const platform = new Platform({ plugins: [] });
  const vm = platform.createVm({ memoryBytes: 2 ** 26, confidential: options.confidential });
  const ctx = new IommufdContext(vm.id);
  const spaces = new ShadowSpaces(ctx, vm.memory, "iommufd", undefined, { log: platform.host.log, vm: vm.id, source: "test" });
  const source = { kind: "v1" as const, domainId: 7, root: ROOT, levels: 1 };
  const leaf = new Uint32Array(2);
  /** Writes the leaf of a 2^shift page at `gpa` into `slot`. */
  const write = (slot: number, gpa: number, shift: number): void => {
    amdV1PageTableEncoder.encodeLeaf(gpa, shift, Perm.ReadWrite, 1, leaf);
    vm.memory.write64Halves(ROOT + slot * 8, leaf[0]!, leaf[1]!);
  };
  const mappings = (): [number, number, number][] => {
    const s = unwrap(spaces.spaceFor(source, emptyReport()));
    return [...s.mirror.maps].map(([iova, m]) => [iova, m.gpa, m.size] as [number, number, number]).sort((a, b) => a[0] - b[0]);
  };
  return { platform, vm, spaces, source, write, mappings };
}

describe("the AMD-Vi shadow of v1 tables (core's ShadowMirror over the replicated NextLevel-7 entries)", () => {
  it("a 16 KiB page written as four identical entries is one host mapping", () => {
    const t = setup();
    for (let slot = 4; slot < 8; slot++) t.write(slot, PAGE, 14);
    expect(t.mappings()).toEqual([[0x4000, PAGE, 0x4000]]);
  });

  it("an invalidation of 4 KiB inside it re-derives the whole page instead of dropping the rest of it", () => {
    const t = setup();
    for (let slot = 4; slot < 8; slot++) t.write(slot, PAGE, 14);
    t.mappings();
    const r = t.spaces.invalidateDomain(7, 0x5000, 0x1000);
    expect(r.refused).toBe(0);
    expect(t.mappings()).toEqual([[0x4000, PAGE, 0x4000]]);
  });

  it("a lone copy (a hostile or half-written group) maps only the slot, at the output that slot translates to", () => {
    const t = setup();
    t.write(5, PAGE, 14);
    expect(t.mappings()).toEqual([[0x5000, PAGE + 0x1000, 0x1000]]);
    // The group's first copy alone does not make the page: slots 5–7 translate nothing on the hardware.
    const u = setup();
    u.write(4, PAGE, 14);
    expect(u.mappings()).toEqual([[0x4000, PAGE, 0x1000]]);
  });

  it("an invalidation that starts inside a group the mirror does not hold maps each slot it covers exactly", () => {
    const t = setup();
    expect(t.mappings()).toEqual([]);
    for (let slot = 4; slot < 8; slot++) t.write(slot, PAGE, 14);
    t.spaces.invalidateDomain(7, 0x5000, 0x3000);
    expect(t.mappings()).toEqual([
      [0x5000, PAGE + 0x1000, 0x1000],
      [0x6000, PAGE + 0x2000, 0x1000],
      [0x7000, PAGE + 0x3000, 0x1000],
    ]);
  });

  it("tables in an SEV-SNP guest's private memory are not read", () => {
    const t = setup({ confidential: true });
    t.write(0, PAGE, 12);
    expect(t.mappings()).toEqual([]);
    t.vm.memory.setShared(ROOT, 0x1000, true);
    t.spaces.invalidateAll();
    expect(t.mappings()).toEqual([[0, PAGE, 0x1000]]);
  });
});
