import { describe, expect, it } from "vitest";
import {
  GuestPageAllocator,
  GuestTableStore,
  HwptAllocFlag,
  IoasMapFlag,
  IommufdContext,
  newWalkResult,
  NO_PASID,
  PageTableBuilder,
  Perm,
  Platform,
  unwrap,
  type DmaDevice,
} from "@viommu/core";
import { FlPteFormat } from "../../src/format/fl-pte.js";
import { decodeFaultRecord } from "../../src/format/fault-record.js";
import { FaultStage } from "../../src/format/host-fault-report.js";
import {
  decodeHwInfoVtd,
  encodeVtdS1,
  encodeVtdS1Invalidate,
  encodeVtdS1InvalidateAll,
  IOMMU_HW_INFO_TYPE_INTEL_VTD,
  IOMMU_HWPT_DATA_VTD_S1,
  IOMMU_HWPT_INVALIDATE_DATA_VTD_S1,
  U64_ALL_ONES,
  VTD_S1_INVALIDATE_BYTES,
  VtdS1Flag,
} from "../../src/format/uapi.js";
import { vtdTableGeometry } from "../../src/format/table-geometry.js";
import { HOST_CAP, HOST_ECAP, hostRegister } from "../../src/hw/host-capabilities.js";
import { HOST_FAULT_QUEUE_DEPTH } from "../../src/hw/host-fault-log.js";
import type { VtdUnit } from "../../src/hw/vtd-unit.js";
import { vtdPlugin } from "../../src/plugin.js";

const GIB = 2 ** 30;

/** A host with one VT-d unit, a VM of 1 GiB, a bound device and the VM's nesting parent; plus a guest first-level table builder. */
function host(pasidBits = 0) {
  const platform = new Platform({ plugins: [vtdPlugin] });
  const unit = unwrap(platform.createUnit("vtd")) as VtdUnit;
  const vm = platform.createVm({ memoryBytes: GIB });
  const ctx = new IommufdContext(vm.id);
  const device = platform.createDevice(unit, 0x100, "nvme", pasidBits);
  const devId = unwrap(ctx.bindDevice(device));
  const ioas = unwrap(ctx.ioasAlloc());
  unwrap(ctx.ioasMap({ ioasId: ioas, flags: IoasMapFlag.FIXED_IOVA | IoasMapFlag.READABLE | IoasMapFlag.WRITEABLE, memory: vm.memory, gpa: 0, length: GIB, iova: 0 }));
  const parent = unwrap(ctx.hwptAlloc({ flags: HwptAllocFlag.NEST_PARENT, devId, ptId: ioas }));
  const pages = new GuestPageAllocator(vm.memory, GIB - 32 * 2 ** 20, GIB);
  const s1 = (): PageTableBuilder => PageTableBuilder.create(new FlPteFormat({ haw: 48, fl1gp: true }), vtdTableGeometry(4, 47), new GuestTableStore(vm.memory, pages))!;
  const nested = (root: number, addrWidth = 48, flags = 0, allocFlags = 0): number =>
    unwrap(ctx.hwptAlloc({ flags: allocFlags, devId, ptId: parent, data: { type: IOMMU_HWPT_DATA_VTD_S1, bytes: encodeVtdS1({ flags, pgtblAddr: root, addrWidth }) } }));
  return { platform, unit, vm, ctx, device, devId, ioas, parent, s1, nested };
}

function read(device: DmaDevice, iova: number): number | string {
  const r = device.translate(iova, false);
  return r.ok ? r.output : `fault ${r.fault} stage ${r.stage}`;
}

