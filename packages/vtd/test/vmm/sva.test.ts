import { describe, expect, it, vi } from "vitest";
import { Perm, unwrap, X86PagingBit, type GuestProcess } from "@viommu/core";
import { decodeInvDesc, invDescName } from "../../src/format/inv-desc.js";
import { decodePasidEntry } from "../../src/format/pasid-entry.js";
import { decodeSmContextEntry } from "../../src/format/sm-context-entry.js";
import { DATA_GPA, IOVA, mapped, vtdBed, type VtdBed } from "../support.js";

const PAGE = 4096;
const USER_VA = 0x7f12_3456_7000;
const pasidDevice = [{ rid: 0x100, guestRid: 0x10, pasidBits: 20 }];

function bed(): VtdBed {
  const b = vtdBed("nested", undefined, {}, pasidDevice);
  mapped(b, 0x10, IOVA, DATA_GPA, PAGE);
  return b;
}

/** Walks the process's CPU table to the 64-bit leaf of `va` (4 KiB pages). */
function cpuLeaf(b: VtdBed, p: GuestProcess, va: number): Uint32Array {
  const mem = b.bed.vms[0]!.vm.memory;
  let table = p.root;
  for (let level = 4; level >= 1; level--) {
    const e = mem.readWords(table + (Math.floor(va / 2 ** (12 + 9 * (level - 1))) % 512) * 8, new Uint32Array(2));
    if (level === 1) return e;
    expect(e[0]! & 0xfff).toBe(0x27);
    table = (e[0]! & ~0xfff) >>> 0;
  }
  throw new Error("unreachable");
}

function pasidEntry(b: VtdBed, rid: number, pasid: number) {
  const mem = b.bed.vms[0]!.vm.memory;
  const ctp = (mem.read32(b.device.translator.rootTable + (rid >>> 8) * 16) & ~0xfff) >>> 0;
  const ctx = decodeSmContextEntry(mem.readWords(ctp + (rid & 0x7f) * 32, new Uint32Array(8)));
  const dir = mem.readWords(Number(ctx.PASIDDIRPTR) + 8 * (pasid >>> 6), new Uint32Array(2));
  return decodePasidEntry(mem.readWords(((dir[0]! & ~0xfff) >>> 0) + 64 * (pasid & 63), new Uint32Array(16)));
}

describe("VT-d shared virtual addressing: the guest's process", () => {
  it("builds an x86-64 4-level CPU page table: user leaves P | R/W | U/S | A | D with XD, tables P | R/W | U/S | A, a PCID each", () => {
    const b = bed();
    const p = unwrap(b.driver.createProcess());
    const q = unwrap(b.driver.createProcess());
    expect([p.asid, q.asid]).toEqual([1, 2]);
    unwrap(p.map(USER_VA, DATA_GPA, PAGE, Perm.ReadWrite));
    unwrap(p.map(USER_VA + PAGE, DATA_GPA + PAGE, PAGE, Perm.Read));
    const rw = cpuLeaf(b, p, USER_VA);
    // A and D preset (as Linux's generic x86_64 page-table format writes leaves): the IOMMU need not set them.
    expect(rw[0]! & 0xfff).toBe(X86PagingBit.P | X86PagingBit.RW | X86PagingBit.US | X86PagingBit.A | X86PagingBit.D);
    expect([(rw[0]! & ~0xfff) >>> 0, rw[1]! >>> 31]).toEqual([DATA_GPA, 1]);
    expect(cpuLeaf(b, p, USER_VA + PAGE)[0]! & 0xfff).toBe(X86PagingBit.P | X86PagingBit.US | X86PagingBit.A);
  });

  it("binds it as intel_svm_set_dev_pasid does: PGTT first-level, FLPTPTR the process's CR3, DID FLPT_DEFAULT_DID (1), NXE, no SRE or WPE", () => {
    const b = bed();
    const p = unwrap(b.driver.createProcess());
    unwrap(b.driver.bindProcess(0x10, 5, p));
    expect(pasidEntry(b, 0x10, 5)).toMatchObject({ P: 1, PGTT: 1, DID: 1, FLPTPTR: BigInt(p.root), FLPM: 0, NXE: 1, SRE: 0, WPE: 0, EAFE: 0 });
    unwrap(b.driver.unbindProcess(0x10, 5));
    expect(pasidEntry(b, 0x10, 5).P).toBe(0);
    expect(b.driver.unbindProcess(0x10, 5)).toMatchObject({ ok: false, error: { errno: "ENOENT" } });
  });

  it("invalidates a process range as the MMU notifier does: P_IOTLB_INV page-selective in each bound PASID, DID 1, the range rounded to one power of two", () => {
    const b = bed();
    const p = unwrap(b.driver.createProcess());
    unwrap(p.map(USER_VA, DATA_GPA, 8 * PAGE, Perm.ReadWrite));
    unwrap(b.driver.bindProcess(0x10, 5, p));
    unwrap(b.driver.bindProcess(0x10, 6, p));
    const seen: Record<string, unknown>[] = [];
    const execute = b.device.execute.bind(b.device);
    vi.spyOn(b.device, "execute").mockImplementation((type, raw) => {
      if (invDescName(type) === "P_IOTLB_INV") seen.push(decodeInvDesc(raw).fields);
      return execute(type, raw);
    });
    // Three pages from USER_VA + 2 pages (…569000): rounded to 4 pages (AM 2), aligned down to …568000, one
    // descriptor per PASID.
    unwrap(b.driver.invalidateProcess(p, USER_VA + 2 * PAGE, 3 * PAGE));
    expect(seen).toEqual([5, 6].map((pasid) => ({ G: 3, DID: 1, PASID: pasid, AM: 2, IH: 0, ADDR: BigInt(USER_VA + PAGE) })));
    // A range wider than 2^MAMV pages is everything in the PASID.
    seen.length = 0;
    unwrap(b.driver.invalidateProcess(p, 0, 2 ** 40));
    expect(seen).toEqual([5, 6].map((pasid) => ({ G: 2, DID: 1, PASID: pasid, AM: 0, IH: 0, ADDR: 0n })));
  });

  it("keeps a stale translation until the OS invalidates it (the IOTLB is real), then faults the unmapped page only", () => {
    const b = bed();
    const d = b.bed.vms[0]!.devices[0]!.device;
    const p = unwrap(b.driver.createProcess());
    unwrap(p.map(USER_VA, DATA_GPA, 2 * PAGE, Perm.ReadWrite));
    unwrap(b.driver.bindProcess(0x10, 5, p));
    expect(d.read(USER_VA + PAGE, 4, 5).ok).toBe(true);
    unwrap(p.unmap(USER_VA + PAGE, PAGE));
    expect(d.read(USER_VA + PAGE, 4, 5).ok).toBe(true);
    unwrap(b.driver.invalidateProcess(p, USER_VA + PAGE, PAGE));
    expect(d.read(USER_VA + PAGE, 4, 5).ok).toBe(false);
    expect(d.read(USER_VA, 4, 5).ok).toBe(true);
    b.bed.poll();
    expect(b.driver.readEvents().filter((e) => e.kind === "dma-fault").map((e) => [e.code, e.pasid, e.address])).toEqual([[0x71, 5, USER_VA + PAGE]]);
  });
});
