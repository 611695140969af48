import { describe, expect, it } from "vitest";
import {
  DIRTY_TRACKING_ENABLE,
  errnoOf,
  HwptAllocFlag,
  IoasMapFlag,
  NO_PASID,
  Perm,
  newWalkResult,
  unwrap,
  type IommuDomain,
  type PagingDomain,
} from "@viommu/core";
import { decodeCd, decodeSte, decodeEvent, SteS1Dss, SteS1Fmt, SteConfig } from "../../src/format/index.js";
import { stage1Asid } from "../../src/hw/stage1-domain.js";
import { hostSetup } from "../support.js";

const PAGE = 4096;
const IOVA = 0x10_0000;
const GPAS = [0x20_0000, 0x30_0000, 0x40_0000];

/** A host with a 20-bit-PASID device and three stage-1 HWPTs (IOMMU_HWPT_ALLOC_PASID), each mapping IOVA to its own page. */
function pasidHost(flags = HwptAllocFlag.PASID, pasidBits = 20) {
  const h = hostSetup({}, { memoryBytes: 2 ** 26, pasidBits });
  GPAS.forEach((gpa, i) => h.vm.memory.writeBytes(gpa, Uint8Array.of(0xa0 + i, 0xb0 + i)));
  const hwpts = GPAS.map((gpa) => {
    const ioasId = unwrap(h.ctx.ioasAlloc());
    unwrap(h.ctx.ioasMap({ ioasId, flags: IoasMapFlag.FIXED_IOVA | IoasMapFlag.READABLE | IoasMapFlag.WRITEABLE, memory: h.vm.memory, gpa, length: PAGE, iova: IOVA }));
    return { ioasId, hwptId: unwrap(h.ctx.hwptAlloc({ flags, devId: h.devId, ptId: ioasId })) };
  });
  const domainOf = (hwptId: number) => (unwrap(h.ctx.objects.get(hwptId)) as unknown as { domain: PagingDomain }).domain;
  const read = (pasid: number) => {
    const r = h.device.read(IOVA, 2, pasid);
    return r.ok ? [...r.data] : undefined;
  };
  const ste = () => decodeSte(h.unit.steOf(0x100)!);
  return { ...h, hwpts, domainOf, read, ste };
}

