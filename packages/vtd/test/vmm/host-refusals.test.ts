import { describe, expect, it } from "vitest";
import { err, IommufdObjectType, Perm, unwrap, type InvalidateOutcome, type UserDataArray } from "@viommu/core";
import { encodeInvDesc, PasidIotlbGranularity } from "../../src/format/inv-desc.js";
import type { VtdNestedDomain } from "../../src/hw/vtd-nested-domain.js";
import { DATA_GPA, IOVA, mapped, vtdBed, type VtdBed } from "../support.js";

const FAULT_VECTOR = 0x5a;
const IQE = 0x10;
const STATUS = 0x90_0000;

/** A testbed whose guest unmasked the fault event at FAULT_VECTOR (as Linux's dmar_set_interrupt does). */
function bed(mode: "nested" | "shadow", variant: "legacy" | "scalable", extra: { dmaEntryLimit?: number; devices?: { rid: number; guestRid: number }[] } = {}): VtdBed {
  return vtdBed(mode, variant, { shadowBackend: "type1", dmaEntryLimit: extra.dmaEntryLimit, guest: { eventVector: FAULT_VECTOR, eventDestination: 1 } }, extra.devices);
}

/** The host refuses every VTD_S1 invalidation of `domain` while `refusing.on` (a host kernel that says EOPNOTSUPP). */
function refuseInvalidations(domain: VtdNestedDomain): { on: boolean; calls: number } {
  const state = { on: true, calls: 0 };
  const real = domain.cacheInvalidateUser.bind(domain);
  domain.cacheInvalidateUser = (array: UserDataArray): InvalidateOutcome => {
    state.calls++;
    return state.on ? { handled: 0, result: err("EOPNOTSUPP", "invalidation refused by the host driver") } : real(array);
  };
  return state;
}

function nestedDomains(b: VtdBed): VtdNestedDomain[] {
  return b.bed.vms[0]!.iommufd.list(IommufdObjectType.HWPT_NESTED).map((h) => (h as unknown as { domain: VtdNestedDomain }).domain);
}

/** The nested domain the VMM built for the device at `guestRid`. */
function nestedDomainOf(b: VtdBed, guestRid: number): VtdNestedDomain {
  const binding = b.device.bindings.devices.get(guestRid)!.binding;
  if (binding.kind !== "nested") throw new Error(`0x${guestRid.toString(16)} is not nested`);
  return (b.bed.vms[0]!.iommufd.list(IommufdObjectType.HWPT_NESTED).find((o) => o.id === binding.hwptId) as unknown as { domain: VtdNestedDomain }).domain;
}

function hostLog(b: VtdBed) {
  return b.bed.platform.host.log;
}

function faultEvents(b: VtdBed): number {
  return b.bed.vms[0]!.vm.interrupts.take().filter((i) => i.vector === FAULT_VECTOR).length;
}

