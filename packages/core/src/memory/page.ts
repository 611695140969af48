/** The base page: every memory model here is 4 KiB page-granular. */
export const PAGE_SHIFT = 12;
export const PAGE_SIZE = 1 << PAGE_SHIFT;

if (new Uint8Array(new Uint32Array([1]).buffer)[0] !== 1) {
  // Frames are read through Uint32Array views for speed; that is only right on a little-endian host.
  throw new Error("viommu needs a little-endian host");
}

/** One page of backing store, with byte and 32-bit views over the same buffer. */
export interface Frame {
  readonly bytes: Uint8Array;
  readonly words: Uint32Array;
}

export function newFrame(): Frame {
  const buffer = new ArrayBuffer(PAGE_SIZE);
  return { bytes: new Uint8Array(buffer), words: new Uint32Array(buffer) };
}

export function pageNumber(address: number): number {
  return Math.floor(address / PAGE_SIZE);
}
