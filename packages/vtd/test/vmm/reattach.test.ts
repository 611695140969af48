import { describe, expect, it } from "vitest";
import { NO_PASID, Perm, unwrap, type DmaDevice } from "@viommu/core";
import { ContextCacheGranularity, encodeInvDesc, InvDescType, PasidCacheGranularity } from "../../src/format/inv-desc.js";
import type { VtdGuestDriver } from "../../src/guest/vtd-driver.js";
import { VtdNestedDomain } from "../../src/hw/vtd-nested-domain.js";
import type { VtdUnit } from "../../src/hw/vtd-unit.js";
import type { VtdDevice } from "../../src/vmm/vtd-device.js";
import { vtdPlugin } from "../../src/plugin.js";
import { Testbed } from "@viommu/conformance";
import { DATA_GPA, IOVA } from "../support.js";

const pattern = (n: number, seed: number): Uint8Array => Uint8Array.from({ length: n }, (_, i) => (i * 7 + seed) & 0xff);

/** The VMID the unit caches a device's translations under: its paging domain's, or its nested domain's parent's. */
function tagOf(unit: VtdUnit, device: DmaDevice): number | undefined {
  const d = unit.domainOf(device.requesterId, NO_PASID);
  if (d instanceof VtdNestedDomain) return d.parent.vmid;
  return d?.kind === "paging" ? d.vmid : undefined;
}

/** Where the guest keeps the FPD bit of the entry that configures `rid`: the context entry, or the RID_PASID entry. */
function fpdEntry(device: VtdDevice, rid: number): number {
  const mem = device.options.vm.memory;
  const root = device.translator.rootTable;
  const ctp = (mem.read32(root + (rid >>> 8) * 16) & ~0xfff) >>> 0;
  if (!device.translator.scalable) return ctp + (rid & 0xff) * 16;
  const dir = (mem.read32(ctp + (rid & 0x7f) * 32) & ~0xfff) >>> 0;
  return (mem.read32(dir) & ~0xfff) >>> 0;
}

/** The descriptor a guest sends after changing that entry: device-selective context flush, or PASID-selective PASID-cache flush. */
function entryFlush(device: VtdDevice, rid: number): [number, Uint32Array] {
  const did = device.bindings.devices.get(rid)!.context.did;
  if (!device.translator.scalable) return [InvDescType.CC_INV, encodeInvDesc("CC_INV", { G: ContextCacheGranularity.DEVICE, DID: did, SID: rid, FM: 0 })];
  return [InvDescType.PC_INV, encodeInvDesc("PC_INV", { G: PasidCacheGranularity.PASID, DID: did, PASID: 0 }, 256)];
}

/**
 * Paths on which the VT-d VMM attaches a device again to the address space it already has: the guest changes a
 * field of the entry that keeps the same table (FPD here) and flushes it, so the VMM rebinds to the same shadow
 * IOAS (shadow) or rebuilds its nested HWPT over the same parent (nested); an unchanged entry flushed; and
 * translation switched off and on. Meanwhile a second VM allocates domains on the same unit. The first device
 * must keep translating through its own tables under a tag nobody else gets.
 */
