import { decodeLayout, defineLayout, encodeLayout, rawBits, type Fields, type RawBits } from "@viommu/core";

/**
 * The 64-byte Stream Table Entry (IHI0070 §5.2; spec arm-hyperv-virtio.md §1.6). Bit positions are absolute
 * within the 512-bit entry (64·dwN + bit). Field names are the architecture's. Words 4–7 (secure stage 2,
 * MPAM, VMS pointer) are left undeclared: Linux writes them as zero and this model does not use them, so they
 * show up as reserved bits.
 */
export const steLayout = defineLayout("STE", 512, [
  // dw0
  { name: "V", bit: 0, width: 1 },
  { name: "Config", bit: 1, width: 3 },
  { name: "S1Fmt", bit: 4, width: 2 },
  { name: "S1ContextPtr", bit: 6, width: 46, shift: 6 },
  { name: "S1CDMax", bit: 59, width: 5 },
  // dw1
  { name: "S1DSS", bit: 64, width: 2 },
  { name: "S1CIR", bit: 66, width: 2 },
  { name: "S1COR", bit: 68, width: 2 },
  { name: "S1CSH", bit: 70, width: 2 },
  { name: "S2HWU59", bit: 72, width: 1 },
  { name: "S2HWU60", bit: 73, width: 1 },
  { name: "S2HWU61", bit: 74, width: 1 },
  { name: "S2HWU62", bit: 75, width: 1 },
  { name: "DRE", bit: 76, width: 1 },
  { name: "CONT", bit: 77, width: 4 },
  { name: "DCP", bit: 81, width: 1 },
  { name: "PPAR", bit: 82, width: 1 },
  { name: "MEV", bit: 83, width: 1 },
  { name: "S2FWB", bit: 89, width: 1 },
  { name: "S1STALLD", bit: 91, width: 1 },
  { name: "EATS", bit: 92, width: 2 },
  { name: "STRW", bit: 94, width: 2 },
  { name: "MemAttr", bit: 96, width: 4 },
  { name: "MTCFG", bit: 100, width: 1 },
  { name: "ALLOCCFG", bit: 101, width: 4 },
  { name: "SHCFG", bit: 108, width: 2 },
  { name: "NSCFG", bit: 110, width: 2 },
  { name: "PRIVCFG", bit: 112, width: 2 },
  { name: "INSTCFG", bit: 114, width: 2 },
  // dw2
  { name: "S2VMID", bit: 128, width: 16 },
  { name: "S2T0SZ", bit: 160, width: 6 },
  { name: "S2SL0", bit: 166, width: 2 },
  { name: "S2IR0", bit: 168, width: 2 },
  { name: "S2OR0", bit: 170, width: 2 },
  { name: "S2SH0", bit: 172, width: 2 },
  { name: "S2TG", bit: 174, width: 2 },
  { name: "S2PS", bit: 176, width: 3 },
  { name: "S2AA64", bit: 179, width: 1 },
  { name: "S2ENDI", bit: 180, width: 1 },
  { name: "S2AFFD", bit: 181, width: 1 },
  { name: "S2PTW", bit: 182, width: 1 },
  { name: "S2HD", bit: 183, width: 1 },
  { name: "S2HA", bit: 184, width: 1 },
  { name: "S2S", bit: 185, width: 1 },
  { name: "S2R", bit: 186, width: 1 },
  // dw3
  { name: "S2TTB", bit: 196, width: 48, shift: 4 },
] as const);

export type SteFields = Fields<typeof steLayout>;

/** STE.Config values (0b001..0b011 are reserved and behave as abort). */
export const SteConfig = {
  Abort: 0b000,
  Bypass: 0b100,
  S1Translate: 0b101,
  S2Translate: 0b110,
  Nested: 0b111,
} as const;

/** Mnemonic of an STE.Config value (Linux STRTAB_STE_0_CFG_* names), `UNKNOWN` for the reserved values. */
export function steConfigName(config: number): string {
  switch (config) {
    case SteConfig.Abort:
      return "ABORT";
    case SteConfig.Bypass:
      return "BYPASS";
    case SteConfig.S1Translate:
      return "S1_TRANS";
    case SteConfig.S2Translate:
      return "S2_TRANS";
    case SteConfig.Nested:
      return "NESTED";
    default:
      return "UNKNOWN";
  }
}

/** Whether a Config value translates at stage 1 (0b1x1) / stage 2 (0b11x). */
export function steStage1Enabled(config: number): boolean {
  return (config & 0b101) === 0b101;
}
export function steStage2Enabled(config: number): boolean {
  return (config & 0b110) === 0b110;
}

