import { err, fail, ok, toHex64, type GuestEvent, type GuestMemory, type PageSource, type RawBits, type Result, type VirtualMachine } from "@viommu/core";
import {
  CMDQ_ENTRY_BYTES,
  encodeCommand,
  linuxSyncCommand,
  queueAdvance,
  queueEmpty,
  queueFree,
  queueIndex,
  type SecondaryCommandQueue,
  type Smmuv3DriverImplOps,
  type Smmuv3GuestDriver,
} from "@viommu/smmuv3";
import {
  cmdqAllocOffset,
  CmdqvReg,
  lvcmdqPage0,
  lvcmdqPage1,
  VcmdqPage0Reg,
  VcmdqPage1Reg,
  vintfBase,
  VintfReg,
  vintfLvcmdqErrMap64Offset,
  vintfSidMatchOffset,
  vintfSidReplaceOffset,
} from "../format/aperture.js";
import { cmdqAllocLayout, cmdqvCounts, cmdqvParamLayout } from "../format/global-registers.js";
import { commandOpcode, GUEST_VCMDQ_COMMANDS } from "../format/guest-commands.js";
import { decodeReg32, encodeReg32 } from "../format/register-value.js";
import { cmdqErrorActive, VcmdqCerror, vcmdqCerrorName } from "../format/vcmdq-registers.js";
import { vintfConfigLayout } from "../format/vintf-registers.js";

/**
 * SMMU commands Linux routes to a guest-owned VCMDQ (tegra241_guest_vcmdq_supports_cmd): those the queue executes,
 * less the CMD_SYNC the driver appends itself.
 */
const ROUTED_OPCODES: ReadonlySet<number> = new Set(GUEST_VCMDQ_COMMANDS.filter((c) => c.name !== "CMD_SYNC").map((c) => c.opcode));
/** Linux CMDQ_BATCH_ENTRIES: a batch is at most 63 commands and its CMD_SYNC. */
const CMDQ_BATCH_ENTRIES = 64;
/** Bounded polls: the model's hardware answers at once; a handshake that has not completed by then never will. */
const POLL_LIMIT = 8;
/** The VCMDQ size the driver allocates by default: 256 commands, one page, as the SMMU driver sizes its CMDQ. */
const DEFAULT_QUEUE_LOG2 = 8;
/** CONS_INDX: RD in the low 20 bits, ERR at 24. */
const CONS_ERR_SHIFT = 24;

export interface GuestCmdqvOptions {
  readonly vm: VirtualMachine;
  readonly memory: GuestMemory;
  readonly pages: PageSource;
  /** The aperture's guest physical base (from the NVDA200C _CRS). */
  readonly base: number;
  /** IDR1.CMDQS of the SMMU it extends: VCMDQs are no larger. */
  readonly cmdqs: number;
  /** Linux's MSIPOLL (IDR0.MSI on a coherent SMMU): CMD_SYNCs name their own slot as MSI address, unused with CS = NONE. */
  readonly msiPoll: boolean;
  /** The SMMU's own command queue: where Linux flushes with a CMD_SYNC when it takes a VCMDQ down. */
  readonly mainQueue: (commands: readonly RawBits[]) => Result<void>;
  /** log2 of the entries per VCMDQ the driver allocates, at most IDR1.CMDQS (default 8). */
  readonly queueLog2?: number;
  /** The CPU issuing commands: Linux picks logical VCMDQ cpu % count (default 0). */
  readonly cpu?: number;
}

interface GuestQueue {
  readonly lidx: number;
  readonly base: number;
  readonly log2: number;
  prod: number;
  enabled: boolean;
  /** The queue as the SMMUv3 driver issues batches on it. */
  readonly secondary: SecondaryCommandQueue;
}

/** What the guest's CMDQV driver has done, for tests, the demo and the benchmarks. */
export interface GuestCmdqvStats {
  /** Commands issued on VCMDQs (CMD_SYNCs included) and batches (one CMD_SYNC each). */
  commands: number;
  batches: number;
  /** Queue errors the interrupt handler cleared. */
  errorsHandled: number;
}

