import { describe, expect, it } from "vitest";
import fc from "fast-check";
import { unwrap } from "@viommu/core";
import { cmdqAllocOffset, lvcmdqPage0, lvcmdqPage1, VcmdqCerror, VcmdqPage0Reg, VcmdqPage1Reg, vintfBase, VintfReg } from "../src/format/index.js";
import { DEFAULT_CMDQV_BASE } from "../src/vmm/tegra241-device.js";
import { device, guestCmdqv, hardware, IOVA, mapped, tegraBed } from "./support.js";

/** The seed comes from the environment (fast-check prints it with any counterexample). */
const SEED = Number(process.env.VIOMMU_SEED ?? 11);
const word = fc.integer({ min: 0, max: 0xffff_ffff });
// Each fuzz run builds a two-VM system: slow on a loaded machine, hence the explicit timeouts below.
/** Opcodes a guest would try: the allowed four, their neighbours, and anything at all. */
const opcode = fc.oneof(fc.constantFrom(0x11, 0x12, 0x40, 0x46, 0x10, 0x13, 0x03, 0x04, 0x05, 0x30, 0x41, 0x44), fc.integer({ min: 0, max: 0xff }));
const command = fc.tuple(opcode, word, word, word, word).map(([op, w0, w1, w2, w3]) => Uint32Array.of(((w0 & ~0xff) | op) >>> 0, w1, w2, w3));
const BASE = DEFAULT_CMDQV_BASE;
const TWO_VMS = { vms: [{ devices: [{ rid: 0x100, guestRid: 0x10 }] }, { devices: [{ rid: 0x200, guestRid: 0x10 }] }] };

