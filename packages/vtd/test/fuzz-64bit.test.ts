import fc from "fast-check";
import { describe, expect, it } from "vitest";
import { newWalkResult, NO_PASID, unwrap, type GuestEvent } from "@viommu/core";
import { faultReason } from "../src/format/fault-reasons.js";
import { encodeInvDesc } from "../src/format/inv-desc.js";
import { checkProperty, DATA_GPA, IOVA, mapped, vtdBed, type VtdBed } from "./support.js";

const U64_MAX = (1n << 64n) - 1n;
const MODES = [
  ["nested", "scalable"],
  ["shadow", "legacy"],
  ["shadow", "scalable"],
] as const;

/** Integer addresses of every size a device can put on the wire, and the doubles beyond (≥ 2^53, ≥ 2^64). */
const dmaAddress = fc.oneof(
  fc.integer({ min: 0, max: 2 ** 32 }),
  fc.integer({ min: 0, max: 2 ** 48 + 2 ** 20 }),
  fc.integer({ min: 2 ** 48, max: Number.MAX_SAFE_INTEGER }),
  fc.bigInt({ min: 1n << 53n, max: 1n << 66n }).map(Number),
  fc.constantFrom(IOVA, IOVA + 0xfff, 2 ** 47 - 4096, 2 ** 48, 2 ** 52, 2 ** 53, 2 ** 57, 2 ** 64, 2 ** 64 + 2 ** 13),
);

/** Anything a VMM's own emulated device might hand over: any double, NaN and the infinities included. */
const anyNumber = fc.oneof(dmaAddress, fc.double(), fc.constantFrom(NaN, Infinity, -Infinity, -0, -1, 0.5, IOVA + 0.5, 2 ** 53 + 0.5));

/** 64-bit register values biased to the high bits (above HAW, above 2^52, above 2^53). */
const u64 = fc.oneof(
  fc.bigInt({ min: 0n, max: U64_MAX }),
  fc.bigInt({ min: 0n, max: (1n << 20n) - 1n }).map((low) => (U64_MAX << 20n) | low),
  fc.constantFrom(U64_MAX, 1n << 63n, 1n << 53n, 1n << 52n, 1n << 48n, (1n << 53n) | 0x1000n, 0xffff_ffff_ffff_f000n, 0x000f_ffff_ffff_f007n),
);

/** Every event the guest read carries a reason VT-d defines (a DMA or interrupt fault) or is a queue error / page request. */
function expectArchitectural(events: GuestEvent[]): void {
  for (const e of events) {
    if (e.kind === "dma-fault" || e.kind === "interrupt-fault") expect(faultReason(e.code), `fault reason 0x${e.code.toString(16)}`).toBeDefined();
    else expect(["command-error", "page-request"]).toContain(e.kind);
    if (e.address !== undefined) expect(Number.isSafeInteger(e.address) || e.address < 2 ** 64).toBe(true);
  }
}

function finish(b: VtdBed): void {
  b.bed.poll();
  expectArchitectural(b.driver.readEvents());
  expect(b.bed.platform.host.memory.violations).toEqual([]);
  b.bed.dispose();
}

