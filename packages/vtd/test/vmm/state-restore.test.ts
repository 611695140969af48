import fc from "fast-check";
import { describe, expect, it } from "vitest";
import { decodeState, encodeState, newWalkResult, NO_PASID, unwrap, type StateValue } from "@viommu/core";
import { encodeInvDesc } from "../../src/format/inv-desc.js";
import { VTD_STATE_KIND, VTD_STATE_VERSION } from "../../src/vmm/vtd-state.js";
import { checkProperty, DATA_GPA, IOVA, mapped, vtdBed, type VtdBed } from "../support.js";

type Path = readonly (string | number)[];

/** The state's fields as StateReader names them: `queue.head`, `faults.records[3]`. */
function pathName(path: Path): string {
  return path.reduce<string>((s, p) => (typeof p === "number" ? `${s}[${p}]` : s === "" ? p : `${s}.${p}`), "");
}

/** Every node of a JSON value, with its path (objects and arrays too, so whole structures get replaced). */
function paths(value: StateValue, at: Path = []): Path[] {
  const out: Path[] = at.length > 0 ? [at] : [];
  if (Array.isArray(value)) value.forEach((v, i) => out.push(...paths(v, [...at, i])));
  else if (value !== null && typeof value === "object") for (const [k, v] of Object.entries(value)) out.push(...paths(v, [...at, k]));
  return out;
}

const DELETE = Symbol("delete");
type Replacement = StateValue | typeof DELETE;

/** A copy of `value` with the node at `path` replaced (or removed). */
function mutate(value: StateValue, path: Path, replacement: Replacement): StateValue {
  const copy = structuredClone(value) as StateValue;
  let node = copy as Record<string | number, StateValue>;
  for (const p of path.slice(0, -1)) node = node[p] as Record<string | number, StateValue>;
  const last = path[path.length - 1]!;
  if (replacement === DELETE) {
    if (Array.isArray(node)) node.splice(last as number, 1);
    else delete node[last];
  } else node[last] = replacement;
  return copy;
}

/** Values that are out of range, of the wrong type, or merely different (so acceptance is exercised too). */
const replacement: fc.Arbitrary<Replacement> = fc.oneof(
  {
    arbitrary: fc.constantFrom<Replacement>(-1, -4096, 1.5, 2 ** 32, 2 ** 53, 2 ** 60, Number.MAX_SAFE_INTEGER, "", "x", "-1", "0x", "0x1ffffffffffffffff", "18446744073709551616", "18446744073709551615", null, true, false, [], {}, [0, 0, 0, 0], DELETE),
    weight: 3,
  },
  // Near the limits of indexes and counts: -1, the record count, a ring slot.
  { arbitrary: fc.integer({ min: -40, max: 40 }), weight: 4 },
  { arbitrary: fc.integer({ min: 0, max: 300 }), weight: 1 },
  { arbitrary: fc.integer({ min: 0, max: 0x8_0000 }).map((n) => n - (n % 16)), weight: 2 },
  { arbitrary: fc.integer({ min: 0, max: 0xffff_ffff }), weight: 1 },
  { arbitrary: fc.bigInt({ min: 0n, max: (1n << 64n) - 1n }).map((b) => b.toString()), weight: 1 },
  { arbitrary: fc.bigInt({ min: 0n, max: (1n << 64n) - 1n }).map((b) => `0x${b.toString(16)}`), weight: 1 },
  { arbitrary: fc.boolean(), weight: 1 },
);

const TOP_LEVEL = /^VT-d state: (cap|ecap|gsts|rtaddr|latchedRoot|ccmd|iva|iotlb|ics|faults|queue|remapper|prq|events|the stream)\b/;

/** A scalable-mode unit with a nested device, a remapped interrupt, a pending fault and a page request queue. */
function busyUnit(): { b: VtdBed; msi: { address: number; data: number } } {
  const b = vtdBed("nested", "scalable", { guest: { eventVector: 0x5a } });
  mapped(b, 0x10, IOVA, DATA_GPA, 0x2000);
  const msi = unwrap(b.driver.mapInterrupt(0x10, 0x44, 3));
  b.bed.vms[0]!.devices[0]!.device.read(0x7000_0000, 4);
  b.bed.poll();
  return { b, msi };
}

