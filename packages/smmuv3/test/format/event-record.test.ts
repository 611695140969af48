import { describe, expect, it } from "vitest";
import fc from "fast-check";
import { fromWords64, hasReservedBits, toHex64 } from "@viommu/core";
import {
  EventClass,
  EventType,
  VEVENTQ_FORWARDED_EVENTS,
  decodeEvent,
  decodePriEntry,
  encodeEvent,
  encodePriEntry,
  eventLayouts,
  eventName,
  priEntryLayout,
  withStreamId,
  type EventName,
} from "../../src/format/index.js";

describe("event records worked out from the bit positions (IHI0070 §7.3, spec §1.11)", () => {
  const vectors: readonly [EventName, Record<string, number | bigint>, string[]][] = [
    ["F_UUT", { SSV: 1, SubstreamID: 2, StreamID: 0x20, PnU: 1, InD: 1, RnW: 1, InputAddr: 0x1234n }, ["0x0000002000002801", "0x0000000e00000000", "0x0000000000001234", "0"]],
    ["C_BAD_STREAMID", { StreamID: 0x10000 }, ["0x0001000000000002", "0", "0", "0"]],
    ["F_STE_FETCH", { StreamID: 0x20, FetchAddr: 0x54460800 }, ["0x0000002000000003", "0", "0", "0x0000000054460800"]],
    ["C_BAD_STE", { StreamID: 0x28 }, ["0x0000002800000004", "0", "0", "0"]],
    ["F_BAD_ATS_TREQ", { StreamID: 0x28, InputAddr: 0xffff_0000_0000_0000n }, ["0x0000002800000005", "0", "0xffff000000000000", "0"]],
    ["F_STREAM_DISABLED", { StreamID: 0x30 }, ["0x0000003000000006", "0", "0", "0"]],
    ["F_TRANSL_FORBIDDEN", { StreamID: 0x30, RnW: 1, InputAddr: 0x9000n }, ["0x0000003000000007", "0x0000000800000000", "0x0000000000009000", "0"]],
    ["C_BAD_SUBSTREAMID", { StreamID: 0x30, SubstreamID: 0xfffff }, ["0x00000030fffff008", "0", "0", "0"]],
    ["F_CD_FETCH", { StreamID: 0x20, SSV: 0, FetchAddr: 0x5a4e1000 }, ["0x0000002000000009", "0", "0", "0x000000005a4e1000"]],
    ["C_BAD_CD", { StreamID: 0x20, SSV: 1, SubstreamID: 1 }, ["0x000000200000180a", "0", "0", "0"]],
    // A stage-1 table fetch abort on the level-1 descriptor of the fixture walk: CLASS = TT, S2 = 0.
    ["F_WALK_EABT", { StreamID: 0x20, RnW: 1, CLASS: EventClass.TT, InputAddr: 0xfffff040n, FetchAddr: 0x40d34018 }, ["0x000000200000000b", "0x0000010800000000", "0x00000000fffff040", "0x0000000040d34018"]],
    // The DMA a real guest made, faulting at stage 1 on input: RnW, CLASS = IN.
    ["F_TRANSLATION", { StreamID: 0x20, RnW: 1, CLASS: EventClass.IN, InputAddr: 0xfffff040n }, ["0x0000002000000010", "0x0000020800000000", "0x00000000fffff040", "0"]],
    ["F_ADDR_SIZE", { StreamID: 0x20, Stall: 1, STAG: 0xbeef, S2: 1, CLASS: EventClass.IN, InputAddr: 0x1000n, IPA: 0x80000000000 }, ["0x0000002000000011", "0x000002808000beef", "0x0000000000001000", "0x0000080000000000"]],
    ["F_ACCESS", { StreamID: 1, PnU: 1, InD: 0, RnW: 0, InputAddr: 0xffffffffffffffffn }, ["0x0000000100000012", "0x0000000200000000", "0xffffffffffffffff", "0"]],
    // Stage-2 permission fault on a stage-1 table write (HTTU): S2, CLASS = TT, TTRnW = 0 (write), IPA = descriptor.
    ["F_PERMISSION", { StreamID: 0x20, S2: 1, CLASS: EventClass.TT, TTRnW: 0, InputAddr: 0xfffff040n, NSIPA: 0, IPA: 0x40d34000 }, ["0x0000002000000013", "0x0000018000000000", "0x00000000fffff040", "0x0000000040d34000"]],
    ["F_PERMISSION", { StreamID: 0x20, TTRnW: 1, NSIPA: 1, IPA: 2 ** 52 - 4096 }, ["0x0000002000000013", "0x0000100000000000", "0", "0x000ffffffffff001"]],
    ["F_TLB_CONFLICT", { StreamID: 0x20, S2: 1, InputAddr: 0x1000n, IPA: 0x2000 }, ["0x0000002000000020", "0x0000008000000000", "0x0000000000001000", "0x0000000000002000"]],
    ["F_CFG_CONFLICT", { StreamID: 0x20, SSV: 1, SubstreamID: 7 }, ["0x0000002000007821", "0", "0", "0"]],
    // A page-request hint: user read+write of 2 pages, privileged execute.
    ["E_PAGE_REQUEST", { StreamID: 0x28, uR: 1, uW: 1, pX: 1, Span: 2, InputAddr: 0x7fff_0000_0000n }, ["0x0000002800000024", "0x0000202c00000000", "0x00007fff00000000", "0"]],
    ["F_VMS_FETCH", { StreamID: 0x20, FetchAddr: 0x1008 }, ["0x0000002000000025", "0", "0", "0x0000000000001008"]],
  ];

  it.each(vectors)("%s %o is %s", (name, fields, hex) => {
    const raw = fromWords64(hex);
    expect(toHex64(encodeEvent(name, fields as never))).toEqual(toHex64(raw));
    const d = decodeEvent(raw);
    expect(d.name).toBe(name);
    expect(d.code).toBe(EventType[name]);
    expect(d.fields).toMatchObject({ EventID: EventType[name], ...fields });
  });

  it("has the architecture's event numbers", () => {
    expect(EventType).toEqual({
      F_UUT: 0x01,
      C_BAD_STREAMID: 0x02,
      F_STE_FETCH: 0x03,
      C_BAD_STE: 0x04,
      F_BAD_ATS_TREQ: 0x05,
      F_STREAM_DISABLED: 0x06,
      F_TRANSL_FORBIDDEN: 0x07,
      C_BAD_SUBSTREAMID: 0x08,
      F_CD_FETCH: 0x09,
      C_BAD_CD: 0x0a,
      F_WALK_EABT: 0x0b,
      F_TRANSLATION: 0x10,
      F_ADDR_SIZE: 0x11,
      F_ACCESS: 0x12,
      F_PERMISSION: 0x13,
      F_TLB_CONFLICT: 0x20,
      F_CFG_CONFLICT: 0x21,
      E_PAGE_REQUEST: 0x24,
      F_VMS_FETCH: 0x25,
    });
    expect(VEVENTQ_FORWARDED_EVENTS).toEqual([0x04, 0x06, 0x08, 0x0a, 0x10, 0x11, 0x12, 0x13]);
  });

  it("gives the stall fields only to the four translation faults, TTRnW only to F_PERMISSION", () => {
    const withStall = (Object.keys(eventLayouts) as EventName[]).filter((n) => eventLayouts[n].fields.some((f) => f.name === "Stall"));
    expect(withStall).toEqual(["F_TRANSLATION", "F_ADDR_SIZE", "F_ACCESS", "F_PERMISSION"]);
    const withTtrnw = (Object.keys(eventLayouts) as EventName[]).filter((n) => eventLayouts[n].fields.some((f) => f.name === "TTRnW"));
    expect(withTtrnw).toEqual(["F_PERMISSION"]);
  });

  it("has no SSV in C_BAD_SUBSTREAMID (its SubstreamID is always valid)", () => {
    expect(hasReservedBits(eventLayouts.C_BAD_SUBSTREAMID, fromWords64(["0x0000003000000808", "0", "0", "0"]))).toBe(true);
  });

  it.each([
    [0xe0, "IMPDEF_EVENT0"],
    [0xef, "IMPDEF_EVENT15"],
    [0x00, "UNKNOWN"],
    [0x0c, "UNKNOWN"],
    [0x22, "UNKNOWN"],
    [0xf0, "UNKNOWN"],
  ])("decodes event number 0x%s as %s with its code", (code, name) => {
    const d = decodeEvent(fromWords64([BigInt(code) | 0x12345678_00000000n, "0xffffffffffffffff", "1", "2"]));
    expect(d).toEqual({ name, code, fields: { EventID: code } });
    if (name !== "UNKNOWN") expect(eventName(code)).toBe(name);
    else expect(eventName(code)).toBeUndefined();
  });

  it("rewrites only the StreamID for a vEVENT, keeping the rest of dw0 (Linux arm_vmaster_report_event)", () => {
    const raw = fromWords64(["0x0000002000001810", "0x0000020800000000", "0x00000000fffff040", "0"]);
    expect(toHex64(withStreamId(raw, 0x3))).toEqual(["0x0000000300001810", "0x0000020800000000", "0x00000000fffff040", "0x0000000000000000"]);
    expect(toHex64(raw)[0]).toBe("0x0000002000001810");
  });

  it("decodes any 256 bits, and re-encodes exactly the bits the event type defines", () => {
    fc.assert(
      fc.property(fc.array(fc.integer({ min: 0, max: 0xffffffff }), { minLength: 8, maxLength: 8 }), fc.constantFrom(...Object.values(EventType)), (halves, type) => {
        const raw = Uint32Array.from(halves);
        raw[0] = ((raw[0]! & ~0xff) | type) >>> 0;
        const d = decodeEvent(raw);
        expect(d.code).toBe(type);
        const name = d.name as EventName;
        const { EventID: _id, ...rest } = d.fields as Record<string, number | bigint>;
        expect([...encodeEvent(name, rest as never)]).toEqual([...raw.map((w, i) => w & ~eventLayouts[name].reservedMask[i]!)]);
      }),
    );
    fc.assert(
      fc.property(fc.array(fc.integer({ min: 0, max: 0xffffffff }), { minLength: 8, maxLength: 8 }), (halves) => {
        expect(decodeEvent(Uint32Array.from(halves)).code).toBe(halves[0]! & 0xff);
      }),
    );
  });
});

