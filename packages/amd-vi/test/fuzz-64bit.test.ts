import { describe, expect, it } from "vitest";
import fc from "fast-check";
import { GuestMemory, HostMemory, newWalkResult, NO_PASID, Perm } from "@viommu/core";
import { buildCompletionWait, buildInvalidateDevtabEntry, buildInvalidateIommuPages } from "../src/format/command.js";
import { EventCode, eventCodeOf } from "../src/format/event-log-entry.js";
import { MmioOffset } from "../src/format/mmio-register-map.js";
import { amdViWalkTool } from "../src/tools/walk-tool.js";
import type { AmdViDevice } from "../src/vmm/amd-vi-device.js";
import { Ctl, RawGuest } from "./raw-guest.js";
import { amdBed, fuzzParams } from "./support.js";

const u32 = fc.integer({ min: 0, max: 0xffff_ffff });
const u64 = fc.bigInt({ min: 0n, max: (1n << 64n) - 1n });

/** Addresses a hostile guest or device can name: in RAM, just past it, near 2^52 and 2^53, full 64-bit, not integers. */
const hostileAddress: fc.Arbitrary<number> = fc.oneof(
  fc.integer({ min: 0, max: 2 ** 26 }),
  fc.integer({ min: 0, max: 2 ** 53 - 1 }),
  fc.bigInt({ min: 1n << 53n, max: (1n << 64n) - 1n }).map((b) => Number(b)),
  fc.constantFrom(2 ** 52 - 0x1000, 2 ** 52, 2 ** 53 - 1, 2 ** 53, 2 ** 57, 2 ** 63, 2 ** 64 - 2048, 2 ** 64, 2 ** 70, 0.5, 4096.5, -1, -4096, Number.MAX_VALUE, Infinity, -Infinity, NaN),
);

/** DeviceIDs: the 16-bit ones, and numbers no request can carry. */
const hostileRid = fc.oneof(fc.integer({ min: 0, max: 0xffff }), fc.constantFrom(-1, -32, 0x1_0000, 0.5, 16.25, NaN, Infinity));

/** A page-table or structure pointer field: 40 bits of page frame (the DTE's [51:12]), often past the VM's RAM. */
const frame = fc.oneof(fc.integer({ min: 0, max: 0x3fff }), fc.integer({ min: 0, max: 2 ** 40 - 1 }), fc.constant(2 ** 40 - 1));

/** A DTE word set with every Mode, GV/GIoV, GLX and root pointers anywhere in the 52-bit space. */
const dte = fc.record({ mode: fc.integer({ min: 0, max: 7 }), root: frame, gv: fc.boolean(), giov: fc.boolean(), glx: fc.integer({ min: 0, max: 3 }), gcr3: frame, ir: fc.boolean(), iw: fc.boolean(), tv: fc.boolean(), noise: fc.array(u32, { minLength: 8, maxLength: 8 }), raw: fc.boolean() }).map((d) => {
  if (d.raw) return Uint32Array.from(d.noise);
  const w = new Uint32Array(8);
  w[0] = (1 | (d.tv ? 2 : 0) | (d.mode << 9) | ((d.root % 0x10_0000) << 12)) >>> 0;
  w[1] = (Math.floor(d.root / 0x10_0000) | (d.giov ? 1 << 22 : 0) | (d.gv ? 1 << 23 : 0) | (d.glx << 24) | ((d.gcr3 & 7) << 26) | (d.ir ? 1 << 29 : 0) | (d.iw ? 1 << 30 : 0)) >>> 0;
  w[2] = (0x33 | (((d.gcr3 >>> 3) & 0xffff) << 16)) >>> 0;
  w[3] = (Math.floor(d.gcr3 / 2 ** 19) << 11) >>> 0;
  return w;
});

