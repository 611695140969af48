import { describe, expect, it } from "vitest";
import { Perm, unwrap, type IommuDomain } from "@viommu/core";
import { Testbed, type TestVm } from "@viommu/conformance";
import { HvDeviceDomainType } from "../../src/format/device-domain.js";
import { logicalDeviceId } from "../../src/format/device-id.js";
import { HvStatus } from "../../src/format/hv-status.js";
import {
  HV_PARTITION_ID_SELF,
  hvAttachDevice,
  hvAttachDeviceDomain,
  hvConfigureDeviceDomain,
  hvCreateDeviceDomain,
  hvDeleteDeviceDomain,
  hvDetachDevice,
  hvDetachDeviceDomain,
  hvMapDeviceGpaPages,
} from "../../src/format/hypercalls.js";
import type { HypervGuestDriver } from "../../src/guest/hyperv-driver.js";
import type { HypervUnit } from "../../src/hw/hyperv-unit.js";
import { hypervPlugin } from "../../src/plugin.js";
import type { HypervDevice } from "../../src/vmm/hyperv-device.js";
import { refuse } from "../refusing-iommufd.js";
import { dd, rawCall } from "../support.js";

const S = HvStatus;
const S1 = HvDeviceDomainType.HV_DEVICE_DOMAIN_TYPE_S1;
const S2 = HvDeviceDomainType.HV_DEVICE_DOMAIN_TYPE_S2;
const IOVA = 0x10_0000;
const S2_IOVA = 0x4000_0000;
const DATA = 0x1000_0000;
const PATTERN_A = Uint8Array.from({ length: 64 }, (_, i) => i ^ 0xa5);
const PATTERN_B = Uint8Array.from({ length: 64 }, (_, i) => i ^ 0x3c);

function s2Domain(v: TestVm, id: number, rid: number): void {
  expect(rawCall(v, hvCreateDeviceDomain, { input: { device_domain: dd(id, S2) } }).status).toBe(S.HV_STATUS_SUCCESS);
  const reps = [0, 1].map((i) => ({ gpa_page_number: BigInt(DATA / 4096 + i) }));
  expect(rawCall(v, hvMapDeviceGpaPages, { input: { device_domain: dd(id, S2), map_flags: { READABLE: 1, WRITABLE: 1 }, target_device_va_base: BigInt(S2_IOVA) }, reps }).status).toBe(S.HV_STATUS_SUCCESS);
  expect(attach(v, id, S2, rid)).toBe(S.HV_STATUS_SUCCESS);
}

function attach(v: TestVm, id: number, type: number, rid: number): number {
  return rawCall(v, hvAttachDeviceDomain, { input: { device_domain: dd(id, type), device_id: logicalDeviceId(rid) } }).status;
}

function detach(v: TestVm, rid: number): number {
  return rawCall(v, hvDetachDeviceDomain, { input: { partition_id: HV_PARTITION_ID_SELF, device_id: logicalDeviceId(rid) } }).status;
}

/** The tag a device's translations are cached under: its stage-2 domain's VMID, or its nesting parent's. */
function vmidOf(unit: HypervUnit, physicalRid: number): number | undefined {
  const d: IommuDomain | undefined = unit.domainOf(physicalRid);
  return d === undefined ? undefined : d.kind === "paging" ? d.vmid : d.parent.vmid;
}