/** STE.S1Fmt values. */
export const SteS1Fmt = { Linear: 0, TwoLevel4K: 1, TwoLevel64K: 2 } as const;
/** STE.S1DSS values: what traffic without a SubstreamID does when S1CDMax ≠ 0. */
export const SteS1Dss = { Terminate: 0, Bypass: 1, Ssid0: 2 } as const;
/** STE.EATS values. */
export const SteEats = { Abort: 0, Translate: 1, S1Check: 2 } as const;
/** STE.STRW values Linux uses. */
export const SteStrw = { NsEl1: 0, El2: 2 } as const;
/** STE.SHCFG values. */
export const SteShcfg = { NSH: 0, Incoming: 1, OSH: 2, ISH: 3 } as const;

export function decodeSte(raw: RawBits): SteFields {
  return decodeLayout(steLayout, raw);
}

export function encodeSte(fields: Partial<SteFields>): RawBits {
  return encodeLayout(steLayout, fields);
}

/*
 * Nesting (iommufd): the guest hands the host a vSTE (its dw0 and dw1, IOMMU_HWPT_DATA_ARM_SMMUV3); the host
 * accepts only the stage-1 fields below (Linux STRTAB_STE_0/1_NESTING_ALLOWED, spec iommufd.md §3.6) and
 * supplies every stage-2 field itself.
 */

/** vSTE fields a guest may set, by the word they live in. */
export const STE_NESTING_ALLOWED_FIELDS = {
  dw0: ["V", "Config", "S1Fmt", "S1ContextPtr", "S1CDMax"],
  dw1: ["S1DSS", "S1CIR", "S1COR", "S1CSH", "S1STALLD", "EATS"],
} as const;

/** vSTE Config values a nested domain may use. */
export const STE_NESTING_ALLOWED_CONFIGS: readonly number[] = [SteConfig.Abort, SteConfig.Bypass, SteConfig.S1Translate];
/** vSTE EATS values a nested domain may use ("abort" and "full translation"). */
export const STE_NESTING_ALLOWED_EATS: readonly number[] = [SteEats.Abort, SteEats.Translate];

/** The allowed bits of dw0 and dw1 as raw bits (4 × 32-bit halves), built from the layout. */
export const STE_NESTING_ALLOWED_MASK: RawBits = (() => {
  const mask = rawBits(128);
  for (const name of [...STE_NESTING_ALLOWED_FIELDS.dw0, ...STE_NESTING_ALLOWED_FIELDS.dw1]) {
    const f = steLayout.field(name);
    for (let b = f.bit; b < f.bit + f.width; b++) mask[b >>> 5] = (mask[b >>> 5]! | (1 << (b & 31))) >>> 0;
  }
  return mask;
})();

export type NestedVsteCheck =
  | {
      readonly ok: true;
      /** dw0..dw1 as the host will use them: all zero for V = 0 (an abort STE), else EATS cleared. */
      readonly vste: RawBits;
      /** The guest asked for ATS on a stage-1 translating vSTE. */
      readonly enableAts: boolean;
    }
  | { readonly ok: false; readonly errno: "EIO"; readonly reason: string };

/**
 * Linux's check of a guest vSTE (`arm_smmu_validate_vste`): `raw` holds dw0 and dw1 (128 bits). V = 0 is
 * accepted and becomes an all-zero (abort) vSTE; any bit outside the allowed fields, a Config other than
 * abort/bypass/S1 translate, or EATS other than abort/translate fails with EIO. Never throws.
 */
export function checkNestedVste(raw: RawBits): NestedVsteCheck {
  if (raw.length !== 4) return { ok: false, errno: "EIO", reason: `vSTE must be 2 words, got ${raw.length / 2}` };
  const out = rawBits(128);
  if ((raw[0]! & 1) === 0) return { ok: true, vste: out, enableAts: false };
  for (let i = 0; i < 4; i++) {
    const extra = (raw[i]! & ~STE_NESTING_ALLOWED_MASK[i]!) >>> 0;
    if (extra !== 0) return { ok: false, errno: "EIO", reason: `vSTE sets bits outside the nesting-allowed fields (word ${i >> 1}, mask 0x${extra.toString(16)})` };
  }
  const config = (raw[0]! >>> 1) & 0b111;
  if (!STE_NESTING_ALLOWED_CONFIGS.includes(config)) return { ok: false, errno: "EIO", reason: `vSTE Config ${config} is not abort, bypass or S1 translate` };
  const eats = (raw[2]! >>> 28) & 0b11;
  if (!STE_NESTING_ALLOWED_EATS.includes(eats)) return { ok: false, errno: "EIO", reason: `vSTE EATS ${eats} is not abort or translate` };
  out.set(raw);
  out[2] = (out[2]! & ~(0b11 << 28)) >>> 0;
  return { ok: true, vste: out, enableAts: config === SteConfig.S1Translate && eats === SteEats.Translate };
}
