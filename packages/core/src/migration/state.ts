import { err, ok, type Result } from "../errors/errno.js";

/**
 * Versioned, checksummed save state for migration. A blob is: magic "VIOMMUST", u16 kind length, kind
 * (UTF-8), u32 version, u32 payload length, u32 CRC-32 of the payload, payload (UTF-8 JSON). Restoring
 * checks each part and answers EINVAL with the reason, never a half-restored device.
 */
export type StateValue = null | boolean | number | string | StateValue[] | { [key: string]: StateValue };

const MAGIC = "VIOMMUST";

const CRC_TABLE = (() => {
  const t = new Uint32Array(256);
  for (let n = 0; n < 256; n++) {
    let c = n;
    for (let k = 0; k < 8; k++) c = c & 1 ? 0xedb88320 ^ (c >>> 1) : c >>> 1;
    t[n] = c >>> 0;
  }
  return t;
})();

/** CRC-32 (IEEE 802.3, as zlib computes it). */
export function crc32(bytes: Uint8Array): number {
  let c = 0xffffffff;
  for (const b of bytes) c = CRC_TABLE[(c ^ b) & 0xff]! ^ (c >>> 8);
  return (c ^ 0xffffffff) >>> 0;
}

export function encodeState(kind: string, version: number, value: StateValue): Uint8Array {
  const enc = new TextEncoder();
  const kindBytes = enc.encode(kind);
  const payload = enc.encode(JSON.stringify(value));
  const out = new Uint8Array(MAGIC.length + 2 + kindBytes.length + 12 + payload.length);
  const view = new DataView(out.buffer);
  out.set(enc.encode(MAGIC), 0);
  let at = MAGIC.length;
  view.setUint16(at, kindBytes.length, true);
  at += 2;
  out.set(kindBytes, at);
  at += kindBytes.length;
  view.setUint32(at, version, true);
  view.setUint32(at + 4, payload.length, true);
  view.setUint32(at + 8, crc32(payload), true);
  out.set(payload, at + 12);
  return out;
}

export interface DecodedState {
  readonly kind: string;
  readonly version: number;
  readonly value: StateValue;
}

/** The kind and version a blob claims, read without checking its payload (undefined: not a state blob). */
export function peekState(blob: Uint8Array): { kind: string; version: number } | undefined {
  const dec = new TextDecoder();
  if (blob.length < MAGIC.length + 14 || dec.decode(blob.subarray(0, MAGIC.length)) !== MAGIC) return undefined;
  const view = new DataView(blob.buffer, blob.byteOffset, blob.byteLength);
  const kindLength = view.getUint16(MAGIC.length, true);
  const at = MAGIC.length + 2 + kindLength;
  if (at + 4 > blob.length) return undefined;
  return { kind: dec.decode(blob.subarray(MAGIC.length + 2, at)), version: view.getUint32(at, true) };
}

/** Decodes a blob of `kind` whose version is one of `versions`. */
export function decodeState(blob: Uint8Array, kind: string, versions: readonly number[]): Result<DecodedState> {
  const dec = new TextDecoder();
  if (blob.length < MAGIC.length + 14 || dec.decode(blob.subarray(0, MAGIC.length)) !== MAGIC) return err("EINVAL", "not a viommu state blob");
  const view = new DataView(blob.buffer, blob.byteOffset, blob.byteLength);
  let at = MAGIC.length;
  const kindLength = view.getUint16(at, true);
  at += 2;
  if (at + kindLength + 12 > blob.length) return err("EINVAL", "state blob truncated");
  const foundKind = dec.decode(blob.subarray(at, at + kindLength));
  at += kindLength;
  if (foundKind !== kind) return err("EINVAL", `state is for ${foundKind}, not ${kind}`);
  const version = view.getUint32(at, true);
  if (!versions.includes(version)) return err("EINVAL", `${kind} state version ${version} not supported (${versions.join(", ")})`);
  const length = view.getUint32(at + 4, true);
  const checksum = view.getUint32(at + 8, true);
  const payload = blob.subarray(at + 12);
  if (payload.length !== length) return err("EINVAL", "state payload length mismatch");
  if (crc32(payload) !== checksum) return err("EINVAL", "state checksum mismatch");
  try {
    return ok({ kind, version, value: JSON.parse(dec.decode(payload)) as StateValue });
  } catch {
    return err("EINVAL", "state payload is not JSON");
  }
}

/**
 * Something whose queues can be frozen for a consistent snapshot: while frozen, doorbells and guest
 * writes are latched, not processed; thawing processes what was latched.
 */
export interface Freezable {
  freeze(): void;
  thaw(): void;
  readonly frozen: boolean;
}

/** Saves a device with its queues frozen for the duration, then thaws it whatever happened. */
export function saveFrozen<T>(device: Freezable, save: () => T): T {
  const wasFrozen = device.frozen;
  if (!wasFrozen) device.freeze();
  try {
    return save();
  } finally {
    if (!wasFrozen) device.thaw();
  }
}
