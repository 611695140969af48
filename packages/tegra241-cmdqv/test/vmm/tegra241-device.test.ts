import { afterEach, describe, expect, it } from "vitest";
import { IommufdObjectType, unwrap } from "@viommu/core";
import type { Testbed } from "@viommu/conformance";
import { encodeCommand, type Smmuv3Unit } from "@viommu/smmuv3";
import {
  CmdqvReg,
  cmdqvParamLayout,
  decodeReg32,
  lvcmdqPage0,
  VcmdqCerror,
  VcmdqPage0Reg,
  VcmdqPage1Reg,
  vintfBase,
  VintfReg,
  vintfLvcmdqErrMap64Offset,
} from "../../src/format/index.js";
import { IOMMU_VIOMMU_TYPE_TEGRA241_CMDQV } from "../../src/format/iommufd-uapi.js";
import { findCmdqvDevices } from "../../src/guest/cmdqv-acpi-probe.js";
import { DEFAULT_CMDQV_BASE, DEFAULT_CMDQV_GSIV } from "../../src/vmm/tegra241-device.js";
import { device, guestCmdqv, hardware, IOVA, mapped, tegraBed, vmm } from "../support.js";

let bed: Testbed | undefined;
afterEach(() => {
  bed?.dispose();
  bed = undefined;
});

function open(options?: Parameters<typeof tegraBed>[0]): Testbed {
  bed = tegraBed(options);
  return bed;
}

const BASE = DEFAULT_CMDQV_BASE;

describe("the SMMUv3 half's vIOMMU", () => {
  it("is allocated as TEGRA241_CMDQV through the SMMUv3 device's extras, and the CMDQV half hangs off that one vIOMMU", () => {
    const v = open().vms[0]!;
    const viommus = v.iommufd.list(IommufdObjectType.VIOMMU);
    expect(viommus).toHaveLength(1);
    const id = device(v).smmu.viommuId!;
    expect(unwrap(v.iommufd.viommu(id)).viommuType).toBe(IOMMU_VIOMMU_TYPE_TEGRA241_CMDQV);
    expect(v.iommufd.list(IommufdObjectType.HW_QUEUE)).toHaveLength(2);
  });

  it("is a plain ARM_SMMUV3 one when the VMM shadows (no CMDQV half)", () => {
    const v = open({ mode: "shadow" }).vms[0]!;
    expect(device(v).cmdqv).toBeUndefined();
    expect(device(v).smmu.viommuId).toBeUndefined();
    expect(v.iommufd.list(IommufdObjectType.VIOMMU)).toHaveLength(0);
  });
});