describe("VT-d physical unit: hw_info and domain allocation", () => {
  it("reports IOMMU_HW_INFO_TYPE_INTEL_VTD with iommu_hw_info_vtd {flags, cap_reg, ecap_reg}", () => {
    const h = host(20);
    const info = unwrap(h.ctx.getHwInfo({ flags: 0, devId: h.devId, dataLen: 64 }));
    expect(info.outDataType).toBe(IOMMU_HW_INFO_TYPE_INTEL_VTD);
    expect(info.dataLen).toBe(24);
    expect(decodeHwInfoVtd(info.data)).toEqual({ flags: 0, capReg: hostRegister(HOST_CAP), ecapReg: hostRegister(HOST_ECAP) });
    expect(info.maxPasidLog2).toBe(20);
    expect(h.ctx.getHwInfo({ flags: 1, devId: h.devId, dataLen: 24, inDataType: 2 })).toMatchObject({ ok: false, error: { errno: "EOPNOTSUPP" } });
  });

  it("allocates dirty-tracking paging domains (second-level A/D: ECAP.SLADS); test/hw/dirty-tracking.test.ts has the rest", () => {
    const h = host();
    expect(h.ctx.hwptAlloc({ flags: HwptAllocFlag.DIRTY_TRACKING, devId: h.devId, ptId: h.ioas }).ok).toBe(true);
  });

  it("applies intel_iommu_domain_alloc_nested's errno rules: data type EOPNOTSUPP, non-parent EINVAL, wrong size EINVAL", () => {
    const h = host();
    const s1 = encodeVtdS1({ flags: 0, pgtblAddr: 0x1000, addrWidth: 48 });
    expect(h.ctx.hwptAlloc({ flags: 0, devId: h.devId, ptId: h.parent, data: { type: 2, bytes: s1 } })).toMatchObject({ ok: false, error: { errno: "EOPNOTSUPP" } });
    const plain = unwrap(h.ctx.hwptAlloc({ flags: 0, devId: h.devId, ptId: h.ioas }));
    expect(h.ctx.hwptAlloc({ flags: 0, devId: h.devId, ptId: plain, data: { type: IOMMU_HWPT_DATA_VTD_S1, bytes: s1 } })).toMatchObject({ ok: false, error: { errno: "EINVAL" } });
    for (const len of [23, 25]) {
      const bytes = new Uint8Array(len);
      bytes.set(s1.subarray(0, Math.min(24, len)));
      expect(h.ctx.hwptAlloc({ flags: 0, devId: h.devId, ptId: h.parent, data: { type: IOMMU_HWPT_DATA_VTD_S1, bytes } })).toMatchObject({ ok: false, error: { errno: "EINVAL" } });
    }
    expect(h.ctx.hwptAlloc({ flags: 0, devId: h.devId, ptId: h.parent, data: { type: IOMMU_HWPT_DATA_VTD_S1, bytes: s1 } }).ok).toBe(true);
  });

  it("checks the stage-1 configuration at attach, as intel_pasid_setup_nested does: widths other than 48/57 are EINVAL", () => {
    const h = host();
    const root = h.s1().root;
    expect(h.ctx.attach(h.devId, h.nested(root, 39))).toMatchObject({ ok: false, error: { errno: "EINVAL" } });
    expect(h.ctx.attach(h.devId, h.nested(root, 57)).ok).toBe(true);
    expect(h.ctx.attach(h.devId, h.nested(root, 48, VtdS1Flag.SRE | VtdS1Flag.EAFE | VtdS1Flag.WPE)).ok).toBe(true);
  });
});

