/**
 * I/O page faults through iommufd (Documentation/userspace-api/iommufd.rst "IOMMUFD_OBJ_FAULT", iommufd/eventq.c
 * iommufd_fault_iopf_handler / iommufd_fault_fops_read / _write / iommufd_auto_response_faults): a PRI-capable
 * device's fault in a domain whose HWPT has a fault object is a page request the VMM reads as
 * struct iommu_hwpt_pgfault records and answers with struct iommu_hwpt_page_response; the device retries on
 * SUCCESS, gives up on INVALID, and a detach answers what is outstanding INVALID.
 */
import { describe, expect, it } from "vitest";
import {
  HwptAllocFlag,
  IoasMapFlag,
  IommufdContext,
  PageResponseCode,
  PgfaultFlag,
  PgfaultPerm,
  errnoOf,
  Platform,
  unwrap,
} from "@viommu/core";
import { encodeMockS1, MOCK_HWPT_DATA_TYPE } from "../src/format/uapi.js";
import { mockPlugin } from "../src/plugin.js";

const RW = IoasMapFlag.READABLE | IoasMapFlag.WRITEABLE;
const PAGE = 0x1000;

function setup(pri = true) {
  const platform = new Platform({ plugins: [mockPlugin] });
  const unit = unwrap(platform.createUnit(mockPlugin.id));
  const vm = platform.createVm({ memoryBytes: 2 ** 26, backingPageShift: 12 });
  const ctx = new IommufdContext(vm.id);
  const device = platform.createDevice(unit, 0x100, "nic", 0, pri);
  const dev = unwrap(ctx.bindDevice(device));
  const ioas = unwrap(ctx.ioasAlloc());
  const fault = unwrap(ctx.faultQueueAlloc(0));
  const faults: string[] = [];
  platform.host.events.on("fault", (f) => faults.push(f.reason));
  return { platform, vm, ctx, device, dev, ioas, fault, faults };
}

/** struct iommu_hwpt_pgfault, field by field (include/uapi/linux/iommufd.h). */
function pgfault(bytes: Uint8Array, at = 0) {
  const v = new DataView(bytes.buffer, bytes.byteOffset + at, 40);
  return {
    flags: v.getUint32(0, true),
    devId: v.getUint32(4, true),
    pasid: v.getUint32(8, true),
    grpid: v.getUint32(12, true),
    perm: v.getUint32(16, true),
    addr: Number(v.getBigUint64(24, true)),
    length: v.getUint32(32, true),
    cookie: v.getUint32(36, true),
  };
}

/** struct iommu_hwpt_page_response: cookie, code. */
function response(cookie: number, code: number): Uint8Array {
  const out = new Uint8Array(8);
  const v = new DataView(out.buffer);
  v.setUint32(0, cookie, true);
  v.setUint32(4, code, true);
  return out;
}

