import { describe, expect, it } from "vitest";
import fc from "fast-check";
import { GuestMemory, HostMemory, newWalkResult, NO_PASID, Perm, unwrap } from "@viommu/core";
import { CommandOpcode } from "../src/format/command.js";
import { EventType } from "../src/format/event-record.js";
import { encodeHwptArmSmmuv3, IOMMU_HWPT_DATA_ARM_SMMUV3, IOMMU_VIOMMU_TYPE_ARM_SMMUV3 } from "../src/format/uapi.js";
import { smmuv3Plugin } from "../src/plugin.js";
import { decodeCdSettings } from "../src/translate/cd-config.js";
import { smmuFeatures } from "../src/translate/smmu-features.js";
import { decodeSteSettings } from "../src/translate/ste-config.js";
import { emulatedIds } from "../src/vmm/emulated-idr.js";
import { DEFAULT_SMMUV3_HW } from "../src/hw/smmuv3-hw-config.js";
import { rawSmmu } from "./raw-smmu.js";
import { hostConfig, hostSetup, smmuBed } from "./support.js";

/** The seed comes from the environment (fast-check prints it with any counterexample). */
const SEED = Number(process.env.VIOMMU_SEED ?? 7);
const opcodes = Object.values(CommandOpcode);
const u32 = fc.integer({ min: 0, max: 0xffff_ffff });
/** A command: mostly a known opcode with random fields, sometimes anything at all. */
const command = fc.oneof(
  fc.tuple(fc.constantFrom(...opcodes), u32, u32, u32, u32).map(([op, a, b, c, d]) => Uint32Array.of(((a & ~0xff) | op) >>> 0, b, c, d)),
  fc.tuple(fc.constantFrom(...opcodes), fc.integer({ min: 0, max: 0x3f })).map(([op, sid]) => Uint32Array.of(op, sid, 0, 0)),
  fc.tuple(u32, u32, u32, u32).map(([a, b, c, d]) => Uint32Array.of(a, b, c, d)),
);
const EVENT_CODES = new Set<number>(Object.values(EventType));

