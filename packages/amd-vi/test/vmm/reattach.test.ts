import { describe, expect, it } from "vitest";
import { NO_PASID, Perm, unwrap, type DmaDevice } from "@viommu/core";
import type { AmdViGuestDriver } from "../../src/guest/amd-vi-driver.js";
import { AmdNestedDomain } from "../../src/hw/amd-nested-domain.js";
import type { AmdViUnit } from "../../src/hw/amd-vi-unit.js";
import { amdBed, DATA_GPA, IOVA, mapOne, pattern } from "../support.js";

/** The tag the unit caches a device's translations under: a paging domain's VMID, a nested domain's host DomainID. */
function tagOf(unit: AmdViUnit, device: DmaDevice): number | undefined {
  const d = unit.domainOf(device.requesterId, NO_PASID);
  if (d instanceof AmdNestedDomain) return d.hdomId;
  return d?.kind === "paging" ? d.vmid : undefined;
}

/**
 * The guest rewrites a DTE and keeps its page table (alloc_irq_table fills in the interrupt-remapping half,
 * then INVALIDATE_DEVTAB_ENTRY), so the VMM re-applies an attachment the device already has. Meanwhile a
 * second VM allocates domains on the same unit. The first device must keep its own tables and tag.
 */
for (const mode of ["shadow", "nested"] as const) {
  describe(`re-applying a DTE that keeps its page table (${mode})`, () => {
    it("the device keeps translating through its own tables, its tag stays held, and the other VM's new domains never get it", () => {
      const bed = amdBed({ mode, eventInterrupts: "vmm", vms: [{ devices: [{ rid: 0x100, guestRid: 0x10 }] }, { devices: [{ rid: 0x200, guestRid: 0x10 }] }] });
      const [vm1, vm2] = bed.vms as [(typeof bed.vms)[0], (typeof bed.vms)[0]];
      const unit = bed.units[0] as AmdViUnit;
      const vmids = bed.platform.host.vmids;
      const dev1 = vm1.devices[0]!.device;
      const dev2 = vm2.devices[0]!.device;
      const driver1 = vm1.drivers[0] as AmdViGuestDriver;
      const driver2 = vm2.drivers[0] as AmdViGuestDriver;

      const domain1 = mapOne(vm1, 0x10, IOVA, DATA_GPA, 0x1000);
      vm1.vm.memory.writeBytes(DATA_GPA, pattern(64, 1));
      expect(dev1.read(IOVA, 64)).toMatchObject({ ok: true, data: pattern(64, 1) });
      const tag = tagOf(unit, dev1)!;
      expect(tag).toBeDefined();

      const dte = driver1.structures.deviceTable + 0x10 * 32;
      const translationHalf = vm1.vm.memory.readWords(dte, new Uint32Array(4)).slice();
      unwrap(driver1.mapInterrupt(0x10, 0x41, 0));
      expect(vm1.vm.memory.readWords(dte, new Uint32Array(4))).toEqual(translationHalf);
      expect(vm1.vm.memory.read32(dte + 16) & 1).toBe(1);
      expect(tagOf(unit, dev1)).toBe(tag);
      expect(vmids.isUsed(tag)).toBe(true);

      // The second VM allocates, attaches and maps domains, each of which takes a tag.
      vm2.vm.memory.writeBytes(DATA_GPA, pattern(64, 2));
      const tags2: number[] = [];
      for (let i = 0; i < 8; i++) {
        const d = unwrap(driver2.createDomain());
        unwrap(driver2.attach(0x10, d));
        unwrap(driver2.map(d, IOVA, DATA_GPA, 0x1000, Perm.ReadWrite));
        expect(dev2.read(IOVA, 64)).toMatchObject({ ok: true, data: pattern(64, 2) });
        tags2.push(tagOf(unit, dev2)!);
      }
      expect(tags2).not.toContain(tag);

      // The first device still reaches its own page through its own tables, and its guest's unmap reaches it.
      expect(dev1.read(IOVA, 64)).toMatchObject({ ok: true, data: pattern(64, 1) });
      expect(tagOf(unit, dev1)).toBe(tag);
      unwrap(driver1.unmap(domain1, IOVA, 0x1000));
      expect(dev1.read(IOVA, 64).ok).toBe(false);
      expect(dev2.read(IOVA, 64)).toMatchObject({ ok: true, data: pattern(64, 2) });
      expect(bed.platform.host.memory.violations).toEqual([]);
      expect(bed.dispose()).toEqual([]);
    });

    it("the tag is freed only once nothing carries it: after the device leaves its domain and the domain goes", () => {
      const bed = amdBed({ mode, eventInterrupts: "vmm", vms: [{ devices: [{ rid: 0x100, guestRid: 0x10 }] }] });
      const v = bed.vms[0]!;
      const unit = bed.units[0] as AmdViUnit;
      const driver = v.drivers[0] as AmdViGuestDriver;
      mapOne(v, 0x10, IOVA, DATA_GPA, 0x1000);
      const tag = tagOf(unit, v.devices[0]!.device)!;
      unwrap(driver.mapInterrupt(0x10, 0x41, 0));
      expect(bed.platform.host.vmids.holders(tag)).toBeGreaterThan(0);
      unwrap(driver.detach(0x10));
      expect(bed.platform.host.vmids.isUsed(tag)).toBe(false);
    });
  });
}
