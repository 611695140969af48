import { describe, expect, it, vi } from "vitest";
import { err, HostServices, Perm, resolveToken, unwrap, type HostLogEntry, type UserDataArray } from "@viommu/core";
import type { TestVm } from "@viommu/conformance";
import { MmioOffset } from "../../src/format/mmio-register-map.js";
import { StatusBit } from "../../src/format/status-register.js";
import { DATA_GPA, IOVA, mapOne, oneVm } from "../support.js";

function hostLog(v: TestVm, kind: HostLogEntry["kind"]): HostLogEntry[] {
  return resolveToken(v.vm.container, HostServices).log.entries({ vm: v.vm.id, kind });
}

describe("an invalidation the host refuses is the guest's ILLEGAL_COMMAND_ERROR (trapped command buffer, nested)", () => {
  it("the refused INVALIDATE_IOMMU_PAGES halts the buffer at itself; the one before took effect; forwarded counts only what the host accepted", () => {
    const t = oneVm({ eventInterrupts: "vmm" });
    const dev = t.v.devices[0]!.device;
    const domain = mapOne(t.v, 0x10, IOVA, DATA_GPA, 0x3000);
    // Both pages' translations are now in the host IOTLB.
    expect(dev.read(IOVA, 4).ok).toBe(true);
    expect(dev.read(IOVA + 0x2000, 4).ok).toBe(true);
    const viommu = unwrap(t.v.iommufd.viommu(t.v.iommufd.list("VIOMMU")[0]!.id));
    const host = viommu.ops.cacheInvalidate!.bind(viommu.ops);
    let calls = 0;
    vi.spyOn(viommu.ops, "cacheInvalidate").mockImplementation((array: UserDataArray) => (++calls === 2 ? { handled: 0, result: err("ENOMEM", "host out of memory") } : host(array)));
    const forwarded = t.device.stats.forwarded;
    // Linux under NpCache flushes [IOVA, +0x2000) then [IOVA + 0x2000, +0x1000), then COMPLETION_WAIT.
    const r = t.driver.unmap(domain, IOVA, 0x3000);
    expect(r).toMatchObject({ ok: false, error: { errno: "ETIMEDOUT" } });
    expect(calls).toBe(2);
    expect(t.device.stats.forwarded - forwarded).toBe(1);
    const head = Number(t.v.vm.mmioRead(t.device.mmioBase + MmioOffset.CommandBufferHead, 4));
    expect(t.driver.readEvents()).toEqual([expect.objectContaining({ kind: "command-error", name: "ILLEGAL_COMMAND_ERROR", address: t.driver.structures.commandBuffer + head })]);
    expect(Number(t.v.vm.mmioRead(t.device.mmioBase + MmioOffset.Status, 4)) & StatusBit.CmdBufRun).toBe(0);
    // The refused command is the one at the head: the second INVALIDATE_IOMMU_PAGES, for the last page.
    const cmd = t.v.vm.memory.readWords(t.driver.structures.commandBuffer + head, new Uint32Array(4));
    // v2 tables: the DomainID is the device's GCR3 table id, the one its DTE carries (set_dte_gcr3_table).
    const dteDomainId = t.v.vm.memory.read32(t.driver.structures.deviceTable + 0x10 * 32 + 8) & 0xffff;
    expect([cmd[1]! >>> 28, cmd[1]! & 0xffff, cmd[2]! & ~0xfff]).toEqual([0x3, dteDomainId, IOVA + 0x2000]);
    // The first invalidation took effect; the refused one did not (its page is still cached).
    expect(dev.read(IOVA, 4).ok).toBe(false);
    expect(dev.read(IOVA + 0x2000, 4).ok).toBe(true);
    const log = hostLog(t.v, "invalidation-refused");
    expect(log).toHaveLength(1);
    expect(log[0]).toMatchObject({ errno: "ENOMEM", source: `amd-vi@0x${t.device.mmioBase.toString(16)}` });
    expect(log[0]!.message).toContain("INVALIDATE_IOMMU_PAGES");
  });

  it("a refused INVALIDATE_IOMMU_ALL is refused the same way, and a guest restart past it completes what follows", () => {
    const t = oneVm({ eventInterrupts: "vmm" });
    mapOne(t.v, 0x10, IOVA, DATA_GPA, 0x1000);
    const viommu = unwrap(t.v.iommufd.viommu(t.v.iommufd.list("VIOMMU")[0]!.id));
    const spy = vi.spyOn(viommu.ops, "cacheInvalidate").mockReturnValue({ handled: 0, result: err("EIO", "refused") });
    const raw = t.driver as unknown as { flushAll(): ReturnType<typeof t.driver.flush> };
    expect(raw.flushAll()).toMatchObject({ ok: false, error: { errno: "ETIMEDOUT" } });
    expect(t.driver.readEvents().map((e) => e.name)).toEqual(["ILLEGAL_COMMAND_ERROR"]);
    expect(hostLog(t.v, "invalidation-refused")[0]).toMatchObject({ errno: "EIO" });
    spy.mockRestore();
    // The AMD restart procedure (CmdBufEn off, head past the bad command, CmdBufEn on) runs what follows:
    // the COMPLETION_WAIT the guest timed out on now stores its value.
    const base = t.device.mmioBase;
    const sem = t.driver.structures.semaphore;
    const before = t.v.vm.memory.read64(sem);
    const control = t.v.vm.mmioRead(base + MmioOffset.Control, 8);
    const head = Number(t.v.vm.mmioRead(base + MmioOffset.CommandBufferHead, 4));
    t.v.vm.mmioWrite(base + MmioOffset.Control, 8, control & ~(1n << 12n));
    t.v.vm.mmioWrite(base + MmioOffset.CommandBufferHead, 4, head + 16);
    t.v.vm.mmioWrite(base + MmioOffset.Control, 8, control);
    expect(t.v.vm.memory.read64(sem)).toBe(before + 1n);
    expect(t.v.vm.mmioRead(base + MmioOffset.CommandBufferHead, 4)).toBe(t.v.vm.mmioRead(base + MmioOffset.CommandBufferTail, 4));
  });
});

