import { describe, expect, it } from "vitest";
import fc from "fast-check";
import { unwrap, FaultQueue, FaultQueueFile, IOMMU_VEVENTQ_FLAG_LOST_EVENTS, ObjectTable, PAGE_RESPONSE_BYTES, PGFAULT_BYTES, RingIndex, Veventq, VeventqFile, parseVevents, veventsLost } from "../src/index.js";
import { IommufdObject } from "../src/iommufd/object-table.js";
import { IommufdObjectType } from "../src/iommufd/uapi.js";

class Owner extends IommufdObject {
  readonly type = IommufdObjectType.VIOMMU;
  release(): void {}
}

function queue(depth: number): { q: Veventq; file: VeventqFile } {
  const q = new Veventq(new Owner(), 0xbeefbeef, depth, () => undefined);
  return { q, file: new VeventqFile(q) };
}

const ev = (virtId: number): Uint8Array => new Uint8Array(new Uint32Array([virtId]).buffer);

describe("vEVENTQ", () => {
  it("follows the kernel's worked example: depth 2, a lost-events marker, then a clean read", () => {
    const { q, file } = queue(2);
    q.report(ev(1));
    let recs = parseVevents(unwrap(file.read(12)), 4);
    expect(recs.map((r) => r.sequence)).toEqual([0]);
    q.report(ev(2));
    q.report(ev(3));
    q.report(ev(4));
    const bytes = file.read(3 * 12);
    expect(bytes.ok && bytes.value.length).toBe(32);
    recs = parseVevents((bytes as { value: Uint8Array }).value, 4);
    expect(recs.map((r) => [r.flags, r.sequence])).toEqual([
      [0, 1],
      [0, 2],
      [IOMMU_VEVENTQ_FLAG_LOST_EVENTS, 3],
    ]);
    expect(veventsLost(2, recs[2]!)).toBe(true);
    q.report(ev(5));
    recs = parseVevents((file.read(12) as { value: Uint8Array }).value, 4);
    expect(recs[0]!.sequence).toBe(4);
    expect(veventsLost(3, recs[0]!)).toBe(false);
  });

  it("re-stamps the marker for every further loss and drops it when a real event follows freed room", () => {
    const { q, file } = queue(1);
    q.report(ev(1));
    q.report(ev(2));
    q.report(ev(3));
    expect(q.pendingRecords).toBe(2);
    const first = parseVevents((file.read(12) as { value: Uint8Array }).value, 4);
    expect(first[0]!.sequence).toBe(0);
    q.report(ev(4));
    const rest = parseVevents((file.read(100) as { value: Uint8Array }).value, 4);
    expect(rest.map((r) => [r.flags, r.sequence])).toEqual([[0, 3]]);
    expect(veventsLost(0, rest[0]!)).toBe(true);
  });

  it("reads only whole records and refuses a buffer smaller than a header", () => {
    const { q, file } = queue(4);
    q.report(ev(1));
    expect(file.read(11)).toMatchObject({ ok: true });
    expect((file.read(11) as { value: Uint8Array }).value.length).toBe(0);
    expect(file.read(4)).toMatchObject({ ok: false, error: { errno: "EINVAL" } });
    expect(file.read(12, 8)).toMatchObject({ ok: false, error: { errno: "ESPIPE" } });
    expect(file.write(new Uint8Array(8))).toMatchObject({ ok: false, error: { errno: "EINVAL" } });
    expect(file.poll()).toEqual({ readable: true, writable: false });
  });

  it("wraps sequence numbers from INT_MAX to 0", () => {
    const { q, file } = queue(4);
    (q as unknown as { sequence: number }).sequence = 0x7fffffff;
    q.report(ev(1));
    q.report(ev(2));
    const recs = parseVevents((file.read(100) as { value: Uint8Array }).value, 4);
    expect(recs.map((r) => r.sequence)).toEqual([0x7fffffff, 0]);
    expect(veventsLost(0x7fffffff, recs[1]!)).toBe(false);
  });

  it("never loses an event silently under random report/read interleavings", () => {
    fc.assert(
      fc.property(fc.integer({ min: 1, max: 8 }), fc.array(fc.oneof(fc.constant(-1), fc.integer({ min: 8, max: 200 }))), (depth, ops) => {
        const { q, file } = queue(depth);
        let reported = 0;
        let received = 0;
        let lossSeen = false;
        let prev = -1;
        for (const op of ops) {
          if (op === -1) {
            q.report(ev(reported++));
            continue;
          }
          const r = file.read(op);
          if (!r.ok) continue;
          for (const rec of parseVevents(r.value, 4)) {
            if (veventsLost(prev, rec)) lossSeen = true;
            if (rec.payload) received++;
            prev = rec.sequence;
          }
        }
        const drained = parseVevents((file.read(1 << 16) as { value: Uint8Array }).value, 4);
        for (const rec of drained) {
          if (veventsLost(prev, rec)) lossSeen = true;
          if (rec.payload) received++;
          prev = rec.sequence;
        }
        expect(received === reported || lossSeen).toBe(true);
      }),
    );
  });
});

