import { cmdqvCounts, cmdqvParamLayout } from "../format/global-registers.js";
import { decodeReg32, encodeReg32 } from "../format/register-value.js";
import { CMDQV_MAX_SIDS_PER_VINTF, CMDQV_MAX_VCMDQS, CMDQV_MAX_VINTFS, cmdqvApertureSize } from "../format/aperture.js";

/** What a physical CMDQV is: its PARAM register and where its aperture sits in the host's physical map. */
export interface CmdqvHwConfig {
  /** TEGRA241_CMDQV_PARAM as the hardware reports it. */
  readonly param: number;
  /** Physical base of the aperture (64 KiB aligned: the VINTF pages are mmapped from it). */
  readonly physicalBase: number;
}

/**
 * The modelled host CMDQV: version 1 with the register file's maxima, 128 VCMDQs shared by 64 VINTFs (2 logical
 * VCMDQs each) and 16 SID slots per VINTF. NVIDIA publishes no PARAM of a shipping Grace; these are the largest
 * counts the map registers (CMDQ_ERR_MAP, VINTF_ERR_MAP) can describe, not a measured part.
 */
export const DEFAULT_CMDQV_PARAM = encodeReg32(cmdqvParamLayout, {
  CMDQV_VER: 1,
  CMDQV_NUM_VCMDQ_LOG2: Math.log2(CMDQV_MAX_VCMDQS),
  CMDQV_NUM_VINTF_LOG2: Math.log2(CMDQV_MAX_VINTFS),
  CMDQV_NUM_SID_PER_VM_LOG2: Math.log2(CMDQV_MAX_SIDS_PER_VINTF),
});

/** Physical base of unit 0's aperture; further units follow at 16 MiB steps (the aperture is 8.2 MiB). */
export const CMDQV_PHYSICAL_BASE = 0x11_0000_0000;
export const CMDQV_PHYSICAL_STRIDE = 0x100_0000;

export function defaultCmdqvHwConfig(index: number): CmdqvHwConfig {
  return { param: DEFAULT_CMDQV_PARAM, physicalBase: CMDQV_PHYSICAL_BASE + index * CMDQV_PHYSICAL_STRIDE };
}

/** The counts a configuration implies, bounded by the register file (a PARAM naming more is clamped). */
export interface CmdqvGeometry {
  readonly vintfs: number;
  readonly vcmdqs: number;
  readonly lvcmdqsPerVintf: number;
  readonly sidsPerVintf: number;
  readonly apertureBytes: number;
}

export function cmdqvGeometry(config: CmdqvHwConfig): CmdqvGeometry {
  const counts = cmdqvCounts(decodeReg32(cmdqvParamLayout, config.param));
  const vintfs = Math.max(1, Math.min(counts.vintfs, CMDQV_MAX_VINTFS));
  const vcmdqs = Math.max(1, Math.min(counts.vcmdqs, CMDQV_MAX_VCMDQS));
  return {
    vintfs,
    vcmdqs,
    lvcmdqsPerVintf: Math.max(1, Math.floor(vcmdqs / vintfs)),
    sidsPerVintf: Math.min(counts.sidsPerVintf, CMDQV_MAX_SIDS_PER_VINTF),
    apertureBytes: cmdqvApertureSize(vintfs),
  };
}
