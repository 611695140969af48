import { describe, expect, it } from "vitest";
import fc from "fast-check";
import { decodeState, encodeState, unwrap, type StateValue } from "@viommu/core";
import { buildCompletionWait } from "../../src/format/command.js";
import { MmioOffset } from "../../src/format/mmio-register-map.js";
import { AmdViDevice } from "../../src/vmm/amd-vi-device.js";
import { DATA_GPA, fuzzParams, IOVA, mapOne, oneVm } from "../support.js";

const KIND = "amd-vi-iommu";
const VERSION = 2;
/** Where the destination device sits in the same VM (the source keeps the default base). */
const DEST_BASE = 0xfec0_0000;

const configs = [
  { name: "nested, hardware vIOMMU", extra: { eventInterrupts: "direct" as const } },
  { name: "nested, trapped command buffer", extra: { eventInterrupts: "vmm" as const } },
  { name: "shadow", extra: { mode: "shadow" as const, eventInterrupts: "vmm" as const } },
];

/** A running source with non-trivial state: rings advanced, an event pending, a domain mapped. */
function source(extra: (typeof configs)[number]["extra"]) {
  const t = oneVm(extra);
  mapOne(t.v, 0x10, IOVA, DATA_GPA, 0x1000);
  t.v.devices[0]!.device.read(IOVA + 0x8000, 4);
  t.bed.poll();
  const saved = t.device.save();
  const json = unwrap(decodeState(saved, KIND, [VERSION])).value as { [k: string]: StateValue };
  return { t, saved, json };
}

/** Each ring's base register and its head and tail registers. */
const RINGS: [number, number[]][] = [
  [MmioOffset.CommandBufferBase, [MmioOffset.CommandBufferHead, MmioOffset.CommandBufferTail]],
  [MmioOffset.EventLogBase, [MmioOffset.EventLogHead, MmioOffset.EventLogTail]],
  [MmioOffset.PprLogBase, [MmioOffset.PprLogHead, MmioOffset.PprLogTail]],
];

/** Every leaf field of the saved JSON, as a path (`regs.cmdHead`). */
function leafPaths(value: StateValue, prefix = ""): string[] {
  if (value === null || typeof value !== "object" || Array.isArray(value)) return [prefix];
  return Object.entries(value).flatMap(([k, v]) => leafPaths(v, prefix === "" ? k : `${prefix}.${k}`));
}

type Mutation = { path: string; op: "set"; value: StateValue } | { path: string; op: "delete" } | { path: string; op: "flip"; bit: number };

function mutate(json: StateValue, m: Mutation): StateValue {
  const copy = JSON.parse(JSON.stringify(json)) as { [k: string]: StateValue };
  const keys = m.path.split(".");
  let at: { [k: string]: StateValue } = copy;
  for (const k of keys.slice(0, -1)) {
    if (at[k] === null || typeof at[k] !== "object" || Array.isArray(at[k])) at[k] = {};
    at = at[k] as { [k: string]: StateValue };
  }
  const last = keys[keys.length - 1]!;
  if (m.op === "delete") delete at[last];
  else if (m.op === "set") at[last] = m.value;
  else {
    const v = at[last];
    if (typeof v === "string" && /^0x[0-9a-f]+$/.test(v)) at[last] = `0x${(BigInt(v) ^ (1n << BigInt(m.bit))).toString(16)}`;
    else if (typeof v === "number") at[last] = Number(BigInt(v) ^ (1n << BigInt(m.bit % 53)));
    else if (typeof v === "boolean") at[last] = !v;
  }
  return copy;
}

const hostileValue: fc.Arbitrary<StateValue> = fc.oneof(
  fc.constantFrom<StateValue>(-1, 0, 1, 15, 16, 17, 0xff0, 0x1000, 0x1ff0, 0x2000, 0x7fff0, 0x8_0000, 0xffff, 0x1_0000, 0xffff_ffff, 2 ** 32, 2 ** 53, 1.5, -16, null, true, false, [], {}),
  fc.constantFrom<StateValue>("0x0", "0x", "0xg", "-1", "1e3", "0xffffffffffffffff", "0x1ffffffffffffffff", "0x0f0fffffffffffff", "0x000fffffffffffff", "18446744073709551616", "abc", ""),
  fc.bigInt({ min: 0n, max: (1n << 64n) - 1n }).map((b): StateValue => `0x${b.toString(16)}`),
  fc.integer({ min: -(2 ** 31), max: 2 ** 33 }),
  fc.integer({ min: 0, max: 0x8000 }).map((x) => x * 16),
);

