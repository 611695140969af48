import type { HostMemory, MmioHandler } from "@viommu/core";
import { decodeCmdqvOffset, type CmdqvRegisterRef, type GlobalRegName } from "../format/aperture.js";
import { cmdqAllocLayout } from "../format/global-registers.js";
import { decodeReg32 } from "../format/register-value.js";
import { cmdqvGeometry, type CmdqvGeometry, type CmdqvHwConfig } from "./cmdqv-hw-config.js";
import type { SmmuCommandSink } from "./command-sink.js";
import { Vcmdq, type VcmdqOwner } from "./vcmdq.js";
import { Vintf } from "./vintf.js";

/** CMDQV_CONFIG's defined bits (CMDQV_EN, PER_CMD_OFFSET, MAX_CLK_BATCH, MAX_CMD_BATCH, CONS_DRAM_EN). */
const CONFIG_MASK = 0x1f_ffff;
const CONFIG_EN = 1;

/**
 * The physical CMDQV block next to an SMMUv3 (spec arm-hyperv-virtio.md §4, iommufd.md §7): the register file of
 * its whole aperture (config page with the global and per-VINTF registers, the global VCMDQ pages, the per-VINTF
 * LVCMDQ pages) and the hardware behind it — CMDQ_ALLOC mapping global VCMDQs to VINTF logical queues, the queues
 * consuming commands from memory, the error maps and the error interrupt. The host driver (`Tegra241CmdqvDriver`)
 * programs it through `mmio` as Linux does; a VM reaches only the VINTF page 0 it was given.
 *
 * Error maps are derived from the queues: an LVCMDQ is "in error" from the moment it stops until software
 * acknowledges the error in its GERRORN; VINTF_ERR_MAP, CMDQ_ERR_MAP and LVCMDQ_ERR_MAP show exactly those queues.
 * (When the real hardware clears its map bits is not documented; this is the reading Linux's handlers assume.)
 */
export class Tegra241Cmdqv implements VcmdqOwner {
  readonly geometry: CmdqvGeometry;
  readonly vcmdqs: Vcmdq[];
  readonly vintfs: Vintf[];
  readonly mmio: MmioHandler;
  /** The CMDQV error interrupt line; the host driver's ISR. Called while a VINTF's interrupt is unmasked. */
  onInterrupt: (() => void) | undefined;
  /** Interrupts raised (a counter, not a register). */
  interrupts = 0;

  private config = 0;
  private readonly viIntMask = new Uint32Array(2);
  private readonly cmdqAlloc: Uint32Array;
  private readonly words = new Uint32Array(4);

  constructor(
    readonly hw: CmdqvHwConfig,
    memory: HostMemory,
    smmu: SmmuCommandSink,
  ) {
    this.geometry = cmdqvGeometry(hw);
    const g = this.geometry;
    this.cmdqAlloc = new Uint32Array(g.vcmdqs);
    this.vcmdqs = Array.from({ length: g.vcmdqs }, (_, q) => new Vcmdq(q, this, memory, smmu));
    this.vintfs = Array.from({ length: g.vintfs }, (_, v) => new Vintf(v, g.lvcmdqsPerVintf, g.sidsPerVintf));
    this.mmio = {
      read: (offset, size) => {
        const lo = this.read32(offset);
        return size === 8 ? (BigInt(this.read32(offset + 4)) << 32n) | BigInt(lo) : BigInt(lo);
      },
      write: (offset, size, value) => {
        this.write32(offset, Number(value & 0xffff_ffffn));
        if (size === 8) this.write32(offset + 4, Number((value >> 32n) & 0xffff_ffffn));
      },
    };
  }

  get enabled(): boolean {
    return (this.config & CONFIG_EN) !== 0;
  }

  // ---- the register file ----

  /** A 32-bit register read; offsets holding no register read as zero. */
  read32(offset: number): number {
    const ref = decodeCmdqvOffset(offset, this.geometry.vintfs);
    return ref === undefined ? 0 : this.readRef(ref);
  }

  /** A 32-bit register write; read-only registers, reserved bits and offsets holding no register ignore it. */
  write32(offset: number, value: number): void {
    const ref = decodeCmdqvOffset(offset, this.geometry.vintfs);
    if (ref !== undefined) this.writeRef(ref, value >>> 0);
  }

  private readRef(ref: CmdqvRegisterRef): number {
    switch (ref.block) {
      case "global":
        return this.readGlobal(ref.register, ref.index);
      case "vintf": {
        const v = this.vintfs[ref.vintf]!;
        switch (ref.register) {
          case "CONFIG":
            return v.readConfig();
          case "STATUS":
            return v.readStatus();
          case "SID_MATCH":
            return v.sidMatch[ref.index] ?? 0;
          case "SID_REPLACE":
            return v.sidReplace[ref.index] ?? 0;
          case "LVCMDQ_ERR_MAP":
            return v.errorMap(this.words)[ref.index]!;
        }
        return 0;
      }
      case "vcmdq-page0":
        return this.vcmdqs[ref.queue]?.readPage0(ref.register) ?? 0;
      case "vcmdq-page1":
        return this.vcmdqs[ref.queue]?.readPage1(ref.register) ?? 0;
      case "vintf-page0":
        return this.vintfs[ref.vintf]!.lvcmdqs[ref.queue]?.readPage0(ref.register) ?? 0;
      case "vintf-page1":
        return this.vintfs[ref.vintf]!.lvcmdqs[ref.queue]?.readPage1(ref.register) ?? 0;
    }
  }