describe("fault queue", () => {
  it("delivers whole groups with cookies and takes responses by cookie", () => {
    const q = new FaultQueue();
    const file = new FaultQueueFile(q);
    const answers: number[] = [];
    q.report([{ devId: 1, pasid: 5, groupId: 9, perm: 1, address: 0x1000, length: 4096 }, { devId: 1, pasid: 5, groupId: 9, perm: 1, address: 0x2000, length: 4096 }], (c) => answers.push(c));
    expect(file.read(PGFAULT_BYTES)).toMatchObject({ ok: true, value: new Uint8Array(0) });
    const r = file.read(2 * PGFAULT_BYTES);
    expect(r.ok && r.value.length).toBe(80);
    const cookie = new DataView((r as { value: Uint8Array }).value.buffer).getUint32(36, true);
    expect(file.read(3)).toMatchObject({ ok: false, error: { errno: "ESPIPE" } });
    const resp = new Uint8Array(PAGE_RESPONSE_BYTES);
    new DataView(resp.buffer).setUint32(0, cookie + 1, true);
    expect(file.write(resp)).toMatchObject({ ok: false, error: { errno: "EINVAL" } });
    new DataView(resp.buffer).setUint32(0, cookie, true);
    expect(file.write(resp)).toMatchObject({ ok: true, value: 8 });
    expect(answers).toEqual([0]);
  });

  it("answers outstanding faults INVALID when the device detaches", () => {
    const q = new FaultQueue();
    const answers: number[] = [];
    q.report([{ devId: 3, pasid: undefined, groupId: 1, perm: 2, address: 0, length: 4096 }], (c) => answers.push(c));
    q.autoRespond(3);
    expect(answers).toEqual([1]);
  });
});

describe("object table", () => {
  it("hands out the lowest free id, never 0, and leaks no id on abort", () => {
    const t = new ObjectTable();
    const a = t.add(new Owner());
    const id = t.reserve();
    expect(a.ok && a.value.id).toBe(1);
    expect(id).toMatchObject({ ok: true, value: 2 });
    expect(t.get(2)).toMatchObject({ ok: false, error: { errno: "ENOENT" } });
    t.abort(2);
    expect(t.reserve()).toMatchObject({ ok: true, value: 2 });
  });
});

describe("ring index", () => {
  it("one-slot-free rings hold N-1, wrap-bit rings hold N", () => {
    const a = new RingIndex(2, "one-slot-free");
    let p = 0;
    for (let i = 0; i < 3; i++) p = a.next(p);
    expect(a.isFull(p, 0)).toBe(true);
    const b = new RingIndex(2, "wrap-bit");
    p = 0;
    for (let i = 0; i < 4; i++) p = b.next(p);
    expect(p).toBe(4);
    expect(b.isFull(p, 0)).toBe(true);
    expect(b.pending(p, 0)).toBe(4);
    expect(b.valid(8)).toBe(false);
  });
});