describe("fuzzing with hostile guest input", () => {
  it("command queue: any commands end as consumed or as a CMDQ error at the failing one; nothing escapes, nothing leaves the VM", () => {
    const s = rawSmmu();
    const host = s.bed.platform.host.memory;
    fc.assert(
      fc.property(fc.array(command, { minLength: 1, maxLength: 12 }), (commands) => {
        for (const c of commands) {
          s.submit(c);
          // The guest's recovery (Linux arm_smmu_cmdq_skip_err): an illegal command becomes a CMD_SYNC, then ack.
          for (let tries = 0; tries < 4 && s.cmdqError(); tries++) {
            expect([1, 2, 3]).toContain(s.consErr());
            if (s.consErr() === 1) s.patch(s.cons() % 16, Uint32Array.of(0x46, 0, 0, 0));
            s.ack();
          }
        }
        expect(s.cmdqError()).toBe(false);
        expect(s.cons()).toBe(Number(s.vm.mmioRead(s.iommu.mmioBase + 0x98, 4)));
        expect(host.violations).toEqual([]);
      }),
      { seed: SEED, numRuns: 150 },
    );
  });

  it("register file: random accesses anywhere in both pages never throw, and a driver reset recovers the SMMU", () => {
    const s = smmuBed({ vms: [{ devices: [{ rid: 0x100, guestRid: 0x10 }] }], noInit: true });
    const access = fc.record({
      offset: fc.oneof(fc.integer({ min: 0, max: 0x3f }).map((x) => x * 4), fc.integer({ min: 0, max: 0x7fff }).map((x) => x * 4), fc.constantFrom(0x100a8, 0x100ac, 0x100c8)),
      size: fc.constantFrom(4 as const, 8 as const),
      value: fc.bigInt({ min: 0n, max: (1n << 64n) - 1n }),
      write: fc.boolean(),
    });
    fc.assert(
      fc.property(fc.array(access, { maxLength: 40 }), (accesses) => {
        for (const a of accesses) {
          const at = s.iommu.mmioBase + a.offset;
          if (a.write) s.vm.mmioWrite(at, a.size, a.size === 4 ? a.value & 0xffff_ffffn : a.value);
          else s.vm.mmioRead(at, a.size);
        }
      }),
      { seed: SEED + 4, numRuns: 100 },
    );
    expect(s.driver.init({ translation: true, interruptRemapping: false }).ok).toBe(true);
    const domain = unwrap(s.driver.createDomain());
    unwrap(s.driver.attach(0x10, domain));
    unwrap(s.driver.map(domain, 0x10_0000, 0x2000_0000, 0x1000, Perm.ReadWrite));
    expect(s.device.read(0x10_0000, 4).ok).toBe(true);
  });

  it("STE and CD checks: any 512 bits give legal settings or the architecture's C_BAD_STE / C_BAD_CD", () => {
    const ids = emulatedIds(undefined, "nested");
    const guest = smmuFeatures([ids.IDR0!, ids.IDR1!, ids.IDR2!, ids.IDR3!, ids.IDR4!, ids.IDR5!]);
    const host = smmuFeatures(DEFAULT_SMMUV3_HW.idr);
    fc.assert(
      fc.property(fc.array(u32, { minLength: 16, maxLength: 16 }), (words) => {
        const raw = Uint32Array.from(words);
        for (const f of [guest, host]) {
          const ste = decodeSteSettings(raw, f);
          if (typeof ste === "number") expect(ste).toBe(EventType.C_BAD_STE);
          const cd = decodeCdSettings(raw, f);
          if (typeof cd === "number") expect(cd).toBe(EventType.C_BAD_CD);
        }
      }),
      { seed: SEED - 4, numRuns: 2000 },
    );
  });

  it("walker: random guest tables give a translation inside the image's address space or an architectural event", () => {
    const base = 0x4000_0000;
    const memory = new GuestMemory(new HostMemory(), 1, { sizeBytes: 2 ** 24, base });
    const walk = unwrap(smmuv3Plugin.walk!.prepare(memory, { STRTAB_BASE: BigInt(base), STRTAB_BASE_CFG: 6n }));
    // Entries point into a small window of the image so random tables link to each other.
    const entry = fc.tuple(fc.integer({ min: 0, max: 255 }), fc.integer({ min: 0, max: 0xfff }), u32).map(([page, low, hi]) => [(low | (page * 4096)) >>> 0, hi & 0xf0000 ? hi : (base / 2 ** 32) | (hi & 0xfff00000)] as const);
    fc.assert(
      fc.property(fc.array(fc.tuple(fc.integer({ min: 0, max: 256 * 512 - 1 }), entry), { minLength: 1, maxLength: 200 }), fc.array(fc.tuple(fc.integer({ min: 0, max: 63 }), fc.integer({ min: 0, max: 2 ** 40 }), fc.boolean(), fc.integer({ min: 0, max: 3 })), { maxLength: 20 }), (writes, requests) => {
        for (const [slot, [lo, hi]] of writes) memory.write64Halves(base + slot * 8, (lo + base) >>> 0, hi);
        for (const [rid, iova, write, wide] of requests) {
          // Sometimes the same offset in a 64-bit form: TTB1's half, a tagged top byte, beyond every TxSZ.
          const address = wide === 0 ? undefined : wide === 1 ? 0xffff_0000_0000_0000n + BigInt(iova) : wide === 2 ? (0x5an << 56n) + BigInt(iova) : 2n ** 53n + BigInt(iova);
          const r = walk({ rid, iova: address === undefined ? iova : Number(address), ...(address !== undefined ? { address } : {}), write });
          if (r.ok) expect(r.output).toBeGreaterThanOrEqual(0);
          else expect(r.fault.code === 0 || EVENT_CODES.has(r.fault.code)).toBe(true);
          for (const step of r.steps ?? []) expect(step.raw.every((w) => /^0x[0-9a-f]{16}$/.test(w))).toBe(true);
        }
        // Every context and leaf of the random tables, without an exception; leaves in IOVA order.
        const inspector = unwrap(smmuv3Plugin.walk!.inspect!(memory, { STRTAB_BASE: BigInt(base), STRTAB_BASE_CFG: 6n }));
        for (const context of inspector.contexts()) {
          let last = -1;
          inspector.leaves(context, (leaf) => {
            expect(leaf.iova).toBeGreaterThan(last);
            last = leaf.iova;
          });
        }
      }),
      { seed: SEED - 2, numRuns: 200 },
    );
  });

  it("nested host: random vSTEs are accepted or refused with EIO, and random guest tables never let DMA leave the VM", () => {
    const h = hostSetup();
    const viommuId = unwrap(h.ctx.viommuAlloc({ flags: 0, type: IOMMU_VIOMMU_TYPE_ARM_SMMUV3, devId: h.devId, hwptId: h.parentId }));
    unwrap(h.ctx.vdeviceAlloc({ viommuId, devId: h.devId, virtId: 0x10 }));
    const host = h.platform.host.memory;
    const out = newWalkResult();
    fc.assert(
      fc.property(
        fc.record({ config: fc.constantFrom(0, 4, 5, 5, 5, 6, 7), fmt: fc.integer({ min: 0, max: 3 }), ctx: fc.integer({ min: 0, max: 63 }), cdMax: fc.constantFrom(0, 0, 1, 6, 20, 31), dw1: u32, stray: fc.boolean() }),
        fc.array(fc.tuple(fc.integer({ min: 0, max: 512 * 64 - 1 }), u32, u32), { maxLength: 64 }),
        fc.array(fc.tuple(fc.integer({ min: 0, max: 2 ** 36 }), fc.boolean(), fc.integer({ min: -1, max: 3 })), { maxLength: 16 }),
        (v, writes, dmas) => {
          // A vSTE whose CD table lies in the first 256 KiB of RAM, where the random writes land; table
          // pointers written there mostly stay low, so stage-1 walks get somewhere before they fault.
          const dw1 = v.stray ? v.dw1 : v.dw1 & ((0b11 << 28) | (1 << 27) | 0xff);
          const vste = Uint32Array.of((1 | (v.config << 1) | (v.fmt << 4) | (0x1000 + v.ctx * 64)) >>> 0, (v.cdMax << 27) >>> 0, dw1 >>> 0, 0);
          for (const [slot, lo, hi] of writes) h.vm.memory.write64Halves(0x1000 + slot * 8, lo, hi & 1 ? 0 : hi & 0x000f_ffff);
          const hwpt = h.ctx.hwptAlloc({ flags: 0, devId: h.devId, ptId: viommuId, data: { type: IOMMU_HWPT_DATA_ARM_SMMUV3, bytes: encodeHwptArmSmmuv3(vste) } });
          if (!hwpt.ok) expect(hwpt.error.errno).toBe("EIO");
          else unwrap(h.ctx.attach(h.devId, hwpt.value));
          for (const [iova, write, pasid] of dmas) {
            h.device.translate(iova, write, pasid < 0 ? NO_PASID : pasid, out);
            if (out.ok) expect(host.ownerOf(out.output)).toBe(h.vm.id);
            if (write) h.device.write(iova, Uint8Array.of(1));
            else h.device.read(iova, 8);
          }
          expect(host.violations).toEqual([]);
        },
      ),
      { seed: SEED + 2, numRuns: 150 },
    );
  });

  /** Numbers a hostile or buggy caller may pass where an address belongs. */
  const hostileAddress = fc.oneof(
    fc.constantFrom(-1, -4096, 0.5, 4096.25, Number.NaN, Number.POSITIVE_INFINITY, Number.NEGATIVE_INFINITY, 2 ** 53, 2 ** 53 + 4096, 2 ** 63, 2 ** 64 - 4096, 0xffff_ffff_ffff_f000, 2 ** 48, 2 ** 52, 2 ** 48 - 4096),
    fc.double({ noNaN: false }),
    fc.integer({ min: 0, max: 2 ** 52 }).map((p) => p * 4096),
    fc.nat(2 ** 24).map((p) => 0x10_0000 + p),
    fc.nat(0x3fff).map((p) => 0x10_0000 + p + 0.5),
  );

  it("64-bit inputs: no hostile IOVA, StreamID or SubstreamID throws or answers other than the architecture's event", () => {
    const s = smmuBed();
    const domain = unwrap(s.driver.createDomain());
    unwrap(s.driver.attach(0x10, domain));
    unwrap(s.driver.map(domain, 0x10_0000, 0x2000_0000, 0x4000, Perm.ReadWrite));
    const out = newWalkResult();
    const host = s.bed.platform.host.memory;
    const evtqBase = Number(s.vm.mmioRead(s.iommu.mmioBase + 0xa0, 8) & 0x000f_ffff_ffff_ffe0n);
    const ste = s.driver.streamTableBase! + 0x10 * 64;
    const steWord0 = s.vm.memory.read32(ste);
    const cr0 = s.iommu.mmioBase + 0x20;
    const enabled = Number(s.vm.mmioRead(cr0, 4));
    fc.assert(
      fc.property(hostileAddress, fc.oneof(fc.constant(0x10), hostileAddress), fc.oneof(fc.constant(NO_PASID), fc.integer({ min: -2, max: 3 }), hostileAddress), fc.constantFrom("s1", "bypass", "disabled"), fc.boolean(), (iova, sid, pasid, config, write) => {
        s.vm.memory.write32(ste, config === "bypass" ? (steWord0 & ~0xe) | (0b100 << 1) : steWord0);
        s.vm.mmioWrite(cr0, 4, config === "disabled" ? enabled & ~1 : enabled);
        const prod = Number(s.vm.mmioRead(s.iommu.mmioBase + 0x100a8, 4));
        s.iommu.translateEmulated(sid, pasid, iova, write, out);
        if (out.ok) {
          expect(Number.isSafeInteger(out.output) && out.output >= 0).toBe(true);
          expect(Number.isSafeInteger(iova) && iova >= 0 && iova < 2 ** 48).toBe(true);
        }
        // Whatever was recorded is an architected event, and an address that is not one gets the range events.
        const after = Number(s.vm.mmioRead(s.iommu.mmioBase + 0x100a8, 4));
        if (after !== prod) {
          const code = s.vm.memory.read32(evtqBase + (prod & 0x3f) * 32) & 0xff;
          expect(EVENT_CODES.has(code)).toBe(true);
          if (!Number.isSafeInteger(iova) || iova < 0) expect([EventType.F_TRANSLATION, EventType.F_ADDR_SIZE, EventType.C_BAD_STREAMID, EventType.C_BAD_SUBSTREAMID, EventType.F_STREAM_DISABLED]).toContain(code);
        }
        s.vm.mmioWrite(s.iommu.mmioBase + 0x100ac, 4, after);
        // The passthrough device's own DMA through the host unit, with the same address when it is one a device can
        // put on the bus (core's DmaDevice refuses anything but a non-negative integer: that is the device model's bug).
        if (Number.isInteger(iova) && iova >= 0) {
          s.device.translate(iova, write, Number.isInteger(pasid) && pasid >= 0 && pasid < 16 ? pasid : NO_PASID, out);
          if (out.ok) expect(host.ownerOf(out.output)).toBe(s.vm.id);
        }
        expect(host.violations).toEqual([]);
      }),
      { seed: SEED + 6, numRuns: 600 },
    );
  });

  it("an address that is no integer, or at or above 2^53 (a TTB1-half or sign-extended IOVA), gets F_TRANSLATION through stage 1, F_ADDR_SIZE through a bypass STE, a silent abort with the SMMU disabled", () => {
    const s = smmuBed();
    const domain = unwrap(s.driver.createDomain());
    unwrap(s.driver.attach(0x10, domain));
    const out = newWalkResult();
    const ste = s.driver.streamTableBase! + 0x10 * 64;
    const steWord0 = s.vm.memory.read32(ste);
    s.driver.readEvents();
    unwrap(s.driver.map(domain, 0x10_0000, 0x2000_0000, 0x1000, Perm.ReadWrite));
    // A fraction inside a mapped page is no address either.
    const hostile = [2 ** 53, 2 ** 64 - 4096, 0xffff_ffff_ffff_f000, 0x10_0000 + 0.5, -4096, Number.NaN, 2 ** 48];
    for (const iova of hostile) s.iommu.translateEmulated(0x10, NO_PASID, iova, false, out);
    expect(s.driver.readEvents().map((e) => e.name)).toEqual(hostile.map(() => "F_TRANSLATION"));
    s.vm.memory.write32(ste, (steWord0 & ~0xe) | (0b100 << 1));
    for (const iova of hostile) s.iommu.translateEmulated(0x10, NO_PASID, iova, false, out);
    expect(s.driver.readEvents().map((e) => e.name)).toEqual(hostile.map(() => "F_ADDR_SIZE"));
    const cr0 = s.iommu.mmioBase + 0x20;
    s.vm.mmioWrite(cr0, 4, Number(s.vm.mmioRead(cr0, 4)) & ~1);
    for (const iova of hostile) {
      s.iommu.translateEmulated(0x10, NO_PASID, iova, false, out);
      expect(out.ok).toBe(false);
    }
    expect(s.driver.readEvents()).toEqual([]);
    // The host unit: the nested STE's stage 1 answers F_TRANSLATION, never a host exception.
    for (const iova of hostile.filter((x) => Number.isInteger(x) && x >= 0)) expect(s.device.translate(iova, false, NO_PASID, out).ok).toBe(false);
  });

  it("64-bit register values and table pointers (STRTAB_BASE, CMDQ_BASE, EVTQ_BASE, MSI addresses, CD pointer, TTB0) beyond guest RAM or 2^52 never throw and end as the architecture's errors", () => {
    const s = smmuBed({ vms: [{ devices: [{ rid: 0x100, guestRid: 0x10 }] }], noInit: true });
    const u64 = fc.oneof(fc.bigInt({ min: 0n, max: (1n << 64n) - 1n }), fc.constantFrom((1n << 52n) - 64n, 1n << 40n, 0x1_0000_0000n, 0xffff_ffff_ffff_ffc0n, 0x0008_0000_0000_0000n));
    const base = s.iommu.mmioBase;
    fc.assert(
      fc.property(fc.record({ strtab: u64, cmdq: u64, evtq: u64, msi: u64, ctx: u64, ttb: u64 }), fc.array(command, { maxLength: 4 }), fc.array(fc.nat(0xff), { maxLength: 4 }), (v, commands, sids) => {
        s.vm.mmioWrite(base + 0x20, 4, 0);
        s.vm.mmioWrite(base + 0x80, 8, v.strtab);
        s.vm.mmioWrite(base + 0x88, 4, 8);
        s.vm.mmioWrite(base + 0x90, 8, v.cmdq);
        s.vm.mmioWrite(base + 0xa0, 8, v.evtq);
        s.vm.mmioWrite(base + 0x98, 4, 0);
        s.vm.mmioWrite(base + 0x9c, 4, 0);
        s.vm.mmioWrite(base + 0x68, 8, v.msi);
        s.vm.mmioWrite(base + 0xb0, 8, v.msi);
        s.vm.mmioWrite(base + 0x50, 4, 0b101);
        // Where the table happens to be guest RAM, an S1 STE whose CD pointer, and a CD whose TTB0, are the values.
        const strtab = Number(v.strtab & 0x000f_ffff_ffff_ffc0n);
        const ste = strtab + 0x10 * 64;
        if (s.vm.memory.hostReadable(ste, 64)) {
          s.vm.memory.write64(ste, (v.ctx & 0x000f_ffff_ffff_ffc0n) | 0b1011n);
          const cd = Number(v.ctx & 0x000f_ffff_ffff_ffc0n);
          if (s.vm.memory.hostReadable(cd, 64)) {
            s.vm.memory.write64(cd, 0x0000_2000_8000_0010n | (1n << 45n) | (1n << 46n));
            s.vm.memory.write64(cd + 8, v.ttb & 0x000f_ffff_ffff_fff0n);
          }
        }
        s.vm.mmioWrite(base + 0x20, 4, 0b1101);
        const cmdq = Number(v.cmdq & 0x000f_ffff_ffff_ffe0n);
        commands.forEach((c, i) => s.vm.memory.hostReadable(cmdq + i * 16, 16) && s.vm.memory.writeWords(cmdq + i * 16, c));
        s.vm.mmioWrite(base + 0x98, 4, commands.length);
        const out = newWalkResult();
        for (const sid of [0x10, ...sids]) {
          s.iommu.translateEmulated(sid, NO_PASID, 0x1000, true, out);
          s.iommu.deliverMsi(sid, { address: 0x1000, data: 1 });
        }
        s.device.read(0x1000, 4);
        s.iommu.poll();
        const gerror = Number(s.vm.mmioRead(base + 0x60, 4));
        s.vm.mmioWrite(base + 0x64, 4, gerror);
        const cons = Number(s.vm.mmioRead(base + 0x9c, 4));
        expect([0, 1, 2, 3]).toContain((cons >>> 24) & 0x7f);
        expect(s.bed.platform.host.memory.violations).toEqual([]);
      }),
      { seed: SEED + 8, numRuns: 200 },
    );
  });

  it("page requests and stalls: hostile CMD_PRI_RESP / CMD_RESUME / CMD_STALL_TERM, PRI queue registers and STEs never throw, answer only groups they name, and keep DMA in the VM", () => {
    for (const stall of [false, true]) {
      const config = stall ? hostConfig({ idr0: { STALL_MODEL: 0, PRI: 0 }, idr1: { PRIQS: 0 } }) : undefined;
      const s = smmuBed({ vms: [{ devices: [{ rid: 0x100, guestRid: 0x10, pasidBits: 20, pri: !stall }] }] }, config);
      const host = s.bed.platform.host.memory;
      const process = unwrap(s.driver.createProcess!());
      unwrap(process.map(0x7000_0000, 0x2000_0000, 0x1000, Perm.ReadWrite));
      unwrap(s.driver.enablePageRequests!(0x10));
      unwrap(s.driver.bindProcess!(0x10, 9, process));
      const response = fc.oneof(
        fc.record({ op: fc.constant(CommandOpcode.CMD_PRI_RESP), sid: fc.constantFrom(0x10, 0x11, 0xffff, 0x1_0000), tag: fc.integer({ min: 0, max: 0x1ff }), resp: fc.integer({ min: 0, max: 3 }), ssv: fc.boolean() }),
        fc.record({ op: fc.constantFrom(CommandOpcode.CMD_RESUME, CommandOpcode.CMD_STALL_TERM), sid: fc.constantFrom(0x10, 0x11, 0x1_0000), tag: fc.integer({ min: 0, max: 0xffff }), resp: fc.integer({ min: 0, max: 3 }), ssv: fc.boolean() }),
      );
      const registers = fc.record({ offset: fc.constantFrom(0x20, 0xc0, 0xc4, 0xd0, 0xd8, 0xdc, 0x50, 0x100c8, 0x100cc), value: u32 });
      fc.assert(
        fc.property(fc.array(fc.integer({ min: 1, max: 40 }), { maxLength: 6 }), fc.array(response, { maxLength: 8 }), fc.array(registers, { maxLength: 3 }), (pages, responses, writes) => {
          const groups = new Map<number, string>();
          for (const p of pages) {
            const r = s.device.write(0x7000_0000 + p * 0x1000, Uint8Array.of(1), 9);
            if (!r.ok && r.pageRequest !== undefined) groups.set(r.pageRequest, "waiting");
          }
          for (const w of writes) s.vm.mmioWrite(s.iommu.mmioBase + w.offset, 4, BigInt(w.value));
          s.bed.poll();
          s.driver.readEvents();
          for (const r of responses) {
            const w0 = (r.op | (r.op === CommandOpcode.CMD_PRI_RESP && r.ssv ? (1 << 11) | (9 << 12) : 0) | (r.op === CommandOpcode.CMD_RESUME ? r.resp << 12 : 0)) >>> 0;
            const w2 = r.op === CommandOpcode.CMD_PRI_RESP ? r.tag | (r.resp << 12) : r.op === CommandOpcode.CMD_RESUME ? r.tag : 0;
            s.driver.submitCommands([Uint32Array.of(w0, r.sid >>> 0, w2, 0)]);
            s.driver.readEvents();
          }
          // An answered group names the group it answered, and never goes back to waiting.
          for (const [g] of groups) expect(["waiting", "success", "invalid", "failure"]).toContain(s.device.pageRequestStatus(g));
          expect(host.violations).toEqual([]);
        }),
        { seed: SEED + 9 + (stall ? 1 : 0), numRuns: 60 },
      );
      // The guest's driver brings the SMMU back and DMA at the mapped page still works.
      expect(s.driver.init({ translation: true, interruptRemapping: false }).ok).toBe(true);
    }
  });
});
