import { check, must, type ConformanceCase } from "@viommu/conformance";
import type { TestVm } from "@viommu/conformance";
import { Perm } from "@viommu/core";

const DATA_GPA = 0x2000_0000;
const IOVA = 0x10_0000;

function setUp(v: TestVm): void {
  const driver = v.drivers[0]!;
  const domain = must(driver.createDomain(), "createDomain");
  must(driver.attach(0x10, domain), "attach");
  must(driver.map(domain, IOVA, DATA_GPA, 0x1000, Perm.ReadWrite), "map");
}

function fault(v: TestVm, count: number, base: number): number[] {
  return Array.from({ length: count }, (_, i) => {
    v.devices[0]!.device.read(base + i * 0x1000, 4);
    return base + i * 0x1000;
  });
}

/**
 * The event rules of the vendor-neutral suite, restated for VT-d's fault-recording registers (the suite's
 * event-log cases need a log in guest memory, which VT-d does not have): faults reach the guest's registers,
 * the register ring wraps, overflow is PFO, a queue error is an event with no source id, fault events are
 * interrupts at the programmed vector and APIC id.
 */
export const vtdFaultRegisterCases: ConformanceCase[] = [
  {
    id: "vtd-fault-recorded",
    rule: "A blocked DMA is recorded in a fault-recording register with the guest's source id, the IOVA page and a VT-d fault reason.",
    requires: [],
    run(c) {
      for (const mode of ["nested", "shadow"] as const) {
        const bed = c.bed({ mode, vms: [{ devices: [{ rid: 0x100, guestRid: 0x10 }] }] });
        const v = bed.vms[0]!;
        setUp(v);
        fault(v, 1, IOVA + 0x20_0000);
        bed.poll();
        const evs = v.drivers[0]!.readEvents();
        check(evs.length === 1 && evs[0]!.kind === "dma-fault" && evs[0]!.rid === 0x10 && evs[0]!.address === IOVA + 0x20_0000, `${mode}: ${JSON.stringify(evs)}`);
        check(evs[0]!.name !== "UNKNOWN" && evs[0]!.raw.length === 2, `${mode}: the record has no VT-d reason`);
      }
    },
  },
  {
    id: "vtd-fault-overflow-pfo",
    rule: "When every fault-recording register holds a fault, further faults set FSTS.PFO: each fault is either recorded, in order, or covered by PFO; after the guest drains them recording resumes without a stale overflow.",
    requires: [],
    run(c) {
      const bed = c.bed({ vms: [{ devices: [{ rid: 0x100, guestRid: 0x10 }] }] });
      const v = bed.vms[0]!;
      setUp(v);
      const iovas = fault(v, 20, 0x4000_0000);
      bed.poll();
      const seen = v.drivers[0]!.readEvents().filter((e) => e.kind === "dma-fault");
      c.metric("faults", iovas.length);
      c.metric("recorded", seen.length);
      check(seen.length > 0 && seen.length < iovas.length, `recorded ${seen.length} of ${iovas.length}`);
      check(seen.every((e, i) => e.address === iovas[i]), "the records are not the first faults in order");
      check(v.drivers[0]!.takeOverflow!(), "faults were dropped without PFO");
      const again = fault(v, 2, 0x5000_0000);
      bed.poll();
      const next = v.drivers[0]!.readEvents().filter((e) => e.kind === "dma-fault");
      check(next.length === 2 && next.every((e, i) => e.address === again[i]) && !v.drivers[0]!.takeOverflow!(), "recording did not recover");
    },
  },
  {
    id: "vtd-fault-register-wrap",
    rule: "The fault-record index wraps after the last register: batches that fit are recorded in order across the wrap, with no false overflow.",
    requires: [],
    run(c) {
      const bed = c.bed({ vms: [{ devices: [{ rid: 0x100, guestRid: 0x10 }] }] });
      const v = bed.vms[0]!;
      setUp(v);
      for (let round = 0; round < 3; round++) {
        const iovas = fault(v, 7, 0x6000_0000 + round * 0x10_0000);
        bed.poll();
        const seen = v.drivers[0]!.readEvents().map((e) => e.address);
        check(seen.length === 7 && seen.every((a, i) => a === iovas[i]), `round ${round}: ${seen.length} records`);
        check(!v.drivers[0]!.takeOverflow!(), `round ${round}: false overflow`);
      }
    },
  },
  {
    id: "vtd-queue-error-event",
    rule: "An invalid descriptor stops the invalidation queue with FSTS.IQE; the guest sees it as an event naming no device, and the queue works again once the guest repairs it.",
    requires: ["commandQueue"],
    run(c) {
      const bed = c.bed({ vms: [{ devices: [{ rid: 0x100, guestRid: 0x10 }] }] });
      const v = bed.vms[0]!;
      check(v.drivers[0]!.submitIllegalCommand!().ok, "the invalid descriptor was not reported as a queue error");
      const evs = v.drivers[0]!.readEvents().filter((e) => e.kind === "command-error");
      check(evs.length === 1 && evs[0]!.rid === undefined && evs[0]!.name === "IQE" && evs[0]!.raw.length > 0, JSON.stringify(evs));
      setUp(v);
      check(v.devices[0]!.device.read(IOVA, 4).ok, "the queue did not recover");
    },
  },
  {
    id: "vtd-fault-event-interrupt",
    rule: "A fault event is an interrupt at the vector (FEDATA) and APIC id (FEADDR) the guest programmed, injected by the VMM.",
    requires: [],
    run(c) {
      const bed = c.bed({ vms: [{ devices: [{ rid: 0x100, guestRid: 0x10 }] }], guest: { eventVector: 0x5a, eventDestination: 2 } });
      const v = bed.vms[0]!;
      setUp(v);
      v.vm.interrupts.take();
      const before = v.vm.interventions;
      fault(v, 1, 0x7000_0000);
      bed.poll();
      const got = v.vm.interrupts.take().filter((i) => i.vector === 0x5a);
      check(got.length === 1 && got[0]!.destination === 2 && got[0]!.path === "vmm", JSON.stringify(got));
      c.metric("interventions", v.vm.interventions - before);
      v.drivers[0]!.readEvents();
    },
  },
];
