import { Perm } from "@viommu/core";
import { check, copy, cpuExpect, cpuWrite, domainWith, expectFault, guestEvents, must, mustRead, pattern, type Workload } from "./workload.js";

/** IOVAs the workloads map: well inside every vendor's input range, far from zero. */
const IOVA_A = 0x10_0000;
const IOVA_B = 0x20_0000;
const IOVA_C = 0x30_0000;
const IOVA_UNMAPPED = 0x4000_0000;
const PAGE = 0x1000;

/** The driver's bring-up alone. */
export const bringUp: Workload = {
  id: "bring-up",
  rule: "The reference driver brings the IOMMU up (tables, queues, event reporting, enables) as its Linux counterpart does.",
  requires: [],
  devices: 1,
  run() {},
};

export const mappedDmaLands: Workload = {
  id: "mapped-dma-lands",
  rule: "A DMA through a mapping reads the guest page it is mapped to and a DMA write lands in the guest page mapped there, across a page boundary.",
  requires: [],
  devices: 1,
  run(c) {
    const [rid] = c.rids as [number];
    const g1 = c.dataBase;
    const g2 = c.dataBase + 0x10_0000;
    // 3 KiB from the middle of the first page: the transfer crosses a page boundary (and fits a 4095-byte engine).
    const data = pattern(0xc00, c.seed);
    cpuWrite(c, g1 + 0x800, data);
    domainWith(c, rid, [
      { iova: IOVA_A, gpa: g1, length: 2 * PAGE, perms: Perm.Read },
      { iova: IOVA_B, gpa: g2, length: 2 * PAGE },
    ]);
    const w = copy(c, rid, IOVA_A + 0x800, IOVA_B + 0x800, data.length);
    check(w.ok, "the DMA write through a read-write mapping was blocked");
    cpuExpect(c, g2 + 0x800, data, "the copied bytes");
    cpuExpect(c, g2, new Uint8Array(0x800), "the bytes before the copy");
  },
};

export const unmappedDmaBlocked: Workload = {
  id: "unmapped-dma-blocked",
  rule: "A DMA write to an unmapped IOVA is blocked and changes no guest memory.",
  requires: [],
  devices: 1,
  run(c) {
    const [rid] = c.rids as [number];
    const g1 = c.dataBase;
    const data = pattern(64, c.seed + 1);
    cpuWrite(c, g1, data);
    domainWith(c, rid, [{ iova: IOVA_A, gpa: g1, length: PAGE }]);
    const w = copy(c, rid, IOVA_A, IOVA_UNMAPPED, data.length);
    check(!w.ok, "a DMA write to an unmapped IOVA succeeded");
    cpuExpect(c, g1, data, "the mapped page after the blocked write");
  },
};

export const dmaFaultReported: Workload = {
  id: "dma-fault-reported",
  rule: "A blocked DMA read is reported to the guest with the architecture's record naming the device's requester id and the IOVA.",
  requires: ["eventLog"],
  devices: 1,
  run(c) {
    const [rid] = c.rids as [number];
    domainWith(c, rid, [{ iova: IOVA_A, gpa: c.dataBase, length: PAGE }]);
    const r = c.session.dmaRead(rid, IOVA_UNMAPPED + 0x40, 8);
    check(!r.ok, "a DMA read of an unmapped IOVA succeeded");
    expectFault(guestEvents(c), rid, IOVA_UNMAPPED, "unmapped read");
  },
};