describe("VT-d: an invalidation the host refuses is the guest's invalidation queue error", () => {
  it("reports a refused VTD_S1 invalidation as IQE (with the fault event), in the host log, and does not count it as forwarded", () => {
    const b = bed("nested", "scalable");
    const d = mapped(b, 0x10, IOVA, DATA_GPA, 0x2000);
    const v = b.bed.vms[0]!;
    const dev = v.devices[0]!.device;
    expect(dev.read(IOVA, 4).ok).toBe(true);
    const refusal = refuseInvalidations(nestedDomainOf(b, 0x10));
    b.driver.readEvents();
    faultEvents(b);
    const forwarded = b.device.stats.forwarded;

    // The guest unmaps: its PASID-based IOTLB invalidation is forwarded and refused.
    expect(b.driver.unmap(d, IOVA, 0x1000)).toMatchObject({ ok: false, error: { errno: "EIO" } });
    expect(refusal.calls).toBe(1);
    const errors = b.driver.readEvents().filter((e) => e.kind === "command-error");
    expect(errors.map((e) => [e.name, e.code])).toEqual([["IQE", 0]]);
    expect(faultEvents(b)).toBe(1);
    expect(b.device.stats.forwarded).toBe(forwarded);
    expect(hostLog(b).entries({ kind: "invalidation-refused" })).toMatchObject([{ vm: v.vm.id, errno: "EOPNOTSUPP", source: `vtd@0x${b.device.mmioBase.toString(16)}` }]);
    // Nothing was invalidated on the host: the guest was told so.
    expect(dev.read(IOVA, 4).ok).toBe(true);

    // Once the host takes invalidations again, the guest's retry reaches the IOTLB and counts.
    refusal.on = false;
    unwrap(b.driver.flush(d, IOVA, 0x1000));
    expect(dev.read(IOVA, 4).ok).toBe(false);
    expect(dev.read(IOVA + 0x1000, 4).ok).toBe(true);
    expect(b.device.stats.forwarded).toBe(forwarded + 1);
  });

  it("stops the queue at the refused descriptor (IQH there, IQEI 0, the wait behind it not completed) until the guest clears IQE", () => {
    const b = bed("nested", "scalable");
    mapped(b, 0x10, IOVA, DATA_GPA, 0x1000);
    const v = b.bed.vms[0]!;
    const did = b.device.bindings.devices.get(0x10)!.context.did;
    const refusal = refuseInvalidations(nestedDomainOf(b, 0x10));
    // Raw descriptors through the vendor-neutral queue view, as a harness or another guest would write them.
    const iq = b.device.guestQueues().find((q) => q.name === "IQ")!;
    const read = (r: { address: number; size: 4 | 8 }): bigint => v.vm.mmioRead(r.address, r.size);
    const tail = iq.producer.decode(read(iq.producer)).index;
    const put = (index: number, desc: Uint32Array): void => {
      const slot = new Uint32Array(iq.entryBytes / 4);
      slot.set(desc.subarray(0, slot.length));
      v.vm.memory.writeWords(iq.base()! + (index % iq.entries()) * iq.entryBytes, slot);
    };
    v.vm.memory.write32(STATUS, 0);
    put(tail, encodeInvDesc("P_IOTLB_INV", { G: PasidIotlbGranularity.PAGE_IN_PASID, DID: did, PASID: 0, AM: 0, ADDR: BigInt(IOVA) }, 256));
    put(tail + 1, encodeInvDesc("INV_WAIT", { SW: 1, STATUS_DATA: 7, STATUS_ADDR: BigInt(STATUS) }));
    faultEvents(b);
    v.vm.mmioWrite(iq.producer.address, 8, iq.producer.encode({ index: (tail + 2) % iq.entries(), wrap: false }, read(iq.producer)));
    const fsts = (): number => Number(v.vm.mmioRead(b.device.mmioBase + 0x34, 4));
    expect(fsts() & IQE).toBe(IQE);
    expect(iq.consumer.decode(read(iq.consumer)).index).toBe(tail);
    expect(Number(v.vm.mmioRead(b.device.mmioBase + 0xb0, 8) & 0xfn)).toBe(0);
    expect(v.vm.memory.read32(STATUS)).toBe(0);
    expect(faultEvents(b)).toBe(1);
    // Clearing IQE without repairing refetches the same descriptor: refused again.
    v.vm.mmioWrite(b.device.mmioBase + 0x34, 4, BigInt(IQE));
    expect(fsts() & IQE).toBe(IQE);
    expect(refusal.calls).toBe(2);
    expect(hostLog(b).entries({ kind: "invalidation-refused" }).length).toBe(2);
    // The host accepts it now: clearing IQE resumes at IQH, the invalidation and then the wait complete.
    refusal.on = false;
    v.vm.mmioWrite(b.device.mmioBase + 0x34, 4, BigInt(IQE));
    expect(fsts() & IQE).toBe(0);
    expect(v.vm.memory.read32(STATUS)).toBe(7);
    expect(iq.consumer.decode(read(iq.consumer)).index).toBe((tail + 2) % iq.entries());
    expect(refusal.calls).toBe(3);
  });

  it("still invalidates the other HWPTs of the descriptor's domain when one refuses, counting only those the host took", () => {
    const b = bed("nested", "scalable", { devices: [{ rid: 0x100, guestRid: 0x10 }, { rid: 0x108, guestRid: 0x18 }] });
    const d = mapped(b, 0x10, IOVA, DATA_GPA, 0x2000);
    unwrap(b.driver.attach(0x18, d));
    const [first, second] = b.bed.vms[0]!.devices.map((x) => x.device);
    expect(first!.read(IOVA, 4).ok && second!.read(IOVA, 4).ok).toBe(true);
    expect(nestedDomains(b).length).toBe(2);
    // The HWPT of the second device refuses.
    refuseInvalidations(nestedDomainOf(b, 0x18));
    const forwarded = b.device.stats.forwarded;
    expect(b.driver.unmap(d, IOVA, 0x1000).ok).toBe(false);
    expect(b.device.stats.forwarded).toBe(forwarded + 1);
    expect(first!.read(IOVA, 4).ok).toBe(false);
    expect(second!.read(IOVA, 4).ok).toBe(true);
    expect(b.driver.readEvents().filter((e) => e.name === "IQE").length).toBe(1);
  });
});

