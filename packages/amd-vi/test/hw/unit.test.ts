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
  parseVevents,
  Perm,
  Platform,
  rawBits,
  setBits,
  unwrap,
  type DmaDevice,
} from "@viommu/core";
import { buildCompletionWait, buildInvalidateIommuPages } from "../../src/format/command.js";
import { setDteGcr3Root } from "../../src/format/device-table-entry.js";
import { decodeEvent } from "../../src/format/event-log-entry.js";
import { encodeGcr3Entry } from "../../src/format/gcr3-table-entry.js";
import {
  decodeHwInfoAmd,
  encodeHwptAmdGuest,
  encodeViommuAmd,
  IOMMU_HW_INFO_TYPE_AMD,
  IOMMU_HWPT_DATA_AMD_GUEST,
  IOMMU_VEVENTQ_TYPE_AMD,
  IOMMU_VIOMMU_INVALIDATE_DATA_AMD,
  IOMMU_VIOMMU_TYPE_AMD,
} from "../../src/format/iommufd-uapi.js";
import { amdV2Geometry, amdV2PageTableEncoder, amdV2PageTableFormat } from "../../src/format/page-table-v2.js";
import type { AmdNestedDomain } from "../../src/hw/amd-nested-domain.js";
import type { AmdViUnit } from "../../src/hw/amd-vi-unit.js";
import { HOST_EFR } from "../../src/hw/host-features.js";
import { HostInterruptRemapping } from "../../src/hw/host-interrupt-remapping.js";
import { amdViPlugin } from "../../src/plugin.js";

interface Host {
  ctx: IommufdContext;
  unit: AmdViUnit;
  device: DmaDevice;
  devId: number;
  parent: number;
  ioas: number;
  viommu: number;
  memory: ReturnType<Platform["createVm"]>["memory"];
  pages: GuestPageAllocator;
}

function host(): Host {
  const platform = new Platform({ plugins: [amdViPlugin] });
  const unit = unwrap(platform.createUnit("amd-vi")) as AmdViUnit;
  const vm = platform.createVm({ memoryBytes: 2 ** 28 });
  const ctx = new IommufdContext(vm.id);
  const device = platform.createDevice(unit, 0x100, "dev", 16);
  const devId = unwrap(ctx.bindDevice(device));
  const ioas = unwrap(ctx.ioasAlloc());
  unwrap(ctx.ioasMap({ ioasId: ioas, flags: IoasMapFlag.FIXED_IOVA | IoasMapFlag.READABLE | IoasMapFlag.WRITEABLE, memory: vm.memory, gpa: 0, length: vm.memory.sizeBytes, iova: 0 }));
  const parent = unwrap(ctx.hwptAlloc({ flags: HwptAllocFlag.NEST_PARENT, devId, ptId: ioas }));
  const viommu = unwrap(ctx.viommuAlloc({ flags: 0, type: IOMMU_VIOMMU_TYPE_AMD, devId, hwptId: parent }));
  return { ctx, unit, device, devId, parent, ioas, viommu, memory: vm.memory, pages: new GuestPageAllocator(vm.memory, 2 ** 27, 2 ** 28) };
}

/** A guest DTE: V, TV, GV, GIoV, the GCR3 root and DomainID. */
function guestDte(gcr3: number, domainId: number, extra: (w: Uint32Array) => void = () => {}): Uint32Array {
  const w = rawBits(256);
  w[0] = 3;
  w[1] = (1 << 23) | (1 << 22) | (1 << 29) | (1 << 30);
  w[2] = domainId;
  if (gcr3 !== 0) setDteGcr3Root(w, gcr3);
  extra(w);
  return w;
}

/** The host DomainID a nested HWPT was given. */
function hostDomainOf(h: Host, hwptId: number): number {
  const hwpt = unwrap(h.ctx.objects.get(hwptId)) as unknown as { domain: AmdNestedDomain };
  return hwpt.domain.hdomId;
}

function nested(h: Host, dte: Uint32Array, flags = 0): ReturnType<IommufdContext["hwptAlloc"]> {
  return h.ctx.hwptAlloc({ flags, devId: h.devId, ptId: h.viommu, data: { type: IOMMU_HWPT_DATA_AMD_GUEST, bytes: encodeHwptAmdGuest(dte) } });
}

