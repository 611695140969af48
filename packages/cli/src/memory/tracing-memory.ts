import { GuestMemory, HostMemory } from "@viommu/core";
import type { MemoryImage } from "./memory-image.js";

/** One read a walk made of guest memory: where, how many bytes, and whether the dump holds that address. */
export interface MemoryRead {
  readonly address: number;
  readonly bytes: number;
  /** The value read, as 64-bit hex words lowest first (or the 32-bit word). */
  readonly value: readonly string[];
  readonly inImage: boolean;
}

/** Guest-physical addresses a dump tool accepts: the 52-bit physical space every supported architecture has. */
const PHYSICAL_SPACE = 2 ** 52;

const hex64 = (lo: number, hi: number): string => `0x${hi.toString(16).padStart(8, "0")}${lo.toString(16).padStart(8, "0")}`;

/**
 * Guest memory over a dump that records every read a walk makes. It spans the whole physical space, so a table
 * pointer outside the dump is read (as zeros) and shows up as a read the dump does not hold, instead of
 * turning into a fetch fault nobody can tell from a real one.
 */
export class TracingGuestMemory extends GuestMemory {
  private log: MemoryRead[] | undefined;

  constructor(private readonly dump: MemoryImage) {
    super(new HostMemory({ sizeBytes: 2 ** 46 }), 1, { sizeBytes: PHYSICAL_SPACE, base: 0, backingPageShift: 12, image: dump });
  }

  /** Runs `walk` and returns its result with the reads it made. */
  traced<T>(walk: () => T): { result: T; reads: MemoryRead[] } {
    const reads: MemoryRead[] = [];
    this.log = reads;
    try {
      return { result: walk(), reads };
    } finally {
      this.log = undefined;
    }
  }

  private depth = 0;

  /** Calls the plain read; only the outermost read of a nested call chain is recorded. */
  private inner<T>(read: () => T): T {
    this.depth++;
    try {
      return read();
    } finally {
      this.depth--;
    }
  }

  private record(address: number, bytes: number, value: readonly string[]): void {
    if (this.depth === 0) this.log?.push({ address, bytes, value, inImage: this.dump.covers(address) && this.dump.covers(address + bytes - 1) });
  }

  override read32(address: number): number {
    const v = this.inner(() => super.read32(address));
    this.record(address, 4, [`0x${v.toString(16).padStart(8, "0")}`]);
    return v;
  }

  override read64(address: number): bigint {
    const v = this.inner(() => super.read64(address));
    this.record(address, 8, [`0x${v.toString(16).padStart(16, "0")}`]);
    return v;
  }

  override read64Halves(address: number, out: Uint32Array): void {
    this.inner(() => super.read64Halves(address, out));
    this.record(address, 8, [hex64(out[0]!, out[1]!)]);
  }

  override readWords(address: number, out: Uint32Array): Uint32Array {
    this.inner(() => super.readWords(address, out));
    const words: string[] = [];
    for (let i = 0; i + 1 < out.length; i += 2) words.push(hex64(out[i]!, out[i + 1]!));
    if (out.length % 2 === 1) words.push(`0x${out[out.length - 1]!.toString(16).padStart(8, "0")}`);
    this.record(address, out.length * 4, words);
    return out;
  }

  override readBytes(address: number, length: number, into?: Uint8Array): Uint8Array {
    const bytes = this.inner(() => super.readBytes(address, length, into));
    const words: string[] = [];
    for (let i = 0; i < bytes.length; i += 8) {
      let v = 0n;
      for (let b = Math.min(bytes.length, i + 8) - 1; b >= i; b--) v = (v << 8n) | BigInt(bytes[b]!);
      words.push(`0x${v.toString(16).padStart(Math.min(16, (bytes.length - i) * 2), "0")}`);
    }
    this.record(address, length, words);
    return bytes;
  }
}
