import { closeSync, createReadStream, fstatSync, openSync, readSync } from "node:fs";
import { createGunzip } from "node:zlib";
import { PAGE_SIZE, type PhysicalImage } from "@viommu/core";
import { fileProblem, InputError, UsageError } from "../cli/errors.js";
import { parseU64 } from "../cli/numbers.js";
import { elfLoadSegments, isElf } from "./elf-core.js";

/** A file's bytes, read at any position (a file on disk read lazily, or a decompressed archive kept sparse). */
interface ByteSource {
  readonly size: number;
  /** Copies bytes [position, position + into.length) into `into`; bytes past the end read as zero. */
  readInto(position: number, into: Uint8Array): void;
  close(): void;
}

/** One guest-physical range of the image and where its bytes are. */
export interface ImageRange {
  readonly base: number;
  readonly size: number;
  /** How the user named it: `file`, `file@0x100000000`, `core.elf PT_LOAD 3`. */
  readonly label: string;
}

interface Segment extends ImageRange {
  readonly source: ByteSource;
  /** File offset of the range's first byte; bytes beyond `fileBytes` read as zero (ELF p_memsz > p_filesz). */
  readonly offset: number;
  readonly fileBytes: number;
}

/** Guest memory as the user's dumps hold it: one or more ranges, read a page at a time. */
export class MemoryImage implements PhysicalImage {
  private constructor(private readonly segments: readonly Segment[]) {}

  get ranges(): readonly ImageRange[] {
    return this.segments.map(({ base, size, label }) => ({ base, size, label }));
  }

  /** The lowest and highest guest-physical address the image covers (page aligned outwards). */
  span(): { base: number; size: number } {
    const base = Math.min(...this.segments.map((s) => s.base));
    const end = Math.max(...this.segments.map((s) => s.base + s.size));
    const low = base - (base % PAGE_SIZE);
    return { base: low, size: Math.ceil((end - low) / PAGE_SIZE) * PAGE_SIZE };
  }

  /** Whether the address lies in a range of the image (not in a hole between ranges or beyond them). */
  covers(address: number): boolean {
    return this.segments.some((s) => address >= s.base && address < s.base + s.size);
  }

  read(address: number, into: Uint8Array): void {
    into.fill(0);
    const end = address + into.length;
    // First covering segment wins (a kdump core repeats the kernel's text in an earlier PT_LOAD).
    for (let i = this.segments.length - 1; i >= 0; i--) {
      const s = this.segments[i]!;
      const from = Math.max(address, s.base);
      const to = Math.min(end, s.base + Math.min(s.size, s.fileBytes));
      if (from >= to) continue;
      s.source.readInto(s.offset + (from - s.base), into.subarray(from - address, to - address));
    }
  }

  close(): void {
    for (const source of new Set(this.segments.map((s) => s.source))) source.close();
  }

  /**
   * Opens every `--memory FILE[@BASE]` the user gave. A file is an ELF core (by magic: its PT_LOAD segments
   * place it), gzip (decompressed once, kept sparse), or a raw guest-physical image placed at BASE (default
   * `defaultBase`). makedumpfile's compressed kdump format is named and refused, never read as raw. Ranges of
   * different files must not overlap.
   */
  static async open(specs: readonly string[], defaultBase = 0): Promise<MemoryImage> {
    const segments: Segment[] = [];
    try {
      for (const spec of specs) segments.push(...(await openOne(spec, defaultBase)));
    } catch (e) {
      for (const s of new Set(segments.map((x) => x.source))) s.close();
      throw e;
    }
    const files = [...segments].sort((a, b) => a.base - b.base);
    for (let i = 1; i < files.length; i++) {
      const [a, b] = [files[i - 1]!, files[i]!];
      if (a.source !== b.source && b.base < a.base + a.size) {
        for (const s of new Set(segments.map((x) => x.source))) s.close();
        throw new UsageError(`--memory: ${b.label} overlaps ${a.label} at 0x${b.base.toString(16)}`);
      }
    }
    return new MemoryImage(segments);
  }
}

/** `FILE` or `FILE@BASE` (the last `@` followed by a number splits them, so paths may contain `@`). */
export function parseMemorySpec(spec: string): { path: string; base?: bigint } {
  const at = spec.lastIndexOf("@");
  if (at > 0 && /^(0x[0-9a-fA-F_]+|[0-9_]+)$/.test(spec.slice(at + 1))) return { path: spec.slice(0, at), base: parseU64(spec.slice(at + 1), `--memory ${spec}`) };
  return { path: spec };
}