/** A guest v2 table mapping `iova` → `gpa`, and a one-level GCR3 table with it at `pasids`. */
function guestTablesWith(h: Host, mappings: [number, number][], pasids: number[]): { gcr3: number; table: PageTableBuilder } {
  const table = PageTableBuilder.create({ ...amdV2PageTableFormat, ...amdV2PageTableEncoder }, amdV2Geometry(4), new GuestTableStore(h.memory, h.pages))!;
  for (const [iova, gpa] of mappings) unwrap(table.map(iova, gpa, 0x1000, Perm.ReadWrite));
  const gcr3 = h.pages.allocate(1)!;
  const e = new Uint32Array(2);
  encodeGcr3Entry(table.root, e);
  for (const p of pasids) h.memory.write64Halves(gcr3 + p * 8, e[0]!, e[1]!);
  return { gcr3, table };
}

function guestTables(h: Host, mappings: [number, number][], pasids: number[]): number {
  return guestTablesWith(h, mappings, pasids).gcr3;
}

describe("GET_HW_INFO", () => {
  it("answers IOMMU_HW_INFO_TYPE_AMD with the EFR and EFR2, and EOPNOTSUPP for another type", () => {
    const h = host();
    const reply = unwrap(h.ctx.getHwInfo({ flags: 0, devId: h.devId, dataLen: 16 }));
    expect(reply.outDataType).toBe(IOMMU_HW_INFO_TYPE_AMD);
    expect(decodeHwInfoAmd(reply.data).efr).toBe(HOST_EFR);
    expect(h.ctx.getHwInfo({ flags: 1, devId: h.devId, dataLen: 16, inDataType: 1 })).toMatchObject({ ok: false, error: { errno: "EOPNOTSUPP" } });
    // HDSup: dirty tracking is offered (test/hw/dirty.test.ts has the unit without it).
    expect(h.ctx.hwptAlloc({ flags: HwptAllocFlag.DIRTY_TRACKING, devId: h.devId, ptId: h.ioas }).ok).toBe(true);
  });
});

describe("vIOMMU allocation", () => {
  it("takes IOMMU_VIOMMU_TYPE_AMD only; iommu_viommu_amd shorter than through `reserved` is EINVAL, a nonzero reserved EOPNOTSUPP", () => {
    const h = host();
    expect(h.ctx.viommuAlloc({ flags: 0, type: 1, devId: h.devId, hwptId: h.parent })).toMatchObject({ ok: false, error: { errno: "EOPNOTSUPP" } });
    expect(h.ctx.viommuAlloc({ flags: 0, type: IOMMU_VIOMMU_TYPE_AMD, devId: h.devId, hwptId: h.parent, data: { type: IOMMU_VIOMMU_TYPE_AMD, bytes: new Uint8Array(24) } })).toMatchObject({ ok: false, error: { errno: "EINVAL" } });
    expect(h.ctx.viommuAlloc({ flags: 0, type: IOMMU_VIOMMU_TYPE_AMD, devId: h.devId, hwptId: h.parent, data: { type: IOMMU_VIOMMU_TYPE_AMD, bytes: encodeViommuAmd({ reserved: 1 }) } })).toMatchObject({ ok: false, error: { errno: "EOPNOTSUPP" } });
    expect(h.ctx.vdeviceAlloc({ viommuId: h.viommu, devId: h.devId, virtId: 0x1_0000 })).toMatchObject({ ok: false, error: { errno: "EINVAL" } });
  });
});