describe("PRI queue entry (IHI0070 §8.2, spec §1.12)", () => {
  it("decodes a page request: SSV, read+write, last of group, PRG index, page address", () => {
    // dw0: StreamID 0x28 | SubstreamID 3 << 32 | Read, Write, Last, SSV (bits 60–63); dw1: PRGIndex 7 | page.
    const raw = fromWords64(["0xf000000300000028", "0x00007fff12345007"]);
    const f = decodePriEntry(raw);
    expect(f).toEqual({ StreamID: 0x28, SubstreamID: 3, Priv: 0, Exec: 0, Read: 1, Write: 1, Last: 1, SSV: 1, PRGIndex: 7, PageAddress: 0x7fff12345000n });
    expect(toHex64(encodePriEntry(f))).toEqual(toHex64(raw));
  });

  it("places Priv and Exec at bits 58 and 59", () => {
    expect(toHex64(encodePriEntry({ Priv: 1, Exec: 1 }))[0]).toBe("0x0c00000000000000");
  });

  it("decodes any 128 bits", () => {
    fc.assert(
      fc.property(fc.array(fc.integer({ min: 0, max: 0xffffffff }), { minLength: 4, maxLength: 4 }), (halves) => {
        const raw = Uint32Array.from(halves);
        expect([...encodePriEntry(decodePriEntry(raw))]).toEqual([...raw.map((w, i) => w & ~priEntryLayout.reservedMask[i]!)]);
      }),
    );
  });
});
