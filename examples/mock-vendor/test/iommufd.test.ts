import { describe, expect, it } from "vitest";
import {
  HwptAllocFlag,
  IOMMU_HW_INFO_FLAG_INPUT_TYPE,
  IoasMapFlag,
  IommufdContext,
  Platform,
  U64_MAX,
  errnoOf,
  unwrap,
  type Result,
} from "@viommu/core";
import {
  encodeMockInvalidate,
  encodeMockS1,
  MOCK_HW_INFO_BYTES,
  MOCK_HW_INFO_TYPE,
  MOCK_HW_QUEUE_TYPE,
  MOCK_HWPT_DATA_TYPE,
  MOCK_INVALIDATE_BYTES,
  MOCK_INVALIDATE_DATA_TYPE,
  MOCK_VEVENTQ_TYPE,
  MOCK_VIOMMU_TYPE,
  MockInvalidateFlag,
} from "../src/format/uapi.js";
import { mockPlugin } from "../src/plugin.js";

const RW = IoasMapFlag.READABLE | IoasMapFlag.WRITEABLE;

/** A host with two mock units, one VM, its iommufd, a bound device on each unit, guest RAM in an IOAS. */
function setup() {
  const platform = new Platform({ plugins: [mockPlugin] });
  const unit0 = unwrap(platform.createUnit(mockPlugin.id));
  const unit1 = unwrap(platform.createUnit(mockPlugin.id));
  const vm = platform.createVm({ memoryBytes: 2 ** 30, backingPageShift: 12 });
  const ctx = new IommufdContext(vm.id);
  const dev = unwrap(ctx.bindDevice(platform.createDevice(unit0, 0x100)));
  const otherDev = unwrap(ctx.bindDevice(platform.createDevice(unit1, 0x200)));
  const ioas = unwrap(ctx.ioasAlloc());
  unwrap(ctx.ioasMap({ ioasId: ioas, flags: RW | IoasMapFlag.FIXED_IOVA, memory: vm.memory, gpa: 0, length: 2 ** 24, iova: 0 }));
  const parent = unwrap(ctx.hwptAlloc({ flags: HwptAllocFlag.NEST_PARENT, devId: dev, ptId: ioas }));
  return { platform, vm, ctx, dev, otherDev, ioas, parent };
}

const s1 = (root = 0x10_0000, asid = 1) => ({ type: MOCK_HWPT_DATA_TYPE, bytes: encodeMockS1({ s1Root: root, asid, flags: 0 }) });
const errno = (r: Result<unknown>) => errnoOf(r) ?? "ok";

describe("IOMMU_IOAS_MAP / UNMAP (§2.9)", () => {
  it("rejects unknown flags, overflow, no permission, zero/misaligned length, unknown IOAS, overlaps", () => {
    const { ctx, vm, ioas } = setup();
    const base = { ioasId: ioas, memory: vm.memory, gpa: 0x40_0000, length: 0x1000 };
    expect(errno(ctx.ioasMap({ ...base, flags: RW | (1 << 7) }))).toBe("EOPNOTSUPP");
    expect(errno(ctx.ioasMap({ ...base, flags: RW, length: 2 ** 60 }))).toBe("EOVERFLOW");
    expect(errno(ctx.ioasMap({ ...base, flags: IoasMapFlag.FIXED_IOVA, iova: 0x100_0000 }))).toBe("EINVAL");
    expect(errno(ctx.ioasMap({ ...base, flags: RW, length: 0 }))).toBe("EINVAL");
    expect(errno(ctx.ioasMap({ ...base, flags: RW, length: 0x800 }))).toBe("EINVAL");
    expect(errno(ctx.ioasMap({ ...base, flags: RW, ioasId: 999 }))).toBe("ENOENT");
    expect(errno(ctx.ioasMap({ ...base, flags: RW | IoasMapFlag.FIXED_IOVA, iova: 0x10_0000 }))).toBe("EEXIST");
  });

  it("allocates an IOVA when not fixed, and unmaps whole areas only", () => {
    const { ctx, vm, ioas } = setup();
    const at = unwrap(ctx.ioasMap({ ioasId: ioas, flags: RW, memory: vm.memory, gpa: 0x80_0000, length: 0x2000 }));
    expect(at).toBeGreaterThanOrEqual(2 ** 24);
    expect(errno(ctx.ioasUnmap({ ioasId: ioas, iova: at, length: 0x1000 }))).toBe("ENOENT");
    expect(errno(ctx.ioasUnmap({ ioasId: ioas, iova: at + 0x10_0000, length: 0x1000 }))).toBe("ENOENT");
    expect(ctx.ioasUnmap({ ioasId: ioas, iova: at, length: 0x10_0000 })).toMatchObject({ ok: true, value: 0x2000 });
    expect(errno(ctx.ioasUnmap({ ioasId: ioas, iova: 2n ** 60n, length: 2n ** 60n }))).toBe("EOVERFLOW");
  });

  it("iova 0 with length U64_MAX unmaps everything", () => {
    const { ctx, ioas, vm } = setup();
    ctx.ioasMap({ ioasId: ioas, flags: RW, memory: vm.memory, gpa: 0x80_0000, length: 0x1000 });
    expect(ctx.ioasUnmap({ ioasId: ioas, iova: 0, length: U64_MAX })).toMatchObject({ ok: true, value: 2 ** 24 + 0x1000 });
  });
});