describe("hostile guest input to the CMDQV", () => {
  it("random VCMDQ contents and doorbells: no exception, no escape, every stop a CERROR reported to that VM only", () => {
    fc.assert(
      fc.property(
        fc.array(fc.tuple(fc.array(command, { minLength: 1, maxLength: 12 }), fc.nat(1), fc.option(word, { nil: undefined })), { minLength: 1, maxLength: 6 }),
        (rounds) => {
          const bed = tegraBed(TWO_VMS);
          try {
            const [a, b] = [bed.vms[0]!, bed.vms[1]!];
            mapped(a);
            const domainB = mapped(b);
            expect(b.devices[0]!.device.read(IOVA, 4).ok).toBe(true);
            for (const [commands, lidx, prod] of rounds) {
              const page0 = BASE + lvcmdqPage0(0, lidx);
              const r = guestCmdqv(a).issueRaw(lidx, commands);
              if (prod !== undefined) a.vm.mmioWrite(page0 + VcmdqPage0Reg.PROD_INDX, 4, prod);
              const cons = Number(a.vm.mmioRead(page0 + VcmdqPage0Reg.CONS_INDX, 4));
              const stopped = (Number(a.vm.mmioRead(page0 + VcmdqPage0Reg.GERROR, 4)) ^ Number(a.vm.mmioRead(page0 + VcmdqPage0Reg.GERRORN, 4))) & 1;
              if (stopped) {
                expect([VcmdqCerror.CERROR_ILL, VcmdqCerror.CERROR_ABT]).toContain((cons >>> 24) & 0x7f);
              } else if (r.ok) expect(r.value).toBe(true);
              bed.poll();
              const errors = a.drivers[0]!.readEvents().filter((e) => e.kind === "command-error");
              if (stopped) expect(errors.length).toBeGreaterThan(0);
            }
            // Nothing of it reached VM B: no error, no interrupt, its translations and its own VCMDQ intact.
            expect(b.drivers[0]!.readEvents()).toEqual([]);
            expect(b.vm.interrupts.delivered.filter((i) => i.source === "tegra241-cmdqv")).toEqual([]);
            expect(b.devices[0]!.device.read(IOVA, 4).ok).toBe(true);
            const exits = b.vm.interventions;
            unwrap(b.drivers[0]!.unmap(domainB, IOVA, 0x1000));
            expect(b.vm.interventions).toBe(exits);
            expect(b.devices[0]!.device.read(IOVA, 4).ok).toBe(false);
            expect(hardware(bed).vintfs[2]!.hasError).toBe(false);
            expect(bed.platform.host.memory.violations).toEqual([]);
          } finally {
            bed.dispose();
          }
        },
      ),
      { numRuns: 40, seed: SEED },
    );
  }, 60_000);

  it("random register writes anywhere in the CMDQV aperture (trapped and direct pages) never throw or escape", () => {
    const offset = fc.oneof(
      fc.integer({ min: 0, max: 0x4fffc }).map((o) => o & ~3),
      fc.constantFrom(0x0, 0x1c, 0x200, 0x204, 0x1000, 0x1040, 0x10000, 0x10004, 0x10008, 0x10014, 0x20000, 0x20004, 0x30004, 0x30084, 0x40000, 0x40080),
    );
    fc.assert(
      fc.property(fc.array(fc.tuple(offset, fc.constantFrom(4 as const, 8 as const), fc.bigInt({ min: 0n, max: (1n << 64n) - 1n })), { maxLength: 40 }), (writes) => {
        const bed = tegraBed(TWO_VMS);
        try {
          const [a, b] = [bed.vms[0]!, bed.vms[1]!];
          const domainA = mapped(a);
          mapped(b);
          for (const [o, size, value] of writes) {
            a.vm.mmioWrite(BASE + (size === 8 ? o & ~7 : o), size, size === 8 ? value : value & 0xffff_ffffn);
            a.vm.mmioRead(BASE + o, 4);
          }
          bed.poll();
          a.drivers[0]!.readEvents();
          a.drivers[0]!.unmap(domainA, IOVA, 0x1000);
          a.devices[0]!.device.write(IOVA + 0x1000, Uint8Array.of(1, 2, 3));
          expect(b.devices[0]!.device.read(IOVA, 4).ok).toBe(true);
          expect(b.drivers[0]!.readEvents()).toEqual([]);
          expect(bed.platform.host.memory.violations).toEqual([]);
        } finally {
          bed.dispose();
        }
      }),
      { numRuns: 40, seed: SEED + 2 },
    );
  }, 60_000);

  it("hostile VCMDQ register writes (PROD beyond the queue, CONS writes, BASE changed while enabled, CONFIG, GERRORN, CMDQ_ALLOC, VINTF CONFIG) never throw and never touch the other VM", () => {
    const write = fc.oneof(
      fc.record({ at: fc.constantFrom(VcmdqPage0Reg.PROD_INDX, VcmdqPage0Reg.CONS_INDX, VcmdqPage0Reg.CONFIG, VcmdqPage0Reg.GERRORN), page: fc.constant(0 as const), q: fc.nat(1), value: fc.oneof(word, fc.integer({ min: 0, max: 64 }), fc.constant(1)) }),
      fc.record({ at: fc.constantFrom(VcmdqPage1Reg.BASE, VcmdqPage1Reg.BASE + 4, VcmdqPage1Reg.CONS_INDX_BASE), page: fc.constant(1 as const), q: fc.nat(1), value: fc.oneof(word, fc.integer({ min: 0, max: 2 ** 20 }).map((p) => (p * 4096 + 0x4000_0000 + (p % 20)) >>> 0)) }),
      fc.record({ at: fc.constantFrom(cmdqAllocOffset(0), cmdqAllocOffset(1), vintfBase(0) + VintfReg.CONFIG, 0), page: fc.constant("config" as const), q: fc.constant(0), value: word }),
    );
    fc.assert(
      fc.property(fc.array(fc.tuple(write, fc.array(command, { maxLength: 3 })), { minLength: 1, maxLength: 24 }), (steps) => {
        const bed = tegraBed(TWO_VMS);
        try {
          const [a, b] = [bed.vms[0]!, bed.vms[1]!];
          mapped(a);
          const domainB = mapped(b);
          for (const [w, commands] of steps) {
            // Commands land wherever the queue's base now is, then the write.
            const view = device(a).guestQueues().find((x) => x.name === `VCMDQ${w.q}`)!;
            const base = view.base();
            if (base !== undefined) commands.forEach((c, i) => a.vm.memory.hostReadable(base + i * 16, 16) && a.vm.memory.writeWords(base + i * 16, c));
            const offset = w.page === 0 ? lvcmdqPage0(0, w.q) + w.at : w.page === 1 ? lvcmdqPage1(0, w.q) + w.at : w.at;
            a.vm.mmioWrite(BASE + offset, 4, w.value);
            a.vm.mmioRead(BASE + lvcmdqPage0(0, w.q) + VcmdqPage0Reg.CONS_INDX, 4);
          }
          bed.poll();
          a.drivers[0]!.readEvents();
          // VM B: no error, no CMDQV interrupt, its translations and its own VCMDQ as they were, its queue exit-free.
          expect(b.drivers[0]!.readEvents()).toEqual([]);
          expect(b.vm.interrupts.delivered.filter((i) => i.source === "tegra241-cmdqv")).toEqual([]);
          expect(b.devices[0]!.device.read(IOVA, 4).ok).toBe(true);
          const exits = b.vm.interventions;
          unwrap(b.drivers[0]!.unmap(domainB, IOVA, 0x1000));
          expect(b.vm.interventions).toBe(exits);
          expect(b.devices[0]!.device.read(IOVA, 4).ok).toBe(false);
          expect(bed.platform.host.memory.violations).toEqual([]);
        } finally {
          bed.dispose();
        }
      }),
      { numRuns: 40, seed: SEED + 4 },
    );
  }, 120_000);
});