export const readonlyDmaWriteBlocked: Workload = {
  id: "readonly-dma-write-blocked",
  rule: "A DMA write through a read-only mapping is blocked, changes nothing and is reported, whether or not the device read through the mapping before; reads through it still work.",
  requires: [],
  devices: 1,
  run(c) {
    const [rid] = c.rids as [number];
    const [g1, g2, g3] = [c.dataBase, c.dataBase + 0x10_0000, c.dataBase + 0x20_0000];
    const kept = pattern(64, c.seed + 2);
    const other = pattern(64, c.seed + 3);
    cpuWrite(c, g1, kept);
    cpuWrite(c, g2, other);
    domainWith(c, rid, [
      { iova: IOVA_A, gpa: g1, length: PAGE, perms: Perm.Read },
      { iova: IOVA_B, gpa: g2, length: PAGE },
      { iova: IOVA_C, gpa: g3, length: PAGE },
    ]);
    const eventLog = c.session.plugin.capabilities.eventLog;
    // A write before any read of the page: the IOMMU walks the tables for it.
    check(!copy(c, rid, IOVA_B, IOVA_A, other.length).ok, "a DMA write through a read-only mapping succeeded");
    cpuExpect(c, g1, kept, "the read-only page");
    if (eventLog) expectFault(guestEvents(c), rid, IOVA_A, "write through a read-only mapping");
    // A read through the mapping works (and may leave the translation cached) …
    check(copy(c, rid, IOVA_A, IOVA_C, kept.length).ok, "copying out of the read-only mapping failed");
    cpuExpect(c, g3, kept, "bytes read through the read-only mapping");
    // … and a write after it is still blocked and reported, cached translation or not.
    check(!copy(c, rid, IOVA_B, IOVA_A, other.length).ok, "a DMA write through a read-only mapping the device had read through succeeded");
    cpuExpect(c, g1, kept, "the read-only page after the second write");
    if (eventLog) expectFault(guestEvents(c), rid, IOVA_A, "write through a read-only mapping after a read");
  },
};

export const unmapInvalidates: Workload = {
  id: "unmap-invalidates",
  rule: "After unmap and its invalidation a translation the device used is gone, and the neighbouring mapping still works.",
  requires: [],
  devices: 1,
  run(c) {
    const [rid] = c.rids as [number];
    const [g1, g3] = [c.dataBase, c.dataBase + 0x20_0000];
    const page0 = pattern(64, c.seed + 4);
    const page1 = pattern(64, c.seed + 5);
    cpuWrite(c, g1, page0);
    cpuWrite(c, g1 + PAGE, page1);
    // Two mappings of a page each: one 8 KiB mapping may become one 8 KiB page (AMD-Vi v1), which an unmap of
    // either half removes whole, as Linux's io-pgtable does.
    const domain = domainWith(c, rid, [
      { iova: IOVA_A, gpa: g1, length: PAGE, perms: Perm.Read },
      { iova: IOVA_A + PAGE, gpa: g1 + PAGE, length: PAGE, perms: Perm.Read },
      { iova: IOVA_C, gpa: g3, length: 2 * PAGE },
    ]);
    check(copy(c, rid, IOVA_A, IOVA_C, 64).ok, "the first copy failed");
    check(copy(c, rid, IOVA_A + PAGE, IOVA_C + PAGE, 64).ok, "the second copy failed");
    must(c.session.driver.unmap(domain, IOVA_A, PAGE), "unmap");
    const stale = c.session.dmaRead(rid, IOVA_A, 64);
    check(!stale.ok, "the device still reads through an unmapped and invalidated IOVA");
    if (c.session.plugin.capabilities.eventLog) expectFault(guestEvents(c), rid, IOVA_A, "read after unmap");
    check(copy(c, rid, IOVA_A + PAGE, IOVA_C, 64).ok, "the neighbouring mapping was lost");
    cpuExpect(c, g3, page1, "bytes copied through the neighbouring mapping");
  },
};

export const devicesKeepTheirDomains: Workload = {
  id: "devices-keep-their-domains",
  rule: "Two devices at different requester ids in different domains each translate through their own domain: a mapping of one is not the other's.",
  requires: [],
  devices: 2,
  run(c) {
    const [a, b] = c.rids as [number, number];
    const [g1, g2, g3] = [c.dataBase, c.dataBase + 0x10_0000, c.dataBase + 0x20_0000];
    const da = pattern(64, c.seed + 6);
    const db = pattern(64, c.seed + 7);
    cpuWrite(c, g1, da);
    cpuWrite(c, g2, db);
    domainWith(c, a, [
      { iova: IOVA_A, gpa: g1, length: PAGE, perms: Perm.Read },
      { iova: IOVA_C, gpa: g3, length: PAGE },
    ]);
    domainWith(c, b, [{ iova: IOVA_A, gpa: g2, length: PAGE, perms: Perm.Read }]);
    check(copy(c, a, IOVA_A, IOVA_C, 64).ok, "device A's copy failed");
    cpuExpect(c, g3, da, "device A read its own domain");
    const fromB = mustRead(c, b, IOVA_A, 64);
    check(fromB.every((x, i) => x === db[i]), "device B did not read its own domain");
    check(!c.session.dmaWrite(b, IOVA_C, fromB).ok, "device B wrote through device A's mapping");
    cpuExpect(c, g3, da, "device A's page after device B's blocked write");
    if (c.session.plugin.capabilities.eventLog) expectFault(guestEvents(c), b, IOVA_C, "device B's write outside its domain");
  },
};