describe("IOMMU_HWPT_ALLOC (§2.6, quirks 1, 16)", () => {
  it("checks data, device, pt_id (EINVAL, not ENOENT) and flags in the kernel's order", () => {
    const { ctx, dev, ioas, parent } = setup();
    expect(errno(ctx.hwptAlloc({ flags: 0, devId: dev, ptId: ioas, data: { type: 0, bytes: new Uint8Array(4) } }))).toBe("EINVAL");
    expect(errno(ctx.hwptAlloc({ flags: 0, devId: dev, ptId: ioas, data: { type: MOCK_HWPT_DATA_TYPE, bytes: new Uint8Array(0) } }))).toBe("EINVAL");
    expect(errno(ctx.hwptAlloc({ flags: 0, devId: 999, ptId: ioas }))).toBe("ENOENT");
    expect(errno(ctx.hwptAlloc({ flags: 0, devId: dev, ptId: 999 }))).toBe("EINVAL");
    expect(errno(ctx.hwptAlloc({ flags: HwptAllocFlag.DIRTY_TRACKING, devId: dev, ptId: ioas }))).toBe("ok");
    expect(errno(ctx.hwptAlloc({ flags: HwptAllocFlag.NEST_PARENT | HwptAllocFlag.FAULT_ID_VALID, devId: dev, ptId: ioas }))).toBe("EOPNOTSUPP");
    expect(errno(ctx.hwptAlloc({ flags: 1 << 9, devId: dev, ptId: ioas }))).toBe("EOPNOTSUPP");
    expect(errno(ctx.hwptAlloc({ flags: 0, devId: dev, ptId: ioas, data: s1() }))).toBe("EOPNOTSUPP");
    // Nested on a paging parent (the legacy path).
    expect(errno(ctx.hwptAlloc({ flags: 0, devId: dev, ptId: parent, data: s1() }))).toBe("ok");
    const plain = unwrap(ctx.hwptAlloc({ flags: 0, devId: dev, ptId: ioas }));
    expect(errno(ctx.hwptAlloc({ flags: 0, devId: dev, ptId: plain, data: s1() }))).toBe("EINVAL");
    expect(errno(ctx.hwptAlloc({ flags: HwptAllocFlag.NEST_PARENT, devId: dev, ptId: parent, data: s1() }))).toBe("EOPNOTSUPP");
    expect(errno(ctx.hwptAlloc({ flags: 0, devId: dev, ptId: parent }))).toBe("EOPNOTSUPP");
  });

  it("validates driver data with the copy helper: short, long and unknown data types", () => {
    const { ctx, dev, parent } = setup();
    expect(errno(ctx.hwptAlloc({ flags: 0, devId: dev, ptId: parent, data: { type: MOCK_HWPT_DATA_TYPE, bytes: new Uint8Array(8) } }))).toBe("EINVAL");
    expect(errno(ctx.hwptAlloc({ flags: 0, devId: dev, ptId: parent, data: { type: MOCK_HWPT_DATA_TYPE, bytes: new Uint8Array(17) } }))).toBe("EINVAL");
    expect(errno(ctx.hwptAlloc({ flags: 0, devId: dev, ptId: parent, data: { type: 0xbad, bytes: new Uint8Array(16) } }))).toBe("EOPNOTSUPP");
  });

  it("looks up fault_id only after building the domain, and leaks no id when it is bad", () => {
    const { ctx, dev, ioas } = setup();
    const before = ctx.list().length;
    expect(errno(ctx.hwptAlloc({ flags: HwptAllocFlag.FAULT_ID_VALID, devId: dev, ptId: ioas, faultId: 999 }))).toBe("ENOENT");
    expect(ctx.list().length).toBe(before);
    const fault = unwrap(ctx.faultQueueAlloc(0));
    const hwpt = unwrap(ctx.hwptAlloc({ flags: HwptAllocFlag.FAULT_ID_VALID, devId: dev, ptId: ioas, faultId: fault.id }));
    expect(hwpt).toBe(before + 2);
    expect(errno(ctx.destroy(fault.id))).toBe("EBUSY");
    expect(errno(ctx.faultQueueAlloc(1))).toBe("EOPNOTSUPP");
  });
});