/**
 * The guest's Tegra241 CMDQV driver, as Linux's tegra241-cmdqv runs inside a VM (HYP_OWN reads back 0, so every
 * VCMDQ gets the guest command filter): probe reads PARAM; reset re-enables the CMDQV, assigns every VCMDQ to
 * VINTF0 in CMDQ_ALLOC, re-initialises VINTF0 (its SID slots cleared, HYP_OWN asked for and read back) and maps
 * and initialises each logical VCMDQ (deinit, BASE — which the VMM turns into a HW queue — then CMDQ_EN with the
 * STATUS handshake). Afterwards invalidation batches made only of TLBI_NH_ASID, TLBI_NH_VA and ATC_INV go to
 * logical VCMDQ `cpu % count` with a CS = NONE CMD_SYNC, and completion is polled in CONS: PROD, CONS, GERROR
 * and GERRORN are in the VINTF page 0 the VMM mapped straight into the VM, so issuing costs no VM exit. Queue
 * errors are handled as Linux's VINTF0 handler does: the failing command turned into a CMD_SYNC (an abort or ATC
 * timeout retried as is), then GERRORN = GERROR. It is the SMMUv3 driver's implementation ops (Linux's
 * tegra241_cmdqv_impl_ops): `getSecondaryCmdq` hands those batches to the VCMDQ.
 */
export class GuestCmdqv implements Smmuv3DriverImplOps {
  readonly stats: GuestCmdqvStats = { commands: 0, batches: 0, errorsHandled: 0 };
  private readonly queues: GuestQueue[] = [];
  private readonly errors: GuestEvent[] = [];
  private readonly words = new Uint32Array(4);

  private constructor(
    private readonly options: GuestCmdqvOptions,
    /** VCMDQs and VINTFs the CMDQV reports (a VM sees one VINTF). */
    readonly counts: { vintfs: number; vcmdqs: number; lvcmdqsPerVintf: number },
  ) {}

  /** Probes the CMDQV at `options.base`, allocates VINTF0's queues and resets it. ENODEV when nothing answers. */
  static probe(options: GuestCmdqvOptions): Result<GuestCmdqv> {
    const paramValue = Number(options.vm.mmioRead(options.base + CmdqvReg.PARAM, 4));
    if (paramValue === 0xffff_ffff) return err("ENODEV", "no CMDQV at the firmware's address");
    const counts = cmdqvCounts(decodeReg32(cmdqvParamLayout, paramValue));
    const lvcmdqs = Math.min(128, Math.max(0, counts.lvcmdqsPerVintf));
    if (counts.vintfs < 1 || lvcmdqs < 1) return err("ENODEV", "the CMDQV offers no queue");
    const driver = new GuestCmdqv(options, { vintfs: counts.vintfs, vcmdqs: Math.min(counts.vcmdqs, 128), lvcmdqsPerVintf: lvcmdqs });
    const log2 = Math.max(1, Math.min(options.queueLog2 ?? DEFAULT_QUEUE_LOG2, options.cmdqs));
    const bytes = 2 ** log2 * CMDQ_ENTRY_BYTES;
    const pages = Math.max(1, bytes / 4096);
    for (let l = 0; l < lvcmdqs; l++) {
      const base = options.pages.allocate(pages, pages);
      if (base === undefined) return err("ENOMEM", "no guest memory for a VCMDQ");
      const queue: GuestQueue = {
        lidx: l,
        base,
        log2,
        prod: 0,
        enabled: false,
        secondary: { submit: (commands) => driver.submitOn(queue, commands) },
      };
      driver.queues.push(queue);
    }
    driver.reset();
    return ok(driver);
  }

  // ---- register access: page 0 is direct, the rest traps ----

  private read32(offset: number): number {
    return Number(this.options.vm.mmioRead(this.options.base + offset, 4));
  }

