import { encodeCommand, type Smmuv3Unit } from "@viommu/smmuv3";
import { caseSupport, check, must, type ConformanceCase, type TestVm } from "@viommu/conformance";
import { IommufdObjectType, newIotlbHit, Perm } from "@viommu/core";
import { Tegra241GuestDriver } from "../src/guest/tegra241-driver.js";
import { VcmdqCerror } from "../src/format/vcmdq-registers.js";

const { DATA_GPA, IOVA, events, mapOne, pattern, sameBytes } = caseSupport;

/** The guest's CMDQV driver of a VM's first vIOMMU (a failed check when the CMDQV did not come up). */
function guestCmdqv(v: TestVm): NonNullable<Tegra241GuestDriver["cmdqv"]> {
  const driver = v.drivers[0];
  check(driver instanceof Tegra241GuestDriver, "the guest driver is not the Tegra241 one");
  const cmdqv = driver.cmdqv;
  check(cmdqv !== undefined && cmdqv.enabledQueues > 0, "the guest found no working VCMDQ");
  return cmdqv;
}

/** The VMID of a VM's stage-2 parent: the VMID its VINTF's queues run with. */
function vmidOf(v: TestVm): number {
  const parent = v.iommufd.list(IommufdObjectType.HWPT_PAGING).find((o) => o.id === v.parentHwptId) as unknown as { domain: { vmid: number } };
  return parent.domain.vmid;
}

const TWO_VMS = { vms: [{ devices: [{ rid: 0x100, guestRid: 0x10 }] }, { devices: [{ rid: 0x200, guestRid: 0x10 }] }] };

/**
 * The vQUEUE cases of the Tegra241 CMDQV (iommufd.md §7, arm-hyperv-virtio.md §4.5): invalidation straight
 * through a guest-owned VCMDQ, confined to the VM's VMID, and an illegal command reported to, and only to, the
 * VM that wrote it.
 */