/** Uses the restored unit the ways a guest and its devices do; none of it may throw. */
function exercise(b: VtdBed, msi: { address: number; data: number }): void {
  const v = b.bed.vms[0]!;
  const base = b.device.mmioBase;
  for (const offset of [0x1c, 0x34, 0x80, 0x88, 0x90, 0x9c, 0xb0, 0xb8, 0xc0, 0xc8, 0xd0, 0xdc, 0x220, 0x228]) v.vm.mmioRead(base + offset, offset % 8 === 0 ? 8 : 4);
  for (const iq of b.device.guestQueues()) {
    const at = iq.base();
    if (at !== undefined && iq.producedBy === "guest" && iq.entries() > 0) {
      const tail = iq.producer.decode(v.vm.mmioRead(iq.producer.address, iq.producer.size)).index;
      const slot = new Uint32Array(iq.entryBytes / 4);
      slot.set(encodeInvDesc("INV_WAIT", { SW: 1, STATUS_DATA: 1, STATUS_ADDR: BigInt(DATA_GPA) }).subarray(0, slot.length));
      if (v.vm.memory.contains(at + tail * iq.entryBytes, iq.entryBytes)) v.vm.memory.writeWords(at + tail * iq.entryBytes, slot);
      v.vm.mmioWrite(iq.producer.address, 8, iq.producer.encode({ index: (tail + 1) % iq.entries(), wrap: false }, v.vm.mmioRead(iq.producer.address, 8)));
    }
  }
  v.vm.mmioWrite(base + 0x34, 4, 0xff);
  v.devices[0]!.device.read(IOVA, 8);
  v.devices[0]!.device.read(0x7100_0000, 8);
  v.devices[0]!.device.signalMsi(msi);
  b.device.translateEmulated(0x10, NO_PASID, IOVA, false, newWalkResult());
  b.device.requestPage(0x10, NO_PASID, IOVA, false, 1, true);
  b.bed.poll();
  b.driver.readEvents();
}

