/**
 * One stream's CD cache (configuration cache) by SubstreamID + 1, 0 for traffic without one. Most traffic has no
 * SubstreamID, so that entry lives in a field and the hot path reads it without a Map lookup; the others are in
 * a Map. The same operations as a Map.
 */
export class CdCache<T> {
  private noSubstream: T | undefined;
  private readonly bySubstream = new Map<number, T>();

  get(key: number): T | undefined {
    return key === 0 ? this.noSubstream : this.bySubstream.get(key);
  }

  set(key: number, value: T): void {
    if (key === 0) this.noSubstream = value;
    else this.bySubstream.set(key, value);
  }

  delete(key: number): void {
    if (key === 0) this.noSubstream = undefined;
    else this.bySubstream.delete(key);
  }

  clear(): void {
    this.noSubstream = undefined;
    this.bySubstream.clear();
  }
}