describe("VT-d: a configuration the host refuses", () => {
  it("blocks the device, logs configuration-refused and shows the guest an invalid PASID entry (0x5B) when the device uses it; a later flush retries", () => {
    const b = bed("nested", "scalable");
    const unit = b.bed.units[0]!;
    const real = unit.domainAllocNested!.bind(unit);
    let refuse = true;
    unit.domainAllocNested = (...args) => (refuse ? err("EOPNOTSUPP", "this host cannot nest") : real(...args));
    const d = mapped(b, 0x10, IOVA, DATA_GPA, 0x1000);
    const v = b.bed.vms[0]!;
    const dev = v.devices[0]!.device;
    expect(b.device.bindings.devices.get(0x10)!.binding.kind).toBe("blocked");
    // Each context / PASID-cache flush of the attach retried the configuration, and each refusal is logged.
    const refused = hostLog(b).entries({ kind: "configuration-refused" });
    expect(refused.length).toBeGreaterThan(0);
    expect(refused.every((e) => e.vm === v.vm.id && e.errno === "EOPNOTSUPP")).toBe(true);
    expect(dev.read(IOVA, 4).ok).toBe(false);
    b.bed.poll();
    expect(b.driver.readEvents().map((e) => [e.kind, e.code, e.rid, e.address])).toEqual([["dma-fault", 0x5b, 0x10, IOVA]]);
    refuse = false;
    unwrap(b.driver.attach(0x10, d));
    expect(dev.read(IOVA, 4).ok).toBe(true);
  });
});