describe("SMMUv3 host-side SubstreamIDs: stage-1 domains in the master's CD table", () => {
  it("gives IOMMU_HWPT_ALLOC_PASID and DIRTY_TRACKING domains stage 1 with their own ASIDs; NEST_PARENT with PASID is EOPNOTSUPP", () => {
    const h = pasidHost();
    const asids = h.hwpts.map((x) => stage1Asid(h.domainOf(x.hwptId)));
    expect(new Set(asids).size).toBe(3);
    expect(asids.every((a) => a !== undefined && a >= 1)).toBe(true);
    const dirty = unwrap(h.ctx.hwptAlloc({ flags: HwptAllocFlag.DIRTY_TRACKING, devId: h.devId, ptId: h.ioasId }));
    expect(stage1Asid(h.domainOf(dirty))).toBeDefined();
    expect(errnoOf(h.ctx.hwptAlloc({ flags: HwptAllocFlag.NEST_PARENT | HwptAllocFlag.PASID, devId: h.devId, ptId: h.ioasId }))).toBe("EOPNOTSUPP");
  });

  it("installs the CD-table STE Linux builds for a 20-bit master (S1Fmt 64K leaves, S1CDMax 20, S1DSS SSID0) and the stage-1 CD at each SubstreamID", () => {
    const h = pasidHost();
    unwrap(h.ctx.attach(h.devId, h.hwpts[0]!.hwptId));
    unwrap(h.ctx.attach(h.devId, h.hwpts[1]!.hwptId, 1));
    unwrap(h.ctx.attach(h.devId, h.hwpts[2]!.hwptId, 0x8_0001));
    expect(h.ste()).toMatchObject({ V: 1, Config: SteConfig.S1Translate, S1Fmt: SteS1Fmt.TwoLevel64K, S1CDMax: 20, S1DSS: SteS1Dss.Ssid0, S1CIR: 1, S1COR: 1, S1CSH: 3, S2VMID: 0 });
    const table = h.unit.substreams.cdTableOf(h.device)!;
    expect(h.ste().S1ContextPtr).toBe(table.base);
    const words = new Uint32Array(16);
    const at = table.cdAddress(0x8_0001, false)!;
    for (let i = 0; i < 8; i++) h.platform.host.memory.read64Halves(at + i * 8, words.subarray(2 * i, 2 * i + 2));
    const domain = h.domainOf(h.hwpts[2]!.hwptId);
    expect(decodeCd(words)).toMatchObject({ V: 1, T0SZ: 16, TG0: 0, IR0: 1, OR0: 1, SH0: 3, EPD1: 1, IPS: 5, AA64: 1, R: 1, A: 1, ASET: 1, HA: 0, HD: 0, ASID: stage1Asid(domain), TTB0: domain.table.root });
    // dw0 as Linux 6.1 wrote it for a real guest (0x0001e204c0003510: ASID 1, IPS 4), here with IPS 5 and the domain's ASID.
    expect(table.readDw0(0x8_0001)).toBe((BigInt(stage1Asid(domain)!) << 48n) | 0x0000_e205_c000_3510n);
  });

  it("translates the same IOVA through the RID's and each PASID's domain, and a detached PASID alone stops translating", () => {
    const h = pasidHost();
    unwrap(h.ctx.attach(h.devId, h.hwpts[0]!.hwptId));
    unwrap(h.ctx.attach(h.devId, h.hwpts[1]!.hwptId, 1));
    unwrap(h.ctx.attach(h.devId, h.hwpts[2]!.hwptId, 0x8_0001));
    expect([h.read(NO_PASID), h.read(1), h.read(0x8_0001), h.read(2)]).toEqual([[0xa0, 0xb0], [0xa1, 0xb1], [0xa2, 0xb2], undefined]);
    unwrap(h.ctx.detach(h.devId, 1));
    expect([h.read(NO_PASID), h.read(1), h.read(0x8_0001)]).toEqual([[0xa0, 0xb0], undefined, [0xa2, 0xb2]]);
    // A PASID's CD is cleared: the SMMU finds it invalid (C_BAD_CD), the host keeps the event.
    expect(decodeEvent(h.unit.hostEvents.at(-1)!).name).toBe("C_BAD_CD");
  });

  it("keeps the CD table with S1DSS terminate while the RID is blocked and PASIDs remain, and goes back to an abort STE when the last one goes", () => {
    const h = pasidHost();
    unwrap(h.ctx.attach(h.devId, h.hwpts[1]!.hwptId, 7));
    expect(h.ste()).toMatchObject({ Config: SteConfig.S1Translate, S1DSS: SteS1Dss.Terminate });
    expect(h.read(7)).toEqual([0xa1, 0xb1]);
    expect(h.read(NO_PASID)).toBeUndefined();
    expect(decodeEvent(h.unit.hostEvents.at(-1)!).name).toBe("F_STREAM_DISABLED");
    unwrap(h.ctx.attach(h.devId, h.hwpts[0]!.hwptId));
    expect(h.ste().S1DSS).toBe(SteS1Dss.Ssid0);
    unwrap(h.ctx.detach(h.devId));
    expect(h.ste()).toMatchObject({ Config: SteConfig.S1Translate, S1DSS: SteS1Dss.Terminate });
    unwrap(h.ctx.detach(h.devId, 7));
    expect(h.ste()).toMatchObject({ V: 1, Config: SteConfig.Abort });
    expect(h.unit.substreams.cdTableOf(h.device)).toBeUndefined();
  });

  it("refuses a PASID beside a stage-2 RID (EINVAL), a stage-2 or nested RID while PASIDs are attached (EBUSY), and a non-stage-1 domain at a PASID (EINVAL)", () => {
    const h = pasidHost();
    const s2 = (unwrap(h.ctx.objects.get(h.parentId)) as unknown as { domain: IommuDomain }).domain;
    unwrap(h.ctx.attach(h.devId, h.parentId));
    expect(errnoOf(h.unit.attachDevice(h.device, h.domainOf(h.hwpts[1]!.hwptId), 3))).toBe("EINVAL");
    unwrap(h.ctx.attach(h.devId, h.hwpts[0]!.hwptId));
    unwrap(h.ctx.attach(h.devId, h.hwpts[1]!.hwptId, 3));
    expect(errnoOf(h.unit.attachDevice(h.device, s2, NO_PASID))).toBe("EBUSY");
    expect(errnoOf(h.unit.attachDevice(h.device, s2, 4))).toBe("EINVAL");
    expect(h.ste().Config).toBe(SteConfig.S1Translate);
    expect(h.read(3)).toEqual([0xa1, 0xb1]);
  });

  it("sizes a 10-bit master's table linear (S1Fmt 0, 1024 CDs) and refuses a PASID beyond it", () => {
    const h = pasidHost(HwptAllocFlag.PASID, 10);
    unwrap(h.ctx.attach(h.devId, h.hwpts[1]!.hwptId, 1023));
    expect(h.ste()).toMatchObject({ S1Fmt: SteS1Fmt.Linear, S1CDMax: 10 });
    expect(h.read(1023)).toEqual([0xa1, 0xb1]);
    expect(errnoOf(h.unit.attachDevice(h.device, h.domainOf(h.hwpts[2]!.hwptId), 1024))).toBe("EINVAL");
  });

  it("invalidates by ASID on unmap (no stale translation), reads the new CD after a PASID is replaced (CFGI_CD), and never lets a reused ASID hit the old domain's entries", () => {
    const h = pasidHost();
    unwrap(h.ctx.attach(h.devId, h.hwpts[0]!.hwptId));
    unwrap(h.ctx.attach(h.devId, h.hwpts[1]!.hwptId, 5));
    expect(h.read(5)).toEqual([0xa1, 0xb1]);
    unwrap(h.ctx.attach(h.devId, h.hwpts[2]!.hwptId, 5));
    expect(h.read(5)).toEqual([0xa2, 0xb2]);
    unwrap(h.ctx.ioasUnmap({ ioasId: h.hwpts[2]!.ioasId, iova: IOVA, length: PAGE }));
    expect(h.read(5)).toBeUndefined();
    // The first domain goes and its ASID is reused by a new one mapping IOVA elsewhere: no hit of the old entries.
    expect(h.read(NO_PASID)).toEqual([0xa0, 0xb0]);
    const oldAsid = stage1Asid(h.domainOf(h.hwpts[0]!.hwptId));
    unwrap(h.ctx.detach(h.devId, 5));
    unwrap(h.ctx.detach(h.devId));
    unwrap(h.ctx.destroy(h.hwpts[0]!.hwptId));
    const again = unwrap(h.ctx.hwptAlloc({ flags: HwptAllocFlag.PASID, devId: h.devId, ptId: h.hwpts[1]!.ioasId }));
    expect(stage1Asid(h.domainOf(again))).toBe(oldAsid);
    unwrap(h.ctx.attach(h.devId, again));
    expect(h.read(NO_PASID)).toEqual([0xa1, 0xb1]);
  });

  it("tracks dirty pages of a DIRTY_TRACKING stage-1 domain in AP[2] with DBM (CD.HA/HD set), marking on writes only", () => {
    const h = pasidHost(HwptAllocFlag.PASID | HwptAllocFlag.DIRTY_TRACKING);
    const hwpt = h.hwpts[1]!;
    unwrap(h.ctx.attach(h.devId, hwpt.hwptId, 2));
    const table = h.unit.substreams.cdTableOf(h.device)!;
    expect((table.readDw0(2) >> 42n) & 3n).toBe(3n);
    unwrap(h.ctx.hwptSetDirtyTracking(hwpt.hwptId, DIRTY_TRACKING_ENABLE));
    const domain = h.domainOf(hwpt.hwptId);
    const walk = newWalkResult();
    const leaf = () => {
      domain.table.walk(IOVA, Perm.Read, walk);
      const halves = new Uint32Array(2);
      h.platform.host.memory.read64Halves(walk.entryAddress, halves);
      return { ap2: (halves[0]! >>> 7) & 1, dbm: (halves[1]! >>> 19) & 1 };
    };
    expect(leaf()).toEqual({ ap2: 1, dbm: 1 });
    expect(h.read(2)).toEqual([0xa1, 0xb1]);
    expect(leaf()).toEqual({ ap2: 1, dbm: 1 });
    expect(h.device.write(IOVA, Uint8Array.of(7), 2).ok).toBe(true);
    expect(leaf()).toEqual({ ap2: 0, dbm: 1 });
    let bitmap = new Uint8Array(0);
    unwrap(h.ctx.hwptGetDirtyBitmap({ hwptId: hwpt.hwptId, flags: 0, iova: IOVA, length: PAGE, pageSize: PAGE, bitmap: (n) => (bitmap = new Uint8Array(n)) }));
    expect(bitmap[0]).toBe(1);
    expect(leaf()).toEqual({ ap2: 1, dbm: 1 });
  });
});

