import { describe, expect, it } from "vitest";
import fc from "fast-check";
import { encodeCommand } from "../../src/format/command.js";
import { encodeTlbiNhVa } from "../../src/format/tlbi-encode.js";

const SEED = Number(process.env.VIOMMU_SEED ?? 13);

describe("CMD_TLBI_NH_VA encoded without BigInt", () => {
  it(`equals the layout encoder for every field value (seed ${SEED})`, () => {
    fc.assert(
      fc.property(
        fc.record({
          asid: fc.integer({ min: 0, max: 0xffff }),
          vmid: fc.integer({ min: 0, max: 0xffff }),
          page: fc.integer({ min: 0, max: 2 ** 41 - 1 }),
          leaf: fc.integer({ min: 0, max: 1 }),
          num: fc.integer({ min: 0, max: 31 }),
          scale: fc.integer({ min: 0, max: 31 }),
          ttl: fc.integer({ min: 0, max: 3 }),
          tg: fc.integer({ min: 0, max: 3 }),
        }),
        (f) => {
          const address = f.page * 4096;
          const layout = encodeCommand("CMD_TLBI_NH_VA", { ASID: f.asid, VMID: f.vmid, Leaf: f.leaf, NUM: f.num, SCALE: f.scale, TTL: f.ttl, TG: f.tg, Addr: BigInt(address) });
          expect(Array.from(encodeTlbiNhVa(f.asid, address, f.leaf, f.num, f.scale, f.ttl, f.tg, f.vmid))).toEqual(Array.from(layout));
        },
      ),
      { seed: SEED, numRuns: 5000 },
    );
  });

  it("a known value: ASID 3, VA 0x1_2345_6000, Leaf, TTL 3, TG 1 (4K), NUM 1, SCALE 2", () => {
    expect(Array.from(encodeTlbiNhVa(3, 0x1_2345_6000, 1, 1, 2, 3, 1))).toEqual([0x12 | (1 << 12) | (2 << 20), 3 << 16, 0x2345_6000 | 1 | (3 << 8) | (1 << 10), 1]);
  });
});

describe("Linux's CMD_SYNC encoded without the layout encoder", () => {
  it(`equals encodeCommand for MSI, SEV and busy-polling syncs (seed ${SEED})`, async () => {
    const { linuxSyncCommand } = await import("../../src/guest/sync-command.js");
    fc.assert(
      fc.property(fc.option(fc.integer({ min: 0, max: 2 ** 50 - 1 }).map((x) => x * 4)), fc.boolean(), (address, busy) => {
        const cs = busy ? 0 : address !== null ? 1 : 2;
        const expected = encodeCommand("CMD_SYNC", { CS: cs, MSH: 3, MSIAttr: 0xf, MSIData: 0, MSIAddress: address ?? 0 });
        expect(Array.from(linuxSyncCommand(address ?? undefined, busy))).toEqual(Array.from(expected));
      }),
      { seed: SEED, numRuns: 3000 },
    );
  });
});
