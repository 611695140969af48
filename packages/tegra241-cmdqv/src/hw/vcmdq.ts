import type { HostMemory, RawBits } from "@viommu/core";
import { CMDQ_ENTRY_BYTES } from "@viommu/smmuv3";
import type { Page0RegName, Page1RegName } from "../format/aperture.js";
import { cmdqErrorActive, VCMDQ_GERROR_CMDQ_ERR, VcmdqCerror } from "../format/vcmdq-registers.js";
import type { SmmuCommandSink } from "./command-sink.js";
import { prepareGuestCommand } from "./guest-command.js";
import type { Vintf } from "./vintf.js";

/** Bytes of one entry: an SMMU command. */
export const VCMDQ_ENTRY_BYTES = CMDQ_ENTRY_BYTES;
/** RD/WR are 20 bits wide (index plus wrap bit), so a queue holds at most 2^19 entries (VCMDQ_LOG2SIZE_MAX). */
const MAX_LOG2SIZE = 19;
const INDEX_FIELD_MASK = 0xf_ffff;
const GERROR_MASK = 0x7;
const CONFIG_CMDQ_EN = 1;

/** What a VCMDQ reports to the CMDQV it belongs to. */
export interface VcmdqOwner {
  /** CMDQV_CONFIG.CMDQV_EN: the whole block runs. */
  readonly enabled: boolean;
  /** The queue stopped with an error: update the error maps and raise the CMDQV interrupt. */
  queueError(queue: Vcmdq): void;
}

/**
 * One global VCMDQ of the CMDQV (spec arm-hyperv-virtio.md §4.4): its page-0 control/status registers, its page-1
 * base registers, and the hardware that consumes SMMU commands from the queue memory at BASE. While mapped to a
 * VINTF (CMDQ_ALLOC) and enabled, a PROD write makes it fetch every command between CONS and PROD straight from
 * physical memory, without anyone trapping: commands of a guest-owned VINTF are restricted and rewritten
 * (`prepareGuestCommand`), then executed by the SMMU. The first command that fails stops the queue with CONS.RD on
 * it, CONS.ERR = its CERROR code and GERROR.CMDQ_ERR toggled; it runs again once software acknowledges through
 * GERRORN (re-fetching the command at CONS, which software may have fixed).
 */
export class Vcmdq {
  /** The VINTF this VCMDQ is mapped to (CMDQ_ALLOC.ALLOCATED), maintained by the CMDQV. */
  vintf: Vintf | undefined;
  /** CMDQ_ALLOC's LVCMDQ field while mapped. */
  lidx = -1;
  /** Commands executed since reset (a counter, not a register). */
  consumed = 0;

  private rd = 0;
  private err = 0;
  private prod = 0;
  private config = 0;
  private gerror = 0;
  private gerrorn = 0;
  private baseLo = 0;
  private baseHi = 0;
  private consBaseLo = 0;
  private consBaseHi = 0;
  private readonly bytes = new Uint8Array(VCMDQ_ENTRY_BYTES);
  private readonly view = new DataView(this.bytes.buffer);
  private readonly words: RawBits = new Uint32Array(4);

  constructor(
    /** Global index in the CMDQV. */
    readonly index: number,
    private readonly owner: VcmdqOwner,
    private readonly memory: HostMemory,
    private readonly smmu: SmmuCommandSink,
  ) {}

  // ---- registers ----

  readPage0(register: Page0RegName): number {
    switch (register) {
      case "CONS_INDX":
        return (this.rd | (this.err << 24)) >>> 0;
      case "PROD_INDX":
        return this.prod;
      case "CONFIG":
        return this.config;
      case "STATUS":
        // The enable handshake completes at once: STATUS.CMDQ_EN_OK follows CONFIG.CMDQ_EN.
        return this.config & CONFIG_CMDQ_EN;
      case "GERROR":
        return this.gerror;
      case "GERRORN":
        return this.gerrorn;
    }
  }