describe("VT-d restore checks what a state means, not only its checksum", () => {
  it("refuses a queue head or fault index of -1 naming the field, and changes nothing", () => {
    const { b } = busyUnit();
    const blob = b.device.save();
    const state = unwrap(decodeState(blob, VTD_STATE_KIND, [VTD_STATE_VERSION])).value;
    for (const [path, message] of [
      [["queue", "head"], "queue.head is -1"],
      [["faults", "next"], "faults.next is -1"],
      [["prq", "tail"], "prq.tail is -1"],
    ] as const) {
      const forged = encodeState(VTD_STATE_KIND, VTD_STATE_VERSION, mutate(state, path, -1));
      const before = b.device.save();
      expect(b.device.restore(forged)).toMatchObject({ ok: false, error: { errno: "EINVAL", message: expect.stringContaining(message) } });
      expect(b.device.save()).toEqual(before);
    }
  });

  it("refuses a head outside the ring IQA gives, a head at a non-slot offset and GSTS bits the unit never sets", () => {
    const { b } = busyUnit();
    const state = unwrap(decodeState(b.device.save(), VTD_STATE_KIND, [VTD_STATE_VERSION])).value as Record<string, StateValue>;
    const queue = state.queue as Record<string, StateValue>;
    const iqa = BigInt(queue.iqa as string);
    // 256-bit descriptors, QS from IQA: the ring holds 2^(QS + 7) of them.
    const ring = 2 ** Number((iqa & 7n) + 7n) * 32;
    for (const head of [ring, ring + 32, 16]) {
      const r = b.device.restore(encodeState(VTD_STATE_KIND, VTD_STATE_VERSION, mutate(state, ["queue", "head"], head)));
      expect(r).toMatchObject({ ok: false, error: { errno: "EINVAL", message: expect.stringContaining("queue.head") } });
    }
    const wbfs = encodeState(VTD_STATE_KIND, VTD_STATE_VERSION, mutate(state, ["gsts"], ((state.gsts as number) | (1 << 27)) >>> 0));
    expect(b.device.restore(wbfs)).toMatchObject({ ok: false, error: { errno: "EINVAL", message: expect.stringContaining("gsts") } });
    const noQie = encodeState(VTD_STATE_KIND, VTD_STATE_VERSION, mutate(state, ["gsts"], ((state.gsts as number) & ~(1 << 26)) >>> 0));
    expect(b.device.restore(noQie)).toMatchObject({ ok: false, error: { errno: "EINVAL", message: expect.stringContaining("queue.enabled") } });
  });

  it("restores the latched interrupt table, not IRTA as last written, and the queue's error record", () => {
    const { b, msi } = busyUnit();
    const v = b.bed.vms[0]!;
    // Software rewrites IRTA without SIRTP: the hardware keeps using the latched table.
    v.vm.mmioWrite(b.device.mmioBase + 0xb8, 8, 0x1234_5000n);
    unwrap(b.driver.submitIllegalCommand!());
    const blob = b.device.save();
    const iqercd = v.vm.mmioRead(b.device.mmioBase + 0xb0, 8);
    unwrap(b.device.restore(blob));
    expect(v.vm.mmioRead(b.device.mmioBase + 0xb8, 8)).toBe(0x1234_5000n);
    expect(v.vm.mmioRead(b.device.mmioBase + 0xb0, 8)).toBe(iqercd);
    v.vm.interrupts.take();
    expect(v.devices[0]!.device.signalMsi(msi)).toBe(true);
    expect(v.vm.interrupts.take().map((i) => i.vector)).toEqual([0x44]);
  });

  it("answers 1000 forged streams with valid checksums: refused naming a field with the unit unchanged, or accepted and working; nothing throws", () => {
    const { b, msi } = busyUnit();
    const baseline = b.device.save();
    const state = unwrap(decodeState(baseline, VTD_STATE_KIND, [VTD_STATE_VERSION])).value;
    // Every field once; of the 32 fault-record words only a few, so the pointers and indexes get their share.
    const nodes = paths(state).filter((p) => !(p[0] === "faults" && p[1] === "records" && typeof p[2] === "number" && ![0, 3, 31].includes(p[2])));
    let refused = 0;
    let accepted = 0;
    checkProperty(
      fc.property(fc.array(fc.tuple(fc.constantFrom(...nodes), replacement), { minLength: 1, maxLength: 2 }), (mutations) => {
        let forged = state;
        for (const [path, value] of mutations) {
          try {
            forged = mutate(forged, path, value);
          } catch {
            // An earlier mutation removed this node's parent.
          }
        }
        const blob = encodeState(VTD_STATE_KIND, VTD_STATE_VERSION, forged);
        const before = b.device.save();
        const r = b.device.restore(blob);
        if (!r.ok) {
          refused++;
          expect(r.error.errno).toBe("EINVAL");
          expect(r.error.message).toMatch(TOP_LEVEL);
          const [path, value] = mutations[0]!;
          if (mutations.length === 1 && (typeof value === "string" || value === null || typeof value === "boolean" || value === DELETE) && typeof path[path.length - 1] === "string") {
            expect(r.error.message).toContain(pathName(path));
          }
          expect(b.device.save()).toEqual(before);
        } else {
          accepted++;
          exercise(b, msi);
        }
        unwrap(b.device.restore(baseline));
      }),
      { numRuns: 1000 },
    );
    expect(refused).toBeGreaterThan(100);
    expect(accepted).toBeGreaterThan(10);
    // The unit still works after all of it.
    const dev = b.bed.vms[0]!.devices[0]!.device;
    expect(dev.read(IOVA, 4).ok).toBe(true);
    expect(b.bed.platform.host.memory.violations).toEqual([]);
  }, 120_000);
});