describe("nested domains from the guest DTE (Linux nested.c)", () => {
  it.each([
    ["another data type", (h: Host) => h.ctx.hwptAlloc({ flags: 0, devId: h.devId, ptId: h.viommu, data: { type: 1, bytes: new Uint8Array(32) } }), "EOPNOTSUPP"],
    ["a short struct", (h: Host) => h.ctx.hwptAlloc({ flags: 0, devId: h.devId, ptId: h.viommu, data: { type: IOMMU_HWPT_DATA_AMD_GUEST, bytes: new Uint8Array(24) } }), "EINVAL"],
    ["Mode set", (h: Host) => nested(h, guestDte(0x1000, 1, (w) => (w[0] = (w[0]! | (4 << 9)) >>> 0))), "EINVAL"],
    ["a host page-table root", (h: Host) => nested(h, guestDte(0x1000, 1, (w) => (w[0] = (w[0]! | 0x5000) >>> 0))), "EINVAL"],
    ["V and GV without a GCR3 root", (h: Host) => nested(h, guestDte(0, 1)), "EINVAL"],
    ["GLX = 3", (h: Host) => nested(h, guestDte(0x1000, 1, (w) => (w[1] = (w[1]! | (3 << 24)) >>> 0))), "EINVAL"],
    ["a reserved GuestPagingMode", (h: Host) => nested(h, guestDte(0x1000, 1, (w) => setBits(w, 182, 2, 2))), "EINVAL"],
    ["5-level guest tables the host lacks", (h: Host) => nested(h, guestDte(0x1000, 1, (w) => setBits(w, 182, 2, 1))), "EOPNOTSUPP"],
    ["the PASID flag", (h: Host) => nested(h, guestDte(0x1000, 1), HwptAllocFlag.PASID), "EOPNOTSUPP"],
  ])("refuses %s", (_what, alloc, errno) => {
    expect(alloc(host())).toMatchObject({ ok: false, error: { errno } });
  });

  it("maps each guest DomainID to one host DomainID per vIOMMU, shared by nested domains with the same gDomID", () => {
    const h = host();
    const a = unwrap(nested(h, guestDte(0x1000, 7)));
    const b = unwrap(nested(h, guestDte(0x2000, 7)));
    const c = unwrap(nested(h, guestDte(0x3000, 8)));
    const hdom = (id: number): number => hostDomainOf(h, id);
    expect(hdom(a)).toBe(hdom(b));
    expect(hdom(c)).not.toBe(hdom(a));
    const other = unwrap(h.ctx.viommuAlloc({ flags: 0, type: IOMMU_VIOMMU_TYPE_AMD, devId: h.devId, hwptId: h.parent }));
    const d = unwrap(h.ctx.hwptAlloc({ flags: 0, devId: h.devId, ptId: other, data: { type: IOMMU_HWPT_DATA_AMD_GUEST, bytes: encodeHwptAmdGuest(guestDte(0x1000, 7)) } }));
    expect(hdom(d)).not.toBe(hdom(a));
  });
});