/** Every field a message may name: the fields of the stream, and the stream itself. */
const FIELD = /^AMD-Vi state: (regs\.\w+|eventLog(\.\w+)?|pprLog(\.\w+)?|hardware(\.\w+)?|regs|the stream) /;
/** Fields whose meaning depends on a base register: a changed base may refuse them instead. */
const DEPENDS_ON: Record<string, RegExp> = {
  "regs.cmdBase": /^AMD-Vi state: (regs\.cmdBase|regs\.cmdHead|regs\.cmdTail|hardware\.cmdHead|hardware\.cmdTail) /,
  "regs.evtBase": /^AMD-Vi state: (regs\.evtBase|eventLog\.\w+|hardware\.eventHead|hardware\.eventTail) /,
  "regs.pprBase": /^AMD-Vi state: (regs\.pprBase|pprLog\.\w+|hardware\.pprHead|hardware\.pprTail) /,
};

for (const c of configs) {
  describe(`restoring forged AMD-Vi state streams (${c.name})`, () => {
    it("every stream with a valid checksum is refused naming the bad field with the device unchanged, or accepted and working; none throws", () => {
      const { t, json } = source(c.extra);
      const paths = [...leafPaths(json), "hardware", "regs", "eventLog"];
      const create = (): AmdViDevice => unwrap(AmdViDevice.create({ ...t.device.options, mmioBase: DEST_BASE, instance: 5 }));
      let dest = create();
      let refused = 0;
      let accepted = 0;
      const mutation: fc.Arbitrary<Mutation> = fc.oneof(
        { weight: 5, arbitrary: fc.record({ path: fc.constantFrom(...paths), op: fc.constant("set" as const), value: hostileValue }) },
        { weight: 3, arbitrary: fc.record({ path: fc.constantFrom(...paths), op: fc.constant("flip" as const), bit: fc.integer({ min: 0, max: 63 }) }) },
        { weight: 1, arbitrary: fc.record({ path: fc.constantFrom(...paths), op: fc.constant("delete" as const) }) },
      );
      fc.assert(
        fc.property(fc.array(mutation, { minLength: 1, maxLength: 2 }), (mutations) => {
          let forged: StateValue = json;
          for (const m of mutations) forged = mutate(forged, m);
          const blob = encodeState(KIND, VERSION, forged);
          const before = dest.save();
          const r = dest.restore(blob);
          if (!r.ok) {
            refused++;
            expect(r.error.errno).toBe("EINVAL");
            expect(r.error.message).toMatch(FIELD);
            if (mutations.length === 1) {
              const m = mutations[0]!;
              const named = r.error.message.slice("AMD-Vi state: ".length);
              const dependent = DEPENDS_ON[m.path];
              if (dependent !== undefined) expect(r.error.message).toMatch(dependent);
              else if (named.startsWith("the stream") || !m.path.includes(".")) expect(named.startsWith(m.path) || named.startsWith("the stream") || named.startsWith("hardware") || named.startsWith("regs")).toBe(true);
              else expect(named.startsWith(m.path) || (m.op === "delete" && named.startsWith(m.path.split(".")[0]!))).toBe(true);
            }
            expect(dest.save()).toEqual(before);
            return;
          }
          accepted++;
          // Accepted: what the guest reads back is architectural (every ring pointer inside the ring its base
          // register sizes, 16-byte aligned) and the device works: every register reads, the rings run, and
          // the VM stays isolated.
          for (const [baseReg, pointers] of RINGS) {
            const bytes = 2 ** (Number((t.v.vm.mmioRead(DEST_BASE + baseReg, 8) >> 56n) & 0xfn) + 4);
            for (const p of pointers) {
              const v = Number(t.v.vm.mmioRead(DEST_BASE + p, 8));
              expect(v % 16 === 0 && v < bytes, `pointer 0x${p.toString(16)} = ${v} in a ring of ${bytes}`).toBe(true);
            }
          }
          for (let o = 0; o < 0x4000; o += 8) t.v.vm.mmioRead(DEST_BASE + o, 8);
          const cmd = dest.guestQueues()[0]!;
          const base = cmd.base();
          if (base !== undefined && t.v.vm.memory.contains(base, cmd.entries() * 16)) {
            const tail = cmd.producer.decode(t.v.vm.mmioRead(cmd.producer.address, 8)).index;
            t.v.vm.memory.writeWords(base + tail * 16, buildCompletionWait(DATA_GPA, 1n));
            t.v.vm.mmioWrite(cmd.producer.address, 8, cmd.producer.encode({ index: (tail + 1) % cmd.entries(), wrap: false }, 0n));
          }
          dest.poll();
          expect(decodeState(dest.save(), KIND, [VERSION]).ok).toBe(true);
          dest.destroy();
          dest = create();
        }),
        fuzzParams(200),
      );
      dest.destroy();
      expect(t.bed.platform.host.memory.violations).toEqual([]);
      expect(refused).toBeGreaterThan(100);
      expect(accepted).toBeGreaterThan(0);
    });

    it("the unforged save restores, and a restore refused for one field leaves a device that then takes the good stream", () => {
      const { t, saved, json } = source(c.extra);
      const dest = unwrap(AmdViDevice.create({ ...t.device.options, mmioBase: DEST_BASE, instance: 5 }));
      const pristine = dest.save();
      const regs = json["regs"] as { [k: string]: StateValue };
      const bad = encodeState(KIND, VERSION, { ...json, regs: { ...regs, cmdHead: 8192 } });
      expect(dest.restore(bad)).toMatchObject({ ok: false, error: { errno: "EINVAL", message: "AMD-Vi state: regs.cmdHead is 8192, outside [0, 8176]" } });
      expect(dest.save()).toEqual(pristine);
      unwrap(dest.restore(saved));
      expect(dest.save()).toEqual(saved);
      expect(Number(t.v.vm.mmioRead(DEST_BASE + MmioOffset.EventLogTail, 4))).toBe(Number(t.v.vm.mmioRead(t.device.mmioBase + MmioOffset.EventLogTail, 4)));
      dest.destroy();
    });
  });
}