describe("fuzzing VT-d with 64-bit inputs", { timeout: 120_000 }, () => {
  for (const [mode, variant] of MODES) {
    it(`answers DMA at any 64-bit address with a translation or the architecture's fault (${mode}, ${variant})`, () => {
      checkProperty(
        fc.property(fc.array(fc.tuple(dmaAddress, fc.boolean(), fc.integer({ min: 1, max: 0x3000 })), { minLength: 1, maxLength: 12 }), (requests) => {
          const b = vtdBed(mode, variant);
          mapped(b, 0x10, IOVA, DATA_GPA, 0x4000);
          const v = b.bed.vms[0]!;
          const dev = v.devices[0]!.device;
          for (const [iova, write, length] of requests) {
            const r = write ? dev.write(iova, new Uint8Array(length)) : dev.read(iova, length);
            // Only the mapped window translates; nothing lands outside the VM's own pages.
            if (r.ok) expect(iova >= IOVA && iova + length <= IOVA + 0x4000).toBe(true);
            const t = dev.translate(iova, write);
            if (t.ok) expect(Number.isSafeInteger(t.output)).toBe(true);
          }
          b.bed.poll();
          const faults = b.driver.readEvents().filter((e) => e.kind === "dma-fault");
          expectArchitectural(faults);
          // FI is the page of the 64-bit address the device sent: bits [63:12], whatever the JS number's size.
          for (const f of faults) expect(f.address! % 4096).toBe(0);
          finish(b);
        }),
        { numRuns: 40 },
      );
    });

    it(`never throws for any number handed to translateEmulated, requestPage or deliverMsi (${mode}, ${variant})`, () => {
      checkProperty(
        fc.property(
          fc.array(fc.record({ rid: fc.oneof(fc.integer({ min: 0, max: 0xffff }), anyNumber), pasid: fc.oneof(fc.constant(NO_PASID), fc.integer({ min: 0, max: 0xfffff }), anyNumber), iova: anyNumber, write: fc.boolean() }), {
            minLength: 1,
            maxLength: 20,
          }),
          (requests) => {
            const b = vtdBed(mode, variant);
            mapped(b, 0x10, IOVA, DATA_GPA, 0x2000);
            const memory = b.bed.vms[0]!.vm.memory;
            const out = newWalkResult();
            for (const r of requests) {
              b.device.translateEmulated(r.rid, r.pasid, r.iova, r.write, out);
              if (out.ok) expect(Number.isSafeInteger(out.output) && memory.contains(out.output)).toBe(true);
              const queued = b.device.requestPage(r.rid, r.pasid, r.iova, r.write, 1, true);
              expect(typeof queued).toBe("boolean");
              const msi = b.device.deliverMsi(r.rid, { address: r.iova, data: Number.isFinite(r.pasid) ? r.pasid : 0 });
              expect(typeof msi.ok).toBe("boolean");
            }
            finish(b);
          },
        ),
        { numRuns: 40 },
      );
    });

    it(`gives RTADDR, IQA, IRTA and PQA values with high bits set the architecture's answer (${mode}, ${variant})`, () => {
      const register = fc.constantFrom(0x20, 0x90, 0xb8, 0xd0, 0x88, 0xc0, 0xc8, 0xf0);
      // GCMD commands: SRTP, SIRTP, QIE on/off, IRE, TE, as a driver reprogramming the unit issues them.
      const command = fc.constantFrom(1 << 30, 1 << 24, 1 << 26, 0, 1 << 25, 1 << 31, (1 << 31) | (1 << 26) | (1 << 25));
      checkProperty(
        fc.property(fc.array(fc.oneof(fc.tuple(register, u64), fc.tuple(fc.constant(0x18), command.map(BigInt))), { minLength: 1, maxLength: 16 }), (writes) => {
          const b = vtdBed(mode, variant);
          mapped(b, 0x10, IOVA, DATA_GPA, 0x2000);
          const v = b.bed.vms[0]!;
          const msi = unwrap(b.driver.mapInterrupt(0x10, 0x41, 1));
          const base = b.device.mmioBase;
          const out = newWalkResult();
          for (const [offset, value] of writes) {
            if (offset === 0x18) v.vm.mmioWrite(base + 0x18, 4, value);
            else v.vm.mmioWrite(base + offset, 8, value);
            v.devices[0]!.device.read(IOVA, 8);
            v.devices[0]!.device.signalMsi(msi);
            b.device.translateEmulated(0x10, NO_PASID, IOVA, true, out);
            b.device.requestPage(0x10, NO_PASID, IOVA, false, 2, true);
            for (const q of b.device.guestQueues()) {
              const at = q.base();
              expect(at === undefined || Number.isSafeInteger(at)).toBe(true);
              expect(Number.isSafeInteger(q.entries())).toBe(true);
            }
          }
          for (const offset of [0x1c, 0x20, 0x34, 0x80, 0x88, 0x90, 0xb0, 0xb8, 0xc0, 0xc8, 0xd0]) v.vm.mmioRead(base + offset, offset % 8 === 0 ? 8 : 4);
          finish(b);
        }),
        { numRuns: 60 },
      );
    });

    it(`gives root, context and PASID entries pointing beyond guest RAM or above 2^53 a fault, not an exception (${mode}, ${variant})`, () => {
      checkProperty(
        fc.property(fc.array(fc.tuple(fc.integer({ min: 0, max: 7 }), u64), { minLength: 1, maxLength: 6 }), (pokes) => {
          const b = vtdBed(mode, variant);
          mapped(b, 0x10, IOVA, DATA_GPA, 0x2000);
          const v = b.bed.vms[0]!;
          const mem = v.vm.memory;
          // The entries the driver wrote on the way to 0x10: root, context, and (scalable) PASID directory and entry.
          const root = b.device.translator.rootTable;
          const ctp = (mem.read32(root) & ~0xfff) >>> 0;
          const scalable = variant === "scalable";
          const context = ctp + (scalable ? (0x10 & 0x7f) * 32 : 0x10 * 16);
          const dir = (mem.read32(context) & ~0xfff) >>> 0;
          const pasidEntry = dir !== 0 && scalable ? (mem.read32(dir) & ~0xfff) >>> 0 : 0;
          const sites = [root, context, context + 8, dir, pasidEntry, pasidEntry + 8, pasidEntry + 16, pasidEntry + 24].map((a) => a >>> 0);
          for (const [site, value] of pokes) {
            const at = sites[site]!;
            if (at === 0 || !mem.contains(at, 8)) continue;
            // Keep P (and the low flag bits) so the walk goes on to the pointer.
            const old = mem.read64(at);
            mem.write64(at, (value & ~0xfffn) | (old & 0xfffn));
          }
          // The guest announces its changes: global context-, PASID- and IOTLB invalidations through the queue view.
          const iq = b.device.guestQueues().find((q) => q.name === "IQ")!;
          const tail = iq.producer.decode(v.vm.mmioRead(iq.producer.address, 8)).index;
          const descs = [encodeInvDesc("CC_INV", { G: 1 }), ...(scalable ? [encodeInvDesc("PC_INV", { G: 3 }, 256)] : []), encodeInvDesc("IOTLB_INV", { G: 1 })];
          descs.forEach((d, i) => {
            const slot = new Uint32Array(iq.entryBytes / 4);
            slot.set(d.subarray(0, slot.length));
            mem.writeWords(iq.base()! + ((tail + i) % iq.entries()) * iq.entryBytes, slot);
          });
          v.vm.mmioWrite(iq.producer.address, 8, iq.producer.encode({ index: (tail + descs.length) % iq.entries(), wrap: false }, 0n));
          const out = newWalkResult();
          for (const iova of [IOVA, IOVA + 0x1000, 2 ** 47, 2 ** 53]) {
            v.devices[0]!.device.read(iova, 4);
            b.device.translateEmulated(0x10, NO_PASID, iova, false, out);
            if (out.ok) expect(mem.contains(out.output)).toBe(true);
          }
          finish(b);
        }),
        { numRuns: 60 },
      );
    });
  }
});

