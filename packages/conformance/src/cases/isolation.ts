import { Perm, type DmaDevice, type TranslationMode } from "@viommu/core";
import { runHostileCampaign } from "../campaign/hostile-campaign.js";
import { check, must, type CaseContext, type ConformanceCase } from "../case.js";
import { DATA_GPA, events, IOVA, mapOne, pattern, sameBytes } from "./support.js";

/** Hostile steps the suite runs per mode; `viommu campaign` runs as many as asked. */
export const SUITE_CAMPAIGN_STEPS = 1500;

function campaignCase(c: CaseContext, mode: TranslationMode): void {
  const report = runHostileCampaign({ plugin: c.plugin, plugins: c.plugins, seed: c.seed, steps: SUITE_CAMPAIGN_STEPS, mode, epoch: 500 });
  c.metric("steps", report.steps);
  c.metric("restores-refused", report.restoresRefused);
  c.metric("restores-accepted", report.restoresAccepted);
  const f = report.failure;
  check(f === undefined, f === undefined ? "" : `seed ${c.seed}, step ${f.step} (${f.kind}): ${f.detail}\nreplay: viommu campaign --vendor ${c.plugin.id} --mode ${mode} --seed ${c.seed} --steps ${f.step + 1}`);
  check(report.steps === SUITE_CAMPAIGN_STEPS, `the campaign stopped after ${report.steps} steps`);
}

function mustRead(dev: DmaDevice, iova: number): Uint8Array {
  const r = dev.read(iova, 64);
  check(r.ok, `DMA read of 0x${iova.toString(16)} faulted (${r.ok ? "" : r.reason})`);
  return r.data;
}

export const isolationCases: ConformanceCase[] = [
  {
    id: "cross-vm-isolation",
    rule: "Whatever VM A's guest does to its IOMMU (registers, raw queue entries, its own tables, DMA, MSIs, hypercalls, hot-plug, restored states), no access leaves VM A, VM B's memory and translations never change, and nothing throws — in nested mode.",
    requires: [],
    run(c) {
      campaignCase(c, "nested");
    },
  },
  {
    id: "cross-vm-isolation-shadow",
    rule: "The same hostile campaign holds in shadow (caching) mode, where the VMM mirrors VM A's tables into host domains.",
    requires: ["shadow"],
    run(c) {
      campaignCase(c, "shadow");
    },
  },
  {
    id: "reattach-same-domain",
    rule: "Re-programming a device entry to the domain it already uses (a rewrite that keeps the page table) keeps the device's translations its own while another VM's domains come and go, in every translation mode the vendor has.",
    requires: [],
    run(c) {
      const modes: ("nested" | "shadow")[] = c.plugin.capabilities.shadow ? ["nested", "shadow"] : ["nested"];
      for (const mode of modes) {
        const bed = c.bed({ mode, vms: [{ devices: [{ rid: 0x100, guestRid: 0x10 }] }, { devices: [{ rid: 0x200, guestRid: 0x10 }] }] });
        const [a, b] = [bed.vms[0]!, bed.vms[1]!];
        a.vm.memory.writeBytes(DATA_GPA, pattern(64, 0xa));
        b.vm.memory.writeBytes(DATA_GPA, pattern(64, 0xb));
        const domainA = mapOne(a, 0x10, IOVA, DATA_GPA, 0x1000);
        const dev = a.devices[0]!.device;
        check(sameBytes(mustRead(dev, IOVA), pattern(64, 0xa)), `${mode}: VM A's first DMA did not read its data`);
        for (let round = 0; round < 3; round++) {
          must(a.drivers[0]!.attach(0x10, domainA), `${mode}: re-attach to the same domain`);
          // VM B's driver creates, uses and drops domains: tags freed by a wrong re-attach would be reused here.
          const dB = mapOne(b, 0x10, IOVA, DATA_GPA, 0x1000);
          check(sameBytes(mustRead(b.devices[0]!.device, IOVA), pattern(64, 0xb)), `${mode}: VM B's DMA did not read its data`);
          must(b.drivers[0]!.detach(0x10), `${mode}: VM B detach`);
          void dB;
          const r = dev.read(IOVA, 64);
          check(r.ok, `${mode}: after re-attach ${round + 1}, VM A's DMA faulted (${r.ok ? "" : r.reason})`);
          check(sameBytes(r.data, pattern(64, 0xa)), `${mode}: after re-attach ${round + 1}, VM A's DMA read another VM's data`);
        }
        check(bed.platform.host.memory.violations.length === 0, `${mode}: isolation violation recorded`);
      }
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
      check(bed.platform.host.memory.violations.length === 0, "isolation violation recorded");
    },
  },
  {
    id: "sriov-faults-stay-in-their-vm",
    rule: "When two VMs' devices share a guest requester id, a fault of VM B's device is reported to VM B at that id and never to VM A.",
    requires: ["eventLog"],
    run(c) {
      const bed = c.bed({ vms: [{ devices: [{ rid: 0x101, guestRid: 0x10 }] }, { devices: [{ rid: 0x102, guestRid: 0x10 }] }] });
      const [a, b] = [bed.vms[0]!, bed.vms[1]!];
      mapOne(a, 0x10, IOVA, DATA_GPA, 0x1000);
      mapOne(b, 0x10, IOVA, DATA_GPA + 0x1000, 0x1000);
      b.devices[0]!.device.read(IOVA + 0x5000, 4);
      const inA = events(bed, a).filter((e) => e.kind === "dma-fault");
      const inB = b.drivers[0]!.readEvents().filter((e) => e.kind === "dma-fault");
      check(inA.length === 0, "VM B's fault was reported to VM A");
      check(inB.some((e) => e.rid === 0x10 && e.address === IOVA + 0x5000), "VM B's fault was not reported to VM B at its guest id");
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
    },
  },
  {
    id: "faults-name-guest-ids",
    rule: "A fault of a passthrough device names the guest's requester id, not the host's.",
    requires: ["eventLog"],
    run(c) {
      const bed = c.bed({ vms: [{ devices: [{ rid: 0x100, guestRid: 0x10 }, { rid: 0x208, guestRid: 0x18 }] }] });
      const v = bed.vms[0]!;
      mapOne(v, 0x10, IOVA, DATA_GPA, 0x1000);
      mapOne(v, 0x18, IOVA, DATA_GPA + 0x4000, 0x1000, Perm.Read);
      check(!v.devices[1]!.device.write(IOVA, pattern(16, 4)).ok, "a write through a read-only mapping succeeded");
      const evs = events(bed, v).filter((e) => e.kind === "dma-fault");
      check(evs.some((e) => e.rid === 0x18), `fault does not name guest id 0x18: ${JSON.stringify(evs.map((e) => e.rid))}`);
      check(!evs.some((e) => e.rid === 0x208), "fault names the physical id");
    },
  },
];
