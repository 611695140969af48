import fc from "fast-check";
import { describe, expect, it } from "vitest";
import { GuestMemory, HostMemory, newWalkResult, NO_PASID, toWords64 } from "@viommu/core";
import { faultReason } from "../src/format/fault-reasons.js";
import { emulatedRegisters } from "../src/vmm/emulated-capabilities.js";
import { GuestTranslation, GuestTranslator, translatorConfig } from "../src/vmm/guest-translator.js";
import { checkProperty, DATA_GPA, IOVA, mapped, vtdBed } from "./support.js";

const u32 = fc.integer({ min: 0, max: 0xffff_ffff });

/** Descriptor words, biased towards the defined types with plausible granularities so they get past the type check. */
const descriptor = fc.tuple(fc.integer({ min: 0, max: 12 }), fc.array(u32, { minLength: 8, maxLength: 8 }), fc.boolean()).map(([type, words, clean]) => {
  const raw = Uint32Array.from(words);
  raw[0] = ((raw[0]! & ~0xe0f) | (type & 0xf)) >>> 0;
  if (clean) {
    // Keep only the commonly defined fields, so execution (not just rejection) is fuzzed too.
    raw[0] = (raw[0]! & 0xffff_00ff) >>> 0;
    raw[1] = raw[1]! & 0x000f_ffff;
    raw[2] = raw[2]! & 0xffff_f03f;
    for (let i = 4; i < 8; i++) raw[i] = 0;
  }
  return raw;
});

describe("fuzzing the VT-d invalidation queue with random descriptors", { timeout: 120_000 }, () => {
  for (const [mode, variant] of [
    ["nested", "scalable"],
    ["shadow", "legacy"],
  ] as const) {
    it(`never throws, never reaches outside the VM, and either drains the queue or stops with an error (${mode}, ${variant})`, () => {
      checkProperty(
        fc.property(fc.array(descriptor, { minLength: 1, maxLength: 12 }), (descs) => {
          const b = vtdBed(mode, variant);
          mapped(b, 0x10, IOVA, DATA_GPA, 0x2000);
          const vm = b.bed.vms[0]!.vm;
          const regs = b.device.registers;
          const iqa = Number(regs.read(0x90, 8));
          const size = iqa & 0x800 ? 32 : 16;
          const base = iqa - (iqa % 4096);
          const bytes = 4096 * 2 ** (iqa & 7);
          let tail = Number(regs.read(0x88, 8));
          for (const d of descs) {
            vm.memory.writeWords(base + tail, d.subarray(0, size / 4));
            tail = (tail + size) % bytes;
          }
          vm.mmioWrite(b.device.mmioBase + 0x88, 8, BigInt(tail));
          const fsts = Number(regs.read(0x34, 4));
          const stopped = (fsts & 0x50) !== 0;
          expect(stopped || Number(regs.read(0x80, 8)) === tail).toBe(true);
          b.bed.vms[0]!.devices[0]!.device.read(IOVA, 64);
          b.bed.poll();
          b.driver.readEvents();
          expect(b.bed.platform.host.memory.violations).toEqual([]);
          b.bed.dispose();
        }),
        { numRuns: 60 },
      );
    });
  }
});

describe("fuzzing the VT-d register file with random accesses", { timeout: 120_000 }, () => {
  it("never throws, keeps CAP and ECAP, and never lets DMA or interrupts escape the VM", () => {
    const access = fc.record({ offset: fc.integer({ min: 0, max: 0x3ff }).map((o) => o * 4), size: fc.constantFrom(4 as const, 8 as const), lo: u32, hi: u32, read: fc.boolean() });
    checkProperty(
      fc.property(fc.array(access, { minLength: 1, maxLength: 40 }), (accesses) => {
        const b = vtdBed("nested");
        mapped(b, 0x10, IOVA, DATA_GPA, 0x1000);
        const vm = b.bed.vms[0]!.vm;
        const dev = b.bed.vms[0]!.devices[0]!.device;
        for (const a of accesses) {
          const offset = a.size === 8 ? a.offset & ~7 : a.offset;
          if (a.read) vm.mmioRead(b.device.mmioBase + offset, a.size);
          else vm.mmioWrite(b.device.mmioBase + offset, a.size, (BigInt(a.hi) << 32n) | BigInt(a.lo));
          dev.read(IOVA + (a.lo & 0x3fff_f000), 8);
          dev.signalMsi({ address: 0xfee0_0000 | (a.hi & 0xfffff), data: a.lo & 0xffff });
        }
        b.bed.poll();
        b.driver.readEvents();
        expect(vm.mmioRead(b.device.mmioBase + 0x08, 8)).toBe(toWords64(emulatedRegisters("nested").cap)[0]);
        expect(vm.mmioRead(b.device.mmioBase + 0x10, 8)).toBe(toWords64(emulatedRegisters("nested").ecap)[0]);
        expect(b.bed.platform.host.memory.violations).toEqual([]);
        b.bed.dispose();
      }),
      { numRuns: 60 },
    );
  });
});

