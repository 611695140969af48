import type { RawBits } from "@viommu/core";
import { CommandOpcode } from "./command.js";

const TWO_32 = 2 ** 32;

/**
 * CMD_TLBI_NH_VA encoded with 32-bit operations (IHI0070 §4.4.2; positions as in `commandLayouts`): dw0 Opcode
 * [7:0], NUM [16:12], SCALE [24:20], VMID [47:32], ASID [63:48]; dw1 Leaf [0], TTL [9:8], TG [11:10], Addr
 * VA[63:12] in [63:12]. The reference driver's per-command path: no field record and no BigInt, the address a
 * number (IOVAs are below 2^53). Bits outside each field's width are dropped, as `encodeCommand` drops them.
 */
export function encodeTlbiNhVa(asid: number, address: number, leaf: number, num = 0, scale = 0, ttl = 0, tg = 0, vmid = 0): RawBits {
  const hi = Math.floor(address / TWO_32);
  return Uint32Array.of(
    (CommandOpcode.CMD_TLBI_NH_VA | ((num & 0x1f) << 12) | ((scale & 0x1f) << 20)) >>> 0,
    ((vmid & 0xffff) | ((asid & 0xffff) << 16)) >>> 0,
    ((address - hi * TWO_32) & 0xfffff000 | (leaf & 1) | ((ttl & 3) << 8) | ((tg & 3) << 10)) >>> 0,
    hi >>> 0,
  );
}
