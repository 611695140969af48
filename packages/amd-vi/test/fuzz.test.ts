import { describe, expect, it } from "vitest";
import fc from "fast-check";
import { GuestMemory, HostMemory, newWalkResult, NO_PASID, Perm, unwrap } from "@viommu/core";
import { commandProblem } from "../src/format/command.js";
import { encodeHwptAmdGuest, IOMMU_HWPT_DATA_AMD_GUEST } from "../src/format/iommufd-uapi.js";
import { StatusBit } from "../src/format/status-register.js";
import { GuestDteWalker, newDteWalkOutcome } from "../src/vmm/guest-dte-walker.js";
import type { AmdViDevice } from "../src/vmm/amd-vi-device.js";
import { Ctl, RawGuest } from "./raw-guest.js";
import { amdBed, DATA_GPA, fuzzParams, IOVA, mapOne, oneVm } from "./support.js";

const u32 = fc.integer({ min: 0, max: 0xffff_ffff });
/** A 128-bit command, its opcode drawn from every value (valid and not), operands random. */
const command = fc.tuple(u32, fc.integer({ min: 0, max: 15 }), u32, u32, u32).map(([d0, op, d1, d2, d3]) => Uint32Array.of(d0, ((op << 28) | (d1 & 0x0fff_ffff)) >>> 0, d2, d3));

for (const path of ["trapped", "hw-vqueue"] as const) {
  describe(`fuzzing the command buffer (${path})`, () => {
    it("random commands never throw, never touch memory outside the VM, and a bad one halts the buffer with an error event", () => {
      const bed = amdBed({ vms: [{ devices: [{ rid: 0x100, guestRid: 0x10 }] }], noInit: true, eventInterrupts: path === "trapped" ? "vmm" : "direct" });
      const v = bed.vms[0]!;
      const device = v.iommus[0] as AmdViDevice;
      const host = bed.platform.host.memory;
      fc.assert(
        fc.property(fc.array(command, { minLength: 1, maxLength: 24 }), fc.array(u32, { maxLength: 16 }), (commands, dteWords) => {
          const g = new RawGuest(v, device.mmioBase).setUp({ cmdCode: 8, evtCode: 8 });
          g.v.vm.memory.writeWords(g.devtab + 0x10 * 32, Uint32Array.from({ length: 8 }, (_, i) => dteWords[i] ?? 0));
          g.submit(...commands);
          const bad = commands.some((c) => commandProblem(c) !== undefined);
          const events = g.events().map((e) => e.name);
          if (bad) {
            expect(g.status() & StatusBit.CmdBufRun).toBe(0);
            expect(events.some((e) => e === "ILLEGAL_COMMAND_ERROR" || e === "COMMAND_HARDWARE_ERROR")).toBe(true);
          }
          expect(host.violations).toEqual([]);
        }),
        fuzzParams(60),
      );
    });
  });

  describe(`fuzzing the register file (${path})`, () => {
    it("random register writes never throw, and DMA and interrupts afterwards stay inside the VM", () => {
      const t = oneVm({ eventInterrupts: path === "trapped" ? "vmm" : "direct" });
      const domain = mapOne(t.v, 0x10, IOVA, DATA_GPA, 0x2000);
      const host = t.bed.platform.host.memory;
      const write = fc.record({ offset: fc.integer({ min: 0, max: 0x3ffc / 4 }).map((x) => x * 4), size: fc.constantFrom(4 as const, 8 as const), lo: u32, hi: u32 });
      fc.assert(
        fc.property(fc.array(write, { minLength: 1, maxLength: 20 }), (writes) => {
          for (const w of writes) {
            const offset = w.size === 8 ? w.offset & ~7 : w.offset;
            t.v.vm.mmioWrite(t.device.mmioBase + offset, w.size, (BigInt(w.hi) << 32n) | BigInt(w.lo));
            t.v.vm.mmioRead(t.device.mmioBase + offset, w.size);
          }
          const dev = t.v.devices[0]!.device;
          dev.write(IOVA, Uint8Array.of(1, 2, 3));
          dev.read(DATA_GPA, 16);
          dev.signalMsi({ address: 0xfee00000, data: writes[0]!.lo & 0x7ff });
          t.bed.poll();
          t.driver.readEvents();
          t.driver.flush(domain);
          expect(host.violations).toEqual([]);
        }),
        fuzzParams(60),
      );
    });
  });
}