describe("re-attaching a device to the domain it is in, while another VM allocates domains", () => {
  it("frees no VMID or domain in use, and VM A's DMA never reaches VM B's translations", () => {
    const bed = unwrap(
      Testbed.create({
        plugin: hypervPlugin,
        vms: [
          { devices: [{ rid: 0x100, guestRid: 0x10 }, { rid: 0x208, guestRid: 0x18 }], memoryBytes: 2 ** 30 },
          { devices: [{ rid: 0x300, guestRid: 0x10 }], memoryBytes: 2 ** 30 },
        ],
      }),
    );
    const [a, b] = [bed.vms[0]!, bed.vms[1]!];
    const unit = bed.units[0] as HypervUnit;
    const vmids = bed.platform.host.vmids;
    a.vm.memory.writeBytes(DATA, PATTERN_A);
    b.vm.memory.writeBytes(DATA, PATTERN_B);
    // VM A: device 0x10 in a stage-2 domain (its own VMID), device 0x18 in a paging domain (the parent's VMID).
    s2Domain(a, 300, 0x10);
    const driver = a.drivers[0] as HypervGuestDriver;
    const paging = unwrap(driver.createDomain());
    unwrap(driver.attach(0x18, paging));
    unwrap(driver.map(paging, IOVA, DATA, 0x1000, Perm.ReadWrite));
    const domains = (a.iommus[0] as HypervDevice).partition.domains!;
    const config = domains.get(paging)!.config;
    const root = config.kind === "paging" ? config.root : 0;
    const identity = driver.staticDomains().identity!;
    const [devS2, devS1] = [a.devices[0]!.device, a.devices[1]!.device];
    const devB = b.devices[0]!.device;
    let nextB = 1000;
    const liveB: number[] = [];

    /** VM B churns: a stage-2 domain created, mapped, attached, used; every other round the older ones go. */
    const churnB = (): void => {
      const id = nextB++;
      s2Domain(b, id, 0x10);
      const r = devB.read(S2_IOVA, 64);
      expect(r.ok && [...r.data]).toEqual([...PATTERN_B]);
      liveB.push(id);
      if (liveB.length > 2) {
        const old = liveB.shift()!;
        expect(rawCall(b, hvDeleteDeviceDomain, { input: { device_domain: dd(old, S2) } }).status).toBe(S.HV_STATUS_SUCCESS);
      }
    };

    /** After every step: A reads its own data through its own tags, which are held and are not B's. */
    const check = (step: string): void => {
      for (const [dev, iova, rid] of [[devS2, S2_IOVA, 0x100], [devS1, IOVA, 0x208]] as const) {
        const r = dev.read(iova, 64);
        expect(r.ok && [...r.data], `${step}: VM A's device 0x${rid.toString(16)}`).toEqual([...PATTERN_A]);
        const vmid = vmidOf(unit, rid)!;
        expect(vmids.isUsed(vmid), `${step}: VMID ${vmid} of a device in use was freed`).toBe(true);
        expect(vmid, `${step}: VM A's device shares VM B's VMID`).not.toBe(vmidOf(unit, 0x300));
      }
      expect(bed.platform.host.memory.violations).toEqual([]);
      churnB();
    };

    check("setup");
    for (let round = 0; round < 3; round++) {
      expect(attach(a, 300, S2, 0x10)).toBe(S.HV_STATUS_DEVICE_ALREADY_IN_DOMAIN);
      check("ATTACH_DEVICE_DOMAIN to the stage-2 domain the device is in");
      expect(attach(a, paging, S1, 0x18)).toBe(S.HV_STATUS_DEVICE_ALREADY_IN_DOMAIN);
      check("ATTACH_DEVICE_DOMAIN to the paging domain the device is in");
      const same = { device_domain: dd(paging), settings: { flags: { translation_enabled: 1 }, page_table_root: BigInt(root) } };
      expect(rawCall(a, hvConfigureDeviceDomain, { input: same }).status).toBe(S.HV_STATUS_SUCCESS);
      check("CONFIGURE of the attached paging domain keeping its root");
      expect(rawCall(a, hvConfigureDeviceDomain, { input: { device_domain: dd(identity), settings: { flags: { translation_enabled: 0 } } } }).status).toBe(S.HV_STATUS_SUCCESS);
      check("CONFIGURE of an identity domain as identity again");
      expect(detach(a, 0x10)).toBe(S.HV_STATUS_SUCCESS);
      expect(attach(a, 300, S2, 0x10)).toBe(S.HV_STATUS_SUCCESS);
      check("DETACH then ATTACH of the same stage-2 domain");
      expect(detach(a, 0x18)).toBe(S.HV_STATUS_SUCCESS);
      expect(attach(a, paging, S1, 0x18)).toBe(S.HV_STATUS_SUCCESS);
      check("DETACH then ATTACH of the same paging domain");
      // Moves the host refuses leave the device where it was, attached as it was (and not attached there again).
      const fresh = 500 + round;
      expect(rawCall(a, hvCreateDeviceDomain, { input: { device_domain: dd(fresh) } }).status).toBe(S.HV_STATUS_SUCCESS);
      expect(rawCall(a, hvConfigureDeviceDomain, { input: { ...same, device_domain: dd(fresh) } }).status).toBe(S.HV_STATUS_SUCCESS);
      const refusal = refuse(a.iommufd, "hwptAlloc", "ENOMEM");
      expect(attach(a, fresh, S1, 0x10)).toBe(S.HV_STATUS_NO_RESOURCES);
      refusal.lift();
      check("a move out of the stage-2 domain whose nested HWPT the host refuses");
      expect(rawCall(a, hvCreateDeviceDomain, { input: { device_domain: dd(400 + round, S2) } }).status).toBe(S.HV_STATUS_SUCCESS);
      const target = domains.get(400 + round)!.ioasId;
      const other = refuse(a.iommufd, "attach", "EBUSY", (_devId, ptId) => ptId === target);
      expect(attach(a, 400 + round, S2, 0x10)).toBe(S.HV_STATUS_OPERATION_DENIED);
      other.lift();
      check("a move to another stage-2 domain the host refuses");
      const attachDirect = { partition_id: HV_PARTITION_ID_SELF, device_id: logicalDeviceId(0x10), attdev_flags: { logical_id: 1 }, logical_devid: 0x10n };
      expect(rawCall(a, hvAttachDevice, { input: attachDirect }).status).toBe(S.HV_STATUS_SUCCESS);
      expect(rawCall(a, hvDetachDevice, { input: { partition_id: HV_PARTITION_ID_SELF, logical_devid: 0x10n } }).status).toBe(S.HV_STATUS_SUCCESS);
      expect(attach(a, 300, S2, 0x10)).toBe(S.HV_STATUS_SUCCESS);
      check("direct attach and detach, then back to the same stage-2 domain");
    }
    expect(bed.dispose()).toEqual([]);
  });
});
