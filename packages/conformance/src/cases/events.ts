import { check, type ConformanceCase } from "../case.js";
import { DATA_GPA, events, IOVA, mapOne, oneDevice } from "./support.js";

/** Faults `count` distinct unmapped IOVAs of the VM's first device; returns the IOVAs. */
function fault(v: { devices: { device: { read(iova: number, n: number): unknown } }[] }, count: number, base: number): number[] {
  const iovas: number[] = [];
  for (let i = 0; i < count; i++) {
    const iova = base + i * 0x1000;
    v.devices[0]!.device.read(iova, 4);
    iovas.push(iova);
  }
  return iovas;
}

export const eventCases: ConformanceCase[] = [
  {
    id: "event-log-overflow-reported",
    rule: "A full event log reports overflow: every fault is either in the log or covered by the overflow indication, never silently lost.",
    requires: ["eventLog"],
    run(c) {
      const bed = c.bed({ vms: [oneDevice()], guest: { eventLogEntries: 8 } });
      const v = bed.vms[0]!;
      mapOne(v, 0x10, IOVA, DATA_GPA, 0x1000);
      const iovas = fault(v, 20, 0x4000_0000);
      const seen = events(bed, v).filter((e) => e.kind === "dma-fault");
      const overflow = v.drivers[0]!.takeOverflow!();
      c.metric("faults", iovas.length);
      c.metric("logged", seen.length);
      check(seen.length > 0, "no fault logged at all");
      check(seen.length < iovas.length, "an 8-entry log held 20 events");
      check(overflow, `${iovas.length - seen.length} events lost without the overflow indication`);
      const expected = iovas.slice(0, seen.length);
      check(seen.every((e, i) => e.address === expected[i]), "the log does not hold the first events in order");
      // After draining and acknowledging, the log works again and reports no stale overflow.
      fault(v, 2, 0x5000_0000);
      const again = events(bed, v).filter((e) => e.kind === "dma-fault");
      check(again.length === 2 && !v.drivers[0]!.takeOverflow!(), "log did not recover after overflow");
    },
  },
  {
    id: "event-log-wrap",
    rule: "Filled to exactly its capacity round after round, the event log wraps at the boundary without a false overflow, a dropped or a reordered record; one record more than its capacity is an overflow.",
    requires: ["eventLog"],
    run(c) {
      const bed = c.bed({ vms: [oneDevice()], guest: { eventLogEntries: 8 } });
      const v = bed.vms[0]!;
      mapOne(v, 0x10, IOVA, DATA_GPA, 0x1000);
      const driver = v.drivers[0]!;
      // The capacity: how many records fit before the overflow indication (N or N - 1, by the ring's convention).
      const probe = fault(v, 64, 0x5000_0000);
      const held = events(bed, v).filter((e) => e.kind === "dma-fault").length;
      check(driver.takeOverflow!(), `${probe.length} faults into a small log reported no overflow`);
      const capacity = held;
      c.metric("capacity", capacity);
      check(capacity >= 1, "the log holds no record at all");
      const view = v.iommus[0]!.guestQueues().find((q) => q.role === "event");
      if (view !== undefined) check(capacity === view.entries() || capacity === view.entries() - 1, `capacity ${capacity} for a ring of ${view.entries()} entries`);
      // Enough rounds of exactly `capacity` records to cross the boundary more than once.
      for (let round = 0; round < 4; round++) {
        const iovas = fault(v, capacity, 0x6000_0000 + round * 0x10_0000);
        const seen = events(bed, v).filter((e) => e.kind === "dma-fault").map((e) => e.address);
        check(seen.length === capacity && seen.every((a, i) => a === iovas[i]), `round ${round}: expected ${capacity} records in order, got ${JSON.stringify(seen)}`);
        check(!driver.takeOverflow!(), `round ${round}: false overflow with the log exactly full`);
      }
      const over = fault(v, capacity + 1, 0x7000_0000);
      const seen = events(bed, v).filter((e) => e.kind === "dma-fault").map((e) => e.address);
      check(seen.length === capacity && seen.every((a, i) => a === over[i]), `one past capacity: expected the first ${capacity} records, got ${seen.length}`);
      check(driver.takeOverflow!(), "one record past capacity was lost without the overflow indication");
    },
  },
  {
    id: "event-log-rebase",
    rule: "Reprogramming the event log with a new base resets head and tail: nothing of the old log appears, and the new log wraps cleanly.",
    requires: ["eventLog", "eventLogRebase"],
    run(c) {
      const bed = c.bed({ vms: [oneDevice()], guest: { eventLogEntries: 16 } });
      const v = bed.vms[0]!;
      mapOne(v, 0x10, IOVA, DATA_GPA, 0x1000);
      fault(v, 5, 0x4000_0000);
      bed.poll();
      const driver = v.drivers[0]!;
      check(driver.resetEventLog!(8).ok, "event log reprogramming failed");
      check(driver.readEvents().length === 0, "records of the old log appeared in the new one");
      for (let round = 0; round < 2; round++) {
        const iovas = fault(v, 7, 0x6000_0000 + round * 0x10_0000);
        const seen = events(bed, v).filter((e) => e.kind === "dma-fault").map((e) => e.address);
        check(seen.length === 7 && seen.every((a, i) => a === iovas[i]), `round ${round} after rebase: expected 7 records in order, got ${seen.length}`);
        check(!driver.takeOverflow!(), `round ${round} after rebase: false overflow`);
      }
    },
  },
  {
    id: "non-affiliated-event",
    rule: "An event tied to no device (a command error, a global error) reaches the guest with its context intact.",
    requires: ["commandQueue", "eventLog"],
    run(c) {
      const bed = c.bed({ vms: [oneDevice()] });
      const v = bed.vms[0]!;
      check(v.drivers[0]!.submitIllegalCommand!().ok, "the illegal command was not reported as a queue error");
      const evs = events(bed, v).filter((e) => e.kind === "command-error" || e.kind === "global-error");
      check(evs.length >= 1, "no non-affiliated event in the guest log");
      const e = evs[0]!;
      check(e.rid === undefined && e.name !== "UNKNOWN" && e.raw.length > 0, `event lost its context: ${JSON.stringify(e)}`);
      mapOne(v, 0x10, IOVA, DATA_GPA, 0x1000);
      check(v.devices[0]!.device.read(IOVA, 4).ok, "the command queue did not recover after the error");
    },
  },
  {
    id: "event-interrupt-delivery",
    rule: "An event interrupt the VMM injects reaches the vector and vCPU the guest programmed, as one VMM intervention.",
    requires: ["eventLog"],
    run(c) {
      const bed = c.bed({ vms: [oneDevice()], eventInterrupts: "vmm", guest: { eventVector: 0x5a, eventDestination: 2 } });
      const v = bed.vms[0]!;
      mapOne(v, 0x10, IOVA, DATA_GPA, 0x1000);
      v.vm.interrupts.take();
      const injections = v.vm.exits.injections;
      v.devices[0]!.device.read(0x7000_0000, 4);
      bed.poll();
      const got = v.vm.interrupts.take().filter((i) => i.vector === 0x5a);
      check(got.length >= 1 && got.every((i) => i.destination === 2 && i.path === "vmm"), `event interrupt did not reach vector 0x5a on vCPU 2 through the VMM: ${JSON.stringify(got)}`);
      c.metric("injections", v.vm.exits.injections - injections);
      check(v.vm.exits.injections - injections === got.length, `${got.length} interrupts delivered, ${v.vm.exits.injections - injections} injections counted`);
      v.drivers[0]!.readEvents();
    },
  },
  {
    id: "event-interrupt-direct",
    rule: "Where the hardware posts event interrupts, they reach the programmed vector and vCPU with no VMM injection.",
    requires: ["eventLog", "directEventInterrupts"],
    run(c) {
      const bed = c.bed({ vms: [oneDevice()], eventInterrupts: "direct", guest: { eventVector: 0x5a, eventDestination: 2 } });
      const v = bed.vms[0]!;
      mapOne(v, 0x10, IOVA, DATA_GPA, 0x1000);
      v.vm.interrupts.take();
      const injections = v.vm.exits.injections;
      v.devices[0]!.device.read(0x7000_0000, 4);
      bed.poll();
      const got = v.vm.interrupts.take().filter((i) => i.vector === 0x5a);
      check(got.length >= 1 && got.every((i) => i.destination === 2 && i.path === "direct"), `direct event interrupt not delivered as programmed: ${JSON.stringify(got)}`);
      c.metric("injections", v.vm.exits.injections - injections);
      check(v.vm.exits.injections === injections, `${v.vm.exits.injections - injections} VMM injections for a posted interrupt`);
      v.drivers[0]!.readEvents();
    },
  },
];
