import { registerAt, smmuRegisterMap, type RegisterInfo } from "../format/register-map.js";

/** When a register's writes take effect (IHI0070 §6.3): some are ignored while the unit or queue they configure is enabled. */
export type WriteRule = "always" | "smmu-disabled" | "cmdq-disabled" | "evtq-disabled" | "priq-disabled" | "update-bit" | "ignore";

interface Writable {
  /** Bits software may set; the rest read as zero (RES0) or keep the SMMU's value. */
  readonly mask: bigint;
  readonly rule: WriteRule;
}

const ADDR_51_2 = ((1n << 52n) - 1n) & ~0x3n;

/**
 * The write side of every register the emulated SMMU implements. Registers of features it lacks (AGBPA; the PRI
 * queue's without IDR0.PRI, see PRI_WRITABLE) and read-only ones are absent: writes to them are ignored. CMDQ_CONS
 * RD and EVTQ_PROD / PRIQ_PROD (WR, OVFLG) are the SMMU's to move, software writes them only to initialise a
 * disabled queue; CMDQ_CONS.ERR is never software-writable.
 */
const WRITABLE: Readonly<Record<string, Writable>> = {
  CR0: { mask: 0b11101n, rule: "always" },
  CR1: { mask: 0xfffn, rule: "always" },
  CR2: { mask: 0b110n, rule: "always" },
  GBPA: { mask: 0x1f_3f1fn, rule: "update-bit" },
  IRQ_CTRL: { mask: 0b101n, rule: "always" },
  GERRORN: { mask: 0x1fdn, rule: "always" },
  GERROR_IRQ_CFG0: { mask: ADDR_51_2, rule: "always" },
  GERROR_IRQ_CFG1: { mask: 0xffff_ffffn, rule: "always" },
  GERROR_IRQ_CFG2: { mask: 0x3fn, rule: "always" },
  STRTAB_BASE: { mask: (((1n << 52n) - 1n) & ~0x3fn) | (1n << 62n), rule: "smmu-disabled" },
  STRTAB_BASE_CFG: { mask: 0x3_07ffn, rule: "smmu-disabled" },
  CMDQ_BASE: { mask: (((1n << 52n) - 1n) & ~0x1fn) | 0x1fn | (1n << 62n), rule: "cmdq-disabled" },
  CMDQ_PROD: { mask: 0xf_ffffn, rule: "always" },
  CMDQ_CONS: { mask: 0xf_ffffn, rule: "cmdq-disabled" },
  EVTQ_BASE: { mask: (((1n << 52n) - 1n) & ~0x1fn) | 0x1fn | (1n << 62n), rule: "evtq-disabled" },
  EVTQ_PROD: { mask: 0x8000_0000n | 0xf_ffffn, rule: "evtq-disabled" },
  EVTQ_CONS: { mask: 0x8000_0000n | 0xf_ffffn, rule: "always" },
  EVTQ_IRQ_CFG0: { mask: ADDR_51_2, rule: "always" },
  EVTQ_IRQ_CFG1: { mask: 0xffff_ffffn, rule: "always" },
  EVTQ_IRQ_CFG2: { mask: 0x3fn, rule: "always" },
};

/**
 * With IDR0.PRI (IHI0070 §6.3.33–6.3.36, §6.3.97, §6.3.98): CR0.PRIQEN and IRQ_CTRL.PRIQ_IRQEN exist, and the PRI
 * queue's registers: PRIQ_BASE while the queue is disabled, PRIQ_PROD (the SMMU's) only to initialise it,
 * PRIQ_CONS with OVACKFLG, the MSI registers (PRIQ_IRQ_CFG2 with LO, bit 31: interrupt on Last requests only).
 */
const PRI_WRITABLE: Readonly<Record<string, Writable>> = {
  CR0: { mask: 0b11111n, rule: "always" },
  IRQ_CTRL: { mask: 0b111n, rule: "always" },
  PRIQ_BASE: { mask: (((1n << 52n) - 1n) & ~0x1fn) | 0x1fn | (1n << 62n), rule: "priq-disabled" },
  PRIQ_PROD: { mask: 0x8000_0000n | 0xf_ffffn, rule: "priq-disabled" },
  PRIQ_CONS: { mask: 0x8000_0000n | 0xf_ffffn, rule: "always" },
  PRIQ_IRQ_CFG0: { mask: ADDR_51_2, rule: "always" },
  PRIQ_IRQ_CFG1: { mask: 0xffff_ffffn, rule: "always" },
  PRIQ_IRQ_CFG2: { mask: 0x8000_003fn, rule: "always" },
};

function writable(name: string, pri: boolean): Writable | undefined {
  if (pri && Object.hasOwn(PRI_WRITABLE, name)) return PRI_WRITABLE[name];
  return Object.hasOwn(WRITABLE, name) ? WRITABLE[name] : undefined;
}

/** The bits software can give a register (undefined: software cannot write it), on an SMMU with or without PRI. */
export function writableMask(name: string, pri = false): bigint | undefined {
  const w = writable(name, pri);
  return w === undefined || w.rule === "ignore" ? undefined : w.mask;
}

/** GBPA.UPDATE: a write takes effect only with it set; the SMMU clears it once done. */
const GBPA_UPDATE = 1n << 31n;

