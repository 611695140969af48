/**
 * IMPLEMENTATION DEFINED register bits of the SMMU this project models (IHI0070 leaves IDR4 entirely to the
 * implementation). Real SMMUs give them other meanings or none; only this model's emulated SMMU and its
 * reference guest driver use them.
 */

/**
 * IDR4 bit 0, "map notify": the emulated SMMU shadows the guest's stage-1 tables (no nesting), so it only
 * learns of a new mapping if the driver invalidates after mapping, as a VT-d guest does in caching mode. The
 * reference driver then issues a TLBI after every map. A stock Linux guest ignores the bit (and so cannot be
 * shadowed: QEMU refuses MAP notifiers on its SMMUv3 for the same reason).
 */
export const IDR4_MODEL_MAP_NOTIFY = 1 << 0;
