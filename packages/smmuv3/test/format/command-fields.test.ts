import { describe, expect, it } from "vitest";
import fc from "fast-check";
import { CommandOpcode, decodeCommand, tlbiAddressRange } from "../../src/format/command.js";
import { cmdAsid, cmdAtcSize, cmdRange, cmdSid, cmdSsec, cmdSyncCs, cmdSyncMsiAddress, cmdSyncMsiData, cmdVmid, tlbiRange } from "../../src/format/command-fields.js";

const u32 = fc.integer({ min: 0, max: 0xffff_ffff });
const command = (op: number) => fc.tuple(u32, u32, u32, u32).map(([a, b, c, d]) => Uint32Array.of(((a & ~0xff) | op) >>> 0, b, c, d));

describe("command field readers agree with the full decoder", () => {
  it("reads SID, VMID, ASID, Range, SSec, CS, MSIData, MSIAddress and ATC Size as decodeCommand does", () => {
    fc.assert(
      fc.property(fc.constantFrom(...Object.values(CommandOpcode)).chain(command), (raw) => {
        const f = decodeCommand(raw).fields as Record<string, number | bigint>;
        if ("SID" in f) expect(cmdSid(raw)).toBe(f.SID);
        if ("VMID" in f) expect(cmdVmid(raw)).toBe(f.VMID);
        if ("ASID" in f) expect(cmdAsid(raw)).toBe(f.ASID);
        if ("Range" in f) expect(cmdRange(raw)).toBe(f.Range);
        if ("SSec" in f) expect(cmdSsec(raw)).toBe(f.SSec === 1);
        if ("CS" in f) expect([cmdSyncCs(raw), cmdSyncMsiData(raw), cmdSyncMsiAddress(raw)]).toEqual([f.CS, f.MSIData, f.MSIAddress]);
        if (f.Opcode === CommandOpcode.CMD_ATC_INV) expect(cmdAtcSize(raw)).toBe(f.Size);
      }),
      { seed: 2, numRuns: 3000 },
    );
  });

  it("computes a TLBI range equal to tlbiAddressRange wherever the addresses are below 2^53", () => {
    const out = { first: 0, length: 0 };
    fc.assert(
      fc.property(fc.constantFrom(CommandOpcode.CMD_TLBI_NH_VA, CommandOpcode.CMD_TLBI_NH_VAA).chain(command), (raw) => {
        raw[3] = raw[3]! & 0xf_ffff;
        const f = decodeCommand(raw).fields as { NUM: number; SCALE: number; TG: number; TTL: number; Leaf: number; Addr: bigint };
        const r = tlbiAddressRange(f);
        tlbiRange(raw, out);
        if (r.last < 2n ** 53n) expect([out.first, out.first + out.length - 1]).toEqual([Number(r.first), Number(r.last)]);
      }),
      { seed: 4, numRuns: 3000 },
    );
  });
});