describe("IOMMU_VIOMMU_ALLOC (§2.2, quirks 2, 3, 4)", () => {
  it("refuses DEFAULT type and flags, unknown devices, unsupported types, non-parents", () => {
    const { ctx, dev, ioas, parent } = setup();
    expect(errno(ctx.viommuAlloc({ flags: 0, type: 0, devId: dev, hwptId: parent }))).toBe("EOPNOTSUPP");
    expect(errno(ctx.viommuAlloc({ flags: 1, type: MOCK_VIOMMU_TYPE, devId: dev, hwptId: parent }))).toBe("EOPNOTSUPP");
    expect(errno(ctx.viommuAlloc({ flags: 0, type: MOCK_VIOMMU_TYPE, devId: 999, hwptId: parent }))).toBe("ENOENT");
    expect(errno(ctx.viommuAlloc({ flags: 0, type: 0x1234, devId: dev, hwptId: parent }))).toBe("EOPNOTSUPP");
    expect(errno(ctx.viommuAlloc({ flags: 0, type: MOCK_VIOMMU_TYPE, devId: dev, hwptId: ioas }))).toBe("ENOENT");
    const plain = unwrap(ctx.hwptAlloc({ flags: 0, devId: dev, ptId: ioas }));
    expect(errno(ctx.viommuAlloc({ flags: 0, type: MOCK_VIOMMU_TYPE, devId: dev, hwptId: plain }))).toBe("EINVAL");
    const v = unwrap(ctx.viommuAlloc({ flags: 0, type: MOCK_VIOMMU_TYPE, devId: dev, hwptId: parent }));
    expect(errno(ctx.destroy(parent))).toBe("EBUSY");
    expect(errno(ctx.destroy(v))).toBe("ok");
    expect(errno(ctx.destroy(parent))).toBe("ok");
  });

  it("lets several vIOMMUs share one nesting parent, on one unit or across units", () => {
    const { ctx, dev, otherDev, parent } = setup();
    const a = unwrap(ctx.viommuAlloc({ flags: 0, type: MOCK_VIOMMU_TYPE, devId: dev, hwptId: parent }));
    const b = unwrap(ctx.viommuAlloc({ flags: 0, type: MOCK_VIOMMU_TYPE, devId: dev, hwptId: parent }));
    const c = unwrap(ctx.viommuAlloc({ flags: 0, type: MOCK_VIOMMU_TYPE, devId: otherDev, hwptId: parent }));
    expect(new Set([a, b, c]).size).toBe(3);
    expect(errno(ctx.destroy(parent))).toBe("EBUSY");
  });
});