export const tegra241Cases: ConformanceCase[] = [
  {
    id: "vcmdq-direct-invalidation",
    rule: "A TLB invalidation the guest writes into its VCMDQ takes effect without any VM exit, with its VINTF's VMID: another VM's cached translations survive even a TLBI naming their VMID.",
    requires: ["vqueue"],
    run(c) {
      const bed = c.bed(TWO_VMS);
      const [a, b] = [bed.vms[0]!, bed.vms[1]!];
      const domainA = mapOne(a, 0x10, IOVA, DATA_GPA, 0x2000);
      mapOne(b, 0x10, IOVA, DATA_GPA, 0x2000);
      check(a.devices[0]!.device.write(IOVA, pattern(8, 1)).ok && b.devices[0]!.device.write(IOVA, pattern(8, 2)).ok, "mapped DMA failed");
      const unit = bed.units[0] as Smmuv3Unit;
      const hit = newIotlbHit();
      const asid = 1;
      check(unit.iotlb.lookup(vmidOf(b), asid, IOVA, hit), "VM B's translation is not cached");
      // VM A's guest names VM B's VMID in a TLBI_NH_ASID: the VINTF replaces it with A's own.
      const hostile = must(guestCmdqv(a).issueRaw(0, [encodeCommand("CMD_TLBI_NH_ASID", { VMID: vmidOf(b), ASID: asid })]), "hostile TLBI");
      check(hostile, "the hostile TLBI was not consumed");
      check(unit.iotlb.lookup(vmidOf(b), asid, IOVA, hit), "a TLBI from VM A's VCMDQ dropped VM B's cached translation");
      check(!unit.iotlb.lookup(vmidOf(a), asid, IOVA, hit), "VM A's TLBI did not reach VM A's own VMID");
      // The guest driver's own invalidation path: unmap → TLBI_NH_VA + CMD_SYNC on the VCMDQ, no exit.
      const exits = a.vm.interventions;
      const before = guestCmdqv(a).stats.commands;
      must(a.drivers[0]!.unmap(domainA, IOVA, 0x1000), "unmap");
      c.metric("interventions-during-invalidation", a.vm.interventions - exits);
      c.metric("vcmdq-commands", guestCmdqv(a).stats.commands - before);
      check(a.vm.interventions === exits, `${a.vm.interventions - exits} VMM interventions during a VCMDQ invalidation`);
      check(guestCmdqv(a).stats.commands > before, "the invalidation did not go through the VCMDQ");
      check(!a.devices[0]!.device.read(IOVA, 4).ok, "the VCMDQ invalidation did not take effect");
      check(a.devices[0]!.device.read(IOVA + 0x1000, 4).ok, "the VCMDQ invalidation took more than the unmapped page");
      check(b.devices[0]!.device.read(IOVA, 8).ok && sameBytes(b.vm.memory.readBytes(DATA_GPA, 8), pattern(8, 2)), "VM B lost its mapping");
      check(bed.platform.host.memory.violations.length === 0, "isolation violation");
    },
  },
  {
    id: "vcmdq-illegal-command-isolated",
    rule: "A command a guest-owned VCMDQ may not run stops that queue with CERROR_ILL, reaches that VM's guest (vEVENT → CMDQV interrupt → LVCMDQ_ERR_MAP), and nothing else: the other VM sees no error and its queue keeps working; the guest's acknowledgement restarts its own.",
    requires: ["vqueue"],
    run(c) {
      const bed = c.bed(TWO_VMS);
      const [a, b] = [bed.vms[0]!, bed.vms[1]!];
      const domainA = mapOne(a, 0x10, IOVA, DATA_GPA, 0x2000);
      const domainB = mapOne(b, 0x10, IOVA, DATA_GPA, 0x2000);
      const illegal = guestCmdqv(a).issueRaw(0, [encodeCommand("CMD_CFGI_STE", { SID: 0x10, Leaf: 1 })]);
      check(!illegal.ok && illegal.error.errno === "EIO", "the VCMDQ ran CFGI_STE (only TLBI_NH_ASID/VA, ATC_INV and CMD_SYNC are allowed)");
      const seenA = events(bed, a).filter((e) => e.kind === "command-error");
      const seenB = events(bed, b).filter((e) => e.kind === "command-error" || e.kind === "global-error");
      c.metric("errors-in-vm-a", seenA.length);
      check(seenA.length === 1 && seenA[0]!.code === VcmdqCerror.CERROR_ILL && seenA[0]!.name === "CERROR_ILL", `VM A's guest did not get CERROR_ILL: ${JSON.stringify(seenA)}`);
      check(seenA[0]!.rid === undefined && seenA[0]!.raw.length === 2, "the error lost its context");
      check(a.vm.interrupts.delivered.some((i) => i.source === "tegra241-cmdqv"), "no CMDQV interrupt reached VM A");
      check(seenB.length === 0 && !b.vm.interrupts.delivered.some((i) => i.source === "tegra241-cmdqv"), "VM B was told of VM A's error");
      // VM B's queue never stopped; VM A's runs again after its handler acknowledged.
      for (const [v, domain] of [[b, domainB], [a, domainA]] as const) {
        const exits = v.vm.interventions;
        must(v.drivers[0]!.unmap(domain, IOVA, 0x1000), "unmap after the error");
        check(v.vm.interventions === exits && !v.devices[0]!.device.read(IOVA, 4).ok, "a VCMDQ does not work after the other VM's / its own acknowledged error");
      }
      check(bed.platform.host.memory.violations.length === 0, "isolation violation");
    },
  },
  {
    id: "vcmdq-fallback-for-other-commands",
    rule: "Everything a VCMDQ may not run (CFGI_STE/CD, PREFETCH, TLBI_NSNH_ALL) still goes through the trapped SMMUv3 command queue: attaching a device exits to the VMM and works.",
    requires: ["vqueue"],
    run(c) {
      const bed = c.bed({ vms: [{ devices: [{ rid: 0x100, guestRid: 0x10 }] }] });
      const v = bed.vms[0]!;
      const cmdqv = guestCmdqv(v);
      const before = { exits: v.vm.interventions, vcmdq: cmdqv.stats.commands };
      const driver = v.drivers[0]!;
      const domain = must(driver.createDomain(), "createDomain");
      must(driver.attach(0x10, domain), "attach");
      c.metric("attach-interventions", v.vm.interventions - before.exits);
      check(v.vm.interventions > before.exits, "configuration invalidations did not reach the VMM");
      check(cmdqv.stats.commands === before.vcmdq, "configuration invalidations went to the VCMDQ");
      must(driver.map(domain, IOVA, DATA_GPA, 0x1000, Perm.ReadWrite), "map");
      check(v.devices[0]!.device.read(IOVA, 4).ok, "DMA after attach through the trapped queue failed");
    },
  },
];
