import type { Trace } from "@viommu/trace";
import { traceBytes } from "./matchers.js";

/** AMD-Vi MMIO offsets (pub. 48882 MMIO register map): Device Table Base Address, Control. */
const DEV_TABLE_BASE = 0x00;
const CONTROL = 0x18;
const ADDRESS = 0x000f_ffff_ffff_f000n;
/** Levels QEMU descends before this takes it for a loop: a real walk has at most six. */
const LOOP_LEVELS = 64;

/**
 * Whether QEMU 7.2's amd-iommu walks for ever for the DMA at `index` of `trace` (every DMA when `index` is
 * undefined): hw/i386/amd_iommu.c amdvi_page_walk() descends `while (level > 0)`, taking each entry's NextLevel
 * (bits 11:9) as the new level without requiring it to be lower, so a present entry whose NextLevel does not
 * fall — one that names its own table, or a table whose entry climbs back — never ends. The walk is followed as
 * QEMU's: the DTE's Mode as the first level, present and the request's permission (IR bit 61, IW bit 62) at each
 * entry, a failed read (outside RAM) or a zero entry ends it, NextLevel 7 (a large page) ends it.
 */
export function amdViWalkLoops(trace: Trace, index?: number): boolean {
  const block = trace.header.machine.iommus.find((b) => b.vendor === "amd-vi");
  if (block === undefined) return false;
  const ram = trace.header.machine.ram;
  const read64 = (at: number, addr: number): bigint | undefined => {
    if (!ram.some((r) => addr >= r.base && addr + 8 <= r.base + r.size)) return undefined;
    const b = traceBytes(trace, at, addr, 8);
    return new DataView(b.buffer, b.byteOffset, 8).getBigUint64(0, true);
  };
  const register = (at: number, offset: number): bigint => {
    let value = 0n;
    for (let i = 0; i < at; i++) {
      const op = trace.ops[i]!;
      if (op.op !== "mmio-write" || op.addr < block.base + offset || op.addr >= block.base + offset + 8) continue;
      const shift = BigInt((op.addr - block.base - offset) * 8);
      const mask = ((1n << BigInt(op.size * 8)) - 1n) << shift;
      value = (value & ~mask) | ((op.value << shift) & mask);
    }
    return value;
  };
  const loops = (at: number): boolean => {
    const op = trace.ops[at]!;
    if (op.op !== "dma" || (register(at, CONTROL) & 1n) === 0n) return false;
    const table = register(at, DEV_TABLE_BASE);
    const devices = (Number(table & 0x1ffn) + 1) * 4096 / 32;
    if (op.rid >= devices) return false;
    let pte = read64(at, Number(table & ADDRESS) + op.rid * 32);
    if (pte === undefined || (pte & 3n) !== 3n) return false;
    let level = Number((pte >> 9n) & 7n);
    if (level === 0 || level >= 7) return false;
    const perm = op.dir === "read" ? 1n : 2n;
    const iova = BigInt(op.iova);
    for (let descended = 0; level > 0; descended++) {
      if (descended >= LOOP_LEVELS) return true;
      if ((pte & 1n) === 0n || ((pte >> 61n) & perm) !== perm) return false;
      const addr = Number((pte & ADDRESS) + (((iova >> BigInt(3 + 9 * level)) & 0x1ffn) << 3n));
      pte = read64(at, addr);
      if (pte === undefined || pte === 0n) return false;
      level = Number((pte >> 9n) & 7n);
      if (level === 7) return false;
    }
    return false;
  };
  if (index !== undefined) return loops(index);
  return trace.ops.some((_, i) => loops(i));
}
