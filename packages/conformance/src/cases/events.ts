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
    rule: "Wrapping the event log at the exact boundary neither reports a false overflow nor drops or reorders a record.",
    requires: ["eventLog"],
    run(c) {
      const bed = c.bed({ vms: [oneDevice()], guest: { eventLogEntries: 8 } });
      const v = bed.vms[0]!;
      mapOne(v, 0x10, IOVA, DATA_GPA, 0x1000);
      // Rounds of 7 (below capacity under either ring convention) from a log of 8 cross the boundary every round.
      for (let round = 0; round < 4; round++) {
        const iovas = fault(v, 7, 0x6000_0000 + round * 0x10_0000);
        const seen = events(bed, v).filter((e) => e.kind === "dma-fault").map((e) => e.address);
        check(seen.length === 7 && seen.every((a, i) => a === iovas[i]), `round ${round}: expected 7 records in order, got ${JSON.stringify(seen)}`);
        check(!v.drivers[0]!.takeOverflow!(), `round ${round}: false overflow at the wrap`);
      }
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
    rule: "Event interrupts reach the vector and vCPU the guest programmed, through the VMM or directly; VMM interventions are counted in each mode.",
    requires: ["eventLog"],
    run(c) {
      const modes: ("vmm" | "direct")[] = c.plugin.capabilities.directEventInterrupts ? ["vmm", "direct"] : ["vmm"];
      for (const mode of modes) {
        const bed = c.bed({ vms: [oneDevice()], eventInterrupts: mode, guest: { eventVector: 0x5a, eventDestination: 2 } });
        const v = bed.vms[0]!;
        mapOne(v, 0x10, IOVA, DATA_GPA, 0x1000);
        v.vm.interrupts.take();
        const before = v.vm.interventions;
        v.devices[0]!.device.read(0x7000_0000, 4);
        bed.poll();
        const got = v.vm.interrupts.take().filter((i) => i.vector === 0x5a);
        check(got.length >= 1 && got.every((i) => i.destination === 2), `${mode}: event interrupt did not reach vector 0x5a on vCPU 2`);
        c.metric(`interventions-${mode}`, v.vm.interventions - before);
        if (mode === "direct") check(got.some((i) => i.path === "direct"), "direct mode still went through the VMM");
        v.drivers[0]!.readEvents();
      }
    },
  },
];