  /** Page-0 writes: read-only registers and reserved bits ignore writes, as the hardware does. */
  writePage0(register: Page0RegName, value: number): void {
    switch (register) {
      case "CONS_INDX":
        // Software rewinds CONS only while the queue is off (Linux's deinit writes 0); ERR is the hardware's.
        if ((this.config & CONFIG_CMDQ_EN) === 0) {
          this.rd = value & INDEX_FIELD_MASK;
          this.err = 0;
        }
        return;
      case "PROD_INDX":
        this.prod = value & INDEX_FIELD_MASK;
        this.consume();
        return;
      case "CONFIG":
        this.config = value & CONFIG_CMDQ_EN;
        this.consume();
        return;
      case "GERRORN":
        this.gerrorn = value & GERROR_MASK;
        this.consume();
        return;
      default:
        return;
    }
  }

  readPage1(register: Page1RegName): number {
    switch (register) {
      case "BASE":
        return this.baseLo;
      case "BASE_H":
        return this.baseHi;
      case "CONS_INDX_BASE":
        return this.consBaseLo;
      case "CONS_INDX_BASE_H":
        return this.consBaseHi;
    }
  }

  /** Page-1 writes (host only: the VMM traps the guest's and turns BASE into IOMMU_HW_QUEUE_ALLOC). */
  writePage1(register: Page1RegName, value: number): void {
    switch (register) {
      case "BASE":
        this.baseLo = value >>> 0;
        return;
      case "BASE_H":
        this.baseHi = value & 0xffff;
        return;
      case "CONS_INDX_BASE":
        this.consBaseLo = value >>> 0;
        return;
      case "CONS_INDX_BASE_H":
        this.consBaseHi = value & 0xffff;
        return;
    }
  }

  // ---- state derived from the registers ----

  /** BASE.ADDR: the queue's physical address. */
  get baseAddress(): number {
    return this.baseHi * 2 ** 32 + ((this.baseLo & ~0x1f) >>> 0);
  }

  /** BASE.LOG2SIZE, bounded by what the 20-bit RD/WR fields can index. */
  get log2size(): number {
    return Math.min(this.baseLo & 0x1f, MAX_LOG2SIZE);
  }

  get enabled(): boolean {
    return (this.config & CONFIG_CMDQ_EN) !== 0;
  }

  /** GERROR.CMDQ_ERR not yet acknowledged in GERRORN: the queue is stopped. */
  get inError(): boolean {
    return cmdqErrorActive(this.gerror, this.gerrorn);
  }

  private runnable(): boolean {
    const vintf = this.vintf;
    return vintf !== undefined && vintf.enabled && this.owner.enabled && this.enabled && !this.inError;
  }

  // ---- the hardware ----

  /**
   * Consumes commands from CONS to PROD. At most one pass over the ring per call: a hostile PROD can make the
   * queue work, never loop. Allocates nothing per command.
   */
  consume(): void {
    if (!this.runnable()) return;
    const vintf = this.vintf!;
    const log2 = this.log2size;
    const entries = 2 ** log2;
    const pointerMask = entries * 2 - 1;
    const indexMask = entries - 1;
    const base = this.baseAddress;
    const prod = this.prod & pointerMask;
    let cons = this.rd & pointerMask;
    for (let budget = entries; budget > 0 && cons !== prod; budget--) {
      // The memory the core pinned for this queue belongs to the VINTF's VM: the fetch is checked as DMA of it.
      if (!this.memory.dmaRead(vintf.owner, base + (cons & indexMask) * VCMDQ_ENTRY_BYTES, this.bytes)) {
        this.stop(cons, VcmdqCerror.CERROR_ABT);
        return;
      }
      const words = this.words;
      words[0] = this.view.getUint32(0, true);
      words[1] = this.view.getUint32(4, true);
      words[2] = this.view.getUint32(8, true);
      words[3] = this.view.getUint32(12, true);
      let code = vintf.hypOwn ? VcmdqCerror.CERROR_NONE : prepareGuestCommand(words, vintf.vmid, vintf);
      if (code === VcmdqCerror.CERROR_NONE) code = this.smmu.executeCommand(words);
      if (code !== VcmdqCerror.CERROR_NONE) {
        this.stop(cons, code);
        return;
      }
      cons = (cons + 1) & pointerMask;
      this.rd = cons;
      this.consumed++;
    }
  }

  private stop(cons: number, code: number): void {
    this.rd = cons;
    this.err = code & 0x7f;
    this.gerror = (this.gerror ^ VCMDQ_GERROR_CMDQ_ERR) >>> 0;
    this.owner.queueError(this);
  }
}