  private write32(offset: number, value: number): void {
    this.options.vm.mmioWrite(this.options.base + offset, 4, value >>> 0);
  }

  /** Writes a register then polls its STATUS bit 0 to follow (Linux tegra241_cmdqv_write_config). */
  private writeConfig(config: number, status: number, value: number): boolean {
    this.write32(config, value);
    const want = value & 1;
    for (let i = 0; i < POLL_LIMIT; i++) if ((this.read32(status) & 1) === want) return true;
    return false;
  }

  // ---- reset ----

  /** `tegra241_cmdqv_hw_reset`; true when at least one VCMDQ came up. */
  reset(): boolean {
    const config = this.read32(CmdqvReg.CONFIG);
    if (!this.writeConfig(CmdqvReg.CONFIG, CmdqvReg.STATUS, config & ~1)) return false;
    if (!this.writeConfig(CmdqvReg.CONFIG, CmdqvReg.STATUS, config | 1)) return false;
    for (let v = 0, q = 0; v < this.counts.vintfs; v++) {
      for (let l = 0; l < this.counts.lvcmdqsPerVintf; l++) {
        this.write32(cmdqAllocOffset(q++), encodeReg32(cmdqAllocLayout, { CMDQV_CMDQ_ALLOC_VINTF: v, CMDQV_CMDQ_ALLOC_LVCMDQ: l }));
      }
    }
    return this.vintfHwInit();
  }

  /** `tegra241_vintf_hw_init(vintf0, hyp_own = true)`: HYP_OWN reads back 0 in a VM, so the guest filter applies. */
  private vintfHwInit(): boolean {
    this.vintfHwDeinit();
    const value = encodeReg32(vintfConfigLayout, { VINTF_HYP_OWN: 1 });
    this.write32(vintfBase(0) + VintfReg.CONFIG, value);
    if (!this.writeConfig(vintfBase(0) + VintfReg.CONFIG, vintfBase(0) + VintfReg.STATUS, value | 1)) return false;
    for (const q of this.queues) {
      this.write32(cmdqAllocOffset(q.lidx), this.read32(cmdqAllocOffset(q.lidx)) | 1);
      q.enabled = this.vcmdqHwInit(q);
    }
    return this.queues.some((q) => q.enabled);
  }

  /** `tegra241_vintf_hw_deinit`: queues down and unmapped in descending order, VINTF disabled, SID slots cleared. */
  private vintfHwDeinit(): void {
    for (let i = this.queues.length - 1; i >= 0; i--) {
      this.vcmdqHwDeinit(this.queues[i]!);
      this.write32(cmdqAllocOffset(i), this.read32(cmdqAllocOffset(i)) & ~1);
    }
    this.writeConfig(vintfBase(0) + VintfReg.CONFIG, vintfBase(0) + VintfReg.STATUS, 0);
    for (let s = 0; s < 16; s++) {
      this.write32(vintfSidMatchOffset(0, s), 0);
      this.write32(vintfSidReplaceOffset(0, s), 0);
    }
  }

  /** `tegra241_vcmdq_hw_deinit`. */
  private vcmdqHwDeinit(q: GuestQueue): void {
    const page0 = lvcmdqPage0(0, q.lidx);
    const page1 = lvcmdqPage1(0, q.lidx);
    this.writeConfig(page0 + VcmdqPage0Reg.CONFIG, page0 + VcmdqPage0Reg.STATUS, 0);
    this.options.mainQueue([encodeCommand("CMD_SYNC", { CS: 0 })]);
    this.write32(page0 + VcmdqPage0Reg.PROD_INDX, 0);
    this.write32(page0 + VcmdqPage0Reg.CONS_INDX, 0);
    this.options.vm.mmioWrite(this.options.base + page1 + VcmdqPage1Reg.BASE, 8, 0n);
    this.options.vm.mmioWrite(this.options.base + page1 + VcmdqPage1Reg.CONS_INDX_BASE, 8, 0n);
    const gerror = this.read32(page0 + VcmdqPage0Reg.GERROR);
    if (gerror !== this.read32(page0 + VcmdqPage0Reg.GERRORN)) this.write32(page0 + VcmdqPage0Reg.GERRORN, gerror);
    q.prod = 0;
    q.enabled = false;
  }