describe("VT-d restore accepts every state the unit can reach", () => {
  it("keeps using the ring it latched at QIE when the guest rewrote IQA since, across save and restore", () => {
    const b = vtdBed("nested", "scalable");
    const d = mapped(b, 0x10, IOVA, DATA_GPA, 0x1000);
    const v = b.bed.vms[0]!;
    const base = b.device.mmioBase;
    // Two slots per flush (descriptor and wait): past the first 4 KiB of the 8 KiB ring.
    for (let i = 0; i < 70; i++) unwrap(b.driver.flush(d));
    const head = v.vm.mmioRead(base + 0x80, 8);
    expect(head > 0x1000n).toBe(true);
    // IQA rewritten while queued invalidation is on (software must not; hardware keeps the latched ring).
    const iqa = v.vm.mmioRead(base + 0x90, 8);
    v.vm.mmioWrite(base + 0x90, 8, (iqa & ~7n) + 0x10_0000n);
    const blob = b.device.save();
    unwrap(b.device.restore(blob));
    expect(v.vm.mmioRead(base + 0x80, 8)).toBe(head);
    expect(v.vm.mmioRead(base + 0x90, 8)).toBe((iqa & ~7n) + 0x10_0000n);
    // The guest's queue still works: the restored unit consumes from the ring it had latched.
    unwrap(b.driver.flush(d));
    unwrap(b.driver.unmap(d, IOVA, 0x1000));
    expect(v.devices[0]!.device.read(IOVA, 4).ok).toBe(false);
  });

  it("keeps PQH and PQT inside the page request queue when the guest shrinks PQA, so the state restores", () => {
    const b = vtdBed("nested", "scalable");
    mapped(b, 0x10, IOVA, DATA_GPA, 0x1000);
    unwrap(b.driver.enablePageRequests(0x10));
    const v = b.bed.vms[0]!;
    const base = b.device.mmioBase;
    const pqa = v.vm.mmioRead(base + 0xd0, 8);
    // A two-page queue (PQS 1), filled past its first page, then PQA rewritten to one page.
    v.vm.mmioWrite(base + 0xd0, 8, (pqa & ~7n) | 1n);
    for (let i = 0; i < 140; i++) b.device.requestPage(0x10, NO_PASID, i * 0x1000, false, i & 0x1ff, false);
    v.vm.mmioWrite(base + 0xd0, 8, pqa & ~7n);
    const blob = b.device.save();
    expect(b.device.restore(blob)).toEqual({ ok: true, value: undefined });
    const tail = Number(v.vm.mmioRead(base + 0xc8, 8));
    const head = Number(v.vm.mmioRead(base + 0xc0, 8));
    expect(tail < 4096 && head < 4096).toBe(true);
    b.driver.readEvents();
  });

  it("saves and restores after any sequence of register writes, with the same registers read back", () => {
    const offsets = [0x18, 0x20, 0x28, 0x34, 0x38, 0x3c, 0x40, 0x44, 0x88, 0x90, 0x9c, 0xa0, 0xa4, 0xa8, 0xac, 0xb8, 0xc0, 0xc8, 0xd0, 0xdc, 0xe0, 0xe4, 0xe8, 0xec, 0xf0, 0xf8];
    const commands = [1 << 30, 1 << 24, 1 << 26, 0, 1 << 25, 1 << 23, 1 << 31, (1 << 31) | (1 << 26) | (1 << 25)];
    const write = fc.oneof(
      fc.tuple(fc.constantFrom(...offsets), fc.bigInt({ min: 0n, max: (1n << 64n) - 1n })),
      fc.tuple(fc.constant(0x18), fc.constantFrom(...commands).map(BigInt)),
      fc.tuple(fc.constantFrom(0x88, 0xc0, 0xc8), fc.integer({ min: 0, max: 0x2000 }).map((n) => BigInt(n * 16))),
    );
    checkProperty(
      fc.property(fc.array(write, { minLength: 1, maxLength: 30 }), (writes) => {
        const { b } = busyUnit();
        const v = b.bed.vms[0]!;
        const base = b.device.mmioBase;
        for (const [offset, value] of writes) {
          if (offset === 0x18 || offset % 8 !== 0) v.vm.mmioWrite(base + offset, 4, value & 0xffff_ffffn);
          else v.vm.mmioWrite(base + offset, 8, value);
        }
        const registers = (): bigint[] => [0x1c, 0x20, 0x28, 0x34, 0x38, 0x80, 0x88, 0x90, 0x9c, 0xa0, 0xb0, 0xb8, 0xc0, 0xc8, 0xd0, 0xdc, 0xe0, 0xf8].map((o) => v.vm.mmioRead(base + o, o % 8 === 0 ? 8 : 4));
        const before = registers();
        const blob = b.device.save();
        const restored = b.device.restore(blob);
        expect(restored, restored.ok ? "" : restored.error.message).toEqual({ ok: true, value: undefined });
        expect(registers()).toEqual(before);
        b.bed.dispose();
      }),
      { numRuns: 80 },
    );
  }, 120_000);
});
