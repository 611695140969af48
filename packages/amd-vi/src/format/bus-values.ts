/**
 * What a request on the bus can carry (spec x86.md B3, B7, B8): a 16-bit DeviceID, a 64-bit address, a 20-bit
 * PASID, a 9-bit page request group index. Numbers handed to the IOMMU from outside are checked against these
 * before they index a table or reach an encoder, so a value no request could carry never throws.
 */
export function isDeviceId(value: number): boolean {
  return Number.isInteger(value) && value >= 0 && value <= 0xffff;
}

/** A 64-bit bus address: an integer in [0, 2^64) (above 2^53 every double is an integer, and exactly that one). */
export function isAddress64(value: number): boolean {
  return Number.isInteger(value) && value >= 0 && value < 2 ** 64;
}

export function isPasid(value: number): boolean {
  return Number.isInteger(value) && value >= 0 && value < 2 ** 20;
}

/** A PRI page request group index (Linux masks COMPLETE_PPR_REQUEST's tag to 9 bits). */
export function isPprTag(value: number): boolean {
  return Number.isInteger(value) && value >= 0 && value < 512;
}
