import { IommufdObjectType, newWalkResult, NO_PASID, Perm, type IommufdObject, type WalkResult } from "@viommu/core";
import { check, must, type ConformanceCase } from "../case.js";
import type { TestVm } from "@viommu/core";
import { DATA_GPA, IOVA, mapOne, oneDevice, pattern, sameBytes } from "./support.js";
import type { GuestQueueView } from "@viommu/core";

/** The raw bytes of every entry between a queue's consumer and producer, as hex, in order. */
function pendingEntries(v: TestVm, q: GuestQueueView): string[] {
  const base = q.base();
  if (base === undefined) return [];
  const prod = q.producer.decode(v.vm.mmioRead(q.producer.address, q.producer.size));
  const cons = q.consumer.decode(v.vm.mmioRead(q.consumer.address, q.consumer.size));
  const out: string[] = [];
  let at = cons;
  for (let n = 0; n < q.entries() && !(at.index === prod.index && at.wrap === prod.wrap); n++) {
    const bytes = v.vm.memory.readBytes(base + at.index * q.entryBytes, q.entryBytes);
    out.push(Array.from(bytes, (b) => b.toString(16).padStart(2, "0")).join(""));
    const next = (at.index + 1) % q.entries();
    at = { index: next, wrap: next === 0 ? !at.wrap : at.wrap };
  }
  return out;
}

function translateAll(v: TestVm, iovas: readonly number[]): string[] {
  const out: WalkResult = newWalkResult();
  return iovas.map((iova) => {
    const r = v.devices[0]!.device.translate(iova, false, NO_PASID, out);
    return r.ok ? `${iova.toString(16)}→${r.output.toString(16)}/${r.pageShift}/${r.perms}` : `${iova.toString(16)}→fault`;
  });
}

