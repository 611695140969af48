import { describe, expect, it } from "vitest";
import { err, errnoOf, IOMMU_HW_INFO_FLAG_INPUT_TYPE, ok, unwrap, type HwInfo, type UserData, type ViommuOps } from "@viommu/core";
import { encodeHwptArmSmmuv3, IOMMU_HWPT_DATA_ARM_SMMUV3, IOMMU_VIOMMU_INVALIDATE_DATA_ARM_SMMUV3 } from "../../src/format/uapi.js";
import { encodeCommand } from "../../src/format/command.js";
import type { Smmuv3Extension } from "../../src/hw/smmuv3-extension.js";
import type { ArmVsmmu } from "../../src/hw/smmuv3-viommu.js";
import type { Smmuv3Unit } from "../../src/hw/smmuv3-unit.js";
import { hostSetup } from "../support.js";

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
