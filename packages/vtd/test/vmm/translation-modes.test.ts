import { describe, expect, it } from "vitest";
import { IommufdObjectType, Perm, unwrap } from "@viommu/core";
import { decodePasidEntry } from "../../src/format/pasid-entry.js";
import { decodeVtdS1 } from "../../src/format/uapi.js";
import { VtdNestedDomain } from "../../src/hw/vtd-nested-domain.js";
import { DATA_GPA, IOVA, mapped, vtdBed } from "../support.js";

const pattern = (n: number, seed: number): Uint8Array => Uint8Array.from({ length: n }, (_, i) => (i * 31 + seed) & 0xff);

/** The guest's RID_PASID entry of `rid` (scalable mode), read through the tables the driver wrote. */
function pasidEntry(b: ReturnType<typeof vtdBed>, rid: number) {
  const mem = b.bed.vms[0]!.vm.memory;
  const root = b.device.translator.rootTable;
  const ctp = (mem.read32(root + (rid >>> 8) * 16) & ~0xfff) >>> 0;
  const dir = (mem.read32(ctp + (rid & 0x7f) * 32) & ~0xfff) >>> 0;
  const table = (mem.read32(dir) & ~0xfff) >>> 0;
  return decodePasidEntry(mem.readWords(table, new Uint32Array(16)));
}

describe("VT-d nested mode", () => {
  it("turns the guest's RID_PASID entry (PGTT first-level) into a HWPT_NESTED whose VTD_S1 data names the guest's table", () => {
    const b = vtdBed("nested");
    mapped(b, 0x10, IOVA, DATA_GPA, 0x2000);
    const v = b.bed.vms[0]!;
    const nested = v.iommufd.list(IommufdObjectType.HWPT_NESTED);
    expect(nested.length).toBe(1);
    const domain = (nested[0] as unknown as { domain: VtdNestedDomain }).domain;
    const entry = pasidEntry(b, 0x10);
    expect(entry.PGTT).toBe(1);
    expect(domain.s1).toEqual({ flags: 0, root: Number(entry.FLPTPTR), addrWidth: 48 });
    expect(v.devices[0]!.device.write(IOVA + 0x10, pattern(32, 1)).ok).toBe(true);
    expect(v.vm.memory.readBytes(DATA_GPA + 0x10, 32)).toEqual(pattern(32, 1));
  });

  it("forwards PASID-based IOTLB invalidations as IOMMU_HWPT_INVALIDATE, so an unmap reaches the physical IOTLB", () => {
    const b = vtdBed("nested");
    const d = mapped(b, 0x10, IOVA, DATA_GPA, 0x2000);
    const dev = b.bed.vms[0]!.devices[0]!.device;
    expect(dev.read(IOVA, 4).ok).toBe(true);
    const before = b.device.stats.forwarded;
    unwrap(b.driver.unmap(d, IOVA, 0x1000));
    expect(b.device.stats.forwarded).toBeGreaterThan(before);
    expect(dev.read(IOVA, 4).ok).toBe(false);
    expect(dev.read(IOVA + 0x1000, 4).ok).toBe(true);
  });

  it("keeps the physical IOTLB stale when the guest changes its table without invalidating (caching is real)", () => {
    const b = vtdBed("nested");
    const d = mapped(b, 0x10, IOVA, DATA_GPA, 0x1000);
    const dev = b.bed.vms[0]!.devices[0]!.device;
    expect(dev.read(IOVA, 4).ok).toBe(true);
    // Zero the leaf behind the driver's back: the cached translation survives until an invalidation.
    const mem = b.bed.vms[0]!.vm.memory;
    let leaf = 0;
    for (const page of mem.writtenPages()) for (let off = 0; off < 4096; off += 8) if ((mem.read32(page + off) & ~0xfff) >>> 0 === DATA_GPA && mem.read32(page + off) & 1) leaf = page + off;
    expect(leaf).not.toBe(0);
    mem.write64(leaf, 0n);
    expect(dev.read(IOVA, 4).ok).toBe(true);
    unwrap(b.driver.flush(d));
    expect(dev.read(IOVA, 4).ok).toBe(false);
  });

  it("shadows a legacy-mode guest even in nested mode: hardware nests only first-level tables", () => {
    const b = vtdBed("nested", "legacy");
    mapped(b, 0x10, IOVA, DATA_GPA, 0x1000);
    const v = b.bed.vms[0]!;
    expect(v.iommufd.list(IommufdObjectType.HWPT_NESTED).length).toBe(0);
    expect(b.device.stats.shadowMappings).toBe(1);
    expect(v.devices[0]!.device.read(IOVA, 4).ok).toBe(true);
  });

  it("blocks the device when the guest clears its PASID entry, and reports the guest's PASID-entry fault", () => {
    const b = vtdBed("nested");
    mapped(b, 0x10, IOVA, DATA_GPA, 0x1000);
    unwrap(b.driver.detach(0x10));
    const v = b.bed.vms[0]!;
    expect(v.iommufd.list(IommufdObjectType.HWPT_NESTED).length).toBe(0);
    expect(v.devices[0]!.device.read(IOVA, 4).ok).toBe(false);
    b.bed.poll();
    expect(b.driver.readEvents().map((e) => [e.code, e.name, e.rid])).toEqual([[0x59, "PASID_ENTRY_P", 0x10]]);
  });

  it("destroys the nested HWPT it replaced when the guest moves the device to another domain", () => {
    const b = vtdBed("nested");
    mapped(b, 0x10, IOVA, DATA_GPA, 0x1000);
    const d2 = unwrap(b.driver.createDomain());
    unwrap(b.driver.map(d2, IOVA, DATA_GPA + 0x4000, 0x1000, Perm.ReadWrite));
    unwrap(b.driver.attach(0x10, d2));
    const v = b.bed.vms[0]!;
    expect(v.iommufd.list(IommufdObjectType.HWPT_NESTED).length).toBe(1);
    const r = v.devices[0]!.device.read(IOVA, 4);
    expect(r.ok && r.hpas[0]).toBe(v.vm.memory.backingOf(DATA_GPA + 0x4000));
  });

  it("allocates the VTD_S1 data as `struct iommu_hwpt_vtd_s1` (24 bytes, 48-bit width)", () => {
    const bytes = new Uint8Array(24);
    new DataView(bytes.buffer).setBigUint64(8, 0x1234_5000n, true);
    new DataView(bytes.buffer).setUint32(16, 48, true);
    expect(decodeVtdS1(bytes)).toEqual({ flags: 0n, pgtblAddr: 0x1234_5000n, addrWidth: 48, reserved: 0 });
  });
});