describe("the CMDQV the VMM shows its guest", () => {
  it("has one VINTF: PARAM from the host's hw_info with NUM_VINTF_LOG2 = 0", () => {
    const v = open().vms[0]!;
    expect(decodeReg32(cmdqvParamLayout, Number(v.vm.mmioRead(BASE + CmdqvReg.PARAM, 4)))).toEqual({ CMDQV_VER: 1, CMDQV_NUM_VCMDQ_LOG2: 1, CMDQV_NUM_VINTF_LOG2: 0, CMDQV_NUM_SID_PER_VM_LOG2: 4 });
  });

  it("is published as NVDA200C in an SSDT whose _UID is the IORT SMMUv3 node's identifier", () => {
    const v = open().vms[0]!;
    const tables = device(v).acpiTables();
    expect(tables.map((t) => t.signature)).toEqual(["IORT", "SSDT"]);
    expect(findCmdqvDevices(tables[1]!.bytes)).toEqual([{ uid: 1, base: BASE, length: 0x50000, gsiv: DEFAULT_CMDQV_GSIV }]);
  });

  it("maps the VINTF page 0 direct at +0x10000 and +0x30000 (no exits); the config page and page 1 trap", () => {
    const v = open().vms[0]!;
    const exits = v.vm.exits.mmio;
    v.vm.mmioRead(BASE + 0x10000 + VcmdqPage0Reg.CONS_INDX, 4);
    v.vm.mmioRead(BASE + 0x30000 + VcmdqPage0Reg.STATUS, 4);
    v.vm.mmioWrite(BASE + 0x30000 + VcmdqPage0Reg.GERRORN, 4, 0);
    expect(v.vm.exits.mmio).toBe(exits);
    v.vm.mmioRead(BASE + CmdqvReg.CONFIG, 4);
    v.vm.mmioRead(BASE + 0x40000 + VcmdqPage1Reg.BASE, 4);
    expect(v.vm.exits.mmio).toBe(exits + 2);
    // Both direct views are the same hardware registers: the host VINTF's logical VCMDQ 0.
    expect(v.vm.mmioRead(BASE + 0x10000 + VcmdqPage0Reg.STATUS, 4)).toBe(1n);
    expect(v.vm.mmioRead(BASE + 0x30000 + VcmdqPage0Reg.STATUS, 4)).toBe(1n);
  });

  it("turns the guest's BASE writes into HW queues once mapped and enabled, and frees them when the VINTF is disabled", () => {
    const v = open().vms[0]!;
    expect(vmm(v).allocatedQueues()).toEqual([0, 1]);
    expect(v.iommufd.list(IommufdObjectType.HW_QUEUE)).toHaveLength(2);
    // The guest's page-1 values are the VMM's cache; the hardware holds the host PA.
    const guestBase = (Number(v.vm.mmioRead(BASE + 0x40000 + VcmdqPage1Reg.BASE, 4)) & ~0x1f) >>> 0;
    expect(v.vm.memory.contains(guestBase)).toBe(true);
    v.vm.mmioWrite(BASE + vintfBase(0) + VintfReg.CONFIG, 4, 0);
    expect(v.iommufd.list(IommufdObjectType.HW_QUEUE)).toHaveLength(0);
    expect(v.vm.mmioRead(BASE + 0x30000 + VcmdqPage0Reg.STATUS, 4)).toBe(0n);
  });

  it("never lets the guest set HYP_OWN: the host VINTF stays guest-owned", () => {
    const b = open();
    const v = b.vms[0]!;
    v.vm.mmioWrite(BASE + vintfBase(0) + VintfReg.CONFIG, 4, (1 << 17) | 1);
    expect(Number(v.vm.mmioRead(BASE + vintfBase(0) + VintfReg.CONFIG, 4)) & (1 << 17)).toBe(0);
    expect(hardware(b).vintfs[1]!.hypOwn).toBe(false);
  });

  it("leaves a queue the core refuses unallocated: its page 0 reads zero, so the guest's enable handshake fails", () => {
    const v = open().vms[0]!;
    const page1 = BASE + 0x40000 + 0x80;
    v.vm.mmioWrite(page1 + VcmdqPage1Reg.BASE, 8, (2n ** 40n) | 8n);
    expect(vmm(v).allocatedQueues()).toEqual([0]);
    expect(vmm(v).stats.queueAllocFailures).toBe(1);
    v.vm.mmioWrite(BASE + 0x30080 + VcmdqPage0Reg.CONFIG, 4, 1);
    expect(v.vm.mmioRead(BASE + 0x30080 + VcmdqPage0Reg.STATUS, 4)).toBe(0n);
  });
});

