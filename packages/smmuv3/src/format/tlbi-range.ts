import type { RawBits } from "@viommu/core";

/** TLBI TG encodings (dw1[11:10]): 0 = any granule, no range and no TTL hint. */
const TG_16K = 2;

/**
 * Whether a TLBI by address (CMD_TLBI_NH_VA / NH_VAA / EL2_VA / EL2_VAA / S2_IPA) uses a range encoding the
 * architecture reserves, which raises CERROR_ILL (IHI0070 §4.4.1, "Range invalidation"):
 * - without IDR3.RIL, NUM, SCALE, TG and TTL are RES0;
 * - with TG == 0, NUM, SCALE and TTL are RES0;
 * - NUM == 0, SCALE == 0 with TTL == 0 (and TG ≠ 0) is Reserved;
 * - TG == 16 KiB with TTL == 1 is Reserved without IDR5.DS (this model has no DS).
 * Linux's arm_vsmmu_validate_range refuses the same encodings from a guest with EIO. Reads the halves only.
 */
export function tlbiRangeReserved(raw: RawBits, rangeInvalidation: boolean): boolean {
  const num = (raw[0]! >>> 12) & 0x1f;
  const scale = (raw[0]! >>> 20) & 0x1f;
  const ttl = (raw[2]! >>> 8) & 0b11;
  const tg = (raw[2]! >>> 10) & 0b11;
  if (!rangeInvalidation) return (num | scale | ttl | tg) !== 0;
  if (tg === 0) return (num | scale | ttl) !== 0;
  if (tg === TG_16K && ttl === 1) return true;
  return (num | scale | ttl) === 0;
}