describe("VT-d shadow (caching) mode", () => {
  for (const variant of ["legacy", "scalable"] as const) {
    for (const backend of ["iommufd", "type1"] as const) {
      it(`mirrors the guest's ${variant === "legacy" ? "second" : "first"}-level table through the ${backend} back end, and follows unmaps`, () => {
        const b = vtdBed("shadow", variant, { shadowBackend: backend });
        const d = mapped(b, 0x10, IOVA, DATA_GPA, 0x3000);
        const dev = b.bed.vms[0]!.devices[0]!.device;
        expect(dev.write(IOVA + 0x2000, pattern(8, 3)).ok).toBe(true);
        expect(b.bed.vms[0]!.vm.memory.readBytes(DATA_GPA + 0x2000, 8)).toEqual(pattern(8, 3));
        expect(b.device.stats.shadowMappings).toBe(3);
        unwrap(b.driver.unmap(d, IOVA + 0x1000, 0x1000));
        expect(dev.read(IOVA + 0x1000, 4).ok).toBe(false);
        expect(dev.read(IOVA, 4).ok).toBe(true);
        expect(b.device.stats.shadowMappings).toBe(2);
      });
    }
  }

  it("shadows 2 MiB guest pages as 2 MiB mappings", () => {
    const b = vtdBed("shadow", "legacy");
    mapped(b, 0x10, 0x4000_0000, DATA_GPA, 0x20_0000);
    expect(b.device.stats.shadowMappings).toBe(1);
    const r = b.bed.vms[0]!.devices[0]!.device.read(0x401f_f000, 4);
    expect(r.ok && r.hpas[0]).toBe(b.bed.vms[0]!.vm.memory.backingOf(DATA_GPA + 0x1f_f000));
  });

  it("sees a map only when the guest announces it (caching mode): a PTE written without a flush stays unmapped", () => {
    const b = vtdBed("shadow", "legacy");
    const d = mapped(b, 0x10, IOVA, DATA_GPA, 0x1000);
    const dev = b.bed.vms[0]!.devices[0]!.device;
    // Write the neighbouring PTE by hand, as a driver that forgot the flush would.
    const mem = b.bed.vms[0]!.vm.memory;
    let leaf = 0;
    for (const page of mem.writtenPages()) for (let off = 0; off < 4096; off += 8) if ((mem.read32(page + off) & ~0xfff) >>> 0 === DATA_GPA) leaf = page + off;
    mem.write64Halves(leaf + 8, (DATA_GPA + 0x1000) | 3, 0);
    expect(dev.read(IOVA + 0x1000, 4).ok).toBe(false);
    unwrap(b.driver.flush(d, IOVA + 0x1000, 0x1000));
    expect(dev.read(IOVA + 0x1000, 4).ok).toBe(true);
  });

  it("passes a pass-through context (TT 2) untranslated, through the VM's stage-2 parent", () => {
    const b = vtdBed("shadow", "legacy");
    mapped(b, 0x10, IOVA, DATA_GPA, 0x1000);
    const mem = b.bed.vms[0]!.vm.memory;
    const root = b.device.translator.rootTable;
    const ctp = (mem.read32(root) & ~0xfff) >>> 0;
    mem.write32(ctp + 0x10 * 16, (mem.read32(ctp + 0x10 * 16) & ~0xc) | 0x8);
    b.device.execute(1, Uint32Array.of(0x31, 0x10, 0, 0));
    const dev = b.bed.vms[0]!.devices[0]!.device;
    const r = dev.read(DATA_GPA + 0x5000, 4);
    expect(r.ok && r.hpas[0]).toBe(mem.backingOf(DATA_GPA + 0x5000));
  });
});