async function openOne(spec: string, defaultBase: number): Promise<Segment[]> {
  const { path, base } = parseMemorySpec(spec);
  let source = openFile(path);
  const head = new Uint8Array(16);
  source.readInto(0, head);
  if (head[0] === 0x1f && head[1] === 0x8b) {
    source.close();
    source = await gunzipSparse(path);
    source.readInto(0, head);
  }
  // makedumpfile's formats: the flattened stream QEMU's kdump-* dump formats write, and the plain one.
  const text = new TextDecoder("latin1").decode(head);
  if (text.startsWith("makedumpfile") || text.startsWith("KDUMP   ") || text.startsWith("DISKDUMP")) {
    source.close();
    throw new InputError(`--memory ${path}: a compressed kdump file (makedumpfile's format, as QEMU's dump-guest-memory writes with -z/-l/-s or a kdump-* format), not memory; dump without those options for an ELF core, or convert it with makedumpfile (-R, then -E)`);
  }
  if (isElf(head)) {
    if (base !== undefined) {
      source.close();
      throw new UsageError(`--memory ${spec}: an ELF core places its own ranges (PT_LOAD p_paddr); give it without @BASE`);
    }
    let loads;
    try {
      loads = elfLoadSegments((position, length) => {
        const out = new Uint8Array(Math.max(0, Math.min(length, source.size - position)));
        source.readInto(position, out);
        return out;
      }, source.size);
    } catch (e) {
      source.close();
      throw new InputError(`--memory ${path}: ${(e as Error).message}`);
    }
    return loads.map((l, i) => ({ base: l.paddr, size: l.memsz, label: `${path} PT_LOAD ${i}`, source, offset: l.offset, fileBytes: l.filesz }));
  }
  const at = base === undefined ? defaultBase : Number(base);
  if (base !== undefined && base > BigInt(Number.MAX_SAFE_INTEGER - source.size)) {
    source.close();
    throw new UsageError(`--memory ${spec}: the image would end beyond 2^53`);
  }
  if (at % PAGE_SIZE !== 0) {
    source.close();
    throw new UsageError(`--memory ${spec}: base 0x${at.toString(16)} is not page aligned`);
  }
  if (source.size === 0) {
    source.close();
    throw new InputError(`--memory ${path}: the file is empty`);
  }
  return [{ base: at, size: source.size, label: base === undefined ? path : spec, source, offset: 0, fileBytes: source.size }];
}

/** A file on disk, read where asked (a 16 GiB dump is never read whole). */
function openFile(path: string): ByteSource {
  let fd: number;
  let size: number;
  try {
    fd = openSync(path, "r");
    const st = fstatSync(fd);
    if (st.isDirectory()) {
      closeSync(fd);
      throw Object.assign(new Error("is a directory"), { code: "EISDIR" });
    }
    size = st.size;
  } catch (e) {
    throw fileProblem("--memory", path, e);
  }
  return {
    size,
    readInto(position, into) {
      let done = 0;
      while (done < into.length && position + done < size) {
        let n: number;
        try {
          n = readSync(fd, into, done, into.length - done, position + done);
        } catch (e) {
          throw fileProblem("--memory", path, e);
        }
        if (n === 0) break;
        done += n;
      }
      into.fill(0, done);
    },
    close() {
      closeSync(fd);
    },
  };
}

/** A gzip archive decompressed once, streaming, keeping only its nonzero pages. */
async function gunzipSparse(path: string): Promise<ByteSource> {
  const pages = new Map<number, Uint8Array>();
  let size = 0;
  let page = new Uint8Array(PAGE_SIZE);
  let words = new Uint32Array(page.buffer);
  let fill = 0;
  const flush = (): void => {
    // A word-wide scan: a dump is mostly zero pages, and a byte-wide one cost as much as the inflate.
    let nonzero = false;
    for (let i = 0; i < words.length && !nonzero; i++) nonzero = words[i] !== 0;
    if (nonzero) {
      pages.set(size / PAGE_SIZE, page);
      page = new Uint8Array(PAGE_SIZE);
      words = new Uint32Array(page.buffer);
    } else page.fill(0);
    size += PAGE_SIZE;
    fill = 0;
  };
  try {
    // Large chunks: the per-chunk cost of the stream, not the inflate, dominated with the default 16 KiB.
    for await (const chunk of createReadStream(path, { highWaterMark: 1 << 20 }).pipe(createGunzip({ chunkSize: 1 << 20 })) as AsyncIterable<Buffer>) {
      for (let at = 0; at < chunk.length; ) {
        const n = Math.min(PAGE_SIZE - fill, chunk.length - at);
        page.set(chunk.subarray(at, at + n), fill);
        fill += n;
        at += n;
        if (fill === PAGE_SIZE) flush();
      }
    }
  } catch (e) {
    throw fileProblem("--memory", path, e);
  }
  if (fill > 0) {
    const tail = fill;
    flush();
    size -= PAGE_SIZE - tail;
  }
  const total = size;
  return {
    size: total,
    readInto(position, into) {
      into.fill(0);
      for (let done = 0; done < into.length && position + done < total; ) {
        const p = Math.floor((position + done) / PAGE_SIZE);
        const within = (position + done) % PAGE_SIZE;
        const n = Math.min(PAGE_SIZE - within, into.length - done, total - position - done);
        const bytes = pages.get(p);
        if (bytes !== undefined) into.set(bytes.subarray(within, within + n), done);
        done += n;
      }
    },
    close() {
      pages.clear();
    },
  };
}