describe("shadow mode: what the type1 back end refuses is visible to the guest and the host", () => {
  const LIMIT = 8;

  it("mappings are installed up to the limit; the map beyond it is refused with ILLEGAL_COMMAND_ERROR at its flush and a host-log entry; DMA to the installed ones works", () => {
    const t = oneVm({ mode: "shadow", shadowBackend: "type1", dmaEntryLimit: LIMIT, eventInterrupts: "vmm" });
    const dev = t.v.devices[0]!.device;
    const driver = t.driver;
    const domain = unwrap(driver.createDomain());
    unwrap(driver.attach(0x10, domain));
    const at = (i: number): number => IOVA + i * 0x2000;
    for (let i = 0; i < LIMIT; i++) unwrap(driver.map(domain, at(i), DATA_GPA + i * 0x2000, 0x1000, Perm.ReadWrite));
    expect(t.device.stats.shadowMappings).toBe(LIMIT);
    expect(driver.readEvents()).toEqual([]);
    expect(hostLog(t.v, "shadow-map-refused")).toEqual([]);
    const forwarded = t.device.stats.forwarded;

    expect(driver.map(domain, at(LIMIT), DATA_GPA + LIMIT * 0x2000, 0x1000, Perm.ReadWrite)).toMatchObject({ ok: false, error: { errno: "ETIMEDOUT" } });
    const head = Number(t.v.vm.mmioRead(t.device.mmioBase + MmioOffset.CommandBufferHead, 4));
    const refused = t.v.vm.memory.readWords(driver.structures.commandBuffer + head, new Uint32Array(4));
    expect([refused[1]! >>> 28, refused[2]! & ~0xfff]).toEqual([0x3, at(LIMIT)]);
    expect(driver.readEvents()).toEqual([expect.objectContaining({ name: "ILLEGAL_COMMAND_ERROR", address: driver.structures.commandBuffer + head })]);
    const log = hostLog(t.v, "shadow-map-refused");
    expect(log).toHaveLength(1);
    expect(log[0]).toMatchObject({ errno: "ENOSPC" });
    expect(t.device.stats.forwarded).toBe(forwarded);
    expect(t.device.stats.shadowMappings).toBe(LIMIT);

    for (let i = 0; i < LIMIT; i++) {
      expect(dev.write(at(i) + 8, Uint8Array.of(i + 1)).ok).toBe(true);
      expect(t.v.vm.memory.read8(DATA_GPA + i * 0x2000 + 8)).toBe(i + 1);
    }
    expect(dev.read(at(LIMIT), 4).ok).toBe(false);
    expect(t.bed.platform.host.memory.violations).toEqual([]);
  });

  it("the iommufd back end has no such limit: nothing is refused", () => {
    const t = oneVm({ mode: "shadow", shadowBackend: "iommufd", dmaEntryLimit: LIMIT, eventInterrupts: "vmm" });
    const domain = unwrap(t.driver.createDomain());
    unwrap(t.driver.attach(0x10, domain));
    for (let i = 0; i < LIMIT + 4; i++) unwrap(t.driver.map(domain, IOVA + i * 0x2000, DATA_GPA + i * 0x2000, 0x1000, Perm.ReadWrite));
    expect(t.device.stats.shadowMappings).toBe(LIMIT + 4);
    expect(t.driver.readEvents()).toEqual([]);
    expect(hostLog(t.v, "shadow-map-refused")).toEqual([]);
  });

  it("a DTE whose new space the back end cannot fill halts at its INVALIDATE_DEVTAB_ENTRY; the device keeps what was installed", () => {
    const t = oneVm({ mode: "shadow", shadowBackend: "type1", dmaEntryLimit: 2, eventInterrupts: "vmm" });
    const domain = unwrap(t.driver.createDomain());
    // Mapped while no device uses the domain: nothing to mirror yet, so nothing is refused.
    for (let i = 0; i < 3; i++) unwrap(t.driver.map(domain, IOVA + i * 0x2000, DATA_GPA + i * 0x2000, 0x1000, Perm.ReadWrite));
    expect(t.driver.attach(0x10, domain)).toMatchObject({ ok: false, error: { errno: "ETIMEDOUT" } });
    const head = Number(t.v.vm.mmioRead(t.device.mmioBase + MmioOffset.CommandBufferHead, 4));
    const refused = t.v.vm.memory.readWords(t.driver.structures.commandBuffer + head, new Uint32Array(4));
    expect([refused[1]! >>> 28, refused[0]! & 0xffff]).toEqual([0x2, 0x10]);
    expect(t.driver.readEvents().map((e) => e.name)).toEqual(["ILLEGAL_COMMAND_ERROR"]);
    expect(hostLog(t.v, "shadow-map-refused")).toEqual([expect.objectContaining({ errno: "ENOSPC" })]);
    const dev = t.v.devices[0]!.device;
    expect([0, 1, 2].map((i) => dev.read(IOVA + i * 0x2000, 4).ok)).toEqual([true, true, false]);
  });
});