describe("VT-d's answers to addresses beyond 2^53", () => {
  it("records the width fault with FI = bits [63:12] of the address the device sent", () => {
    const b = vtdBed("shadow", "legacy");
    mapped(b, 0x10, IOVA, DATA_GPA, 0x1000);
    const dev = b.bed.vms[0]!.devices[0]!.device;
    for (const iova of [2 ** 53, 2 ** 60 + 2 ** 12, 2 ** 64 + 0x3000]) expect(dev.read(iova, 4).ok).toBe(false);
    b.bed.poll();
    // 2^64 + 0x3000 keeps its low 64 bits; the second-level input is 48 bits, so each is 0x4 (beyond MGAW).
    expect(b.driver.readEvents().map((e) => [e.code, e.address])).toEqual([
      [0x4, 2 ** 53],
      [0x4, 2 ** 60 + 2 ** 12],
      [0x4, 0x3000],
    ]);
  });

  it("answers a translateEmulated value that is no address with the context's width fault (FI 0), and a PASID as the context entry says", () => {
    const l = vtdBed("shadow", "legacy");
    mapped(l, 0x10, IOVA, DATA_GPA, 0x1000);
    const out = newWalkResult();
    for (const iova of [NaN, -1, IOVA + 0.5, Infinity]) {
      l.device.translateEmulated(0x10, NO_PASID, iova, false, out);
      expect(out.ok).toBe(false);
    }
    expect(l.driver.readEvents().map((e) => [e.code, e.address])).toEqual([
      [0x4, 0],
      [0x4, 0],
      [0x4, 0],
      [0x4, 0],
    ]);
    const s = vtdBed("nested", "scalable");
    mapped(s, 0x10, IOVA, DATA_GPA, 0x1000);
    s.device.translateEmulated(0x10, NO_PASID, NaN, false, out);
    s.device.translateEmulated(0x10, 2 ** 20, IOVA, false, out);
    s.device.translateEmulated(0x10, 2.5, IOVA, false, out);
    // First-level: an address beyond 48 bits is non-canonical (0x80); the driver's context entries leave
    // PASIDE clear, so any request with a PASID is 0x45 before its value is looked at.
    expect(s.driver.readEvents().map((e) => e.code)).toEqual([0x80, 0x45, 0x45]);
  });
});
