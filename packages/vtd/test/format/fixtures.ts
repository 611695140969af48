import { createReadStream, readFileSync } from "node:fs";
import { fileURLToPath } from "node:url";
import { createGunzip, gunzipSync } from "node:zlib";

/** The real-guest fixtures copied from ../shared/fixtures/real-guest/vtd-legacy (see its README.md). */
export const FIXTURE_DIR = fileURLToPath(new URL("../fixtures/real-guest/vtd-legacy/", import.meta.url));

export function fixturePath(name: string): string {
  return FIXTURE_DIR + name;
}

/** Every JSON record of a gzipped JSON-lines fixture. */
export function readJsonLinesGz<T>(name: string): T[] {
  const text = gunzipSync(readFileSync(fixturePath(name))).toString("utf8");
  return text
    .split("\n")
    .filter((line) => line.trim() !== "")
    .map((line) => JSON.parse(line) as T);
}

export function readJsonGz<T>(name: string): T {
  return JSON.parse(gunzipSync(readFileSync(fixturePath(name))).toString("utf8")) as T;
}

/**
 * Bytes [start, start + length) of the gzipped guest-memory image, streamed so the 256 MiB image is never
 * held whole: decompression stops once the range is read.
 */
export function readMemoryRange(start: number, length: number): Promise<Uint8Array> {
  return new Promise((resolve, reject) => {
    const out = new Uint8Array(length);
    let offset = 0;
    let filled = 0;
    const file = createReadStream(fixturePath("memdump-iommu.raw.gz"));
    const gunzip = createGunzip();
    const finish = (): void => {
      file.destroy();
      gunzip.destroy();
      resolve(out);
    };
    gunzip.on("data", (chunk: Buffer) => {
      const chunkEnd = offset + chunk.length;
      const from = Math.max(start, offset);
      const to = Math.min(start + length, chunkEnd);
      if (from < to) {
        out.set(chunk.subarray(from - offset, to - offset), from - start);
        filled += to - from;
      }
      offset = chunkEnd;
      if (filled === length) finish();
    });
    gunzip.on("error", reject);
    gunzip.on("end", () => (filled === length ? resolve(out) : reject(new Error(`memory image ends before 0x${(start + length).toString(16)}`))));
    file.pipe(gunzip);
  });
}

/** 64-bit words (lowest first) from little-endian bytes at `offset`, as 32-bit halves. */
export function rawAt(bytes: Uint8Array, offset: number, bitCount: number): Uint32Array {
  const view = new DataView(bytes.buffer, bytes.byteOffset + offset, bitCount / 8);
  const raw = new Uint32Array(bitCount / 32);
  for (let i = 0; i < raw.length; i++) raw[i] = view.getUint32(4 * i, true);
  return raw;
}