for (const [mode, variant] of [
  ["shadow", "legacy"],
  ["shadow", "scalable"],
  ["nested", "scalable"],
] as const) {
  describe(`re-attaching to the same address space (${mode}, ${variant})`, () => {
    it("keeps the device on its own tables and tag while another VM allocates domains", () => {
      const bed = unwrap(
        Testbed.create({ plugin: vtdPlugin, mode, vms: [{ devices: [{ rid: 0x100, guestRid: 0x10 }] }, { devices: [{ rid: 0x200, guestRid: 0x10 }] }], guest: { variant } }),
      );
      const [vm1, vm2] = [bed.vms[0]!, bed.vms[1]!];
      const unit = bed.units[0] as VtdUnit;
      const vmids = bed.platform.host.vmids;
      const device1 = vm1.iommus[0] as VtdDevice;
      const [driver1, driver2] = [vm1.drivers[0] as VtdGuestDriver, vm2.drivers[0] as VtdGuestDriver];
      const [dev1, dev2] = [vm1.devices[0]!.device, vm2.devices[0]!.device];
      const domain1 = unwrap(driver1.createDomain());
      unwrap(driver1.attach(0x10, domain1));
      unwrap(driver1.map(domain1, IOVA, DATA_GPA, 0x1000, Perm.ReadWrite));
      vm1.vm.memory.writeBytes(DATA_GPA, pattern(64, 1));
      vm2.vm.memory.writeBytes(DATA_GPA, pattern(64, 2));
      expect(dev1.read(IOVA, 64)).toMatchObject({ ok: true, data: pattern(64, 1) });

      /** The second VM allocates, attaches and maps domains (each takes a tag) and uses them. */
      const secondVmAllocates = (): number[] => {
        const tags: number[] = [];
        for (let i = 0; i < 6; i++) {
          const d = unwrap(driver2.createDomain());
          unwrap(driver2.attach(0x10, d));
          unwrap(driver2.map(d, IOVA, DATA_GPA, 0x1000, Perm.ReadWrite));
          expect(dev2.read(IOVA, 64)).toMatchObject({ ok: true, data: pattern(64, 2) });
          tags.push(tagOf(unit, dev2)!);
        }
        return tags;
      };

      /** The first device's tag is held, no domain of the other VM has it, and its DMA reaches only its own page. */
      const firstDeviceIsolated = (step: string): void => {
        const tag = tagOf(unit, dev1);
        expect(tag, step).toBeDefined();
        expect(vmids.isUsed(tag!), step).toBe(true);
        expect(secondVmAllocates(), step).not.toContain(tag);
        expect(dev1.read(IOVA, 64), step).toMatchObject({ ok: true, data: pattern(64, 1) });
        expect(tagOf(unit, dev1), step).toBe(tag);
      };

      // 1. FPD toggled in the entry that keeps the same table, and flushed: the VMM attaches the device again.
      const entry = fpdEntry(device1, 0x10);
      const tag = tagOf(unit, dev1);
      for (const fpd of [1, 0]) {
        const w0 = vm1.vm.memory.read32(entry);
        vm1.vm.memory.write32(entry, fpd ? (w0 | 2) >>> 0 : (w0 & ~2) >>> 0);
        const [type, desc] = entryFlush(device1, 0x10);
        expect(device1.execute(type, desc)).toEqual({ kind: "done" });
        expect(device1.bindings.devices.get(0x10)!.context.fpd).toBe(fpd === 1);
        firstDeviceIsolated(`FPD ${fpd}`);
        expect(tagOf(unit, dev1)).toBe(tag);
      }

      // 2. The unchanged entry flushed again (global context flush).
      expect(device1.execute(InvDescType.CC_INV, encodeInvDesc("CC_INV", { G: ContextCacheGranularity.GLOBAL }))).toEqual({ kind: "done" });
      firstDeviceIsolated("unchanged entry flushed");

      // 3. Translation off (the device goes to the VM's stage-2 parent) and on again.
      const base = device1.mmioBase;
      const gsts = Number(vm1.vm.mmioRead(base + 0x1c, 4));
      const commands = gsts & ~((1 << 30) | (1 << 24));
      vm1.vm.mmioWrite(base + 0x18, 4, BigInt((commands & ~(1 << 31)) >>> 0));
      expect(dev1.read(DATA_GPA, 64)).toMatchObject({ ok: true, data: pattern(64, 1) });
      firstDeviceIsolatedUntranslated();
      vm1.vm.mmioWrite(base + 0x18, 4, BigInt(commands >>> 0));
      firstDeviceIsolated("translation back on");

      // The first guest's unmap still reaches its device; the other VM is untouched.
      unwrap(driver1.unmap(domain1, IOVA, 0x1000));
      expect(dev1.read(IOVA, 64).ok).toBe(false);
      expect(dev2.read(IOVA, 64)).toMatchObject({ ok: true, data: pattern(64, 2) });
      expect(bed.platform.host.memory.violations).toEqual([]);
      expect(bed.dispose()).toEqual([]);

      function firstDeviceIsolatedUntranslated(): void {
        const t = tagOf(unit, dev1)!;
        expect(vmids.isUsed(t)).toBe(true);
        expect(secondVmAllocates()).not.toContain(t);
        expect(dev1.read(DATA_GPA, 64)).toMatchObject({ ok: true, data: pattern(64, 1) });
      }
    });
  });
}