describe("fuzzing DTE decoding and the walker", () => {
  it("random DTEs and table contents never throw in the guest-table walker, and every refusal names an event code", () => {
    const memory = new GuestMemory(new HostMemory(), 1, { sizeBytes: 2 ** 24 });
    const walker = new GuestDteWalker(memory);
    const out = newWalkResult();
    const outcome = newDteWalkOutcome();
    const table = { base: 0x1000, entries: 256 };
    fc.assert(
      fc.property(fc.array(u32, { minLength: 8, maxLength: 8 }), fc.array(fc.tuple(fc.integer({ min: 0, max: 63 }), u32, u32), { maxLength: 64 }), fc.integer({ min: 0, max: 2 ** 40 }), fc.option(fc.integer({ min: 0, max: 2 ** 20 - 1 })), (dte, entries, iova, pasid) => {
        memory.fill(0, 0x4_0000, 0);
        memory.writeWords(0x1000 + 0x10 * 32, Uint32Array.from(dte));
        // Table entries scattered over the first 256 KiB, pointing anywhere (often at each other).
        for (const [page, lo, hi] of entries) memory.write64Halves((page * 4096 + (lo & 0xff8)) % 0x4_0000, lo, hi & 0x800f_ffff);
        walker.translate(table, 0x10, pasid ?? undefined, iova, Perm.Read, out, outcome);
        if (!out.ok) expect([1, 2, 3, 4]).toContain(outcome.eventCode);
        else expect(out.output).toBeGreaterThanOrEqual(0);
      }),
      fuzzParams(400),
    );
  });

  it("random guest DTEs given to the host as nested domains are refused with an errno or translate without throwing or leaving the VM", () => {
    const t = oneVm({ eventInterrupts: "vmm" });
    const viommu = t.v.iommufd.list("VIOMMU")[0]!.id;
    const host = t.bed.platform.host.memory;
    const devId = t.v.devices[0]!.devId;
    fc.assert(
      fc.property(fc.array(u32, { minLength: 8, maxLength: 8 }), fc.integer({ min: 0, max: 2 ** 33 }), (words, iova) => {
        const dte = Uint32Array.from(words);
        const hwpt = t.v.iommufd.hwptAlloc({ flags: 0, devId, ptId: viommu, data: { type: IOMMU_HWPT_DATA_AMD_GUEST, bytes: encodeHwptAmdGuest(dte) } });
        if (!hwpt.ok) {
          expect(["EINVAL", "EOPNOTSUPP", "ENOSPC"]).toContain(hwpt.error.errno);
          return;
        }
        unwrap(t.v.iommufd.attach(devId, hwpt.value));
        const dev = t.v.devices[0]!.device;
        dev.read(iova, 8);
        dev.translate(iova, true, NO_PASID);
        dev.translate(iova, false, words[0]! & 0xfffff);
        unwrap(t.v.iommufd.detach(devId));
        unwrap(t.v.iommufd.destroy(hwpt.value));
        expect(host.violations).toEqual([]);
      }),
      fuzzParams(200),
    );
  });

  it("random DTE and IRT contents never throw in interrupt remapping", () => {
    const bed = amdBed({ vms: [{ devices: [{ rid: 0x100, guestRid: 0x10 }] }], noInit: true, eventInterrupts: "vmm" });
    const v = bed.vms[0]!;
    const device = v.iommus[0] as AmdViDevice;
    const g = new RawGuest(v, device.mmioBase).setUp({ control: Ctl.IommuEn | Ctl.CmdBufEn | Ctl.EventLogEn | Ctl.GAEn | Ctl.XTEn });
    fc.assert(
      fc.property(fc.array(u32, { minLength: 8, maxLength: 8 }), fc.array(u32, { minLength: 4, maxLength: 4 }), u32, u32, (dte, irte, address, data) => {
        const irt = g.devtab + 0x1000;
        dte[4] = ((dte[4]! & 0x3f) | irt) >>> 0;
        dte[5] = dte[5]! & 0xfff0_0000;
        g.dte(0x10, dte);
        v.vm.memory.writeWords(irt + (data & 0x7ff) * 16, Uint32Array.from(irte));
        const r = device.deliverMsi(0x10, { address, data });
        if (!r.ok) expect(r.fault.name).not.toBe("UNKNOWN");
      }),
      fuzzParams(300),
    );
  });
});