  /** `tegra241_vcmdq_hw_init`: deinit, BASE = address | log2(entries), then CMDQ_EN and its STATUS handshake. */
  private vcmdqHwInit(q: GuestQueue): boolean {
    this.vcmdqHwDeinit(q);
    const page0 = lvcmdqPage0(0, q.lidx);
    this.options.vm.mmioWrite(this.options.base + lvcmdqPage1(0, q.lidx) + VcmdqPage1Reg.BASE, 8, BigInt(q.base) | BigInt(q.log2));
    return this.writeConfig(page0 + VcmdqPage0Reg.CONFIG, page0 + VcmdqPage0Reg.STATUS, 1);
  }

  // ---- issuing ----

  /** Whether Linux would send every command of a batch to a guest-owned VCMDQ. */
  static routes(commands: readonly RawBits[]): boolean {
    return commands.length > 0 && commands.every((c) => ROUTED_OPCODES.has(commandOpcode(c[0]!)));
  }

  /** Logical VCMDQs that came up. */
  get enabledQueues(): number {
    return this.queues.filter((q) => q.enabled).length;
  }

  /**
   * Linux `tegra241_cmdqv_get_cmdq`: logical VCMDQ `cpu % count` for a batch made only of commands a guest VCMDQ
   * takes, while that queue is up and not stopped on an error. Otherwise undefined: the batch keeps to the SMMU's
   * own queue. On the VCMDQ each chunk is followed by a CS = NONE CMD_SYNC and CONS is polled past it; EIO when the
   * queue stops on the batch (the error waits for the interrupt handler).
   */
  getSecondaryCmdq(_smmu: Smmuv3GuestDriver, commands: readonly RawBits[]): SecondaryCommandQueue | undefined {
    if (!GuestCmdqv.routes(commands)) return undefined;
    const q = this.queues[(this.options.cpu ?? 0) % this.queues.length]!;
    return q.enabled && !this.inError(q) ? q.secondary : undefined;
  }

  /** Issues raw commands on logical VCMDQ `lidx`, whatever they are (tests: a guest is free to write anything). */
  issueRaw(lidx: number, commands: readonly RawBits[]): Result<boolean> {
    const q = this.queues[lidx];
    if (q === undefined || !q.enabled) return err("ENODEV", `logical VCMDQ ${lidx} is not up`);
    return this.issueOn(q, commands);
  }

  private submitOn(q: GuestQueue, commands: readonly RawBits[]): Result<void> {
    const r = this.issueOn(q, commands);
    return r.ok ? ok() : fail(r);
  }

  private issueOn(q: GuestQueue, commands: readonly RawBits[]): Result<boolean> {
    const chunk = Math.max(1, Math.min(CMDQ_BATCH_ENTRIES - 1, 2 ** q.log2 - 1));
    const page0 = lvcmdqPage0(0, q.lidx);
    for (let next = 0; next < commands.length; next += chunk) {
      const count = Math.min(chunk, commands.length - next);
      if (queueFree(q.prod, this.read32(page0 + VcmdqPage0Reg.CONS_INDX), q.log2) < count + 1) {
        return err("EIO", `logical VCMDQ ${q.lidx} has no room: it stopped on an earlier command`);
      }
      for (let i = 0; i < count; i++) this.put(q, commands[next + i]!);
      this.put(q, linuxSyncCommand(this.options.msiPoll ? this.slotAddress(q, q.prod) : undefined, true));
      this.write32(page0 + VcmdqPage0Reg.PROD_INDX, q.prod);
      this.stats.batches++;
      if (!this.consumed(q)) return err("EIO", `logical VCMDQ ${q.lidx} stopped: CONS.ERR ${vcmdqCerrorName((this.read32(page0 + VcmdqPage0Reg.CONS_INDX) >>> CONS_ERR_SHIFT) & 0x7f)}`);
    }
    return ok(true);
  }

