import { newWalkResult, NO_PASID, Perm } from "@viommu/core";
import { check, type ConformanceCase } from "../case.js";
import { DATA_GPA, events, expectFault, IOVA, mapOne, oneDevice, pattern, sameBytes } from "./support.js";

export const dmaCases: ConformanceCase[] = [
  {
    id: "mapped-dma-reaches-host-page",
    rule: "A DMA to a mapped IOVA lands in the host page backing the guest page it is mapped to, and nowhere else.",
    requires: [],
    run(c) {
      const bed = c.bed({ vms: [oneDevice()] });
      const v = bed.vms[0]!;
      mapOne(v, 0x10, IOVA, DATA_GPA, 0x4000);
      const data = pattern(0x1800, c.seed);
      const r = v.devices[0]!.device.write(IOVA + 0x1400, data);
      check(r.ok, `DMA write faulted: ${JSON.stringify(r)}`);
      check(sameBytes(v.vm.memory.readBytes(DATA_GPA + 0x1400, data.length), data), "guest memory does not hold the DMA data");
      let iova = IOVA + 0x1400;
      for (const hpa of r.hpas) {
        const gpa = DATA_GPA + (iova - IOVA);
        check(bed.platform.host.memory.ownerOf(hpa) === v.vm.id, `IOVA 0x${iova.toString(16)} landed in a page the VM does not own`);
        check(v.vm.memory.backingOf(gpa) === hpa, `IOVA 0x${iova.toString(16)} did not land in the host page backing GPA 0x${gpa.toString(16)}`);
        iova += 4096 - (iova % 4096);
      }
      const back = v.devices[0]!.device.read(IOVA + 0x1400, data.length);
      check(back.ok && sameBytes(back.data, data), "DMA read does not return what was written");
    },
  },
  {
    id: "unmapped-dma-blocked",
    rule: "A DMA to an unmapped IOVA is blocked and touches no memory.",
    requires: [],
    run(c) {
      const bed = c.bed({ vms: [oneDevice()] });
      const v = bed.vms[0]!;
      mapOne(v, 0x10, IOVA, DATA_GPA, 0x1000);
      const before = bed.platform.host.memory.writtenPagesOf(v.vm.id).length;
      const r = v.devices[0]!.device.write(IOVA + 0x10_0000, pattern(64, 1));
      check(!r.ok, "DMA to an unmapped IOVA succeeded");
      check(!r.isolation, "the block came from the host's last-line check, not from translation");
      check(bed.platform.host.memory.writtenPagesOf(v.vm.id).length === before, "a blocked DMA wrote memory");
      check(bed.platform.host.memory.violations.length === 0, "isolation violation recorded");
    },
  },
  {
    id: "dma-fault-reported",
    rule: "A blocked DMA produces the architecture's fault record in the guest-visible log, naming the guest's requester id and the IOVA.",
    requires: ["eventLog"],
    run(c) {
      const bed = c.bed({ vms: [oneDevice()] });
      const v = bed.vms[0]!;
      mapOne(v, 0x10, IOVA, DATA_GPA, 0x1000);
      v.devices[0]!.device.read(IOVA + 0x20_0000, 8);
      const e = expectFault(events(bed, v), 0x10, IOVA + 0x20_0000, "read fault");
      check(e.name !== "UNKNOWN" && e.raw.length > 0, "fault record has no architecture name or raw words");
    },
  },
  {
    id: "readonly-dma-write-blocked",
    rule: "A DMA write to a read-only mapping is blocked and reported; reads through it still work.",
    requires: [],
    run(c) {
      const bed = c.bed({ vms: [oneDevice()] });
      const v = bed.vms[0]!;
      v.vm.memory.writeBytes(DATA_GPA, pattern(16, 7));
      mapOne(v, 0x10, IOVA, DATA_GPA, 0x1000, Perm.Read);
      const w = v.devices[0]!.device.write(IOVA, pattern(16, 9));
      check(!w.ok, "write through a read-only mapping succeeded");
      check(sameBytes(v.vm.memory.readBytes(DATA_GPA, 16), pattern(16, 7)), "read-only page was modified");
      const r = v.devices[0]!.device.read(IOVA, 16);
      check(r.ok && sameBytes(r.data, pattern(16, 7)), "read through a read-only mapping failed");
      if (c.plugin.capabilities.eventLog) expectFault(events(bed, v), 0x10, IOVA, "write to read-only");
    },
  },
  {
    id: "unmap-invalidates",
    rule: "After unmap and invalidation, the old translation is gone even if it was cached.",
    requires: [],
    run(c) {
      const bed = c.bed({ vms: [oneDevice()] });
      const v = bed.vms[0]!;
      const domain = mapOne(v, 0x10, IOVA, DATA_GPA, 0x2000);
      const dev = v.devices[0]!.device;
      check(dev.read(IOVA, 8).ok && dev.read(IOVA + 0x1000, 8).ok, "mapped DMA failed");
      const driver = v.drivers[0]!;
      check(driver.unmap(domain, IOVA, 0x1000).ok, "unmap failed");
      check(!dev.read(IOVA, 8).ok, "stale translation still used after unmap + invalidation");
      check(dev.read(IOVA + 0x1000, 8).ok, "a neighbouring mapping was lost");
    },
  },
  {
    id: "emulated-device-translation",
    rule: "The VMM translates DMA of its own emulated devices through the guest's tables, to the GPA the guest mapped.",
    requires: [],
    run(c) {
      const bed = c.bed({ vms: [oneDevice()] });
      const v = bed.vms[0]!;
      const emulatedRid = 0x28;
      mapOne(v, emulatedRid, IOVA, DATA_GPA, 0x1000, Perm.Read);
      const out = newWalkResult();
      v.iommus[0]!.translateEmulated(emulatedRid, NO_PASID, IOVA + 0x123, false, out);
      check(out.ok && out.output === DATA_GPA + 0x123, `emulated read translated to ${out.ok ? `0x${out.output.toString(16)}` : `fault ${out.fault}`}`);
      v.iommus[0]!.translateEmulated(emulatedRid, NO_PASID, IOVA + 0x123, true, out);
      check(!out.ok, "emulated write through a read-only mapping allowed");
    },
  },
];