/** CR0 bits the write rules look at. */
const CR0_SMMUEN = 1n;
const CR0_EVTQEN = 1n << 2n;
const CR0_CMDQEN = 1n << 3n;
const CR0_PRIQEN = 1n << 1n;
const IDR0_PRI = 1 << 16;

/**
 * The emulated SMMU's register pages as stored values: every register by name, 64-bit ones whole. Reads and
 * writes of 4 or 8 bytes at any offset of the two 64 KiB pages: a 64-bit register is also reachable as two
 * 32-bit halves, an 8-byte access to 32-bit registers covers the two adjacent ones, unimplemented offsets read
 * as zero and ignore writes. Writes apply the architecture's masks and rules; what a write causes beyond
 * storing (acknowledgements, queue processing) is the device's, through `onWrite`.
 */
export class SmmuRegisterFile {
  private readonly values = new Map<string, bigint>();
  /** IDR0.PRI: the PRI queue's registers exist. */
  readonly pri: boolean;

  constructor(
    /** Values of the registers the SMMU alone determines (IDRx, IIDR, AIDR), by name. */
    private readonly fixed: Readonly<Record<string, number>>,
    /** Called after a write took effect, with the register's previous value. */
    private readonly onWrite: (name: string, previous: bigint) => void,
  ) {
    this.pri = ((fixed.IDR0 ?? 0) & IDR0_PRI) !== 0;
    this.fixedValues = new Map(Object.entries(fixed));
  }

  /** `fixed` as a map: every register access looks a name up here first. */
  private readonly fixedValues: ReadonlyMap<string, number>;

  get(name: string): bigint {
    const f = this.fixedValues.get(name);
    if (f !== undefined) return BigInt(f >>> 0);
    return this.values.get(name) ?? 0n;
  }

  /** A register as a number (32-bit registers, and 64-bit ones whose value is an address below 2^53). */
  num(name: string): number {
    return Number(this.get(name));
  }

  /** Sets a register as the SMMU does (no write rules, no hooks): acknowledgements, PROD/CONS, GERROR. */
  set(name: string, value: bigint | number): void {
    this.values.set(name, BigInt(value));
  }

  /** Every stored register, for save/restore. */
  snapshot(): Record<string, string> {
    const out: Record<string, string> = {};
    for (const [name, value] of this.values) out[name] = `0x${value.toString(16)}`;
    return out;
  }

  /** Replaces every stored register (a checked saved state: see `readSmmuv3State`); the others read as zero. */
  restore(values: ReadonlyMap<string, bigint>): void {
    this.values.clear();
    for (const r of smmuRegisterMap) {
      const v = values.get(r.name);
      if (v !== undefined) this.values.set(r.name, v);
    }
  }

  private locate(offset: number): { reg: RegisterInfo; half: 0 | 1 } | undefined {
    const direct = registerAt(offset);
    if (direct !== undefined) return { reg: direct, half: 0 };
    const upper = registerAt(offset - 4);
    if (upper !== undefined && upper.width === 64) return { reg: upper, half: 1 };
    return undefined;
  }

  private read32(offset: number): bigint {
    const at = this.locate(offset);
    if (at === undefined) return 0n;
    const value = this.get(at.reg.name);
    return at.half === 1 ? (value >> 32n) & 0xffff_ffffn : value & 0xffff_ffffn;
  }

  read(offset: number, size: 4 | 8): bigint {
    if (offset % 4 !== 0) return 0n;
    const at = this.locate(offset);
    if (size === 8 && at !== undefined && at.reg.width === 64 && at.half === 0) return this.get(at.reg.name);
    if (size === 8) return this.read32(offset) | (this.read32(offset + 4) << 32n);
    return this.read32(offset);
  }

  write(offset: number, size: 4 | 8, value: bigint): void {
    if (offset % 4 !== 0) return;
    const at = this.locate(offset);
    if (size === 8 && at !== undefined && at.reg.width === 64 && at.half === 0) {
      this.store(at.reg.name, value);
      return;
    }
    this.write32(offset, value & 0xffff_ffffn);
    if (size === 8) this.write32(offset + 4, (value >> 32n) & 0xffff_ffffn);
  }

  private write32(offset: number, value: bigint): void {
    const at = this.locate(offset);
    if (at === undefined) return;
    if (at.reg.width === 32) {
      this.store(at.reg.name, value);
      return;
    }
    const old = this.get(at.reg.name);
    this.store(at.reg.name, at.half === 1 ? (old & 0xffff_ffffn) | (value << 32n) : (old & ~0xffff_ffffn) | value);
  }

  private store(name: string, value: bigint): void {
    const w = writable(name, this.pri);
    if (w === undefined || w.rule === "ignore") return;
    const cr0 = this.get("CR0ACK");
    if (w.rule === "smmu-disabled" && (cr0 & CR0_SMMUEN) !== 0n) return;
    if (w.rule === "cmdq-disabled" && (cr0 & CR0_CMDQEN) !== 0n) return;
    if (w.rule === "evtq-disabled" && (cr0 & CR0_EVTQEN) !== 0n) return;
    if (w.rule === "priq-disabled" && (cr0 & CR0_PRIQEN) !== 0n) return;
    if (w.rule === "update-bit" && (value & GBPA_UPDATE) === 0n) return;
    const previous = this.get(name);
    let next = value & w.mask;
    if (name === "CMDQ_CONS") next |= previous & ~w.mask & 0xffff_ffffn;
    this.values.set(name, next);
    this.onWrite(name, previous);
  }
}