describe("SMMUv3 host-side page requests: a fault-queue HWPT at a PASID", () => {
  it("reports a PRI device's fault on a host stage-1 domain as one iommu_hwpt_pgfault group (PASID, PRGI, LAST_PAGE) and retries after SUCCESS", () => {
    const h = hostSetup({}, { memoryBytes: 2 ** 26, pasidBits: 20, pri: true });
    const fault = unwrap(h.ctx.faultQueueAlloc(0));
    const ioasId = unwrap(h.ctx.ioasAlloc());
    unwrap(h.ctx.ioasMap({ ioasId, flags: IoasMapFlag.FIXED_IOVA | IoasMapFlag.READABLE | IoasMapFlag.WRITEABLE, memory: h.vm.memory, gpa: GPAS[0]!, length: PAGE, iova: IOVA }));
    const hwpt = unwrap(h.ctx.hwptAlloc({ flags: HwptAllocFlag.PASID | HwptAllocFlag.FAULT_ID_VALID, faultId: fault.id, devId: h.devId, ptId: ioasId }));
    unwrap(h.ctx.attach(h.devId, hwpt, 4));
    const r = h.device.write(IOVA + PAGE + 8, Uint8Array.of(1), 4);
    expect(r.ok).toBe(false);
    const group = !r.ok ? r.pageRequest : undefined;
    expect(group).toBeDefined();
    const bytes = unwrap(fault.file.read(40 * 4));
    expect(bytes.length).toBe(40);
    const v = new DataView(bytes.buffer, bytes.byteOffset);
    // flags PASID_VALID | LAST_PAGE, dev_id, pasid, grpid, perm WRITE, addr of the page.
    expect([v.getUint32(0, true), v.getUint32(4, true), v.getUint32(8, true), v.getUint32(12, true), v.getUint32(16, true), v.getBigUint64(24, true)]).toEqual([3, h.devId, 4, group, 2, BigInt(IOVA + PAGE)]);
    unwrap(h.ctx.ioasMap({ ioasId, flags: IoasMapFlag.FIXED_IOVA | IoasMapFlag.READABLE | IoasMapFlag.WRITEABLE, memory: h.vm.memory, gpa: GPAS[1]!, length: PAGE, iova: IOVA + PAGE }));
    const resp = new Uint8Array(8);
    new DataView(resp.buffer).setUint32(0, v.getUint32(36, true), true);
    unwrap(fault.file.write(resp));
    expect(h.device.pageRequestStatus(group!)).toBe("success");
    expect(h.device.write(IOVA + PAGE + 8, Uint8Array.of(1), 4).ok).toBe(true);
  });
});
