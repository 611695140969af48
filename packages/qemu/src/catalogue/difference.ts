import type { Classification, KnownDifference } from "@viommu/trace";
import type { QemuVendor } from "../machines/qemu-machine.js";

/**
 * A known difference between the model and QEMU 7.2, with who is wrong and why. Every entry is also described in
 * qemu-differences.md (same id). A divergence none of these explains fails a difftest run.
 */
export interface QemuDifference extends KnownDifference {
  readonly vendor: QemuVendor;
  readonly classification: Classification;
  /** The specification's word on it (section of the architecture specification). */
  readonly specification: string;
  /** Where QEMU does it (file and function in QEMU's source). */
  readonly qemu: string;
}