describe("IOMMU_VDEVICE_ALLOC (§2.3, quirks 7, 19, 20)", () => {
  it("enforces one vDEVICE per device, one device per virt_id, and the same physical IOMMU", () => {
    const { ctx, platform, dev, otherDev, parent } = setup();
    const v = unwrap(ctx.viommuAlloc({ flags: 0, type: MOCK_VIOMMU_TYPE, devId: dev, hwptId: parent }));
    expect(errno(ctx.vdeviceAlloc({ viommuId: 999, devId: dev, virtId: 1 }))).toBe("ENOENT");
    expect(errno(ctx.vdeviceAlloc({ viommuId: v, devId: 999, virtId: 1 }))).toBe("ENOENT");
    expect(errno(ctx.vdeviceAlloc({ viommuId: v, devId: otherDev, virtId: 1 }))).toBe("EINVAL");
    const vd = unwrap(ctx.vdeviceAlloc({ viommuId: v, devId: dev, virtId: 0x10 }));
    expect(errno(ctx.vdeviceAlloc({ viommuId: v, devId: dev, virtId: 0x11 }))).toBe("EEXIST");
    const dev2 = unwrap(ctx.bindDevice(platform.createDevice(platform.host.units[0]!, 0x101)));
    expect(errno(ctx.vdeviceAlloc({ viommuId: v, devId: dev2, virtId: 0x10 }))).toBe("EEXIST");
    expect(errno(ctx.vdeviceAlloc({ viommuId: v, devId: dev2, virtId: 0x1_0000 }))).toBe("EINVAL");
    expect(errno(ctx.destroy(v))).toBe("EBUSY");
    // Unbinding the device tombstones its vDEVICE: the id answers ENOENT but is not reused.
    unwrap(ctx.unbindDevice(dev));
    expect(errno(ctx.destroy(vd))).toBe("ENOENT");
    const next = unwrap(ctx.vdeviceAlloc({ viommuId: v, devId: dev2, virtId: 0x10 }));
    expect(next).not.toBe(vd);
    expect(errno(ctx.destroy(next))).toBe("ok");
    expect(errno(ctx.destroy(v))).toBe("ok");
  });

  it("makes nested attach on a vIOMMU require the device's vDEVICE", () => {
    const { ctx, dev, parent } = setup();
    const v = unwrap(ctx.viommuAlloc({ flags: 0, type: MOCK_VIOMMU_TYPE, devId: dev, hwptId: parent }));
    const nested = unwrap(ctx.hwptAlloc({ flags: 0, devId: dev, ptId: v, data: s1() }));
    expect(errno(ctx.attach(dev, nested))).toBe("ENOENT");
    unwrap(ctx.vdeviceAlloc({ viommuId: v, devId: dev, virtId: 0x10 }));
    expect(errno(ctx.attach(dev, nested))).toBe("ok");
    expect(errno(ctx.destroy(nested))).toBe("EBUSY");
    expect(errno(ctx.destroy(v))).toBe("EBUSY");
  });
});

describe("IOMMU_HW_QUEUE_ALLOC (§2.4, quirks 8, 15, 21)", () => {
  it("checks flags, length, overflow, mapping, contiguity; orders creation and destruction", () => {
    const { ctx, dev, parent, ioas, vm } = setup();
    const v = unwrap(ctx.viommuAlloc({ flags: 0, type: MOCK_VIOMMU_TYPE, devId: dev, hwptId: parent }));
    const q = (index: number, iova: number | bigint, length: number | bigint, flags = 0, type = MOCK_HW_QUEUE_TYPE) => ctx.hwQueueAlloc({ flags, viommuId: v, type, index, nestingParentIova: iova, length });
    expect(errno(q(0, 0x20_0000, 0x1000, 1))).toBe("EOPNOTSUPP");
    expect(errno(q(0, 0x20_0000, 0x1000, 0, 0))).toBe("EOPNOTSUPP");
    expect(errno(q(0, 0x20_0000, 0))).toBe("EINVAL");
    expect(errno(q(0, U64_MAX - 10n, 0x1000))).toBe("EOVERFLOW");
    expect(errno(ctx.hwQueueAlloc({ flags: 0, viommuId: 999, type: MOCK_HW_QUEUE_TYPE, index: 0, nestingParentIova: 0, length: 0x1000 }))).toBe("ENOENT");
    expect(errno(q(0, 0x20_0000, 0x1000, 0, 0x77))).toBe("EOPNOTSUPP");
    expect(errno(q(0, 2 ** 30, 0x1000))).toBe("ENOENT");
    // 4 KiB backing pages touched out of order are not contiguous on the host.
    vm.memory.write8(0x201_0000 + 0x1000, 1);
    vm.memory.write8(0x201_0000, 1);
    unwrap(ctx.ioasMap({ ioasId: ioas, flags: RW | IoasMapFlag.FIXED_IOVA, memory: vm.memory, gpa: 0x201_0000, length: 0x2000, iova: 0x100_0000 }));
    expect(errno(q(0, 0x100_0000, 0x2000))).toBe("EFAULT");
    vm.memory.backContiguous(0x40_0000 as never, 0x4000);
    expect(errno(q(1, 0x40_0000, 0x1000))).toBe("EIO");
    const q0 = unwrap(q(0, 0x40_0000, 0x1000));
    expect(errno(q(0, 0x40_0000, 0x1000))).toBe("EEXIST");
    expect(errno(q(2, 0x40_0000, 0x1000))).toBe("EINVAL");
    const q1 = unwrap(q(1, 0x40_2000, 0x1000));
    expect(errno(ctx.ioasUnmap({ ioasId: ioas, iova: 0, length: 2 ** 24 }))).toBe("EBUSY");
    expect(errno(ctx.destroy(q0))).toBe("EBUSY");
    expect(errno(ctx.destroy(ioas))).toBe("EBUSY");
    expect(errno(ctx.destroy(q1))).toBe("ok");
    expect(errno(ctx.destroy(q0))).toBe("ok");
  });
});

