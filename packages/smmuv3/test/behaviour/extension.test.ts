import { describe, expect, it } from "vitest";
import { err, errnoOf, IOMMU_HW_INFO_FLAG_INPUT_TYPE, IommufdObjectType, ok, Perm, unwrap, type HwInfo, type RawBits, type UserData, type ViommuOps } from "@viommu/core";
import {
  encodeHwptArmSmmuv3,
  IOMMU_HWPT_DATA_ARM_SMMUV3,
  IOMMU_VIOMMU_INVALIDATE_DATA_ARM_SMMUV3,
  IOMMU_VIOMMU_TYPE_ARM_SMMUV3,
} from "../../src/format/uapi.js";
import { cmdOpcode } from "../../src/format/command-fields.js";
import { CommandOpcode, encodeCommand } from "../../src/format/command.js";
import type { SecondaryCommandQueue, Smmuv3DriverImplOps } from "../../src/guest/impl-ops.js";
import type { Smmuv3GuestDriver } from "../../src/guest/smmuv3-driver.js";
import type { Smmuv3Extension } from "../../src/hw/smmuv3-extension.js";
import type { ArmVsmmu } from "../../src/hw/smmuv3-viommu.js";
import type { Smmuv3Unit } from "../../src/hw/smmuv3-unit.js";
import { Smmuv3Device } from "../../src/vmm/smmuv3-device.js";
import { hostSetup, smmuBed } from "../support.js";

const EXT_VIOMMU_TYPE = 0x99;
const EXT_HW_INFO_TYPE = 3;

/** An implementation extension the way tegra241-cmdqv plugs in: its own vIOMMU type built on the base vSMMU. */
function fakeExtension(): Smmuv3Extension & { probed: Smmuv3Unit | undefined; inits: { vsmmu: ArmVsmmu; data: UserData | undefined }[] } {
  const ext = {
    name: "test-impl",
    probed: undefined as Smmuv3Unit | undefined,
    inits: [] as { vsmmu: ArmVsmmu; data: UserData | undefined }[],
    probe(unit: Smmuv3Unit): void {
      ext.probed = unit;
    },
    hwInfo(_unit: Smmuv3Unit, _device: unknown, type: number) {
      return type === EXT_HW_INFO_TYPE ? ok({ type, data: Uint8Array.of(1, 2, 3, 4), maxPasidLog2: 0, capabilities: 0 }) : err<HwInfo>("EOPNOTSUPP", `hw_info type ${type}`);
    },
    getViommuSize(_unit: Smmuv3Unit, _device: unknown, type: number): number {
      return type === EXT_VIOMMU_TYPE ? 512 : 0;
    },
    viommuInit(vsmmu: ArmVsmmu, data: UserData | undefined) {
      ext.inits.push({ vsmmu, data });
      const ops: ViommuOps = {
        allocDomainNested: (device, flags, d) => vsmmu.allocDomainNested(device, flags, d),
        cacheInvalidate: (array) => vsmmu.cacheInvalidate(array),
        vdeviceInit: (vdev) => vsmmu.vdeviceInit(vdev),
      };
      return ok(ops);
    },
  };
  return ext;
}