describe("64-bit inputs never throw and get the architecture's answer", () => {
  it("the guest-table walk (viommu walk): hostile IOVAs, PASIDs, DeviceIDs, DTEs and table pointers", () => {
    const memory = new GuestMemory(new HostMemory(), 1, { sizeBytes: 2 ** 24 });
    fc.assert(
      fc.property(dte, hostileAddress, fc.oneof(fc.constant(undefined), fc.integer({ min: -2, max: 2 ** 21 })), hostileRid, u64, u64, (words, iova, pasid, rid, base, exclusion) => {
        memory.writeWords(0x1000 + (rid >= 0 && rid < 256 ? rid : 0x10) * 32, words);
        // Every table the DTE may name starts with a present entry pointing anywhere in the 52-bit space.
        for (const page of [0, 1, 2, 3]) memory.write64Halves(page * 0x1000 + 0x2000, (0x603 | ((words[0]! >>> 12) << 12)) >>> 0, words[1]! & 0x800f_ffff);
        const tool = amdViWalkTool.prepare(memory, { DEV_TAB_BASE: 0x1000n, EXCL_BASE: exclusion, EXCL_LIMIT: base });
        expect(tool.ok).toBe(true);
        if (!tool.ok) return;
        const answer = tool.value({ rid, iova, pasid, write: (words[7]! & 1) === 1 });
        // A DeviceID no request can carry names no DTE: the table is not indexed with it.
        if (!(Number.isInteger(rid) && rid >= 0 && rid < 256 * 16)) expect(answer).toEqual({ ok: false, fault: { code: EventCode.ILLEGAL_DEV_TABLE_ENTRY, name: "ILLEGAL_DEV_TABLE_ENTRY" } });
        if (answer.ok) expect((Number.isSafeInteger(answer.output) && memory.contains(answer.output)) || (answer.output === iova && Number.isInteger(iova) && iova >= 0)).toBe(true);
        else expect([EventCode.ILLEGAL_DEV_TABLE_ENTRY, EventCode.IO_PAGE_FAULT, EventCode.DEV_TAB_HARDWARE_ERROR, EventCode.PAGE_TAB_HARDWARE_ERROR]).toContain(answer.fault.code);
      }),
      fuzzParams(2000),
    );
  });

  for (const [mode, eventInterrupts] of [["shadow", "vmm"], ["nested", "vmm"], ["nested", "direct"]] as const) {
    it(`the emulated IOMMU (${mode}, ${eventInterrupts === "vmm" ? "trapped command buffer" : "hardware vIOMMU"}): hostile register values and table pointers, then translations, interrupts, page requests and DMA at hostile addresses`, () => {
      const bed = amdBed({ vms: [{ devices: [{ rid: 0x100, guestRid: 0x10 }] }], noInit: true, mode, eventInterrupts });
      const v = bed.vms[0]!;
      const device = v.iommus[0] as AmdViDevice;
      const host = bed.platform.host.memory;
      const g = new RawGuest(v, device.mmioBase).setUp({ control: Ctl.IommuEn | Ctl.CmdBufEn | Ctl.EventLogEn | Ctl.GAEn });
      const registers = fc.array(fc.record({ offset: fc.constantFrom(MmioOffset.DeviceTableBase, MmioOffset.CommandBufferBase, MmioOffset.EventLogBase, MmioOffset.PprLogBase, MmioOffset.ExclusionBase, MmioOffset.ExclusionLimit, MmioOffset.CommandBufferHead, MmioOffset.CommandBufferTail, MmioOffset.EventLogHead, MmioOffset.EventLogTail), value: u64 }), { maxLength: 3 });
      fc.assert(
        fc.property(registers, dte, hostileAddress, hostileAddress, fc.integer({ min: -1, max: 2 ** 20 }), hostileRid, (writes, words, iova, store, pasid, rid) => {
          g.setUp({ control: Ctl.IommuEn | Ctl.CmdBufEn | Ctl.EventLogEn | Ctl.GAEn });
          g.dte(0x10, Array.from(words));
          for (const w of writes) g.write(w.offset, w.value);
          // Commands naming hostile addresses: a completion store and an invalidation of a 64-bit range.
          const sem = Number.isSafeInteger(store) && store >= 0 && store < 2 ** 52 ? store - (store % 8) : 2 ** 40;
          g.submit(buildInvalidateDevtabEntry(0x10), buildInvalidateIommuPages({ domainId: 0x33, address: BigInt(Math.max(0, Number.isSafeInteger(iova) ? iova : 0)) & ~0xfffn, size: 0x7fff_ffff_ffff_ffffn }), buildCompletionWait(sem, 1n));
          const out = newWalkResult();
          device.translateEmulated(rid, pasid < 0 ? NO_PASID : pasid, iova, (words[7]! & 1) === 1, out);
          if (out.ok) expect(v.vm.memory.contains(out.output)).toBe(true);
          device.deliverMsi(rid, { address: Number.isSafeInteger(iova) && iova >= 0 ? iova % 2 ** 32 : 0xfee0_0000, data: store >>> 0 });
          device.pageRequest(rid, pasid < 0 ? NO_PASID : pasid, iova, true, 1);
          // A device issues integer addresses (core's DmaDevice refuses anything else as a caller's bug).
          if (Number.isInteger(iova) && iova >= 0) {
            v.devices[0]!.device.read(iova, 8);
            v.devices[0]!.device.translate(iova, true, NO_PASID);
          }
          device.poll();
          g.events();
          expect(host.violations).toEqual([]);
        }),
        fuzzParams(300),
      );
    });
  }

  it("a COMPLETION_WAIT storing above guest RAM or near 2^52 is COMMAND_HARDWARE_ERROR; a device table above RAM is DEV_TAB_HARDWARE_ERROR", () => {
    const bed = amdBed({ vms: [{ devices: [{ rid: 0x100, guestRid: 0x10 }] }], noInit: true, mode: "shadow", eventInterrupts: "vmm" });
    const v = bed.vms[0]!;
    const device = v.iommus[0] as AmdViDevice;
    const g = new RawGuest(v, device.mmioBase).setUp();
    g.submit(buildCompletionWait(2 ** 52 - 8, 1n));
    expect(g.events().map((e) => e.code)).toEqual([EventCode.COMMAND_HARDWARE_ERROR]);
    g.write(MmioOffset.DeviceTableBase, (1n << 52n) - 0x1000n);
    const out = newWalkResult();
    device.translateEmulated(0x10, NO_PASID, 2 ** 60, false, out);
    expect(out.ok).toBe(false);
    expect(g.events().map((e) => e.code)).toEqual([EventCode.DEV_TAB_HARDWARE_ERROR]);
    expect(eventCodeOf(Uint32Array.of(0, 0x3000_0000, 0, 0))).toBe(EventCode.DEV_TAB_HARDWARE_ERROR);
    // A DeviceID no request can carry is beyond the device table for interrupts too.
    g.write(MmioOffset.DeviceTableBase, BigInt(g.devtab) | 1n);
    for (const rid of [-1, 0x1_0000, 0.5, NaN]) expect(device.deliverMsi(rid, { address: 0xfee0_0000, data: 0 })).toMatchObject({ ok: false, fault: { code: EventCode.ILLEGAL_DEV_TABLE_ENTRY } });
    // A page request no PCIe PRI message can carry is not logged.
    expect(device.pageRequest(0x10, NO_PASID, 2 ** 64, false, 1)).toBe(false);
    expect(device.pageRequest(0x10, 2 ** 20, 0x1000, false, 1)).toBe(false);
  });

  for (const [mode, eventInterrupts] of [["shadow", "vmm"], ["nested", "direct"]] as const) {
    it(`COMMAND_HARDWARE_ERROR for a COMPLETION_WAIT store names the store address it attempted, not the command (pub. 48882 §2.5.7; ${eventInterrupts === "vmm" ? "trapped command buffer" : "hardware vIOMMU"})`, () => {
      const bed = amdBed({ vms: [{ devices: [{ rid: 0x100, guestRid: 0x10 }] }], noInit: true, mode, eventInterrupts });
      const v = bed.vms[0]!;
      const device = v.iommus[0] as AmdViDevice;
      const g = new RawGuest(v, device.mmioBase).setUp();
      // 8-byte aligned, not 16: bit 3 of the address must survive (found by difftest against QEMU, seed 2000).
      const store = 0x400_0200_4008;
      g.submit(buildCompletionWait(store, 1n));
      const events = g.events();
      expect(events.map((e) => e.code)).toEqual([EventCode.COMMAND_HARDWARE_ERROR]);
      expect(events[0]!.fields["Address"]).toBe(BigInt(store));
    });
  }

  it("6-level tables translate full 64-bit IOVAs as the hardware indexes them; IOVAs a number cannot hold exactly fault", () => {
    const memory = new GuestMemory(new HostMemory(), 1, { sizeBytes: 2 ** 24 });
    // Mode 6: level 6 indexes IOVA[63:57]. A chain of tables down to a 4 KiB page at 0x9000 for IOVA 2^62.
    const top = 0x10_0000;
    const iova = 2 ** 62;
    const idx = (level: number): number => Math.floor(iova / 2 ** (12 + 9 * (level - 1))) % (level === 6 ? 128 : 512);
    let table = top;
    for (let level = 6; level > 1; level--) {
      const next = table + 0x1000;
      memory.write64Halves(table + idx(level) * 8, (next | ((level - 1) << 9) | 1) >>> 0, 0x6000_0000);
      table = next;
    }
    memory.write64Halves(table + idx(1) * 8, 0x9001, 0x6000_0000);
    memory.writeWords(0x1000 + 0x10 * 32, Uint32Array.of((3 | (6 << 9) | top) >>> 0, 0x6000_0000, 1, 0, 0, 0, 0, 0));
    const walk = amdViWalkTool.prepare(memory, { DEV_TAB_BASE: 0x1000n });
    if (!walk.ok) throw new Error(walk.error.message);
    // 2^62 + 0x400 is a double (its spacing there is 1 KiB): the walk sees exactly that 64-bit address.
    expect(walk.value({ rid: 0x10, iova: iova + 0x400, write: true })).toMatchObject({ ok: true, output: 0x9400 });
    expect(walk.value({ rid: 0x10, iova: 2 ** 63 + 2 ** 62, write: false })).toMatchObject({ ok: false, fault: { code: EventCode.IO_PAGE_FAULT } });
    expect(walk.value({ rid: 0x10, iova: 2 ** 64, write: false })).toMatchObject({ ok: false, fault: { code: EventCode.IO_PAGE_FAULT } });
    expect(walk.value({ rid: 0x10, iova: 1.5, write: false })).toMatchObject({ ok: false, fault: { code: EventCode.IO_PAGE_FAULT } });
    void Perm;
  });
});
