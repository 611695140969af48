import type { Trace } from "@viommu/trace";

/** AMD-Vi MMIO offsets QEMU's command processor reacts to (pub. 48882, MMIO register map). */
const CMD_BASE = 0x08;
const CONTROL = 0x18;
const CMD_HEAD = 0x2000;
const CMD_TAIL = 0x2008;
/** Control: IommuEn (bit 0) and CmdBufEn (bit 12). */
const CONTROL_IOMMU_EN = 1n;
const CONTROL_CMDBUF_EN = 1n << 12n;
/** The head and tail fields QEMU keeps (AMDVI_MMIO_CMDBUF_HEAD_MASK / _TAIL_MASK: bits 18:4). */
const POINTER_MASK = 0x7fff0n;
const COMMAND_BYTES = 16;

/**
 * Where QEMU 7.2's amd-iommu stops answering under a trace: the index of the register write after which its
 * command processor loops for ever, or undefined. QEMU's state as hw/i386/amd_iommu.c keeps it, from reset:
 *
 * - amdvi_mmio_write() stores 2-, 4- and 8-byte writes into its register file (these four registers have no
 *   read-only or write-1-to-clear bits) and then runs the register's handler whatever the size;
 * - amdvi_handle_cmdbase_write(), on an 8-byte write or one to the upper dword, sets cmdbuf_len to
 *   2^(byte 0x0F & 0xF) commands and resets its own head and tail to 0 (the registers keep their values);
 * - amdvi_handle_control_write() sets cmdbuf_enabled to IommuEn && CmdBufEn; the head and tail handlers take the
 *   register masked to bits 18:4; all three then call amdvi_cmdbuf_run();
 * - amdvi_cmdbuf_run(), when enabled, executes commands while head != tail, wrapping the head to 0 once it reaches
 *   cmdbuf_len * 16 (after writing the head register with the value it reached): a tail at or beyond that is
 *   never met, and the MMIO write never returns.
 */
export function amdViCommandHangAt(trace: Trace): number | undefined {
  const block = trace.header.machine.iommus.find((b) => b.vendor === "amd-vi");
  if (block === undefined) return undefined;
  const registers = new Map<number, bigint>([
    [CMD_BASE, 0n],
    [CONTROL, 0n],
    [CMD_HEAD, 0n],
    [CMD_TAIL, 0n],
  ]);
  let length = 0;
  let head = 0n;
  let tail = 0n;
  let enabled = false;
  for (let i = 0; i < trace.ops.length; i++) {
    const op = trace.ops[i]!;
    if (op.op !== "mmio-write") continue;
    const offset = op.addr - block.base;
    const quad = offset - (offset & 7);
    const old = registers.get(quad);
    if (old === undefined) continue;
    if (op.size === 2 || op.size === 4 || op.size === 8) {
      const shift = BigInt((offset & 7) * 8);
      const mask = ((1n << BigInt(op.size * 8)) - 1n) << shift;
      registers.set(quad, ((old & ~mask) | ((op.value << shift) & mask)) & 0xffff_ffff_ffff_ffffn);
    }
    const value = registers.get(quad)!;
    if (quad === CMD_BASE) {
      if ((offset & 7) !== 0 || op.size === 8) {
        length = 2 ** Number((value >> 56n) & 0xfn);
        head = tail = 0n;
      }
      continue;
    }
    if (quad === CONTROL) enabled = (value & CONTROL_IOMMU_EN) !== 0n && (value & CONTROL_CMDBUF_EN) !== 0n;
    else if (quad === CMD_HEAD) head = value & POINTER_MASK;
    else tail = value & POINTER_MASK;
    if (!enabled || head === tail) continue;
    const end = BigInt(length * COMMAND_BYTES);
    if (tail >= end) return i;
    // The run ends with the head at the tail; the register holds the last head written before a wrap to 0.
    head = tail;
    registers.set(CMD_HEAD, tail === 0n ? end : tail);
  }
  return undefined;
}