describe("what the stream's meaning rules out", () => {
  it("names the field: a pointer beyond the ring its base register sizes, a misaligned one, reserved register bits, a non-sticky Status bit, a hardware block the device lacks", () => {
    const { t, json } = source({ eventInterrupts: "vmm" });
    const dest = unwrap(AmdViDevice.create({ ...t.device.options, mmioBase: DEST_BASE, instance: 5 }));
    const regs = json["regs"] as { [k: string]: StateValue };
    const cases: [StateValue, string][] = [
      [{ ...json, eventLog: { head: 0, tail: 8192 } }, "AMD-Vi state: eventLog.tail is 8192, outside [0, 8176]"],
      [{ ...json, pprLog: { head: 8, tail: 0 } }, "AMD-Vi state: pprLog.head is 8, not the byte offset of a 16-byte entry"],
      [{ ...json, regs: { ...regs, devTabBase: "0x10000000000000" } }, "AMD-Vi state: regs.devTabBase is 0x10000000000000, with bits outside 0xffffffffff1ff set"],
      [{ ...json, regs: { ...regs, status: 0x10 } }, "AMD-Vi state: regs.status is 0x10, with bits other than the sticky 0x667 set"],
      [{ ...json, regs: { ...regs, msiData: 0x1_0000 } }, "AMD-Vi state: regs.msiData is 65536, outside [0, 65535]"],
      [{ ...json, hardware: { cmdHead: 0, cmdTail: 0, eventHead: 0, eventTail: 0, pprHead: 0, pprTail: 0, status: 0 } }, "AMD-Vi state: hardware is present, but this device runs the guest's rings in the VMM"],
    ];
    for (const [forged, message] of cases) expect(dest.restore(encodeState(KIND, VERSION, forged))).toMatchObject({ ok: false, error: { errno: "EINVAL", message } });
    dest.destroy();
  });
});

describe("every state the device can reach restores", () => {
  for (const c of configs) {
    it(`random register writes, then save: the stream restores into a fresh device and saves back the same (${c.name})`, () => {
      const t = oneVm(c.extra);
      const offsets = [0x0, 0x8, 0x10, 0x18, 0x20, 0x28, 0x38, 0xe0, 0xe8, 0x158, 0x15c, 0x160, 0x164, 0x170, 0x178, 0x180, 0x2000, 0x2008, 0x2010, 0x2018, 0x2020, 0x2030, 0x2038];
      const write = fc.record({ offset: fc.constantFrom(...offsets), size: fc.constantFrom(4 as const, 8 as const), value: fc.bigInt({ min: 0n, max: (1n << 64n) - 1n }) });
      fc.assert(
        fc.property(fc.array(write, { maxLength: 12 }), (writes) => {
          for (const w of writes) t.v.vm.mmioWrite(t.device.mmioBase + (w.size === 8 ? w.offset & ~7 : w.offset), w.size, w.size === 8 ? w.value : w.value & 0xffff_ffffn);
          const blob = t.device.save();
          const dest = unwrap(AmdViDevice.create({ ...t.device.options, mmioBase: DEST_BASE, instance: 5 }));
          try {
            const r = dest.restore(blob);
            expect(r.ok ? "ok" : r.error.message).toBe("ok");
            expect(unwrap(decodeState(dest.save(), KIND, [VERSION])).value).toEqual(unwrap(decodeState(blob, KIND, [VERSION])).value);
          } finally {
            dest.destroy();
          }
        }),
        fuzzParams(150),
      );
    });
  }
});
