import { describe, expect, it } from "vitest";
import { Perm, unwrap } from "@viommu/core";
import { EventType } from "../../src/format/event-record.js";
import { gicrSetlpirAddress } from "../../src/format/gic-doorbell.js";
import { smmuBed } from "../support.js";

const MSI_IOVA_BASE = 0x0800_0000;

for (const mode of ["nested", "shadow"] as const) {
  describe(`a device's MSIs go through the SMMU (${mode})`, () => {
    function attached() {
      const s = smmuBed({ vms: [{ devices: [{ rid: 0x100, guestRid: 0x10 }], vcpus: 4 }], mode });
      const domain = unwrap(s.driver.createDomain());
      unwrap(s.driver.attach(0x10, domain));
      s.driver.readEvents();
      s.vm.interrupts.take();
      return { ...s, domain };
    }

    it("an MSI to the doorbell IOVA Linux mapped (iommu_dma_prepare_msi) is translated to the GIC and delivered", () => {
      const s = attached();
      const iova = unwrap(s.driver.mapMsiDoorbell(s.domain, gicrSetlpirAddress(2)));
      expect(iova).toBe(MSI_IOVA_BASE + (gicrSetlpirAddress(2) % 4096));
      expect(s.iommu.deliverMsi(0x10, { address: iova, data: 0x2040 })).toMatchObject({ ok: true, irq: { vector: 0x2040, destination: 2 } });
      expect(s.device.signalMsi({ address: iova, data: 0x2041 })).toBe(true);
      expect(s.vm.interrupts.take("msi:10")).toEqual([
        { vector: 0x2040, destination: 2, path: "vmm", source: "msi:10" },
        { vector: 0x2041, destination: 2, path: "vmm", source: "msi:10" },
      ]);
      // The same doorbell page is mapped once: a second CPU's doorbell in it shares the IOVA page.
      expect(unwrap(s.driver.mapMsiDoorbell(s.domain, gicrSetlpirAddress(2)))).toBe(iova);
    });

    it("an MSI to the doorbell's physical address, unmapped in the domain, is blocked with the event the SMMU records (F_TRANSLATION)", () => {
      const s = attached();
      const r = s.iommu.deliverMsi(0x10, { address: gicrSetlpirAddress(1), data: 0x2040 });
      expect(r).toMatchObject({ ok: false, fault: { code: EventType.F_TRANSLATION, name: "F_TRANSLATION" } });
      expect(s.vm.interrupts.take("msi:10")).toEqual([]);
      expect(s.driver.readEvents()).toMatchObject([{ kind: "dma-fault", name: "F_TRANSLATION", rid: 0x10, address: gicrSetlpirAddress(1), write: true }]);
    });

    it("unmapping the doorbell stops the MSIs; with the SMMU disabled (GBPA bypass) the physical doorbell is reached untranslated", () => {
      const s = attached();
      const iova = unwrap(s.driver.mapMsiDoorbell(s.domain, gicrSetlpirAddress(0)));
      unwrap(s.driver.unmap(s.domain, iova - (iova % 4096), 4096));
      expect(s.iommu.deliverMsi(0x10, { address: iova, data: 0x2040 }).ok).toBe(false);
      const cr0 = s.iommu.mmioBase + 0x20;
      s.vm.mmioWrite(cr0, 4, Number(s.vm.mmioRead(cr0, 4)) & ~1);
      expect(s.iommu.deliverMsi(0x10, { address: gicrSetlpirAddress(3), data: 0x2042 })).toMatchObject({ ok: true, irq: { destination: 3 } });
      // GBPA abort: blocked, no event.
      s.vm.mmioWrite(s.iommu.mmioBase + 0x44, 4, (1 << 31) | (1 << 20));
      s.driver.readEvents();
      expect(s.iommu.deliverMsi(0x10, { address: gicrSetlpirAddress(3), data: 0x2042 })).toMatchObject({ ok: false, fault: { name: "ABORT" } });
      expect(s.driver.readEvents()).toEqual([]);
    });

    it("an MSI translated to guest RAM is no interrupt", () => {
      const s = attached();
      unwrap(s.driver.map(s.domain, 0x10_0000, 0x2000_0000, 0x1000, Perm.ReadWrite));
      expect(s.iommu.deliverMsi(0x10, { address: 0x10_0040, data: 1 })).toMatchObject({ ok: false, fault: { name: "NOT_AN_INTERRUPT_DOORBELL" } });
    });
  });
}
