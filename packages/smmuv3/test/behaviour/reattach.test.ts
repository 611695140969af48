import { describe, expect, it } from "vitest";
import { Perm, unwrap, type DmaDevice } from "@viommu/core";
import { Testbed } from "@viommu/conformance";
import { decodeSte, SteConfig } from "../../src/format/stream-table-entry.js";
import type { Smmuv3GuestDriver } from "../../src/guest/smmuv3-driver.js";
import type { Smmuv3Unit } from "../../src/hw/smmuv3-unit.js";
import { smmuv3Plugin } from "../../src/plugin.js";
import type { Smmuv3Device } from "../../src/vmm/smmuv3-device.js";

const IOVA = 0x10_0000;
const DATA = 0x2000_0000;
const pattern = (n: number, seed: number): Uint8Array => Uint8Array.from({ length: n }, (_, i) => (i * 7 + seed) & 0xff);

/** The VMID the physical SMMU caches a device's translations under: its STE's S2VMID (stage-2 or nested STE). */
function tagOf(unit: Smmuv3Unit, device: DmaDevice): number | undefined {
  const ste = unit.steOf(device.requesterId);
  if (ste === undefined) return undefined;
  const f = decodeSte(ste);
  return f.Config === SteConfig.S2Translate || f.Config === SteConfig.Nested ? f.S2VMID : undefined;
}

/**
 * Raw MMIO the guest may do at any time re-attaches its device to the address space it already has: SMMUEN
 * cleared (the device goes to GBPA's bypass: the VM's stage 2 in nested mode, the VM's IOAS in shadow mode), a
 * GBPA update that keeps bypass (the same attachment again), SMMUEN set again. Meanwhile a second VM allocates
 * domains on the same SMMU. The first device must keep translating through its own tables under a VMID that is
 * held and that the other VM never gets (on the core before 0895ed7 the shadow re-attach freed it under the device).
 */
for (const mode of ["nested", "shadow"] as const) {
  describe(`re-attaching to the same address space from raw MMIO (${mode})`, () => {
    it("keeps the device on its own translations and VMID while another VM allocates domains", () => {
      const bed = unwrap(Testbed.create({ plugin: smmuv3Plugin, mode, vms: [{ devices: [{ rid: 0x100, guestRid: 0x10 }] }, { devices: [{ rid: 0x200, guestRid: 0x10 }] }] }));
      try {
        const [vm1, vm2] = [bed.vms[0]!, bed.vms[1]!];
        const unit = bed.units[0] as Smmuv3Unit;
        const vmids = bed.platform.host.vmids;
        const smmu1 = vm1.iommus[0] as Smmuv3Device;
        const [driver1, driver2] = [vm1.drivers[0] as Smmuv3GuestDriver, vm2.drivers[0] as Smmuv3GuestDriver];
        const [dev1, dev2] = [vm1.devices[0]!.device, vm2.devices[0]!.device];
        const domain1 = unwrap(driver1.createDomain());
        unwrap(driver1.attach(0x10, domain1));
        unwrap(driver1.map(domain1, IOVA, DATA, 0x1000, Perm.ReadWrite));
        vm1.vm.memory.writeBytes(DATA, pattern(64, 1));
        vm1.vm.memory.writeBytes(IOVA, pattern(64, 3));
        vm2.vm.memory.writeBytes(DATA, pattern(64, 2));
        vm2.vm.memory.writeBytes(IOVA, pattern(64, 4));
        expect(dev1.read(IOVA, 64)).toMatchObject({ ok: true, data: pattern(64, 1) });

        /** The second VM allocates, attaches and maps domains, uses them, and returns the VMIDs its device had. */
        const secondVmAllocates = (): number[] => {
          const tags: number[] = [];
          for (let i = 0; i < 6; i++) {
            const d = unwrap(driver2.createDomain());
            unwrap(driver2.attach(0x10, d));
            unwrap(driver2.map(d, IOVA, DATA, 0x1000, Perm.ReadWrite));
            expect(dev2.read(IOVA, 64)).toMatchObject({ ok: true, data: pattern(64, 2) });
            tags.push(tagOf(unit, dev2)!);
          }
          return tags;
        };

        /** The first device's VMID is held, the other VM never gets it, and its DMA reads only its own memory. */
        const firstDeviceIsolated = (step: string, expected: Uint8Array): void => {
          const tag = tagOf(unit, dev1);
          expect(tag, step).toBeDefined();
          expect(vmids.isUsed(tag!), step).toBe(true);
          expect(secondVmAllocates(), step).not.toContain(tag);
          expect(dev1.read(IOVA, 64), step).toMatchObject({ ok: true, data: expected });
          expect(tagOf(unit, dev1), step).toBe(tag);
        };

        const cr0 = smmu1.mmioBase + 0x20;
        const gbpa = smmu1.mmioBase + 0x44;
        const enabled = Number(vm1.vm.mmioRead(cr0, 4));
        firstDeviceIsolated("translating", pattern(64, 1));
        // 1. SMMUEN cleared: GBPA bypass, IOVA = GPA.
        vm1.vm.mmioWrite(cr0, 4, enabled & ~1);
        firstDeviceIsolated("SMMU disabled", pattern(64, 3));
        // 2. A GBPA update that keeps bypass (another attribute changes): the same attachment once more.
        for (const shcfg of [1, 0, 1]) {
          vm1.vm.mmioWrite(gbpa, 4, (1 << 31) | (shcfg << 12));
          firstDeviceIsolated(`GBPA update SHCFG ${shcfg}`, pattern(64, 3));
        }
        // 3. SMMUEN set again: the guest's own tables.
        vm1.vm.mmioWrite(cr0, 4, enabled);
        firstDeviceIsolated("SMMU re-enabled", pattern(64, 1));
        // 4. And again, twice: every cycle leaves the device where it was.
        for (let i = 0; i < 2; i++) {
          vm1.vm.mmioWrite(cr0, 4, enabled & ~1);
          vm1.vm.mmioWrite(gbpa, 4, 1 << 31);
          vm1.vm.mmioWrite(cr0, 4, enabled);
          firstDeviceIsolated(`cycle ${i}`, pattern(64, 1));
        }
        unwrap(driver1.unmap(domain1, IOVA, 0x1000));
        expect(dev1.read(IOVA, 64).ok).toBe(false);
        expect(bed.platform.host.memory.violations).toEqual([]);
      } finally {
        bed.dispose();
      }
    });
  });
}