describe("VT-d physical unit: nested translation", () => {
  it("translates the guest's first-level table over the shared second-level parent, to the host page backing the GPA", () => {
    const h = host();
    const t = h.s1();
    unwrap(t.map(0x40_0000, 0x200_0000, 0x2000, Perm.ReadWrite | Perm.User));
    unwrap(h.ctx.attach(h.devId, h.nested(t.root)));
    h.vm.memory.write32(0x200_1000, 0x1234);
    const r = h.device.read(0x40_1000, 4);
    expect(r.ok).toBe(true);
    expect(r.ok && r.hpas[0]).toBe(h.vm.memory.backingOf(0x200_1000));
    expect(h.platform.host.memory.violations).toEqual([]);
  });

  it("faults a user (no-PASID) request to a leaf without U/S (0x81) and a write to a read-only leaf (0x85), as stage-1 faults for the VMM", () => {
    const h = host();
    const t = h.s1();
    unwrap(t.map(0x1000, 0x10_0000, 0x1000, Perm.Read));
    unwrap(t.map(0x2000, 0x10_1000, 0x1000, Perm.Read | Perm.User));
    unwrap(h.ctx.attach(h.devId, h.nested(t.root)));
    expect(h.device.read(0x1000, 4).ok).toBe(false);
    expect(h.device.write(0x2000, Uint8Array.of(1)).ok).toBe(false);
    const batch = h.unit.readFaultReports(h.vm.id, 16);
    expect(batch.reports.map((r) => [r.stage, decodeFaultRecord(r.record).FR, decodeFaultRecord(r.record).SID])).toEqual([
      [FaultStage.STAGE1, 0x81, 0x100],
      [FaultStage.STAGE1, 0x85, 0x100],
    ]);
  });

  it("reports a first-level table the stage 2 does not map as a nested read fault at stage 2 (75h SFL.6 for the top-level table FSPTPTR names, 76h SFL.7 below), and a blocked device as PASID entry not present", () => {
    const h = host();
    unwrap(h.ctx.attach(h.devId, h.nested(0x7000_0000)));
    h.device.read(0x1000, 4);
    // A lower table outside the VM's memory (1 GiB), so outside the parent: the top-level entry points at it.
    const t = h.s1();
    unwrap(t.map(0x1000, 0x10_0000, 0x1000, Perm.ReadWrite | Perm.User));
    h.vm.memory.write64(t.root, BigInt(0x7000_0000 | 0x7));
    unwrap(h.ctx.attach(h.devId, h.nested(t.root)));
    h.device.read(0x1000, 4);
    unwrap(h.ctx.detach(h.devId));
    h.device.read(0x1000, 4);
    const reports = h.unit.readFaultReports(h.vm.id, 16).reports;
    expect(reports.map((r) => [r.stage, decodeFaultRecord(r.record).FR])).toEqual([
      [FaultStage.STAGE2, 0x75],
      [FaultStage.STAGE2, 0x76],
      [FaultStage.BLOCKED, 0x59],
    ]);
  });

  it("caches translations until the nested domain's invalidation, which IOMMU_HWPT_INVALIDATE with a VTD_S1 entry delivers", () => {
    const h = host();
    const t = h.s1();
    unwrap(t.map(0x5000, 0x30_0000, 0x1000, Perm.ReadWrite | Perm.User));
    const hwpt = h.nested(t.root);
    unwrap(h.ctx.attach(h.devId, hwpt));
    const first = read(h.device, 0x5000);
    t.unmap(0x5000, 0x1000);
    unwrap(t.map(0x5000, 0x40_0000, 0x1000, Perm.ReadWrite | Perm.User));
    expect(read(h.device, 0x5000)).toBe(first);
    const range = encodeVtdS1Invalidate({ addr: 0x5000n, npages: 1n });
    expect(h.ctx.hwptInvalidate({ hwptId: hwpt, dataType: IOMMU_HWPT_INVALIDATE_DATA_VTD_S1, entryLen: 24, entryNum: 1, entries: range })).toEqual({ handled: 1, result: { ok: true, value: undefined } });
    expect(read(h.device, 0x5000)).toBe(h.vm.memory.backingOf(0x40_0000));
    t.unmap(0x5000, 0x1000);
    expect(read(h.device, 0x5000)).toBe(h.vm.memory.backingOf(0x40_0000));
    unwrap(h.ctx.hwptInvalidate({ hwptId: hwpt, dataType: IOMMU_HWPT_INVALIDATE_DATA_VTD_S1, entryLen: 24, entryNum: 1, entries: encodeVtdS1InvalidateAll() }).result);
    expect(typeof read(h.device, 0x5000)).toBe("string");
  });

  it("tags the IOTLB by domain id: two nested domains over one parent keep their own translation of one IOVA", () => {
    const h = host();
    const other = h.platform.createDevice(h.unit, 0x200, "second");
    const otherId = unwrap(h.ctx.bindDevice(other));
    const [a, b] = [h.s1(), h.s1()];
    unwrap(a.map(0x9000, 0x50_0000, 0x1000, Perm.ReadWrite | Perm.User));
    unwrap(b.map(0x9000, 0x60_0000, 0x1000, Perm.ReadWrite | Perm.User));
    unwrap(h.ctx.attach(h.devId, h.nested(a.root)));
    const hb = unwrap(h.ctx.hwptAlloc({ flags: 0, devId: otherId, ptId: h.parent, data: { type: IOMMU_HWPT_DATA_VTD_S1, bytes: encodeVtdS1({ flags: 0, pgtblAddr: b.root, addrWidth: 48 }) } }));
    unwrap(h.ctx.attach(otherId, hb));
    for (let i = 0; i < 2; i++) {
      expect(read(h.device, 0x9000)).toBe(h.vm.memory.backingOf(0x50_0000));
      expect(read(other, 0x9000)).toBe(h.vm.memory.backingOf(0x60_0000));
    }
    expect(h.unit.iotlb.hits).toBeGreaterThanOrEqual(2);
  });

  it("drops cached nested translations when the stage-2 parent unmaps", () => {
    const h = host();
    const t = h.s1();
    unwrap(t.map(0x5000, 0x30_0000, 0x1000, Perm.ReadWrite | Perm.User));
    unwrap(h.ctx.attach(h.devId, h.nested(t.root)));
    expect(typeof read(h.device, 0x5000)).toBe("number");
    unwrap(h.ctx.ioasUnmap({ ioasId: h.ioas, iova: 0, length: GIB }));
    expect(typeof read(h.device, 0x5000)).toBe("string");
  });

  it("keeps at most a bounded queue of fault reports per VM and counts what it dropped", () => {
    const h = host();
    for (let i = 0; i < HOST_FAULT_QUEUE_DEPTH + 44; i++) h.device.read(0x1000 * i, 4);
    const batch = h.unit.readFaultReports(h.vm.id, 1000);
    expect(batch.reports.length).toBe(HOST_FAULT_QUEUE_DEPTH);
    expect(batch.lost).toBe(44);
    expect(h.unit.readFaultReports(h.vm.id, 1000)).toEqual({ reports: [], lost: 0 });
  });
});