  private slotAddress(q: GuestQueue, pointer: number): number {
    return q.base + queueIndex(pointer, q.log2) * CMDQ_ENTRY_BYTES;
  }

  private put(q: GuestQueue, command: RawBits): void {
    this.options.memory.writeWords(this.slotAddress(q, q.prod), command);
    q.prod = queueAdvance(q.prod, q.log2);
    this.stats.commands++;
  }

  /** Busy-polls CONS until it reaches PROD (`arm_smmu_cmdq_poll_until_sync` with CS = NONE). */
  private consumed(q: GuestQueue): boolean {
    const page0 = lvcmdqPage0(0, q.lidx);
    for (let i = 0; i < POLL_LIMIT; i++) {
      if (queueEmpty(q.prod, this.read32(page0 + VcmdqPage0Reg.CONS_INDX), q.log2)) return true;
      if (this.inError(q)) return false;
    }
    return false;
  }

  private inError(q: GuestQueue): boolean {
    const page0 = lvcmdqPage0(0, q.lidx);
    return cmdqErrorActive(this.read32(page0 + VcmdqPage0Reg.GERROR), this.read32(page0 + VcmdqPage0Reg.GERRORN));
  }

  // ---- errors ----

  /**
   * The CMDQV interrupt handler (`tegra241_cmdqv_isr` → `tegra241_vintf0_handle_error`): VINTF_ERR_MAP bit 0 says
   * VINTF0 has a stopped queue; LVCMDQ_ERR_MAP (two 64-bit reads) which ones. For each, the command at CONS is
   * reported, an illegal one replaced by a CMD_SYNC (an abort or ATC timeout is retried as it is), and GERRORN =
   * GERROR restarts the queue. Returns the errors handled now and since the last call, as guest events.
   */
  handleInterrupt(): GuestEvent[] {
    const vintfMap = this.read32(CmdqvReg.VINTF_ERR_MAP);
    if ((vintfMap & 1) !== 0) {
      for (let m = 0; m < 2; m++) {
        let map = this.options.vm.mmioRead(this.options.base + vintfLvcmdqErrMap64Offset(0, m), 8);
        for (let bit = 0; map !== 0n && bit < 64; bit++, map >>= 1n) {
          if ((map & 1n) === 0n) continue;
          const q = this.queues[m * 64 + bit];
          if (q !== undefined) this.skipError(q);
        }
      }
    }
    return this.errors.splice(0);
  }

  /** `__arm_smmu_cmdq_skip_err` on a VCMDQ, then the GERRORN acknowledgement. */
  private skipError(q: GuestQueue): void {
    const page0 = lvcmdqPage0(0, q.lidx);
    const gerror = this.read32(page0 + VcmdqPage0Reg.GERROR);
    const cons = this.read32(page0 + VcmdqPage0Reg.CONS_INDX);
    const code = (cons >>> CONS_ERR_SHIFT) & 0x7f;
    if (code !== VcmdqCerror.CERROR_NONE) {
      const slot = this.slotAddress(q, cons);
      const failed = this.options.memory.readWords(slot, this.words);
      this.errors.push({ kind: "command-error", code, name: vcmdqCerrorName(code), raw: toHex64(failed) });
      if (code !== VcmdqCerror.CERROR_ABT && code !== VcmdqCerror.CERROR_ATC_INV_SYNC) this.options.memory.writeWords(slot, linuxSyncCommand(undefined, true));
      this.stats.errorsHandled++;
    }
    this.write32(page0 + VcmdqPage0Reg.GERRORN, gerror);
  }

  /** Takes every queue down (unbind / shutdown): Linux's vintf deinit. */
  shutdown(): Result<void> {
    this.vintfHwDeinit();
    return this.queues.every((q) => !q.enabled) ? ok() : err("EBUSY", "a queue stayed up");
  }
}