describe("a DTE the host refuses in nested mode", () => {
  it("leaves the device blocked, logs ILLEGAL_DEV_TABLE_ENTRY for the guest and configuration-refused for the operator", () => {
    for (const eventInterrupts of ["vmm", "direct"] as const) {
      const t = oneVm({ eventInterrupts });
      const dev = t.v.devices[0]!.device;
      mapOne(t.v, 0x10, IOVA, DATA_GPA, 0x1000);
      expect(dev.read(IOVA, 4).ok).toBe(true);
      // GV without a GCR3 table root: Linux's nested.c refuses it (EINVAL).
      const dte = Uint32Array.of(0x3, (1 << 23) | (1 << 22) | (1 << 29) | (1 << 30), 5, 0, 1, 0, 0, 0);
      const writeDte = (t.driver as unknown as { writeDte(rid: number, w: Uint32Array): ReturnType<typeof t.driver.detach> }).writeDte.bind(t.driver);
      expect(writeDte(0x10, dte).ok).toBe(true);
      expect(t.driver.readEvents().map((e) => [e.name, e.rid])).toEqual([["ILLEGAL_DEV_TABLE_ENTRY", 0x10]]);
      expect(hostLog(t.v, "configuration-refused")).toEqual([expect.objectContaining({ errno: "EINVAL" })]);
      expect(dev.read(IOVA, 4).ok).toBe(false);
      expect(dev.read(DATA_GPA, 4).ok).toBe(false);
    }
  });
});

describe("an object the host will not destroy", () => {
  it("is written to the host log instead of leaking silently", () => {
    const t = oneVm({ eventInterrupts: "vmm" });
    mapOne(t.v, 0x10, IOVA, DATA_GPA, 0x1000);
    const destroy = vi.spyOn(t.v.iommufd, "destroy").mockReturnValue(err("EBUSY", "still in use"));
    unwrap(t.driver.detach(0x10));
    expect(destroy).toHaveBeenCalled();
    expect(hostLog(t.v, "other")).toEqual([expect.objectContaining({ errno: "EBUSY" })]);
    destroy.mockRestore();
  });
});
