import type { Layout } from "@viommu/core";
import { controlLayout } from "./control-register.js";
import { deviceTableBaseLayout, deviceTableSegmentBaseLayout } from "./device-table-base-register.js";
import { exclusionBaseLayout, exclusionLimitLayout } from "./exclusion-registers.js";
import { efr2Layout, efrLayout } from "./extended-feature-register.js";
import { gaLogTailAddressLayout } from "./ga-log.js";
import { fieldRecord, type FieldRecord } from "./layout-tools.js";
import { AMDVI_MMIO_SIZE_WITH_COUNTERS, mmioRegisterAt, type MmioRegister } from "./mmio-register-map.js";
import { commandBufferBaseLayout, eventLogBaseLayout, eventLogBBaseLayout, gaLogBaseLayout, pprLogBaseLayout, pprLogBBaseLayout } from "./ring-base-registers.js";
import {
  commandBufferHeadLayout,
  commandBufferTailLayout,
  eventLogHeadLayout,
  eventLogTailLayout,
  gaLogHeadLayout,
  gaLogTailLayout,
  pprLogHeadLayout,
  pprLogTailLayout,
} from "./ring-pointer-registers.js";
import { statusLayout } from "./status-register.js";
import { xtInterruptControlLayout } from "./xt-interrupt-control-register.js";

/**
 * A 64-bit read of the MMIO window at any offset, named and decoded by the registers it covers: what Linux's
 * debugfs `iommuXX/mmio` file shows (a readq at the offset written into it). A read that is exactly one 64-bit
 * register decodes by that register's fields; otherwise each 32-bit half is named by the register (or the part
 * of one) it holds.
 */
const layoutByRegister: ReadonlyMap<string, Layout> = new Map<string, Layout>([
  ["DeviceTableBase", deviceTableBaseLayout],
  ["CommandBufferBase", commandBufferBaseLayout],
  ["EventLogBase", eventLogBaseLayout],
  ["Control", controlLayout],
  ["ExclusionBase", exclusionBaseLayout],
  ["ExclusionLimit", exclusionLimitLayout],
  ["ExtendedFeature", efrLayout],
  ["PprLogBase", pprLogBaseLayout],
  ["GaLogBase", gaLogBaseLayout],
  ["GaLogTailAddress", gaLogTailAddressLayout],
  ["PprLogBBase", pprLogBBaseLayout],
  ["EventLogBBase", eventLogBBaseLayout],
  ...Array.from({ length: 7 }, (_, i): [string, Layout] => [`DeviceTableSegment${i + 1}Base`, deviceTableSegmentBaseLayout]),
  ["XtGeneralInterruptControl", xtInterruptControlLayout],
  ["XtPprInterruptControl", xtInterruptControlLayout],
  ["XtGaLogInterruptControl", xtInterruptControlLayout],
  ["ExtendedFeature2", efr2Layout],
  ["CommandBufferHead", commandBufferHeadLayout],
  ["CommandBufferTail", commandBufferTailLayout],
  ["EventLogHead", eventLogHeadLayout],
  ["EventLogTail", eventLogTailLayout],
  ["Status", statusLayout],
  ["PprLogHead", pprLogHeadLayout],
  ["PprLogTail", pprLogTailLayout],
  ["GaLogHead", gaLogHeadLayout],
  ["GaLogTail", gaLogTailLayout],
]);

/** The register whose bytes include `offset` (registers are 4 or 8 bytes, naturally aligned). */
function registerHolding(offset: number): MmioRegister | undefined {
  const at = mmioRegisterAt(offset);
  if (at !== undefined) return at;
  const before = mmioRegisterAt(offset - 4);
  return before !== undefined && before.bytes === 8 ? before : undefined;
}

export interface MmioRead {
  /** The register read whole, or the registers (and halves) the 8 bytes span, e.g. "Control[63:32] ExclusionBase[31:0]". */
  readonly name: string;
  readonly fields: FieldRecord;
}

/** The largest offset a 64-bit read may start at (the window with performance counters, less 8 bytes). */
export const MMIO_LAST_READ_OFFSET = AMDVI_MMIO_SIZE_WITH_COUNTERS - 8;

/** Names and decodes the 64-bit value read at `offset` (given as its two 32-bit halves). */
export function decodeMmioRead(offset: number, lo: number, hi: number): MmioRead {
  const whole = mmioRegisterAt(offset);
  if (whole !== undefined && whole.bytes === 8) {
    const layout = layoutByRegister.get(whole.name);
    const fields: FieldRecord = layout !== undefined ? fieldRecord(layout, Uint32Array.of(lo, hi)) : { value: BigInt(hi) * 0x1_0000_0000n + BigInt(lo) };
    if (layout === xtInterruptControlLayout) fields["Destination"] = Number(fields["Destination_31_24"]) * 2 ** 24 + Number(fields["Destination_23_0"]);
    return { name: whole.name, fields };
  }
  if (offset % 4 !== 0) return { name: "unaligned", fields: { value: BigInt(hi) * 0x1_0000_0000n + BigInt(lo) } };
  const fields: FieldRecord = {};
  const names: string[] = [];
  for (const [at, half] of [
    [offset, lo],
    [offset + 4, hi],
  ] as const) {
    const reg = registerHolding(at);
    const name = reg === undefined ? `Reserved@0x${at.toString(16)}` : reg.bytes === 4 ? reg.name : `${reg.name}${at === reg.offset ? "[31:0]" : "[63:32]"}`;
    names.push(name);
    fields[name] = half;
  }
  return { name: names.join(" "), fields };
}
