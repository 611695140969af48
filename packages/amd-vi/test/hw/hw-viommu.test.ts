import { describe, expect, it } from "vitest";
import { HwptAllocFlag, IoasMapFlag, IommufdContext, Platform, unwrap, type Viommu } from "@viommu/core";
import { buildCompletionWait, buildInvalidateDevtabEntry, buildInvalidateIommuAll } from "../../src/format/command.js";
import { decodeViommuAmd, encodeViommuAmd, IOMMU_VEVENTQ_TYPE_AMD_CMD_INTERCEPT, IOMMU_VIOMMU_TYPE_AMD } from "../../src/format/iommufd-uapi.js";
import { MmioOffset } from "../../src/format/mmio-register-map.js";
import { VfMmioOffset } from "../../src/format/vf-mmio.js";
import type { AmdViommu } from "../../src/hw/amd-viommu.js";
import { amdViPlugin } from "../../src/plugin.js";

/** A VM whose RAM is backed page by page in descending host order: no two consecutive GPAs are consecutive HPAs. */
function scatteredVm(): { ctx: IommufdContext; viommu: AmdViommu; mmapOffset: number; memory: Platform["vms"][number]["memory"]; devId: number; viommuId: number } {
  const platform = new Platform({ plugins: [amdViPlugin] });
  const unit = unwrap(platform.createUnit("amd-vi"));
  const vm = platform.createVm({ memoryBytes: 64 * 2 ** 20, backingPageShift: 12 });
  for (let page = 64 * 256 - 1; page >= 0; page--) vm.memory.write32(page * 4096, 0);
  const ctx = new IommufdContext(vm.id);
  const devId = unwrap(ctx.bindDevice(platform.createDevice(unit, 0x100)));
  const ioas = unwrap(ctx.ioasAlloc());
  unwrap(ctx.ioasMap({ ioasId: ioas, flags: IoasMapFlag.FIXED_IOVA | IoasMapFlag.READABLE | IoasMapFlag.WRITEABLE, memory: vm.memory, gpa: 0, length: vm.memory.sizeBytes, iova: 0 }));
  const parent = unwrap(ctx.hwptAlloc({ flags: HwptAllocFlag.NEST_PARENT, devId, ptId: ioas }));
  const data = encodeViommuAmd({ iommuDevid: 2, viommuDevid: 2 });
  const viommuId = unwrap(ctx.viommuAlloc({ flags: 0, type: IOMMU_VIOMMU_TYPE_AMD, devId, hwptId: parent, data: { type: IOMMU_VIOMMU_TYPE_AMD, bytes: data } }));
  const out = decodeViommuAmd(data);
  const viommu = (unwrap(ctx.viommu(viommuId)) as Viommu).ops as AmdViommu;
  expect(out.outGid).toBe(viommu.guestId);
  return { ctx, viommu, mmapOffset: out.outVfmmioMmapOffset, memory: vm.memory, devId, viommuId };
}

describe("hardware vIOMMU rings", () => {
  it("consumes a guest command buffer spanning physically scattered pages, storing COMPLETION_WAIT data through stage 2", () => {
    const { ctx, viommu, mmapOffset, memory } = scatteredVm();
    const cmd = 0x10_0000;
    expect(memory.backingOf(cmd + 0x1000)).not.toBe((memory.backingOf(cmd) ?? 0) + 0x1000);
    unwrap(viommu.hwQueueInit("command", cmd, 9));
    unwrap(viommu.setGuestRegister(MmioOffset.Control, (1n << 12n) | 1n));
    const page = unwrap(ctx.mmap({ offset: mmapOffset, length: 4096, shared: true, prot: { read: true, write: true } }));
    const sem = 0x20_0000;
    let tail = 0;
    // 300 commands: the ring's second page, and the wrap back to the first.
    for (let i = 1; i <= 300; i++) {
      const c = i % 2 === 0 ? buildCompletionWait(sem, BigInt(i)) : buildInvalidateIommuAll();
      memory.writeWords(cmd + tail, c);
      tail = (tail + 16) % 8192;
    }
    page.region.write(VfMmioOffset.CommandBufferTail, 4, BigInt(tail));
    expect(memory.read64(sem)).toBe(300n);
    expect(page.region.read(VfMmioOffset.CommandBufferHead, 4)).toBe(BigInt(tail));
    expect(viommu.rings!.consumed).toBe(300);
  });

  it("stops at INVALIDATE_DEVTAB_ENTRY of a mapped device, reports it as a vEVENT, and goes on only when resumed", () => {
    const { ctx, viommu, mmapOffset, memory, devId, viommuId } = scatteredVm();
    unwrap(ctx.vdeviceAlloc({ viommuId, devId, virtId: 0x10 }));
    const q = unwrap(ctx.veventqAlloc({ flags: 0, viommuId, type: IOMMU_VEVENTQ_TYPE_AMD_CMD_INTERCEPT, depth: 4 }));
    unwrap(viommu.hwQueueInit("command", 0x10_0000, 8));
    unwrap(viommu.setGuestRegister(MmioOffset.Control, (1n << 12n) | 1n));
    const page = unwrap(ctx.mmap({ offset: mmapOffset, length: 4096, shared: true, prot: { read: true, write: true } }));
    memory.writeWords(0x10_0000, buildInvalidateDevtabEntry(0x11));
    memory.writeWords(0x10_0010, buildInvalidateDevtabEntry(0x10));
    memory.writeWords(0x10_0020, buildCompletionWait(0x20_0000, 7n));
    page.region.write(VfMmioOffset.CommandBufferTail, 4, 0x30n);
    // 0x11 is no device of the VMM's: completed by the hardware. 0x10 is: the queue waits.
    expect(page.region.read(VfMmioOffset.CommandBufferHead, 4)).toBe(0x10n);
    const records = unwrap(q.file.read(64));
    expect(records.length).toBe(8 + 16);
    expect(new DataView(records.buffer).getUint32(8, true)).toBe(0x10);
    expect(memory.read64(0x20_0000)).toBe(0n);
    viommu.resumeCommands();
    expect(memory.read64(0x20_0000)).toBe(7n);
  });

  it("refuses hardware-vIOMMU operations on a vIOMMU allocated without iommu_viommu_amd (the mainline path)", () => {
    const platform = new Platform({ plugins: [amdViPlugin] });
    const unit = unwrap(platform.createUnit("amd-vi"));
    const vm = platform.createVm({ memoryBytes: 2 ** 24 });
    const ctx = new IommufdContext(vm.id);
    const devId = unwrap(ctx.bindDevice(platform.createDevice(unit, 0x100)));
    const ioas = unwrap(ctx.ioasAlloc());
    const parent = unwrap(ctx.hwptAlloc({ flags: HwptAllocFlag.NEST_PARENT, devId, ptId: ioas }));
    const viommuId = unwrap(ctx.viommuAlloc({ flags: 0, type: IOMMU_VIOMMU_TYPE_AMD, devId, hwptId: parent }));
    const viommu = (unwrap(ctx.viommu(viommuId)) as Viommu).ops as AmdViommu;
    expect(viommu.hwQueueInit("command", 0, 8)).toMatchObject({ ok: false, error: { errno: "EOPNOTSUPP" } });
    expect(viommu.guestId).toBe(0);
  });
});