export const faultsAcrossDevices: Workload = {
  id: "fault-reporting-overflow",
  rule: "More blocked DMAs than the fault log holds, from several devices, are reported in order up to its capacity and the rest are covered by the overflow indication; after the guest drains and acknowledges, reporting works again.",
  requires: ["eventLog"],
  devices: 9,
  guest: { eventLogEntries: 8 },
  run(c) {
    for (const rid of c.rids) domainWith(c, rid, [{ iova: IOVA_A, gpa: c.dataBase, length: PAGE }]);
    let faults = 0;
    for (let round = 0; round < 3; round++) {
      for (const rid of c.rids) {
        check(!c.session.dmaRead(rid, IOVA_UNMAPPED + faults * PAGE, 4).ok, "a DMA read of an unmapped IOVA succeeded");
        faults++;
      }
    }
    const seen = guestEvents(c).filter((e) => e.kind === "dma-fault");
    const overflow = c.session.driver.takeOverflow?.() ?? false;
    check(seen.length > 0 && seen.length < faults, `${seen.length} of ${faults} faults reported`);
    check(overflow, "faults were lost without the overflow indication");
    const last = c.rids[0]!;
    check(!c.session.dmaRead(last, IOVA_UNMAPPED - PAGE, 4).ok, "the read after draining succeeded");
    expectFault(guestEvents(c), last, IOVA_UNMAPPED - PAGE, "the fault after draining");
  },
};

export const interruptRemappingDelivers: Workload = {
  id: "interrupt-remapping-delivers",
  rule: "A device MSI through a programmed remapping entry reaches the vector and destination the entry names.",
  requires: ["interruptRemapping"],
  devices: 1,
  run(c) {
    const [rid] = c.rids as [number];
    const driver = c.session.driver;
    const msi = must(driver.mapInterrupt!(rid, 0x41, 0), "mapInterrupt");
    c.session.interrupts();
    c.session.msi(rid, msi);
    const got = c.session.interrupts();
    check(got.length === 1 && got[0]!.vector === 0x41 && got[0]!.destination === 0, `delivered ${JSON.stringify(got)}`);
  },
};

export const interruptRemappingFaultReported: Workload = {
  id: "interrupt-remapping-fault-reported",
  rule: "An MSI through a cleared remapping entry is blocked and reported to the guest as an interrupt-remapping fault.",
  requires: ["interruptRemapping", "eventLog"],
  devices: 1,
  run(c) {
    const [rid] = c.rids as [number];
    const driver = c.session.driver;
    const msi = must(driver.mapInterrupt!(rid, 0x42, 0), "mapInterrupt");
    must(driver.unmapInterrupt!(rid, msi), "unmapInterrupt");
    c.session.interrupts();
    c.session.msi(rid, msi);
    check(c.session.interrupts().length === 0, "an MSI through a cleared entry was delivered");
    const evs = guestEvents(c);
    check(evs.some((e) => e.kind === "interrupt-fault"), `no interrupt-remapping fault reported: ${JSON.stringify(evs.map((e) => e.name))}`);
  },
};

/** Every workload, by id. */
export const workloads: readonly Workload[] = [bringUp, mappedDmaLands, unmappedDmaBlocked, dmaFaultReported, readonlyDmaWriteBlocked, unmapInvalidates, devicesKeepTheirDomains, faultsAcrossDevices, interruptRemappingDelivers, interruptRemappingFaultReported];

export function workloadById(id: string): Workload | undefined {
  return workloads.find((w) => w.id === id);
}