describe("fuzzing the VT-d page walk with random guest tables", { timeout: 120_000 }, () => {
  const MIB = 2 ** 20;
  const REGION = 0x10_0000;
  const PAGES = 16;

  /** Entries that mostly point back into the table region (so walks go deep), with random flag bits. */
  const entry = fc.tuple(u32, fc.integer({ min: 0, max: PAGES - 1 }), fc.integer({ min: 0, max: 9 })).map(([noise, page, kind]) => {
    if (kind === 0) return [noise, noise ^ 0x5a5a5a5a];
    return [((REGION + page * 4096) | (noise & 0xfff)) >>> 0, kind === 1 ? noise & 0xff : 0];
  });

  it("translates any table contents without throwing, and every fault carries a defined VT-d reason", () => {
    checkProperty(
      fc.property(
        fc.array(fc.tuple(fc.integer({ min: 0, max: PAGES * 512 - 1 }), entry), { minLength: 1, maxLength: 400 }),
        fc.integer({ min: 0, max: 3 }),
        fc.array(fc.record({ sid: fc.integer({ min: 0, max: 0xffff }), pasid: fc.oneof(fc.constant(NO_PASID), fc.integer({ min: 0, max: 0xfffff }), fc.constantFrom(2 ** 20, 2 ** 53, 1.5, -2)), iova: fc.oneof(fc.nat(2 ** 48 - 1), fc.constantFrom(2 ** 53, 2 ** 64)), write: fc.boolean() }), {
          minLength: 1,
          maxLength: 30,
        }),
        (writes, ttm, requests) => {
          const host = new HostMemory();
          const memory = new GuestMemory(host, 1, { sizeBytes: 64 * MIB });
          for (const [slot, [lo, hi]] of writes) memory.write64Halves(REGION + slot * 8, lo!, hi!);
          const regs = emulatedRegisters("nested");
          const t = new GuestTranslator(memory, translatorConfig(regs.cap, regs.ecap, 48));
          t.setRootTable(BigInt(REGION) | (BigInt(ttm) << 10n));
          const out = new GuestTranslation();
          for (const r of requests) {
            t.translate(r.sid, r.pasid, r.iova, r.write, out);
            if (out.ok) expect(Number.isSafeInteger(out.walk.output)).toBe(true);
            else expect(faultReason(out.reason), `reason 0x${out.reason.toString(16)}`).toBeDefined();
          }
          expect(host.violations).toEqual([]);
        },
      ),
      { numRuns: 200 },
    );
  });

  it("survives an emulated device translating through a guest whose structures were overwritten with garbage", () => {
    checkProperty(
      fc.property(fc.array(fc.tuple(fc.integer({ min: 0, max: 32 * 256 - 1 }), fc.nat(511), u32, u32), { minLength: 1, maxLength: 60 }), (garbage) => {
        const b = vtdBed("shadow", "scalable");
        mapped(b, 0x10, IOVA, DATA_GPA, 0x2000);
        const vm = b.bed.vms[0]!.vm;
        const driverStart = vm.memory.end - 32 * MIB;
        const out = newWalkResult();
        for (const [page, slot, lo, hi] of garbage) {
          vm.memory.write64Halves(driverStart + page * 4096 + slot * 8, lo, hi);
          b.device.translateEmulated(0x10, NO_PASID, IOVA + (lo & 0x1fff), (hi & 1) === 1, out);
          b.bed.vms[0]!.devices[0]!.device.write(IOVA, Uint8Array.of(lo & 0xff));
        }
        b.bed.poll();
        b.driver.readEvents();
        expect(b.bed.platform.host.memory.violations).toEqual([]);
        b.bed.dispose();
      }),
      { numRuns: 40 },
    );
  });
});