describe("queue errors reach the guest", () => {
  it("vEVENT → LVCMDQ_ERR_MAP, CMDQ_ERR_MAP, VINTF_ERR_MAP and the CMDQV interrupt at its GSIV; cleared once acknowledged", () => {
    const b = open();
    const v = b.vms[0]!;
    const r = guestCmdqv(v).issueRaw(1, [encodeCommand("CMD_PREFETCH_CONFIG", { SID: 0x10 })]);
    expect(r.ok).toBe(false);
    expect(Number(v.vm.mmioRead(BASE + CmdqvReg.VINTF_ERR_MAP, 4))).toBe(0);
    b.poll();
    expect(vmm(v).stats.vevents).toBe(1);
    expect(v.vm.interrupts.take("tegra241-cmdqv")).toEqual([{ vector: DEFAULT_CMDQV_GSIV, destination: 0, path: "vmm", source: "tegra241-cmdqv" }]);
    expect(Number(v.vm.mmioRead(BASE + CmdqvReg.VINTF_ERR_MAP, 4))).toBe(1);
    expect(v.vm.mmioRead(BASE + vintfLvcmdqErrMap64Offset(0, 0), 8)).toBe(0b10n);
    expect(Number(v.vm.mmioRead(BASE + CmdqvReg.CMDQ_ERR_MAP0, 4))).toBe(0b10);
    // What the guest's handler reads, straight from the hardware page.
    expect((Number(v.vm.mmioRead(BASE + lvcmdqPage0(0, 1) + VcmdqPage0Reg.CONS_INDX, 4)) >>> 24) & 0x7f).toBe(VcmdqCerror.CERROR_ILL);
    const handled = guestCmdqv(v).handleInterrupt();
    expect(handled).toMatchObject([{ kind: "command-error", code: 1, name: "CERROR_ILL" }]);
    expect(Number(v.vm.mmioRead(BASE + CmdqvReg.VINTF_ERR_MAP, 4))).toBe(0);
    expect(v.vm.mmioRead(BASE + vintfLvcmdqErrMap64Offset(0, 0), 8)).toBe(0n);
  });

  it("VINTF_INT_MASK masks the injection; the maps still show the error", () => {
    const b = open();
    const v = b.vms[0]!;
    v.vm.mmioWrite(BASE + CmdqvReg.VINTF_INT_MASK, 4, 1);
    guestCmdqv(v).issueRaw(0, [Uint32Array.of(0xff, 0, 0, 0)]);
    b.poll();
    expect(v.vm.interrupts.take("tegra241-cmdqv")).toEqual([]);
    expect(Number(v.vm.mmioRead(BASE + CmdqvReg.VINTF_ERR_MAP, 4))).toBe(1);
  });

  it("recovers lost vEVENTs from the page-0 error state", () => {
    const b = open();
    const v = b.vms[0]!;
    // Two errors before the VMM drains a depth-64 queue would not overflow; overflow it with acknowledged repeats.
    for (let i = 0; i < 70; i++) {
      guestCmdqv(v).issueRaw(0, [Uint32Array.of(0xfe, 0, 0, 0)]);
      v.vm.mmioWrite(BASE + 0x30000 + VcmdqPage0Reg.GERRORN, 4, v.vm.mmioRead(BASE + 0x30000 + VcmdqPage0Reg.GERROR, 4));
    }
    b.poll();
    expect(v.vm.interrupts.take("tegra241-cmdqv").length).toBe(1);
    expect(Number(v.vm.mmioRead(BASE + CmdqvReg.VINTF_ERR_MAP, 4))).toBe(1);
  });
});