describe("nested translation: the guest's v2 tables through GCR3 as stage 1 over the host v1 stage 2", () => {
  it("translates requests without a PASID through PASID 0 (GIoV) and with a PASID through its GCR3 entry, tagging the IOTLB by PASID", () => {
    const h = host();
    unwrap(h.ctx.vdeviceAlloc({ viommuId: h.viommu, devId: h.devId, virtId: 0x10 }));
    const gcr3 = guestTables(h, [[0x40_0000, 0x10_0000]], [0, 5]);
    const hwpt = unwrap(nested(h, guestDte(gcr3, 3)));
    unwrap(h.ctx.attach(h.devId, hwpt));
    const out = newWalkResult();
    h.device.translate(0x40_0123, false, NO_PASID, out);
    expect(out).toMatchObject({ ok: true, output: expect.any(Number), pageShift: 12 });
    expect(h.memory.backingOf(0x10_0123)).toBe(out.output);
    h.device.translate(0x40_0123, true, 5, out);
    expect(out.ok).toBe(true);
    h.device.translate(0x40_0123, false, 6, out);
    expect(out.ok).toBe(false);
    expect(h.device.translate(0x40_0123, false, 600, out).ok).toBe(false);
    // Invalidate PASID 5 only: PASID 0's cached translation stays.
    const misses = h.unit.iotlb.misses;
    h.unit.invalidate(hostDomainOf(h, hwpt), 5, 0, 2 ** 40, false);
    h.device.translate(0x40_0123, false, NO_PASID, out);
    expect(h.unit.iotlb.misses).toBe(misses);
  });

  it("forwards raw guest invalidation commands: the entry count handled is reported, a non-invalidation command is EIO", () => {
    const h = host();
    const { gcr3, table } = guestTablesWith(h, [[0x40_0000, 0x10_0000]], [0]);
    const hwpt = unwrap(nested(h, guestDte(gcr3, 3)));
    unwrap(h.ctx.attach(h.devId, hwpt));
    const out = newWalkResult();
    expect(h.device.translate(0x40_0000, false, NO_PASID, out).ok).toBe(true);
    // The guest unmaps; the stale translation stays until the invalidation reaches the IOTLB.
    table.unmap(0x40_0000, 0x1000);
    expect(h.device.translate(0x40_0000, false, NO_PASID, out).ok).toBe(true);
    const entries = new Uint8Array(32);
    entries.set(new Uint8Array(buildInvalidateIommuPages({ domainId: 3, address: 0x40_0000n, size: 0x1000n, pasid: 0 }).buffer), 0);
    entries.set(new Uint8Array(buildCompletionWait(0x1000, 1n).buffer), 16);
    const r = h.ctx.hwptInvalidate({ hwptId: h.viommu, dataType: IOMMU_VIOMMU_INVALIDATE_DATA_AMD, entryLen: 16, entryNum: 2, entries });
    expect(r).toMatchObject({ handled: 1, result: { ok: false, error: { errno: "EIO" } } });
    expect(h.device.translate(0x40_0000, false, NO_PASID, out).ok).toBe(false);
    expect(h.ctx.hwptInvalidate({ hwptId: h.viommu, dataType: 9, entryLen: 16, entryNum: 1, entries })).toMatchObject({ handled: 0, result: { ok: false, error: { errno: "EINVAL" } } });
    expect(h.ctx.hwptInvalidate({ hwptId: h.viommu, dataType: IOMMU_VIOMMU_INVALIDATE_DATA_AMD, entryLen: 16, entryNum: 0, entries })).toMatchObject({ handled: 0, result: { ok: true } });
  });

  it("reports a stage-1 fault to the vEVENTQ in guest terms, and keeps a stage-2 fault in the host log", () => {
    const h = host();
    unwrap(h.ctx.vdeviceAlloc({ viommuId: h.viommu, devId: h.devId, virtId: 0x10 }));
    const q = unwrap(h.ctx.veventqAlloc({ flags: 0, viommuId: h.viommu, type: IOMMU_VEVENTQ_TYPE_AMD, depth: 8 }));
    const gcr3 = guestTables(h, [[0x40_0000, 0x10_0000], [0x50_0000, 2 ** 29]], [0]);
    unwrap(h.ctx.attach(h.devId, unwrap(nested(h, guestDte(gcr3, 9)))));
    expect(h.device.read(0x60_0000, 4).ok).toBe(false);
    const events = parseVevents(unwrap(q.file.read(256)), 16).map((r) => decodeEvent(new Uint32Array(r.payload!.buffer, r.payload!.byteOffset, 4)));
    expect(events).toEqual([expect.objectContaining({ name: "IO_PAGE_FAULT", fields: expect.objectContaining({ DeviceID: 0x10, DomainIDOrPASID: 9, PR: 0, Address: 0x60_0000n }) })]);
    expect(h.device.read(0x50_0000, 4).ok).toBe(false);
    expect(h.unit.hostFaults).toEqual([expect.objectContaining({ requesterId: 0x100, stage: 2 })]);
  });

  it("a stage-2 unmap drops every nested translation through that parent", () => {
    const h = host();
    const gcr3 = guestTables(h, [[0x40_0000, 0x10_0000]], [0]);
    unwrap(h.ctx.attach(h.devId, unwrap(nested(h, guestDte(gcr3, 3)))));
    expect(h.device.read(0x40_0000, 4).ok).toBe(true);
    unwrap(h.ctx.ioasUnmap({ ioasId: h.ioas, iova: 0n, length: 0xffff_ffff_ffff_ffffn }));
    expect(h.device.read(0x40_0000, 4).ok).toBe(false);
  });
});

describe("host interrupt remapping (the physical unit's own IRTs)", () => {
  it("remaps a device MSI through the IRTE the host driver programmed, 128-bit with an x2APIC destination, and blocks it once freed", () => {
    const h = host();
    const msi = unwrap(h.unit.programInterrupt(h.device, 0x45, 0x1_0005));
    expect(msi).toEqual({ address: 0xfee00000, data: 0 });
    expect(h.unit.remapInterrupt(h.device, msi)).toMatchObject({ ok: true, irq: { vector: 0x45, destination: 0x1_0005 } });
    h.unit.interruptRemapping.free(h.device.requesterId, msi);
    expect(h.unit.remapInterrupt(h.device, msi)).toMatchObject({ ok: false, fault: { name: "IO_PAGE_FAULT", index: 0 } });
    expect(h.unit.remapInterrupt(h.device, { address: 0xfee00000, data: 0x400 | 3 })).toMatchObject({ ok: false });
  });

  it("with 32-bit IRTEs refuses destinations above 255", () => {
    const platform = new Platform({ plugins: [amdViPlugin] });
    const legacy = new HostInterruptRemapping(platform.host.memory, false, false);
    expect(legacy.program(0x100, 0x30, 300)).toMatchObject({ ok: false, error: { errno: "EINVAL" } });
    const msi = unwrap(legacy.program(0x100, 0x30, 7));
    expect(legacy.remap(0x100, msi)).toMatchObject({ ok: true, irq: { vector: 0x30, destination: 7 } });
  });
});