describe("the SMMUv3 extension point (like Linux arm_smmu_impl_ops)", () => {
  it("probes the extension when the unit is created", () => {
    const ext = fakeExtension();
    const h = hostSetup({ extension: ext });
    expect(ext.probed).toBe(h.unit);
  });

  it("lets the extension add a vIOMMU type on top of the base vSMMU (same VMID, shared nested-domain and invalidation ops)", () => {
    const ext = fakeExtension();
    const h = hostSetup({ extension: ext });
    const id = unwrap(h.ctx.viommuAlloc({ flags: 0, type: EXT_VIOMMU_TYPE, devId: h.devId, hwptId: h.parentId, data: { type: EXT_VIOMMU_TYPE, bytes: Uint8Array.of(9) } }));
    expect(ext.inits).toHaveLength(1);
    expect(ext.inits[0]!.data?.bytes).toEqual(Uint8Array.of(9));
    unwrap(h.ctx.vdeviceAlloc({ viommuId: id, devId: h.devId, virtId: 0x28 }));
    const hwpt = unwrap(h.ctx.hwptAlloc({ flags: 0, devId: h.devId, ptId: id, data: { type: IOMMU_HWPT_DATA_ARM_SMMUV3, bytes: encodeHwptArmSmmuv3(Uint32Array.of(0x9, 0, 0, 0)) } }));
    unwrap(h.ctx.attach(h.devId, hwpt));
    expect(h.device.read(0x1000, 4).ok).toBe(true);
    const bytes = new Uint8Array(16);
    bytes.set(new Uint8Array(encodeCommand("CMD_CFGI_CD_ALL", { SID: 0x28 }).buffer));
    expect(h.ctx.hwptInvalidate({ hwptId: id, dataType: IOMMU_VIOMMU_INVALIDATE_DATA_ARM_SMMUV3, entryLen: 16, entryNum: 1, entries: bytes }).handled).toBe(1);
  });

  it("routes hw_info of the extension's type to it, and keeps answering the SMMUv3 type itself", () => {
    const h = hostSetup({ extension: fakeExtension() });
    const ext = unwrap(h.ctx.getHwInfo({ flags: IOMMU_HW_INFO_FLAG_INPUT_TYPE, devId: h.devId, dataLen: 4, inDataType: EXT_HW_INFO_TYPE }));
    expect([ext.outDataType, [...ext.data]]).toEqual([EXT_HW_INFO_TYPE, [1, 2, 3, 4]]);
    expect(unwrap(h.ctx.getHwInfo({ flags: 0, devId: h.devId, dataLen: 40 })).outDataType).toBe(2);
  });

  it("works as a plain SMMUv3 without an extension: the extension's types are EOPNOTSUPP", () => {
    const h = hostSetup();
    expect(errnoOf(h.ctx.viommuAlloc({ flags: 0, type: EXT_VIOMMU_TYPE, devId: h.devId, hwptId: h.parentId }))).toBe("EOPNOTSUPP");
    expect(errnoOf(h.ctx.getHwInfo({ flags: IOMMU_HW_INFO_FLAG_INPUT_TYPE, devId: h.devId, dataLen: 4, inDataType: EXT_HW_INFO_TYPE }))).toBe("EOPNOTSUPP");
  });
});

/** A secondary queue that records what it is given (it executes nothing: the test checks where batches went). */
function recordingQueue(result: () => ReturnType<SecondaryCommandQueue["submit"]> = () => ok()): SecondaryCommandQueue & { batches: RawBits[][] } {
  const queue = {
    batches: [] as RawBits[][],
    submit(commands: readonly RawBits[]) {
      queue.batches.push([...commands]);
      return result();
    },
  };
  return queue;
}

/** Implementation ops taking only batches of TLBI_NH_VA (as Tegra's take only what a VCMDQ executes), recording every question. */
function tlbiVaOps(queue: SecondaryCommandQueue): Smmuv3DriverImplOps & { asked: { driver: Smmuv3GuestDriver; opcodes: number[] }[] } {
  const ops = {
    asked: [] as { driver: Smmuv3GuestDriver; opcodes: number[] }[],
    getSecondaryCmdq(driver: Smmuv3GuestDriver, commands: readonly RawBits[]) {
      const opcodes = commands.map((c) => cmdOpcode(c));
      ops.asked.push({ driver, opcodes });
      return opcodes.length > 0 && opcodes.every((op) => op === CommandOpcode.CMD_TLBI_NH_VA) ? queue : undefined;
    },
  };
  return ops;
}

function attachedBed() {
  const s = smmuBed();
  const domain = unwrap(s.driver.createDomain());
  unwrap(s.driver.attach(0x10, domain));
  unwrap(s.driver.map(domain, 0x10_0000, 0x2000_0000, 0x4000, Perm.ReadWrite));
  return { ...s, domain };
}