export const lifecycleCases: ConformanceCase[] = [
  {
    id: "shared-stage2-parent",
    rule: "Two vIOMMUs of one VM share one stage-2 parent: both translate through it, and the parent cannot be destroyed while either uses it.",
    requires: ["nested"],
    run(c) {
      const bed = c.bed({ vms: [{ devices: [{ rid: 0x100, guestRid: 0x10, instance: 0 }, { rid: 0x300, guestRid: 0x20, instance: 1 }], instances: 2 }] });
      const v = bed.vms[0]!;
      mapOne(v, 0x10, IOVA, DATA_GPA, 0x1000, Perm.ReadWrite, 0);
      mapOne(v, 0x20, IOVA, DATA_GPA + 0x1000, 0x1000, Perm.ReadWrite, 1);
      check(v.devices[0]!.device.write(IOVA, pattern(8, 1)).ok, "device behind vIOMMU 0 cannot DMA");
      check(v.devices[1]!.device.write(IOVA, pattern(8, 2)).ok, "device behind vIOMMU 1 cannot DMA");
      check(sameBytes(v.vm.memory.readBytes(DATA_GPA, 8), pattern(8, 1)) && sameBytes(v.vm.memory.readBytes(DATA_GPA + 0x1000, 8), pattern(8, 2)), "DMA landed in the wrong place");
      const parents = v.iommufd.list(IommufdObjectType.HWPT_PAGING);
      check(parents.length === 1, `expected one stage-2 parent, found ${parents.length}`);
      const destroyed = v.iommufd.destroy(v.parentHwptId);
      check(!destroyed.ok && destroyed.error.errno === "EBUSY", "the shared parent could be destroyed while in use");
    },
  },
  {
    id: "save-restore-identical",
    rule: "Saving the vIOMMU then restoring it into a fresh device gives identical translations; a corrupted state is refused.",
    requires: ["migration"],
    run(c) {
      const bed = c.bed({ vms: [oneDevice()] });
      const v = bed.vms[0]!;
      const domain = mapOne(v, 0x10, IOVA, DATA_GPA, 0x4000);
      must(v.drivers[0]!.map(domain, 0x4000_0000, DATA_GPA + 0x20_0000, 0x20_0000, Perm.Read), "map 2 MiB");
      const probes = [IOVA, IOVA + 0x1fff, IOVA + 0x5000, 0x4000_0000, 0x4010_0123, 0x5000_0000];
      const before = translateAll(v, probes);
      const blob = v.iommus[0]!.save!();
      const corrupted = blob.slice();
      corrupted[corrupted.length - 3] ^= 0x55;
      // The source device goes away; a fresh one of the same configuration takes the state.
      v.iommus[0]!.destroy();
      const fresh = must(
        bed.plugin.createDevice({ vm: v.vm, iommufd: v.iommufd, unit: bed.units[0]!, ioasId: v.ioasId, parentHwptId: v.parentHwptId, anchorDevId: v.devices[0]!.devId, mode: "nested" }),
        "createDevice",
      );
      must(fresh.assignDevice(v.devices[0]!.device, v.devices[0]!.devId, 0x10), "assignDevice");
      const refused = fresh.restore!(corrupted);
      check(!refused.ok && refused.error.errno === "EINVAL", "a corrupted state was accepted");
      must(fresh.restore!(blob), "restore");
      v.iommus[0] = fresh;
      const after = translateAll(v, probes);
      check(JSON.stringify(after) === JSON.stringify(before), `translations differ after restore:\n${before.join(" ")}\n${after.join(" ")}`);
    },
  },
  {
    id: "migrate-to-new-host",
    rule: "A vIOMMU saved on one host restores onto a second host (new host memory, iommufd, units and placement) from the guest-visible state: DMA translates identically, events pending in the guest's log stay pending, nothing of the destination touches the source, and the source tears down cleanly.",
    requires: ["migration"],
    run(c) {
      const topology = { devices: [{ rid: 0x100, guestRid: 0x10 }], memoryBytes: 2 ** 31 };
      const source = c.bed({ vms: [topology] });
      const s = source.vms[0]!;
      s.vm.memory.writeBytes(DATA_GPA, pattern(4096, 77));
      mapOne(s, 0x10, IOVA, DATA_GPA, 0x2000);
      const eventView = (v: TestVm) => v.iommus[0]!.guestQueues().find((q) => q.role === "event");
      const faults = c.plugin.capabilities.eventLog ? 3 : 0;
      for (let i = 0; i < faults; i++) s.devices[0]!.device.read(0x7000_0000 + i * 0x1000, 4);
      source.poll();
      const pendingBefore = eventView(s) === undefined ? undefined : pendingEntries(s, eventView(s)!);
      const blob = s.iommus[0]!.save!();
      // The destination: another host, its VM created empty, the guest's memory copied over, no driver init.
      const dest = c.bed({ vms: [topology], noInit: true });
      const d = dest.vms[0]!;
      for (const page of s.vm.memory.writtenPages()) d.vm.memory.writeBytes(page, s.vm.memory.readBytes(page, 4096));
      must(d.iommus[0]!.restore!(blob), "restore on the second host");
      // The guest's log first: the probes below may add faults of their own to it.
      if (pendingBefore !== undefined) {
        const after = pendingEntries(d, eventView(d)!);
        check(after.length === pendingBefore.length && after.every((e, i) => e === pendingBefore[i]), `pending events differ: ${pendingBefore.length} before, ${after.length} after`);
        check(after.length >= faults, `${faults} faults before the save, ${after.length} pending after`);
      }
      const r = d.devices[0]!.device.read(IOVA, 4096);
      check(r.ok && sameBytes(r.data, pattern(4096, 77)), "mapped DMA does not read the same data on the destination");
      check(!d.devices[0]!.device.read(IOVA + 0x10_0000, 4).ok, "unmapped DMA succeeded on the destination");
      // Nothing of the destination reaches the source: a DMA write there leaves the source's memory alone.
      const before = s.vm.memory.readBytes(DATA_GPA, 16);
      check(d.devices[0]!.device.write(IOVA, Uint8Array.of(9, 9, 9, 9)).ok, "DMA write on the destination failed");
      check(sameBytes(s.vm.memory.readBytes(DATA_GPA, 16), before), "a DMA on the destination changed the source's memory");
      check(dest.platform.host.memory !== source.platform.host.memory, "the destination shares the source's host memory");
      const left = source.dispose();
      check(left.length === 0, `the source left objects behind: ${JSON.stringify(left)}`);
      check(d.devices[0]!.device.read(IOVA, 4).ok, "the destination stopped translating when the source went away");
    },
  },
  {
    id: "destroy-order-errors",
    rule: "Objects with dependants cannot be destroyed (EBUSY), devices never by IOMMU_DESTROY, and unknown ids answer ENOENT.",
    requires: [],
    run(c) {
      const bed = c.bed({ vms: [oneDevice()] });
      const v = bed.vms[0]!;
      mapOne(v, 0x10, IOVA, DATA_GPA, 0x1000);
      const ctx = v.iommufd;
      const busy = (id: number, what: string): void => {
        const r = ctx.destroy(id);
        check(!r.ok && r.error.errno === "EBUSY", `destroying ${what} answered ${r.ok ? "success" : r.error.errno}, not EBUSY`);
      };
      busy(v.ioasId, "the IOAS under a HWPT");
      busy(v.devices[0]!.devId, "a bound device");
      const users = (o: IommufdObject): boolean => o.users > 1;
      for (const o of ctx.list(IommufdObjectType.VIOMMU).filter(users)) busy(o.id, "a vIOMMU with dependants");
      for (const o of ctx.list(IommufdObjectType.HWPT_PAGING).filter(users)) busy(o.id, "a parent HWPT in use");
      const missing = ctx.destroy(0x7fff_0000);
      check(!missing.ok && missing.error.errno === "ENOENT", "an unknown id did not answer ENOENT");
      // Leaves first: once the VMM tears down, the whole context closes with nothing left behind.
      for (const iommu of v.iommus) iommu.destroy();
      const left = ctx.close();
      check(left.length === 0, `objects left after close: ${left.map((o) => o.type).join(", ")}`);
      v.iommus.length = 0;
    },
  },
  {
    id: "shadow-mode-translation",
    rule: "In shadow (caching) mode the VMM mirrors the guest's tables into a host domain: mapped DMA works, unmapped DMA is blocked, through both back ends.",
    requires: ["shadow"],
    run(c) {
      for (const backend of ["iommufd", "type1"] as const) {
        const bed = c.bed({ vms: [oneDevice()], mode: "shadow", shadowBackend: backend });
        const v = bed.vms[0]!;
        const domain = mapOne(v, 0x10, IOVA, DATA_GPA, 0x2000);
        const dev = v.devices[0]!.device;
        check(dev.write(IOVA + 0x1000, pattern(8, 5)).ok, `${backend}: shadowed DMA failed`);
        check(sameBytes(v.vm.memory.readBytes(DATA_GPA + 0x1000, 8), pattern(8, 5)), `${backend}: shadowed DMA landed elsewhere`);
        must(v.drivers[0]!.unmap(domain, IOVA + 0x1000, 0x1000), "unmap");
        check(!dev.write(IOVA + 0x1000, pattern(8, 6)).ok, `${backend}: DMA after unmap still reached memory`);
        c.metric(`shadow-mappings-${backend}`, v.iommus[0]!.stats.shadowMappings);
      }
    },
  },
  {
    id: "shadow-type1-entry-limit",
    rule: "The type1-like back end installs shadow mappings up to its DMA entry limit and refuses the ones beyond it visibly (a host-log entry, and an error the guest sees), while the iommufd-like back end has no such limit.",
    requires: ["shadow"],
    run(c) {
      const limit = 8;
      const pages = limit + 4;
      for (const backend of ["type1", "iommufd"] as const) {
        const bed = c.bed({ vms: [oneDevice()], mode: "shadow", shadowBackend: backend, dmaEntryLimit: limit });
        const v = bed.vms[0]!;
        const driver = v.drivers[0]!;
        const domain = must(driver.createDomain(), "createDomain");
        must(driver.attach(0x10, domain), "attach");
        // Separate, non-adjacent pages: one shadow entry each. A map beyond the limit may fail in the guest.
        const mapped = Array.from({ length: pages }, (_, i) => driver.map(domain, IOVA + i * 0x2000, DATA_GPA + i * 0x2000, 0x1000, Perm.ReadWrite).ok);
        const reached = Array.from({ length: pages }, (_, i) => v.devices[0]!.device.read(IOVA + i * 0x2000, 4).ok);
        const reachable = reached.filter(Boolean).length;
        c.metric(`reachable-${backend}`, reachable);
        const refusals = bed.platform.host.log.entries({ vm: v.vm.id, kind: "shadow-map-refused" });
        if (backend === "type1") {
          check(reached.slice(0, limit).every(Boolean), `type1: only ${reached.slice(0, limit).filter(Boolean).length} of the first ${limit} mappings are installed`);
          check(reachable === limit, `type1: ${reachable} mappings reachable with a limit of ${limit}`);
          check(refusals.length > 0, "type1: the mappings beyond the limit were refused without a host-log entry");
          bed.poll();
          const guestSaw = mapped.slice(limit).some((ok) => !ok) || driver.readEvents().length > 0;
          check(guestSaw, "type1: the guest saw no error for the mappings the host refused");
          c.metric("host-log-refusals", refusals.length);
        } else {
          check(mapped.every(Boolean), "iommufd: a map failed");
          check(reachable === pages, `iommufd: reached only ${reachable} of ${pages}`);
          check(refusals.length === 0, `iommufd: ${refusals.length} refusals logged without a limit`);
        }
      }
    },
  },
  {
    id: "vqueue-invalidation-without-exits",
    rule: "With a guest-owned queue, TLB invalidations reach the hardware without VM exits and take effect.",
    requires: ["vqueue"],
    run(c) {
      const bed = c.bed({ vms: [oneDevice()] });
      const v = bed.vms[0]!;
      const domain = mapOne(v, 0x10, IOVA, DATA_GPA, 0x2000);
      const dev = v.devices[0]!.device;
      check(dev.read(IOVA, 4).ok, "mapped DMA failed");
      const exits = v.vm.exits.mmio;
      must(v.drivers[0]!.unmap(domain, IOVA, 0x1000), "unmap");
      c.metric("exits-during-invalidation", v.vm.exits.mmio - exits);
      check(v.vm.exits.mmio === exits, `${v.vm.exits.mmio - exits} VM exits during a guest-queue invalidation`);
      check(!dev.read(IOVA, 4).ok, "the guest-queue invalidation did not take effect");
    },
  },
];