  private readGlobal(register: GlobalRegName, index: number): number {
    switch (register) {
      case "CONFIG":
        return this.config;
      case "PARAM":
        return this.hw.param >>> 0;
      case "STATUS":
        return this.config & CONFIG_EN;
      case "VINTF_ERR_MAP": {
        let word = 0;
        for (let v = index * 32; v < Math.min((index + 1) * 32, this.vintfs.length); v++) if (this.vintfs[v]!.hasError) word |= 1 << (v & 31);
        return word >>> 0;
      }
      case "VINTF_INT_MASK":
        return this.viIntMask[index]!;
      case "CMDQ_ERR_MAP": {
        let word = 0;
        for (let q = index * 32; q < Math.min((index + 1) * 32, this.vcmdqs.length); q++) if (this.vcmdqs[q]!.inError) word |= 1 << (q & 31);
        return word >>> 0;
      }
      case "CMDQ_ALLOC":
        return this.cmdqAlloc[index] ?? 0;
    }
  }

  private writeRef(ref: CmdqvRegisterRef, value: number): void {
    switch (ref.block) {
      case "global":
        if (ref.register === "CONFIG") {
          this.config = value & CONFIG_MASK;
          if (this.enabled) for (const q of this.vcmdqs) q.consume();
        } else if (ref.register === "VINTF_INT_MASK") this.viIntMask[ref.index] = value;
        else if (ref.register === "CMDQ_ALLOC" && ref.index < this.cmdqAlloc.length) this.writeCmdqAlloc(ref.index, value);
        return;
      case "vintf": {
        const v = this.vintfs[ref.vintf]!;
        if (ref.register === "CONFIG") v.writeConfig(value);
        else if (ref.register === "SID_MATCH" && ref.index < v.sidMatch.length) v.sidMatch[ref.index] = value;
        else if (ref.register === "SID_REPLACE" && ref.index < v.sidReplace.length) v.sidReplace[ref.index] = value;
        return;
      }
      case "vcmdq-page0":
        this.vcmdqs[ref.queue]?.writePage0(ref.register, value);
        return;
      case "vcmdq-page1":
        this.vcmdqs[ref.queue]?.writePage1(ref.register, value);
        return;
      case "vintf-page0":
        this.vintfs[ref.vintf]!.lvcmdqs[ref.queue]?.writePage0(ref.register, value);
        return;
      case "vintf-page1":
        this.vintfs[ref.vintf]!.lvcmdqs[ref.queue]?.writePage1(ref.register, value);
        return;
    }
  }

  /**
   * CMDQ_ALLOC(q): the value is kept as written; with ALLOCATED set, global VCMDQ q becomes logical VCMDQ
   * LVCMDQ of VINTF VINTF (its page-0/page-1 registers appear in that VINTF's pages). A mapping to a VINTF or
   * logical index the block does not have maps nothing.
   */
  private writeCmdqAlloc(q: number, value: number): void {
    this.cmdqAlloc[q] = value & 0x1f_80ff;
    const queue = this.vcmdqs[q]!;
    if (queue.vintf !== undefined && queue.vintf.lvcmdqs[queue.lidx] === queue) queue.vintf.lvcmdqs[queue.lidx] = undefined;
    queue.vintf = undefined;
    queue.lidx = -1;
    const f = decodeReg32(cmdqAllocLayout, value);
    if (f.CMDQV_CMDQ_ALLOCATED !== 1) return;
    const vintf = this.vintfs[f.CMDQV_CMDQ_ALLOC_VINTF];
    if (vintf === undefined || f.CMDQV_CMDQ_ALLOC_LVCMDQ >= vintf.lvcmdqs.length) return;
    vintf.lvcmdqs[f.CMDQV_CMDQ_ALLOC_LVCMDQ] = queue;
    queue.vintf = vintf;
    queue.lidx = f.CMDQV_CMDQ_ALLOC_LVCMDQ;
  }

  // ---- the error interrupt ----

  /** A queue stopped: the CMDQV interrupt fires unless its VINTF's bit in VINTF_INT_MASK masks it. */
  queueError(queue: Vcmdq): void {
    const v = queue.vintf?.index;
    if (v === undefined) return;
    if ((this.viIntMask[v >>> 5]! >>> (v & 31)) & 1) return;
    this.interrupts++;
    this.onInterrupt?.();
  }
}