describe("VT-d shadow mode: mappings the type1 back end refuses (dmaEntryLimit, ENOSPC)", () => {
  const LIMIT = 4;

  it("installs mappings up to the limit; the one beyond is refused in the host log and fails its invalidation with IQE; DMA to installed mappings works", () => {
    const b = bed("shadow", "legacy", { dmaEntryLimit: LIMIT });
    const v = b.bed.vms[0]!;
    const dev = v.devices[0]!.device;
    const d = unwrap(b.driver.createDomain());
    unwrap(b.driver.attach(0x10, d));
    b.driver.readEvents();
    faultEvents(b);
    const forwarded = b.device.stats.forwarded;
    const page = (i: number): number => IOVA + i * 0x2000;
    // Linux's iotlb_sync_map returns success whatever the flush met: so does the reference driver's map.
    for (let i = 0; i < LIMIT + 2; i++) unwrap(b.driver.map(d, page(i), DATA_GPA + i * 0x2000, 0x1000, Perm.ReadWrite));
    expect(b.device.stats.shadowMappings).toBe(LIMIT);
    expect(b.device.stats.forwarded).toBe(forwarded + LIMIT);
    for (let i = 0; i < LIMIT; i++) {
      expect(dev.write(page(i), Uint8Array.of(i + 1)).ok, `page ${i}`).toBe(true);
      expect(v.vm.memory.readBytes(DATA_GPA + i * 0x2000, 1)[0]).toBe(i + 1);
    }
    expect(dev.read(page(LIMIT), 4).ok).toBe(false);
    expect(dev.read(page(LIMIT + 1), 4).ok).toBe(false);
    // Guest-visible: each refused announcement stopped the queue with IQE (fault event), as the guest reports.
    const errors = b.driver.readEvents().filter((e) => e.kind === "command-error");
    expect(errors.map((e) => [e.name, e.code])).toEqual([
      ["IQE", 0],
      ["IQE", 0],
    ]);
    expect(faultEvents(b)).toBe(2);
    // Operator-visible: ShadowMirror's entries, with the back end's errno.
    const refused = hostLog(b).entries({ kind: "shadow-map-refused" });
    expect(refused.length).toBe(2);
    expect(refused.every((e) => e.errno === "ENOSPC" && e.vm === v.vm.id)).toBe(true);
    // An unmap frees an entry; the guest's next flush of the refused page installs it.
    unwrap(b.driver.unmap(d, page(0), 0x1000));
    unwrap(b.driver.flush(d, page(LIMIT), 0x1000));
    expect(dev.read(page(LIMIT), 4).ok).toBe(true);
    expect(dev.read(page(0), 4).ok).toBe(false);
    expect(b.device.stats.shadowMappings).toBe(LIMIT);
  });

  it("answers a register-based invalidation whose mapping was refused with IAIG 0, and with the granularity once it is installed", () => {
    const b = bed("shadow", "legacy", { dmaEntryLimit: 1 });
    const v = b.bed.vms[0]!;
    const d = unwrap(b.driver.createDomain());
    unwrap(b.driver.attach(0x10, d));
    unwrap(b.driver.map(d, IOVA, DATA_GPA, 0x1000, Perm.ReadWrite));
    unwrap(b.driver.map(d, IOVA + 0x2000, DATA_GPA + 0x2000, 0x1000, Perm.ReadWrite));
    const did = b.device.bindings.devices.get(0x10)!.context.did;
    const base = b.device.mmioBase;
    // Leave queued invalidation (nothing pending, the last descriptor a wait), as a driver falling back would.
    const gsts = Number(v.vm.mmioRead(base + 0x1c, 4));
    v.vm.mmioWrite(base + 0x18, 4, BigInt((gsts & ~(1 << 26) & ~(1 << 30) & ~(1 << 24)) >>> 0));
    expect(Number(v.vm.mmioRead(base + 0x1c, 4)) & (1 << 26)).toBe(0);
    const psi = (iova: number): number => {
      v.vm.mmioWrite(base + 0xf0, 8, BigInt(iova));
      v.vm.mmioWrite(base + 0xf8, 8, (1n << 63n) | (3n << 60n) | (BigInt(did) << 32n));
      return Number((v.vm.mmioRead(base + 0xf8, 8) >> 57n) & 3n);
    };
    expect(psi(IOVA + 0x2000)).toBe(0);
    expect(hostLog(b).entries({ kind: "shadow-map-refused" }).length).toBeGreaterThan(0);
    // Clear the first page's PTE by hand and invalidate it register-based: its shadow entry is freed.
    const mem = v.vm.memory;
    let leaf = 0;
    for (const p of mem.writtenPages()) for (let off = 0; off < 4096; off += 8) if ((mem.read32(p + off) & ~0xfff) >>> 0 === DATA_GPA && mem.read32(p + off) & 3) leaf = p + off;
    expect(leaf).not.toBe(0);
    mem.write64(leaf, 0n);
    expect(psi(IOVA)).toBe(3);
    expect(psi(IOVA + 0x2000)).toBe(3);
    expect(v.devices[0]!.device.read(IOVA + 0x2000, 4).ok).toBe(true);
    expect(v.devices[0]!.device.read(IOVA, 4).ok).toBe(false);
  });
});