describe("IOMMU_VEVENTQ_ALLOC (§2.5, quirk 9)", () => {
  it("refuses flags, DEFAULT, zero or huge depth, duplicates; the file holds the queue", () => {
    const { ctx, dev, parent } = setup();
    const v = unwrap(ctx.viommuAlloc({ flags: 0, type: MOCK_VIOMMU_TYPE, devId: dev, hwptId: parent }));
    expect(errno(ctx.veventqAlloc({ flags: 1, viommuId: v, type: MOCK_VEVENTQ_TYPE, depth: 4 }))).toBe("EOPNOTSUPP");
    expect(errno(ctx.veventqAlloc({ flags: 0, viommuId: v, type: 0, depth: 4 }))).toBe("EOPNOTSUPP");
    expect(errno(ctx.veventqAlloc({ flags: 0, viommuId: v, type: MOCK_VEVENTQ_TYPE, depth: 0 }))).toBe("EINVAL");
    expect(errno(ctx.veventqAlloc({ flags: 0, viommuId: v, type: MOCK_VEVENTQ_TYPE, depth: 2 ** 30 }))).toBe("EINVAL");
    expect(errno(ctx.veventqAlloc({ flags: 0, viommuId: 999, type: MOCK_VEVENTQ_TYPE, depth: 4 }))).toBe("ENOENT");
    const q = unwrap(ctx.veventqAlloc({ flags: 0, viommuId: v, type: MOCK_VEVENTQ_TYPE, depth: 4 }));
    expect(errno(ctx.veventqAlloc({ flags: 0, viommuId: v, type: MOCK_VEVENTQ_TYPE, depth: 4 }))).toBe("EEXIST");
    expect(errno(ctx.destroy(q.id))).toBe("EBUSY");
    expect(errno(ctx.destroy(v))).toBe("EBUSY");
    q.file.close();
    expect(errno(ctx.destroy(q.id))).toBe("ok");
    expect(errno(ctx.destroy(v))).toBe("ok");
  });

  it("drops a report with EOPNOTSUPP when no queue of the type exists", () => {
    const { ctx, dev, parent } = setup();
    const v = unwrap(ctx.viommu(unwrap(ctx.viommuAlloc({ flags: 0, type: MOCK_VIOMMU_TYPE, devId: dev, hwptId: parent }))));
    expect(errno(v.reportEvent(MOCK_VEVENTQ_TYPE, new Uint8Array(16)))).toBe("EOPNOTSUPP");
    expect(v.droppedEvents).toBe(1);
  });
});