describe("I/O page faults of a paging HWPT with a fault object", () => {
  it("a PRI device's fault is a page request; the VMM maps and answers SUCCESS; the retry completes", () => {
    const { vm, ctx, device, dev, ioas, fault, faults } = setup();
    const hwpt = unwrap(ctx.hwptAlloc({ flags: HwptAllocFlag.FAULT_ID_VALID, devId: dev, ptId: ioas, faultId: fault.id }));
    unwrap(ctx.attach(dev, hwpt));

    const iova = 0x40_0000 + 0x123;
    const first = device.write(iova, new Uint8Array([1, 2, 3, 4]));
    expect(first.ok).toBe(false);
    if (first.ok) return;
    expect(first.pageRequest).toBeGreaterThanOrEqual(0);
    expect(faults).toEqual([]); // not a final fault: nothing reported as one
    expect(device.pageRequestStatus(first.pageRequest!)).toBe("waiting");

    const bytes = unwrap(fault.file.read(40 * 4));
    expect(bytes.length).toBe(40);
    const record = pgfault(bytes);
    expect(record).toMatchObject({ flags: PgfaultFlag.LAST_PAGE, devId: dev, pasid: 0, grpid: first.pageRequest, perm: PgfaultPerm.WRITE, addr: 0x40_0000, length: PAGE });
    expect(unwrap(fault.file.read(40))).toHaveLength(0); // delivered once

    unwrap(ctx.ioasMap({ ioasId: ioas, flags: RW | IoasMapFlag.FIXED_IOVA, memory: vm.memory, gpa: 0x20_0000, length: PAGE, iova: 0x40_0000 }));
    expect(unwrap(fault.file.write(response(record.cookie, PageResponseCode.SUCCESS)))).toBe(8);
    expect(device.pageRequestStatus(first.pageRequest!)).toBe("success");
    expect(device.write(iova, new Uint8Array([1, 2, 3, 4])).ok).toBe(true);
    expect([...vm.memory.readBytes(0x20_0123, 4)]).toEqual([1, 2, 3, 4]);
    // A cookie answered already is unknown now.
    expect(errnoOf(fault.file.write(response(record.cookie, PageResponseCode.SUCCESS)))).toBe("EINVAL");
  });

  it("INVALID is the device's final answer; a code other than SUCCESS or INVALID is EINVAL", () => {
    const { ctx, device, dev, ioas, fault } = setup();
    const hwpt = unwrap(ctx.hwptAlloc({ flags: HwptAllocFlag.FAULT_ID_VALID, devId: dev, ptId: ioas, faultId: fault.id }));
    unwrap(ctx.attach(dev, hwpt));
    const out = device.read(0x80_0000, 8);
    if (out.ok) throw new Error("read of an unmapped page succeeded");
    const record = pgfault(unwrap(fault.file.read(40)));
    expect(record.perm).toBe(PgfaultPerm.READ);
    expect(errnoOf(fault.file.write(response(record.cookie, 7)))).toBe("EINVAL");
    expect(device.pageRequestStatus(out.pageRequest!)).toBe("waiting");
    unwrap(fault.file.write(response(record.cookie, PageResponseCode.INVALID)));
    expect(device.pageRequestStatus(out.pageRequest!)).toBe("invalid");
  });

  it("detaching the device answers its outstanding groups INVALID, delivered or not", () => {
    const { ctx, device, dev, ioas, fault } = setup();
    const hwpt = unwrap(ctx.hwptAlloc({ flags: HwptAllocFlag.FAULT_ID_VALID, devId: dev, ptId: ioas, faultId: fault.id }));
    unwrap(ctx.attach(dev, hwpt));
    const a = device.read(0x80_0000, 8);
    unwrap(fault.file.read(40)); // a delivered, b pending
    const b = device.read(0x90_0000, 8);
    if (a.ok || b.ok) throw new Error("unmapped reads succeeded");
    expect(a.pageRequest).not.toBe(b.pageRequest);
    unwrap(ctx.detach(dev));
    expect(device.pageRequestStatus(a.pageRequest!)).toBe("invalid");
    expect(device.pageRequestStatus(b.pageRequest!)).toBe("invalid");
    expect(unwrap(fault.file.read(40))).toHaveLength(0);
  });

  it("a device without PRI, or a HWPT without a fault object, faults finally", () => {
    for (const [pri, withFault] of [[false, true], [true, false]] as const) {
      const { ctx, device, dev, ioas, fault, faults } = setup(pri);
      const hwpt = unwrap(ctx.hwptAlloc(withFault ? { flags: HwptAllocFlag.FAULT_ID_VALID, devId: dev, ptId: ioas, faultId: fault.id } : { flags: 0, devId: dev, ptId: ioas }));
      unwrap(ctx.attach(dev, hwpt));
      const out = device.read(0x80_0000, 8);
      expect(out.ok).toBe(false);
      if (!out.ok) expect(out.pageRequest).toBeUndefined();
      expect(faults).toHaveLength(1);
      expect(unwrap(fault.file.read(40))).toHaveLength(0);
    }
  });
});

describe("I/O page faults of a nested HWPT", () => {
  it("a stage-1 hole is the guest's to page in; a stage-2 hole is final", () => {
    const { vm, ctx, device, dev, ioas, fault, faults } = setup();
    // Guest RAM 0..16 MiB is in the IOAS (stage 2); the first stage-1 root is inside it, the second outside.
    unwrap(ctx.ioasMap({ ioasId: ioas, flags: RW | IoasMapFlag.FIXED_IOVA, memory: vm.memory, gpa: 0, length: 2 ** 24, iova: 0 }));
    const parent = unwrap(ctx.hwptAlloc({ flags: HwptAllocFlag.NEST_PARENT, devId: dev, ptId: ioas }));
    const s1 = { type: MOCK_HWPT_DATA_TYPE, bytes: encodeMockS1({ s1Root: 0x10_0000, asid: 1, flags: 0 }) };
    const nested = unwrap(ctx.hwptAlloc({ flags: HwptAllocFlag.FAULT_ID_VALID, devId: dev, ptId: parent, data: s1, faultId: fault.id }));
    unwrap(ctx.attach(dev, nested));

    // An empty stage-1 table (zeroed guest RAM): the walk finds nothing at stage 1.
    const out = device.read(0x5000, 4);
    expect(out.ok).toBe(false);
    if (out.ok) return;
    expect(out.pageRequest).toBeGreaterThanOrEqual(0);
    expect(pgfault(unwrap(fault.file.read(40)))).toMatchObject({ devId: dev, addr: 0x5000, grpid: out.pageRequest });
    expect(faults).toEqual([]);

    // The stage-1 root outside stage 2: a stage-2 fault, final, and no page request.
    const far = unwrap(ctx.hwptAlloc({ flags: HwptAllocFlag.FAULT_ID_VALID, devId: dev, ptId: parent, data: { type: MOCK_HWPT_DATA_TYPE, bytes: encodeMockS1({ s1Root: 0x200_0000, asid: 2, flags: 0 }) }, faultId: fault.id }));
    unwrap(ctx.attach(dev, far));
    const final = device.read(0x5000, 4);
    expect(final.ok).toBe(false);
    if (!final.ok) {
      expect(final.pageRequest).toBeUndefined();
      expect(final.stage).toBe(2);
    }
    expect(faults).toHaveLength(1);
  });
});