describe("the guest driver's implementation ops (like Linux impl_ops->get_secondary_cmdq)", () => {
  it("without ops the driver is plain SMMUv3: every batch, with its CMD_SYNC, goes to the trapped CMDQ", () => {
    const s = attachedBed();
    const trapped = s.iommu.stats.trapped;
    const exits = s.vm.exits.mmio;
    unwrap(s.driver.flush(s.domain, 0x10_0000, 0x1000));
    expect(s.iommu.stats.trapped - trapped).toBe(2);
    expect(s.vm.exits.mmio).toBeGreaterThan(exits);
    expect(s.driver.probeInfo).toMatchObject({ base: s.iommu.mmioBase, iortIdentifier: expect.any(Number), msiPoll: true });
    s.bed.dispose();
  });

  it("asks getSecondaryCmdq for every batch first; a queue it returns takes the whole batch and the CMDQ sees none of it", () => {
    const s = attachedBed();
    const queue = recordingQueue();
    const ops = tlbiVaOps(queue);
    s.driver.setImplOps(ops);
    const trapped = s.iommu.stats.trapped;
    unwrap(s.driver.flush(s.domain, 0x10_0000, 0x1000));
    expect(s.iommu.stats.trapped).toBe(trapped);
    expect(queue.batches.map((b) => b.map((c) => cmdOpcode(c)))).toEqual([[CommandOpcode.CMD_TLBI_NH_VA]]);
    expect(ops.asked).toEqual([{ driver: s.driver, opcodes: [CommandOpcode.CMD_TLBI_NH_VA] }]);
    s.bed.dispose();
  });

  it("keeps a batch the hook declines on the main CMDQ, fails a batch its queue fails without retrying it there, and clears", () => {
    const s = attachedBed();
    const failing = recordingQueue(() => err("EIO", "secondary queue stopped"));
    s.driver.setImplOps(tlbiVaOps(failing));
    const trapped = s.iommu.stats.trapped;
    unwrap(s.driver.detach(0x10));
    expect(s.iommu.stats.trapped - trapped).toBe(2);
    expect(errnoOf(s.driver.flush(s.domain, 0x10_0000, 0x1000))).toBe("EIO");
    expect(s.iommu.stats.trapped - trapped).toBe(2);
    s.driver.setImplOps(undefined);
    unwrap(s.driver.flush(s.domain, 0x10_0000, 0x1000));
    expect(s.iommu.stats.trapped - trapped).toBe(4);
    expect(failing.batches).toHaveLength(1);
    s.bed.dispose();
  });

  it("submitOnMainCmdq never asks the hook: an implementation's own flush reaches the SMMU's queue", () => {
    const s = attachedBed();
    const queue = recordingQueue();
    const ops = tlbiVaOps(queue);
    s.driver.setImplOps(ops);
    const trapped = s.iommu.stats.trapped;
    unwrap(s.driver.submitOnMainCmdq([encodeCommand("CMD_TLBI_NH_VA", { ASID: 1, Addr: 0x10_0000n })]));
    expect(s.iommu.stats.trapped - trapped).toBe(2);
    expect(ops.asked).toHaveLength(0);
    expect(queue.batches).toHaveLength(0);
    s.bed.dispose();
  });
});

describe("the VMM device's extras for an extension (its vIOMMU type and data)", () => {
  function nestedDevice(extras: Parameters<typeof Smmuv3Device.create>[1]) {
    const ext = fakeExtension();
    const h = hostSetup({ extension: ext });
    const device = unwrap(Smmuv3Device.create({ vm: h.vm, iommufd: h.ctx, unit: h.unit, ioasId: h.ioasId, parentHwptId: h.parentId, anchorDevId: h.devId, mode: "nested" }, extras));
    return { ...h, ext, device };
  }

  it("allocates the vSMMU with the extension's type and data, and names its id for the extension's own objects", () => {
    const data: UserData = { type: EXT_VIOMMU_TYPE, bytes: Uint8Array.of(7, 7) };
    const s = nestedDevice({ viommuType: EXT_VIOMMU_TYPE, viommuData: data });
    expect(s.ext.inits.map((i) => i.data?.bytes)).toEqual([Uint8Array.of(7, 7)]);
    expect(unwrap(s.ctx.viommu(s.device.viommuId!)).viommuType).toBe(EXT_VIOMMU_TYPE);
    s.device.destroy();
    expect(s.ctx.list(IommufdObjectType.VIOMMU)).toHaveLength(0);
  });

  it("allocates a plain ARM_SMMUV3 vSMMU without extras (the extension is never asked)", () => {
    const s = nestedDevice({});
    expect(s.ext.inits).toHaveLength(0);
    expect(unwrap(s.ctx.viommu(s.device.viommuId!)).viommuType).toBe(IOMMU_VIOMMU_TYPE_ARM_SMMUV3);
    s.device.destroy();
  });
});