describe("IOMMU_HWPT_INVALIDATE (§2.7, §5, quirks 5, 18)", () => {
  function withNested() {
    const s = setup();
    const v = unwrap(s.ctx.viommuAlloc({ flags: 0, type: MOCK_VIOMMU_TYPE, devId: s.dev, hwptId: s.parent }));
    const nested = unwrap(s.ctx.hwptAlloc({ flags: 0, devId: s.dev, ptId: s.parent, data: s1(0x10_0000, 3) }));
    return { ...s, v, nested };
  }
  const entry = (flags: number, asid: number, addr: bigint, npages: bigint) => encodeMockInvalidate({ flags, asid, addr, npages });
  const join = (...e: Uint8Array[]) => {
    const out = new Uint8Array(e.reduce((n, x) => n + x.length, 0));
    let at = 0;
    for (const x of e) {
      out.set(x, at);
      at += x.length;
    }
    return out;
  };

  it("answers the generic checks before the driver, writing back 0", () => {
    const { ctx, ioas, parent, v } = withNested();
    const base = { dataType: MOCK_INVALIDATE_DATA_TYPE, entryLen: MOCK_INVALIDATE_BYTES, entryNum: 1, entries: entry(0, 1, 0n, 1n) };
    expect(ctx.hwptInvalidate({ ...base, hwptId: v, entries: undefined })).toMatchObject({ handled: 0, result: { ok: false, error: { errno: "EINVAL" } } });
    expect(ctx.hwptInvalidate({ ...base, hwptId: v, entryLen: 0 }).result).toMatchObject({ error: { errno: "EINVAL" } });
    expect(ctx.hwptInvalidate({ ...base, hwptId: 999 }).result).toMatchObject({ error: { errno: "ENOENT" } });
    expect(ctx.hwptInvalidate({ ...base, hwptId: parent }).result).toMatchObject({ error: { errno: "EINVAL" } });
    expect(ctx.hwptInvalidate({ ...base, hwptId: ioas }).result).toMatchObject({ error: { errno: "EINVAL" } });
    expect(ctx.hwptInvalidate({ ...base, hwptId: v, entryNum: 1 << 20 }).result).toMatchObject({ error: { errno: "EINVAL" } });
  });

  it("probes with zero entries: 0 for the right type, EINVAL for a wrong one", () => {
    const { ctx, v, nested } = withNested();
    expect(ctx.hwptInvalidate({ hwptId: v, dataType: MOCK_INVALIDATE_DATA_TYPE, entryLen: 0, entryNum: 0, entries: undefined })).toMatchObject({ handled: 0, result: { ok: true } });
    expect(ctx.hwptInvalidate({ hwptId: nested, dataType: MOCK_INVALIDATE_DATA_TYPE, entryLen: 0, entryNum: 0, entries: undefined }).result.ok).toBe(true);
    expect(ctx.hwptInvalidate({ hwptId: v, dataType: 0xdadbeef, entryLen: 0, entryNum: 0, entries: undefined }).result).toMatchObject({ error: { errno: "EINVAL" } });
  });

  it("reports how many entries were handled before the bad one, with the driver's errno", () => {
    const { ctx, v, nested } = withNested();
    const good = entry(0, 1, 0x1000n, 1n);
    const arr = (e: Uint8Array, n: number, len = MOCK_INVALIDATE_BYTES) => ({ dataType: MOCK_INVALIDATE_DATA_TYPE, entryLen: len, entryNum: n, entries: e });
    expect(ctx.hwptInvalidate({ hwptId: v, ...arr(join(good, good, entry(1 << 5, 1, 0n, 1n)), 3) })).toMatchObject({ handled: 2, result: { error: { errno: "EOPNOTSUPP" } } });
    expect(ctx.hwptInvalidate({ hwptId: v, ...arr(join(good, entry(0, 1, 0x1001n, 1n)), 2) })).toMatchObject({ handled: 1, result: { error: { errno: "EINVAL" } } });
    expect(ctx.hwptInvalidate({ hwptId: v, ...arr(join(entry(0, 0x1_0000, 0n, 1n)), 1) })).toMatchObject({ handled: 0, result: { error: { errno: "EINVAL" } } });
    expect(ctx.hwptInvalidate({ hwptId: v, ...arr(join(entry(0, 1, 0x1000n, U64_MAX)), 1) })).toMatchObject({ handled: 0, result: { error: { errno: "EINVAL" } } });
    expect(ctx.hwptInvalidate({ hwptId: v, ...arr(join(entry(MockInvalidateFlag.ALL, 1, 0n, 0n), good), 2) })).toMatchObject({ handled: 2, result: { ok: true } });
    // vIOMMU path: full-array copy: a longer entry is fine with a zero tail, E2BIG with garbage in it.
    const longZero = new Uint8Array(MOCK_INVALIDATE_BYTES + 8);
    longZero.set(good);
    expect(ctx.hwptInvalidate({ hwptId: v, ...arr(longZero, 1, MOCK_INVALIDATE_BYTES + 8) }).result.ok).toBe(true);
    longZero[MOCK_INVALIDATE_BYTES + 3] = 1;
    expect(ctx.hwptInvalidate({ hwptId: v, ...arr(longZero, 1, MOCK_INVALIDATE_BYTES + 8) }).result).toMatchObject({ error: { errno: "E2BIG" } });
    // Nested HWPT path: per-entry copy: one byte too long or too short is EINVAL.
    expect(ctx.hwptInvalidate({ hwptId: nested, ...arr(new Uint8Array(MOCK_INVALIDATE_BYTES + 1), 1, MOCK_INVALIDATE_BYTES + 1) }).result).toMatchObject({ error: { errno: "EINVAL" } });
    expect(ctx.hwptInvalidate({ hwptId: nested, ...arr(new Uint8Array(1), 1, 1) }).result).toMatchObject({ error: { errno: "EINVAL" } });
    expect(ctx.hwptInvalidate({ hwptId: nested, ...arr(entry(0, 3, 0n, 1n), 1) })).toMatchObject({ handled: 1, result: { ok: true } });
  });
});

