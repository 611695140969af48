import { describe, expect, it } from "vitest";
import { encodeState, newWalkResult, NO_PASID, Perm, unwrap } from "@viommu/core";
import { hypervPlugin } from "../../src/plugin.js";
import type { HypervDevice } from "../../src/vmm/hyperv-device.js";
import { PARTITION_STATE_VERSION } from "../../src/vmm/partition-state.js";
import { DATA_GPA, hvBed, IOVA } from "../support.js";

describe("save and restore of the pvIOMMU partition", () => {
  it("brings back device domains, device placements and interrupt entries; refuses malformed or non-fresh restores", () => {
    const { bed, v, driver } = hvBed({ vms: [{ devices: [{ rid: 0x100, guestRid: 0x10 }, { rid: 0x208, guestRid: 0x18 }], vcpus: 16 }] });
    const s1 = unwrap(driver.createDomain());
    unwrap(driver.attach(0x10, s1));
    unwrap(driver.map(s1, IOVA, DATA_GPA, 0x4000, Perm.ReadWrite));
    // The second device stays in the default (identity) domain.
    const msi = unwrap(driver.mapInterrupt(0x18, 0x44, 9));
    const probe = (): string[] => {
      const out = newWalkResult();
      return [IOVA, IOVA + 0x3008, IOVA + 0x5000, DATA_GPA].flatMap((iova) =>
        v.devices.map((d) => {
          const r = d.device.translate(iova, true, NO_PASID, out);
          return r.ok ? `${r.output.toString(16)}/${r.perms}` : "fault";
        }),
      );
    };
    const before = probe();
    const blob = v.iommus[0]!.save!();
    v.iommus[0]!.destroy();
    const fresh = unwrap(
      hypervPlugin.createDevice({ vm: v.vm, iommufd: v.iommufd, unit: bed.units[0]!, ioasId: v.ioasId, parentHwptId: v.parentHwptId, anchorDevId: v.devices[0]!.devId, mode: "nested" }),
    ) as HypervDevice;
    for (const d of v.devices) unwrap(fresh.assignDevice(d.device, d.devId, d.guestRid));
    const refusal = (blob: Uint8Array): string | undefined => {
      const r = fresh.restore(blob);
      return r.ok ? undefined : r.error.message;
    };
    const malformed = encodeState("hyperv-pviommu", PARTITION_STATE_VERSION, { domains: [{ id: 1, type: 1, config: "paging", root: 3, levels: 4, runs: [] }], devices: [], interrupts: [] });
    expect(refusal(malformed)).toBe("hyperv-pviommu state: domains[0].root is 0x3, not a 4 KiB page of guest RAM");
    const wrongDomain = encodeState("hyperv-pviommu", PARTITION_STATE_VERSION, { domains: [], devices: [{ rid: 0x10, domain: 77 }], interrupts: [] });
    expect(refusal(wrongDomain)).toBe("hyperv-pviommu state: devices[0].domain is 77, a domain the state does not have");
    // Version 1 (positional arrays) is not read.
    expect(refusal(encodeState("hyperv-pviommu", 1, { domains: [], devices: [], interrupts: [] }))).toMatch(/version 1 not supported/);
    unwrap(fresh.restore(blob));
    v.iommus[0] = fresh;
    expect(probe()).toEqual(before);
    v.vm.interrupts.take();
    v.devices[1]!.device.signalMsi(msi);
    expect(v.vm.interrupts.take().map((i) => [i.vector, i.destination])).toEqual([[0x44, 9]]);
    // The guest's driver carries on against the restored partition.
    unwrap(driver.unmap(s1, IOVA, 0x1000));
    expect(v.devices[0]!.device.read(IOVA, 4).ok).toBe(false);
    const again = fresh.restore(blob);
    expect(again.ok ? undefined : again.error.errno).toBe("EBUSY");
    bed.dispose();
  });

  it("restores stage-2 device-domain pages", () => {
    const { bed, v, driver } = hvBed({ guest: { variant: "device-domain" } });
    const d = unwrap(driver.createDomain());
    unwrap(driver.attach(0x10, d));
    unwrap(driver.map(d, IOVA, DATA_GPA, 8 * 4096, Perm.Read));
    unwrap(driver.unmap(d, IOVA + 2 * 4096, 4096));
    const blob = v.iommus[0]!.save!();
    v.iommus[0]!.destroy();
    const fresh = unwrap(
      hypervPlugin.createDevice({ vm: v.vm, iommufd: v.iommufd, unit: bed.units[0]!, ioasId: v.ioasId, parentHwptId: v.parentHwptId, anchorDevId: v.devices[0]!.devId, mode: "nested" }),
    );
    for (const dev of v.devices) unwrap(fresh.assignDevice(dev.device, dev.devId, dev.guestRid));
    unwrap(fresh.restore!(blob));
    v.iommus[0] = fresh;
    const ok = [0, 1, 2, 3, 7, 8].map((p) => v.devices[0]!.device.read(IOVA + p * 4096, 4).ok);
    expect(ok).toEqual([true, true, false, true, true, false]);
    expect(v.devices[0]!.device.write(IOVA, Uint8Array.of(1)).ok).toBe(false);
    bed.dispose();
  });
});
