import { describe, expect, it } from "vitest";
import fc from "fast-check";
import { fromWords64, toHex64 } from "@viommu/core";
import { PprFlag, buildPageServiceRequest, decodePprLogEntry } from "../../src/format/index.js";

/** Linux PPR_REQ_TYPE / PPR_FLAGS / PPR_DEVID / PPR_TAG / PPR_PASID on QW0 (spec x86.md B8). */
function linuxPpr(qw0: bigint): { type: bigint; flags: bigint; devid: bigint; tag: bigint; pasid: bigint } {
  return {
    type: (qw0 >> 60n) & 0xfn,
    flags: (qw0 >> 48n) & 0xfffn,
    devid: qw0 & 0xffffn,
    tag: (qw0 >> 32n) & 0x3ffn,
    pasid: (((qw0 >> 42n) & 0xfn) << 16n) | ((qw0 >> 16n) & 0xffffn),
  };
}

describe("PPR log entries", () => {
  it("decodes a PAGE_SERVICE_REQUEST: devid 0x100, PASID 1, tag 3, READ | WRITE | GN", () => {
    const qw0 = 0x1124000300010100n;
    expect(linuxPpr(qw0)).toEqual({ type: 1n, flags: 0x124n, devid: 0x100n, tag: 3n, pasid: 1n });
    const d = decodePprLogEntry(fromWords64([qw0, 0x7fff12345000n]));
    expect(d.name).toBe("PAGE_SERVICE_REQUEST");
    expect(d.fields).toMatchObject({ DeviceID: 0x100, PASID: 1, Tag: 3, READ: 1, WRITE: 1, GN: 1, EXEC: 0, US: 0, RVSD: 0, Address: 0x7fff12345000n });
  });
  it("carries a 20-bit PASID and a 10-bit tag", () => {
    const raw = buildPageServiceRequest({ deviceId: 0x10, pasid: 0xfabcd, tag: 0x3ff, flags: PprFlag.EXEC | PprFlag.US | PprFlag.RVSD, address: 0x1000n });
    expect(toHex64(raw)).toEqual(["0x10c23fffabcd0010", "0x0000000000001000"]);
    expect(linuxPpr(0x10c23fffabcd0010n)).toMatchObject({ pasid: 0xfabcdn, tag: 0x3ffn, flags: 0x0c2n });
    expect(decodePprLogEntry(raw).fields).toMatchObject({ PASID: 0xfabcd, Tag: 0x3ff, EXEC: 1, US: 1, RVSD: 1 });
  });
  it("decodes any 128 bits; unknown types as UNKNOWN", () => {
    expect(decodePprLogEntry(fromWords64(["0x0", "0x0"])).name).toBe("UNKNOWN");
    fc.assert(fc.property(fc.bigInt({ min: 0n, max: (1n << 64n) - 1n }), (a) => void decodePprLogEntry(fromWords64([a, a]))));
  });
});