describe("commands on the guest's VCMDQ", () => {
  it("ATC_INV reaches the SMMU with the physical StreamID; a vSID without a vDEVICE stops the queue with CERROR_ILL", () => {
    const b = open();
    const v = b.vms[0]!;
    const unit = b.units[0] as Smmuv3Unit;
    const seen: number[][] = [];
    const execute = unit.executeCommand.bind(unit);
    unit.executeCommand = (c) => {
      seen.push([...c]);
      return execute(c);
    };
    expect(unwrap(guestCmdqv(v).issueRaw(0, [encodeCommand("CMD_ATC_INV", { SID: 0x10, Size: 52 })]))).toBe(true);
    expect(seen.filter((c) => (c[0]! & 0xff) === 0x40).map((c) => c[1])).toEqual([0x100]);
    const unknown = guestCmdqv(v).issueRaw(0, [encodeCommand("CMD_ATC_INV", { SID: 0x11, Size: 52 })]);
    expect(unknown.ok).toBe(false);
    expect((Number(v.vm.mmioRead(BASE + lvcmdqPage0(0, 0) + VcmdqPage0Reg.CONS_INDX, 4)) >>> 24) & 0x7f).toBe(VcmdqCerror.CERROR_ILL);
  });

  it("the guest's cpu picks the logical VCMDQ (Linux: cpu % count)", () => {
    const b = open();
    const v = b.vms[0]!;
    const domain = mapped(v);
    const hw = hardware(b);
    const before = [hw.vintfs[1]!.lvcmdqs[0]!.consumed, hw.vintfs[1]!.lvcmdqs[1]!.consumed];
    unwrap(v.drivers[0]!.flush(domain, IOVA, 0x1000));
    expect(hw.vintfs[1]!.lvcmdqs[0]!.consumed - before[0]!).toBeGreaterThan(0);
    expect(hw.vintfs[1]!.lvcmdqs[1]!.consumed).toBe(before[1]);
  });
});

describe("migration", () => {
  it("restores the emulated registers and re-creates the HW queues with their CONS/PROD, so VCMDQ invalidation works on the destination", () => {
    const b = open();
    const v = b.vms[0]!;
    const domain = mapped(v);
    expect(v.devices[0]!.device.read(IOVA, 4).ok).toBe(true);
    const consBefore = Number(v.vm.mmioRead(BASE + lvcmdqPage0(0, 0) + VcmdqPage0Reg.CONS_INDX, 4));
    const blob = v.iommus[0]!.save!();
    v.iommus[0]!.destroy();
    expect(v.iommufd.list(IommufdObjectType.HW_QUEUE)).toHaveLength(0);
    const fresh = unwrap(b.plugin.createDevice({ vm: v.vm, iommufd: v.iommufd, unit: b.units[0]!, ioasId: v.ioasId, parentHwptId: v.parentHwptId, anchorDevId: v.devices[0]!.devId, mode: "nested" }));
    unwrap(fresh.assignDevice(v.devices[0]!.device, v.devices[0]!.devId, 0x10));
    unwrap(fresh.restore!(blob));
    v.iommus[0] = fresh;
    expect(v.iommufd.list(IommufdObjectType.HW_QUEUE)).toHaveLength(2);
    expect(Number(v.vm.mmioRead(BASE + lvcmdqPage0(0, 0) + VcmdqPage0Reg.CONS_INDX, 4))).toBe(consBefore);
    const exits = v.vm.interventions;
    unwrap(v.drivers[0]!.unmap(domain, IOVA, 0x1000));
    expect(v.vm.interventions).toBe(exits);
    expect(v.devices[0]!.device.read(IOVA, 4).ok).toBe(false);
  });

  it("refuses a corrupted blob with EINVAL", () => {
    const v = open().vms[0]!;
    const blob = v.iommus[0]!.save!();
    blob[blob.length - 2] ^= 0x5a;
    expect(v.iommus[0]!.restore!(blob)).toMatchObject({ ok: false, error: { errno: "EINVAL" } });
  });
});

describe("without a vIOMMU", () => {
  it("a shadowing VMM publishes no CMDQV and the guest keeps to the SMMU's queue", () => {
    const v = open({ mode: "shadow" }).vms[0]!;
    expect(device(v).cmdqv).toBeUndefined();
    expect(device(v).acpiTables().map((t) => t.signature)).toEqual(["IORT"]);
    const domain = mapped(v);
    expect(v.devices[0]!.device.read(IOVA, 4).ok).toBe(true);
    unwrap(v.drivers[0]!.unmap(domain, IOVA, 0x1000));
    expect(v.devices[0]!.device.read(IOVA, 4).ok).toBe(false);
  });
});
