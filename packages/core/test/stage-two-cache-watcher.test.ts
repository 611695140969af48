import { describe, expect, it } from "vitest";
import {
  ANY_ASID,
  EventBus,
  HostLog,
  HostMemory,
  VmidSpace,
  Iotlb,
  ManualClock,
  Perm,
  SeededRng,
  StageTwoCacheWatcher,
  TablePagingDomain,
  newIotlbHit,
  type CoreEvents,
  type HostServices,
  type PhysicalIommu,
  type StageTwoCacheRules,
} from "../src/index.js";
import { toyFormat, toyGeometry } from "./support/toy-format.js";

/** The ASID a unit in these tests caches single-stage translations under. */
const SINGLE = 0x1_0000;

function hostServices(): HostServices {
  const clock = new ManualClock();
  const events = new EventBus<CoreEvents>();
  return { memory: new HostMemory(), clock, rng: new SeededRng(1), events, vmids: new VmidSpace("VMID", 1, 255), units: [], log: new HostLog(clock, events) };
}

/** The domain only keeps its unit for callers; the watcher never asks it anything. */
const unit = {} as PhysicalIommu;

function domain(host: HostServices, nestParent = false): TablePagingDomain {
  const r = TablePagingDomain.create(unit, host, toyFormat, toyGeometry, { nestParent });
  if (!r.ok) throw new Error(r.error.message);
  expect(r.value.map(0, 0x10_0000, 0x10_0000, Perm.ReadWrite).ok).toBe(true);
  return r.value;
}

function setup(rules: Partial<StageTwoCacheRules> = {}): { host: HostServices; iotlb: Iotlb; watcher: StageTwoCacheWatcher; cached: (vmid: number, asid: number, iova: number) => boolean } {
  const host = hostServices();
  const iotlb = new Iotlb(64);
  const watcher = new StageTwoCacheWatcher(iotlb, { singleStageAsid: SINGLE, ...rules });
  const hit = newIotlbHit();
  return { host, iotlb, watcher, cached: (vmid, asid, iova) => iotlb.lookup(vmid, asid, iova, hit) };
}

function fill(iotlb: Iotlb, vmid: number, asid: number, ...pages: number[]): void {
  for (const page of pages) iotlb.insert(vmid, asid, page, 12, 0x10_0000 + page, Perm.ReadWrite);
}

describe("StageTwoCacheWatcher", () => {
  it("a single-stage domain's unmap drops just the range under the single-stage ASID", () => {
    const { host, iotlb, watcher, cached } = setup();
    const d = domain(host);
    watcher.use(d, false);
    fill(iotlb, d.vmid, SINGLE, 0x1000, 0x5000);
    fill(iotlb, d.vmid, 7, 0x1000);
    d.unmap(0x1000, 0x1000);
    expect([cached(d.vmid, SINGLE, 0x1000), cached(d.vmid, SINGLE, 0x5000), cached(d.vmid, 7, 0x1000)]).toEqual([false, true, true]);
  });

  it("with ANY_ASID a single-stage unmap drops the range under every ASID of the VMID", () => {
    const { host, iotlb, watcher, cached } = setup({ singleStageAsid: ANY_ASID });
    const d = domain(host);
    watcher.use(d, false);
    fill(iotlb, d.vmid, 3, 0x1000, 0x5000);
    fill(iotlb, d.vmid, 4, 0x1000);
    d.unmap(0x1000, 0x1000);
    expect([cached(d.vmid, 3, 0x1000), cached(d.vmid, 4, 0x1000), cached(d.vmid, 3, 0x5000)]).toEqual([false, false, true]);
  });

  it("a nesting parent's unmap drops its whole VMID and no other", () => {
    const { host, iotlb, watcher, cached } = setup();
    const parent = domain(host, true);
    const other = domain(host);
    watcher.use(parent, true);
    watcher.use(other, false);
    fill(iotlb, parent.vmid, 9, 0x8000);
    fill(iotlb, parent.vmid, SINGLE, 0x9000);
    fill(iotlb, other.vmid, SINGLE, 0x1000);
    parent.unmap(0x1000, 0x1000);
    expect([cached(parent.vmid, 9, 0x8000), cached(parent.vmid, SINGLE, 0x9000), cached(other.vmid, SINGLE, 0x1000)]).toEqual([false, false, true]);
  });

  it("a unit that tags nested translations otherwise drops them its own way, once per unmap, and still drops the range", () => {
    const dropped: number[] = [];
    const { host, iotlb, watcher, cached } = setup({ dropNested: (vmid) => dropped.push(vmid) });
    const parent = domain(host, true);
    watcher.use(parent, true);
    watcher.use(parent, true);
    watcher.use(parent, false);
    fill(iotlb, parent.vmid, SINGLE, 0x1000);
    fill(iotlb, parent.vmid, 9, 0x1000);
    parent.unmap(0x1000, 0x1000);
    expect(dropped).toEqual([parent.vmid]);
    expect([cached(parent.vmid, SINGLE, 0x1000), cached(parent.vmid, 9, 0x1000)]).toEqual([false, true]);
  });

  it("an unmap that removes nothing drops nothing", () => {
    const { host, iotlb, watcher, cached } = setup();
    const parent = domain(host, true);
    watcher.use(parent, true);
    fill(iotlb, parent.vmid, 9, 0x1000);
    expect(parent.unmap(0x20_0000, 0x1000)).toBe(0);
    expect(cached(parent.vmid, 9, 0x1000)).toBe(true);
  });

  it("a destroyed domain drops its VMID and is forgotten as a parent, so a reused VMID starts single-stage", () => {
    const dropped: number[] = [];
    const { host, iotlb, watcher, cached } = setup({ dropNested: (vmid) => dropped.push(vmid) });
    const parent = domain(host, true);
    watcher.use(parent, true);
    fill(iotlb, parent.vmid, 9, 0x1000);
    parent.destroy();
    expect(cached(parent.vmid, 9, 0x1000)).toBe(false);
    const reused = domain(host);
    expect(reused.vmid).toBe(parent.vmid);
    watcher.use(reused, false);
    reused.unmap(0x1000, 0x1000);
    expect(dropped).toEqual([]);
  });

  it("every unit watching one parent hears its unmaps", () => {
    const host = hostServices();
    const a = new Iotlb(16);
    const b = new Iotlb(16);
    const parent = domain(host, true);
    new StageTwoCacheWatcher(a, { singleStageAsid: SINGLE }).use(parent, true);
    new StageTwoCacheWatcher(b, { singleStageAsid: SINGLE }).use(parent, true);
    fill(a, parent.vmid, 1, 0x1000);
    fill(b, parent.vmid, 2, 0x1000);
    parent.unmap(0, 0x1000);
    expect([a.size, b.size]).toEqual([0, 0]);
  });
});
