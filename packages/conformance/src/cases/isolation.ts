import fc from "fast-check";
import { Perm } from "@viommu/core";
import { check, type ConformanceCase } from "../case.js";
import { DATA_GPA, events, IOVA, mapOne, memoryDigest, pattern, sameBytes } from "./support.js";

export const isolationCases: ConformanceCase[] = [
  {
    id: "cross-vm-isolation",
    rule: "Whatever VM A's guest writes (tables, device entries, mappings to any address), VM A's device never reaches VM B's memory.",
    requires: [],
    run(c) {
      const bed = c.bed({ vms: [{ devices: [{ rid: 0x100, guestRid: 0x10 }] }, { devices: [{ rid: 0x200, guestRid: 0x10 }] }] });
      const [a, b] = [bed.vms[0]!, bed.vms[1]!];
      mapOne(b, 0x10, IOVA, DATA_GPA, 0x1000);
      b.vm.memory.writeBytes(DATA_GPA, pattern(4096, 42));
      const domainA = mapOne(a, 0x10, IOVA, DATA_GPA, 0x1000);
      const digestB = memoryDigest(b);
      const host = bed.platform.host.memory;
      const driverStart = a.vm.memory.end - 32 * 2 ** 20;
      const step = fc.oneof(
        fc.record({ kind: fc.constant("map" as const), iova: fc.nat(2 ** 20).map((p) => p * 4096), gpa: fc.nat(2 ** 22).map((p) => p * 4096), pages: fc.integer({ min: 1, max: 4 }), perms: fc.integer({ min: 1, max: 3 }) }),
        fc.record({ kind: fc.constant("garbage" as const), page: fc.nat(32 * 256 - 1), offset: fc.nat(511).map((x) => x * 8), lo: fc.integer({ min: 0, max: 0xffffffff }), hi: fc.integer({ min: 0, max: 0xffffffff }) }),
        fc.record({ kind: fc.constant("dma" as const), iova: fc.oneof(fc.nat(2 ** 20).map((p) => p * 4096 + 16), fc.constant(IOVA)), write: fc.boolean() }),
        fc.record({ kind: fc.constant("attach" as const), rid: fc.constantFrom(0x10, 0x11, 0x0, 0xffff) }),
      );
      fc.assert(
        fc.property(fc.array(step, { minLength: 1, maxLength: 24 }), (steps) => {
          for (const s of steps) {
            if (s.kind === "map") {
              // Mapping GPAs beyond RAM, over the driver's own tables, anywhere: the guest's right.
              a.drivers[0]!.map(domainA, s.iova, s.gpa, s.pages * 4096, s.perms);
            } else if (s.kind === "garbage") {
              // Corrupt the guest driver's own structures (page tables, device table, queues).
              a.vm.memory.write64Halves(driverStart + s.page * 4096 + s.offset, s.lo, s.hi);
            } else if (s.kind === "attach") {
              a.drivers[0]!.attach(s.rid, domainA);
            } else {
              const dev = a.devices[0]!.device;
              if (s.write) dev.write(s.iova, pattern(64, s.iova));
              else dev.read(s.iova, 64);
            }
          }
          bed.poll();
          a.drivers[0]!.readEvents();
          check(host.violations.length === 0, `isolation violation: ${JSON.stringify(host.violations[0])}`);
          check(memoryDigest(b) === digestB, "VM B's memory changed");
        }),
        { seed: c.seed, numRuns: 40 },
      );
      const r = b.devices[0]!.device.read(IOVA, 4096);
      check(r.ok && sameBytes(r.data, pattern(4096, 42)), "VM B's own device lost its mapping");
    },
  },
  {
    id: "sriov-same-guest-rid",
    rule: "Two VMs whose devices sit at the same guest requester id (virtual functions) are translated to distinct physical ids and never cross.",
    requires: [],
    run(c) {
      const bed = c.bed({ vms: [{ devices: [{ rid: 0x101, guestRid: 0x10 }] }, { devices: [{ rid: 0x102, guestRid: 0x10 }] }] });
      const [a, b] = [bed.vms[0]!, bed.vms[1]!];
      mapOne(a, 0x10, IOVA, DATA_GPA, 0x1000);
      mapOne(b, 0x10, IOVA, DATA_GPA + 0x1000, 0x1000);
      check(a.devices[0]!.device.write(IOVA, pattern(32, 1)).ok, "VF of VM A cannot DMA");
      check(b.devices[0]!.device.write(IOVA, pattern(32, 2)).ok, "VF of VM B cannot DMA");
      check(sameBytes(a.vm.memory.readBytes(DATA_GPA, 32), pattern(32, 1)), "VM A's data is not VM A's device's");
      check(sameBytes(b.vm.memory.readBytes(DATA_GPA + 0x1000, 32), pattern(32, 2)), "VM B's data is not VM B's device's");
      check(!sameBytes(a.vm.memory.readBytes(DATA_GPA + 0x1000, 32), pattern(32, 2)), "VM B's DMA reached VM A");
      b.devices[0]!.device.read(IOVA + 0x5000, 4);
      if (c.plugin.capabilities.eventLog) {
        const inA = events(bed, a).filter((e) => e.kind === "dma-fault");
        const inB = b.drivers[0]!.readEvents().filter((e) => e.kind === "dma-fault");
        check(inA.length === 0, "VM B's fault was reported to VM A");
        check(inB.some((e) => e.rid === 0x10 && e.address === IOVA + 0x5000), "VM B's fault was not reported to VM B at its guest id");
      }
      check(bed.platform.host.memory.violations.length === 0, "isolation violation recorded");
    },
  },
  {
    id: "virtual-ids-map-to-physical",
    rule: "Each guest requester id reaches the physical device it was assigned, and faults name the guest's id, not the host's.",
    requires: [],
    run(c) {
      const bed = c.bed({ vms: [{ devices: [{ rid: 0x100, guestRid: 0x10 }, { rid: 0x208, guestRid: 0x18 }] }] });
      const v = bed.vms[0]!;
      mapOne(v, 0x10, IOVA, DATA_GPA, 0x1000);
      mapOne(v, 0x18, IOVA, DATA_GPA + 0x4000, 0x1000, Perm.Read);
      const [d10, d18] = [v.devices[0]!.device, v.devices[1]!.device];
      check(d10.write(IOVA, pattern(16, 3)).ok, "device at guest id 0x10 cannot DMA");
      check(sameBytes(v.vm.memory.readBytes(DATA_GPA, 16), pattern(16, 3)), "guest id 0x10 did not reach its own domain");
      check(!d18.write(IOVA, pattern(16, 4)).ok, "device at guest id 0x18 used the other device's domain");
      if (c.plugin.capabilities.eventLog) {
        const evs = events(bed, v).filter((e) => e.kind === "dma-fault");
        check(evs.some((e) => e.rid === 0x18), `fault does not name guest id 0x18: ${JSON.stringify(evs.map((e) => e.rid))}`);
        check(!evs.some((e) => e.rid === 0x208), "fault names the physical id");
      }
    },
  },
];
