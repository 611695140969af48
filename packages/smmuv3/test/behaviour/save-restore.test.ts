import { describe, expect, it } from "vitest";
import { errnoOf, Perm, unwrap } from "@viommu/core";
import { Smmuv3Device } from "../../src/vmm/smmuv3-device.js";
import { smmuBed } from "../support.js";

function migrate(s: ReturnType<typeof smmuBed>, blob: Uint8Array): Smmuv3Device {
  s.iommu.destroy();
  const v = s.v;
  const fresh = unwrap(Smmuv3Device.create({ vm: v.vm, iommufd: v.iommufd, unit: s.unit, ioasId: v.ioasId, parentHwptId: v.parentHwptId, anchorDevId: v.devices[0]!.devId, mode: "nested" }));
  unwrap(fresh.assignDevice(s.device, v.devices[0]!.devId, 0x10));
  unwrap(fresh.restore(blob));
  v.iommus[0] = fresh;
  return fresh;
}

describe("SMMUv3 save/restore", () => {
  it("restores every register into a fresh device and rebuilds the host side from the guest's tables", () => {
    const s = smmuBed();
    const domain = unwrap(s.driver.createDomain());
    unwrap(s.driver.attach(0x10, domain));
    unwrap(s.driver.map(domain, 0x10_0000, 0x2000_0000, 0x1000, Perm.ReadWrite));
    const names = ["CR0", "CR0ACK", "CR1", "CR2", "IRQ_CTRLACK", "STRTAB_BASE", "STRTAB_BASE_CFG", "CMDQ_BASE", "CMDQ_PROD", "CMDQ_CONS", "EVTQ_BASE", "EVTQ_PROD", "EVTQ_CONS"];
    const before = names.map((n) => s.iommu.regs.get(n));
    const fresh = migrate(s, s.iommu.save());
    expect(names.map((n) => fresh.regs.get(n))).toEqual(before);
    expect(s.device.write(0x10_0000, Uint8Array.of(1)).ok).toBe(true);
    // The guest carries on with its queues where it left them.
    unwrap(s.driver.unmap(domain, 0x10_0000, 0x1000));
    expect(s.device.read(0x10_0000, 4).ok).toBe(false);
  });

  it("refuses a corrupted, truncated or foreign state with EINVAL and changes nothing", () => {
    const s = smmuBed();
    const blob = s.iommu.save();
    const corrupted = blob.slice();
    corrupted[corrupted.length - 2] ^= 0x20;
    expect(errnoOf(s.iommu.restore(corrupted))).toBe("EINVAL");
    expect(errnoOf(s.iommu.restore(blob.subarray(0, 20)))).toBe("EINVAL");
    expect(errnoOf(s.iommu.restore(new TextEncoder().encode("VIOMMUST garbage")))).toBe("EINVAL");
    expect(s.iommu.regs.get("CR0ACK")).not.toBe(0n);
  });
});
