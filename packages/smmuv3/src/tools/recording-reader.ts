import type { EntryReader } from "@viommu/core";

/**
 * An EntryReader that remembers every 8-byte entry it read (address, low and high halves), in order, for the walk
 * tool's step table: a walk through it leaves exactly the entries the SMMU fetched. Failed reads are not kept.
 */
export class RecordingReader implements EntryReader {
  /** address, lo, hi for each read. */
  readonly reads: number[] = [];

  constructor(private readonly inner: EntryReader) {}

  readEntry(address: number, out: Uint32Array): boolean {
    if (!this.inner.readEntry(address, out)) return false;
    this.reads.push(address, out[0]!, out[1]!);
    return true;
  }

  clear(): void {
    this.reads.length = 0;
  }

  get count(): number {
    return this.reads.length / 3;
  }
}
