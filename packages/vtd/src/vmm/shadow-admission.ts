import { Perm, type GuestMemory, type ShadowAdmit } from "@viommu/core";
import { overlapsInterruptRange } from "../format/msi.js";

/**
 * What a VT-d guest leaf may become in the host's shadow: its read/write permissions, or nothing when the
 * device could not use it through the guest's tables. A first-level leaf without U/S is not reachable by the
 * device's requests (untranslated requests without PASID are user requests, RID_PRIV = 0), an output that
 * overlaps the interrupt address range is blocked by the remapping hardware (VT-d §3.15), and an output outside
 * guest RAM reaches nothing.
 */
export function vtdShadowAdmit(memory: GuestMemory, firstLevel: boolean): ShadowAdmit {
  return (leaf) => {
    if (firstLevel && (leaf.perms & Perm.User) === 0) return 0;
    const size = 2 ** leaf.pageShift;
    if (!memory.contains(leaf.output, size) || overlapsInterruptRange(leaf.output, size)) return 0;
    return leaf.perms & Perm.ReadWrite;
  };
}