describe("VT-d nested domain: IOMMU_HWPT_INVALIDATE_DATA_VTD_S1 (intel_nested_cache_invalidate_user)", () => {
  const setup = () => {
    const h = host();
    const hwpt = h.nested(h.s1().root);
    const inv = (entries: Uint8Array[], entryLen = VTD_S1_INVALIDATE_BYTES, dataType = IOMMU_HWPT_INVALIDATE_DATA_VTD_S1) => {
      const bytes = new Uint8Array(entries.length * entryLen);
      entries.forEach((e, i) => bytes.set(e.subarray(0, entryLen), i * entryLen));
      return h.ctx.hwptInvalidate({ hwptId: hwpt, dataType, entryLen, entryNum: entries.length, entries: bytes });
    };
    return inv;
  };
  const good = encodeVtdS1Invalidate({ addr: 0x1000n, npages: 2n });

  it("answers a wrong data type with EINVAL before any entry (0 handled), and 0 entries of the right type with success", () => {
    const inv = setup();
    expect(inv([good], VTD_S1_INVALIDATE_BYTES, 1)).toMatchObject({ handled: 0, result: { ok: false, error: { errno: "EINVAL" } } });
    expect(inv([])).toMatchObject({ handled: 0, result: { ok: true } });
  });

  it("copies entries with the per-entry helper: an entry length other than 24 is EINVAL", () => {
    const inv = setup();
    expect(inv([good], 16)).toMatchObject({ handled: 0, result: { ok: false, error: { errno: "EINVAL" } } });
    const long = new Uint8Array(32);
    long.set(good);
    expect(inv([long], 32)).toMatchObject({ handled: 0, result: { ok: false, error: { errno: "EINVAL" } } });
  });

  it("stops at the first bad entry and reports how many were handled: unknown flags and reserved are EOPNOTSUPP, bad addresses EINVAL", () => {
    const inv = setup();
    expect(inv([good, encodeVtdS1Invalidate({ addr: 0n, npages: 1n, flags: 2 })])).toMatchObject({ handled: 1, result: { ok: false, error: { errno: "EOPNOTSUPP" } } });
    expect(inv([good, good, encodeVtdS1Invalidate({ addr: 0n, npages: 1n, reserved: 1 })])).toMatchObject({ handled: 2, result: { ok: false, error: { errno: "EOPNOTSUPP" } } });
    expect(inv([encodeVtdS1Invalidate({ addr: 0x800n, npages: 1n })])).toMatchObject({ handled: 0, result: { ok: false, error: { errno: "EINVAL" } } });
    expect(inv([good, encodeVtdS1Invalidate({ addr: 0x1000n, npages: U64_ALL_ONES })])).toMatchObject({ handled: 1, result: { ok: false, error: { errno: "EINVAL" } } });
    expect(inv([good, encodeVtdS1Invalidate({ addr: 0n, npages: U64_ALL_ONES, flags: 1 }), good])).toMatchObject({ handled: 3, result: { ok: true } });
  });
});

describe("VT-d physical unit: requests with PASID", () => {
  it("translates a request with PASID as a user request (PMR = 0): the first-level leaf needs U/S (0x81 without it), not SRE", () => {
    const h = host(8);
    const t = h.s1();
    unwrap(t.map(0x1000, 0x10_0000, 0x1000, Perm.ReadWrite | Perm.User));
    unwrap(t.map(0x2000, 0x10_1000, 0x1000, Perm.ReadWrite));
    // A HWPT attached at a PASID is allocated with IOMMU_HWPT_ALLOC_PASID (iommufd refuses it otherwise).
    unwrap(h.ctx.attach(h.devId, h.nested(t.root, 48, 0, HwptAllocFlag.PASID), 3));
    const out = newWalkResult();
    h.unit.translate({ requesterId: 0x100, pasid: 3, iova: 0x1000, access: Perm.Read }, out);
    expect(out.ok).toBe(true);
    expect(h.device.read(0x1000, 4, 3).ok).toBe(true);
    expect(h.device.read(0x2000, 4, 3).ok).toBe(false);
    expect(decodeFaultRecord(h.unit.readFaultReports(h.vm.id, 4).reports[0]!.record)).toMatchObject({ FR: 0x81, PP: 1, PV: 3 });
    h.unit.translate({ requesterId: 0x100, pasid: NO_PASID, iova: 0x1000, access: Perm.Read }, out);
    expect(out.ok).toBe(false);
  });
});