describe("IOMMU_GET_HW_INFO (§2.10)", () => {
  it("reports the native type, honours INPUT_TYPE, truncates and zero-fills the user buffer", () => {
    const { ctx, dev } = setup();
    expect(errno(ctx.getHwInfo({ flags: 2, devId: dev, dataLen: 16 }))).toBe("EOPNOTSUPP");
    expect(errno(ctx.getHwInfo({ flags: 0, devId: 999, dataLen: 16 }))).toBe("ENOENT");
    const info = unwrap(ctx.getHwInfo({ flags: 0, devId: dev, dataLen: 32, inDataType: 0x1234 }));
    expect(info).toMatchObject({ outDataType: MOCK_HW_INFO_TYPE, dataLen: MOCK_HW_INFO_BYTES });
    expect(info.data.length).toBe(32);
    expect([...info.data.subarray(16)].every((b) => b === 0)).toBe(true);
    expect(unwrap(ctx.getHwInfo({ flags: 0, devId: dev, dataLen: 0 })).dataLen).toBe(MOCK_HW_INFO_BYTES);
    expect(errno(ctx.getHwInfo({ flags: IOMMU_HW_INFO_FLAG_INPUT_TYPE, devId: dev, dataLen: 16, inDataType: 0x1234 }))).toBe("EOPNOTSUPP");
  });
});

describe("IOMMU_DESTROY and close (§1.2, §1.3, §2.11, quirk 12)", () => {
  it("answers EBUSY for devices and objects with dependants, ENOENT for unknown ids; close frees everything", () => {
    const { ctx, dev, ioas, parent } = setup();
    expect(errno(ctx.destroy(dev))).toBe("EBUSY");
    expect(errno(ctx.destroy(ioas))).toBe("EBUSY");
    expect(errno(ctx.destroy(12345))).toBe("ENOENT");
    const v = unwrap(ctx.viommuAlloc({ flags: 0, type: MOCK_VIOMMU_TYPE, devId: dev, hwptId: parent }));
    unwrap(ctx.vdeviceAlloc({ viommuId: v, devId: dev, virtId: 1 }));
    unwrap(ctx.veventqAlloc({ flags: 0, viommuId: v, type: MOCK_VEVENTQ_TYPE, depth: 2 })).file.close();
    expect(ctx.close()).toEqual([]);
  });
});

describe("vIOMMU mmap (§3.4, quirk 10)", () => {
  it("checks length, sharing, exec and exact offset; a live mapping pins the vIOMMU", () => {
    const { ctx, dev, parent } = setup();
    const v = unwrap(ctx.viommuAlloc({ flags: 0, type: MOCK_VIOMMU_TYPE, devId: dev, hwptId: parent }));
    const offset = (unwrap(ctx.viommu(v)).ops as { mmapOffset: number }).mmapOffset;
    expect(offset).toBeGreaterThan(0);
    const req = { offset, length: 4096, shared: true, prot: { read: true, write: true } };
    expect(errno(ctx.mmap({ ...req, length: 100 }))).toBe("EINVAL");
    expect(errno(ctx.mmap({ ...req, shared: false }))).toBe("EINVAL");
    expect(errno(ctx.mmap({ ...req, prot: { exec: true } }))).toBe("EPERM");
    expect(errno(ctx.mmap({ ...req, offset: offset + 4096 }))).toBe("ENXIO");
    expect(errno(ctx.mmap({ ...req, length: 8192 }))).toBe("ENXIO");
    const m = unwrap(ctx.mmap(req));
    expect(errno(ctx.destroy(v))).toBe("EBUSY");
    m.unmap();
    expect(errno(ctx.destroy(v))).toBe("ok");
  });
});
