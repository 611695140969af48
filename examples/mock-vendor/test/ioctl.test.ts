import { describe, expect, it } from "vitest";
import { HwptAllocFlag, IoasMapFlag, IommufdContext, IommufdIoctl, IommufdIoctls, Platform, UserMemory, errnoOf, unwrap } from "@viommu/core";
import { encodeMockInvalidate, MOCK_INVALIDATE_DATA_TYPE, MOCK_VIOMMU_TYPE } from "../src/format/uapi.js";
import { mockPlugin } from "../src/plugin.js";

/** Builds a uapi struct: little-endian fields at byte offsets, `size` in the first u32. */
function struct(size: number, fields: [offset: number, bytes: 4 | 8, value: number | bigint][], declared = size): Uint8Array {
  const b = new Uint8Array(size);
  const v = new DataView(b.buffer);
  v.setUint32(0, declared, true);
  for (const [at, n, value] of fields) {
    if (n === 4) v.setUint32(at, Number(value), true);
    else v.setBigUint64(at, BigInt(value), true);
  }
  return b;
}

const u32 = (b: Uint8Array, at: number): number => new DataView(b.buffer).getUint32(at, true);

function setup() {
  const platform = new Platform({ plugins: [mockPlugin] });
  const unit = unwrap(platform.createUnit(mockPlugin.id));
  const vm = platform.createVm({ memoryBytes: 2 ** 28 });
  const ctx = new IommufdContext(vm.id);
  const dev = unwrap(ctx.bindDevice(platform.createDevice(unit, 0x100, "dev-100", 20)));
  const user = new UserMemory();
  return { ctx, dev, user, vm, io: new IommufdIoctls(ctx, user) };
}

describe("the raw ioctl layer (§2.1)", () => {
  it("checks the size field like the kernel's dispatcher", () => {
    const { io } = setup();
    expect(errnoOf(io.ioctl(IommufdIoctl.IOAS_ALLOC, struct(12, [], 8)))).toBe("EINVAL");
    const bigger = struct(16, []);
    expect(io.ioctl(IommufdIoctl.IOAS_ALLOC, bigger)).toMatchObject({ ok: true });
    expect(u32(bigger, 8)).toBe(2);
    const garbage = struct(16, [[12, 4, 1]]);
    expect(errnoOf(io.ioctl(IommufdIoctl.IOAS_ALLOC, garbage))).toBe("E2BIG");
    expect(errnoOf(io.ioctl(0x7f, struct(8, [])))).toBe("ENOTTY");
    expect(errnoOf(io.ioctl(IommufdIoctl.DESTROY, struct(8, [], 64)))).toBe("EFAULT");
  });

  it("maps guest RAM through user_va, allocates HWPTs from an old, shorter struct, and writes outputs back", () => {
    const { io, user, vm, dev } = setup();
    const ioasArg = struct(12, []);
    io.ioctl(IommufdIoctl.IOAS_ALLOC, ioasArg);
    const ioas = u32(ioasArg, 8);
    const va = user.mapGuest(vm.memory, 0, 2 ** 24);
    const map = struct(40, [[4, 4, IoasMapFlag.READABLE | IoasMapFlag.WRITEABLE | IoasMapFlag.FIXED_IOVA], [8, 4, ioas], [16, 8, va], [24, 8, 2 ** 24], [32, 8, 0]]);
    expect(io.ioctl(IommufdIoctl.IOAS_MAP, map)).toMatchObject({ ok: true });
    expect(errnoOf(io.ioctl(IommufdIoctl.IOAS_MAP, struct(40, [[4, 4, IoasMapFlag.READABLE], [8, 4, ioas], [16, 8, 0x1234_0000], [24, 8, 4096]])))).toBe("EFAULT");
    // 24 bytes: the struct as it was before data_type/data_len/data_uptr/fault_id existed.
    const hwpt = struct(24, [[4, 4, HwptAllocFlag.NEST_PARENT], [8, 4, dev], [12, 4, ioas]]);
    expect(io.ioctl(IommufdIoctl.HWPT_ALLOC, hwpt)).toMatchObject({ ok: true });
    const parent = u32(hwpt, 16);
    expect(parent).toBeGreaterThan(ioas);
    const viommu = struct(24, [[8, 4, MOCK_VIOMMU_TYPE], [12, 4, dev], [16, 4, parent]]);
    expect(io.ioctl(IommufdIoctl.VIOMMU_ALLOC, viommu)).toMatchObject({ ok: true });
    const viommuId = u32(viommu, 20);
    // HWPT_INVALIDATE writes entry_num back even when an entry fails.
    const entries = new Uint8Array(48);
    entries.set(encodeMockInvalidate({ flags: 0, asid: 1, addr: 0x1000n, npages: 1n }), 0);
    entries.set(encodeMockInvalidate({ flags: 1 << 7, asid: 1, addr: 0n, npages: 1n }), 24);
    const inv = struct(32, [[4, 4, viommuId], [8, 8, user.put(entries)], [16, 4, MOCK_INVALIDATE_DATA_TYPE], [20, 4, 24], [24, 4, 2]]);
    expect(errnoOf(io.ioctl(IommufdIoctl.HWPT_INVALIDATE, inv))).toBe("EOPNOTSUPP");
    expect(u32(inv, 24)).toBe(1);
    const q = struct(32, [[8, 4, viommuId], [12, 4, 0xbeefbeef], [16, 4, 4]]);
    expect(io.ioctl(IommufdIoctl.VEVENTQ_ALLOC, q)).toMatchObject({ ok: true });
    const fd = u32(q, 24);
    expect(errnoOf(io.ioctl(IommufdIoctl.DESTROY, struct(8, [[4, 4, u32(q, 20)]])))).toBe("EBUSY");
    expect(io.close(fd)).toMatchObject({ ok: true });
    expect(io.ioctl(IommufdIoctl.DESTROY, struct(8, [[4, 4, u32(q, 20)]]))).toMatchObject({ ok: true });
  });

  it("answers GET_HW_INFO into the user's buffer, and refuses reserved bytes", () => {
    const { io, user, dev } = setup();
    const buffer = new Uint8Array(8).fill(0xff);
    const arg = struct(40, [[8, 4, dev], [12, 4, 8], [16, 8, user.put(buffer)]]);
    expect(io.ioctl(IommufdIoctl.GET_HW_INFO, arg)).toMatchObject({ ok: true });
    expect(u32(arg, 12)).toBe(16);
    expect(u32(arg, 24)).toBe(0xfeedbeef);
    expect(arg[28]).toBe(20);
    expect([...buffer.subarray(4, 8)]).toEqual([1, 0, 0, 0]);
    const reserved = struct(40, [[8, 4, dev]]);
    reserved[30] = 1;
    expect(errnoOf(io.ioctl(IommufdIoctl.GET_HW_INFO, reserved))).toBe("EOPNOTSUPP");
  });
});
