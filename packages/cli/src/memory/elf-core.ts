/**
 * ELF core files as QEMU's `dump-guest-memory` and the kdump kernel's /proc/vmcore write them: each PT_LOAD
 * program header gives a guest-physical range (p_paddr, p_memsz) and where its bytes are (p_offset, p_filesz;
 * the rest of p_memsz reads as zero). Field offsets from the System V gABI (Elf32_Ehdr/Elf64_Ehdr,
 * Elf32_Phdr/Elf64_Phdr); PN_XNUM (0xffff) means the real count is section header 0's sh_info, which kdump
 * uses for machines with many memory ranges.
 */

export const ELF_MAGIC = [0x7f, 0x45, 0x4c, 0x46] as const;
const ET_CORE = 4;
const PT_LOAD = 1;
const PN_XNUM = 0xffff;

/** One PT_LOAD segment: guest-physical [paddr, paddr + memsz), file bytes [offset, offset + filesz). */
export interface ElfLoadSegment {
  readonly paddr: number;
  readonly memsz: number;
  readonly offset: number;
  readonly filesz: number;
}

/** Reads `length` bytes of the file at `position` (short at the end of the file). */
export type ReadAt = (position: number, length: number) => Uint8Array;

export function isElf(head: Uint8Array): boolean {
  return head.length >= 4 && ELF_MAGIC.every((b, i) => head[i] === b);
}

function u64(v: DataView, at: number, what: string): number {
  const x = v.getBigUint64(at, true);
  if (x > BigInt(Number.MAX_SAFE_INTEGER)) throw new RangeError(`${what} 0x${x.toString(16)} is beyond 2^53`);
  return Number(x);
}

/** The PT_LOAD segments of a little-endian ELF32 or ELF64 core; RangeError naming what is wrong otherwise. */
export function elfLoadSegments(readAt: ReadAt, fileSize: number): ElfLoadSegment[] {
  const ident = readAt(0, 64);
  if (!isElf(ident)) throw new RangeError("not an ELF file");
  const elfClass = ident[4];
  if (elfClass !== 1 && elfClass !== 2) throw new RangeError(`ELF class ${elfClass} is neither ELF32 nor ELF64`);
  if (ident[5] !== 1) throw new RangeError("a big-endian ELF core is not supported (x86 and arm64 guests dump little-endian)");
  const wide = elfClass === 2;
  if (ident.length < (wide ? 64 : 52)) throw new RangeError("truncated ELF header");
  const h = new DataView(ident.buffer, ident.byteOffset, ident.length);
  const type = h.getUint16(16, true);
  if (type !== ET_CORE) throw new RangeError(`ELF type ${type} is not a core file (ET_CORE = 4)`);
  const phoff = wide ? u64(h, 32, "e_phoff") : h.getUint32(28, true);
  const shoff = wide ? u64(h, 40, "e_shoff") : h.getUint32(32, true);
  const phentsize = h.getUint16(wide ? 54 : 42, true);
  let phnum = h.getUint16(wide ? 56 : 44, true);
  if (phentsize < (wide ? 56 : 32)) throw new RangeError(`e_phentsize ${phentsize} is too small for a program header`);
  if (phnum === PN_XNUM) {
    // The count lives in section header 0's sh_info.
    const sh = readAt(shoff, wide ? 64 : 40);
    if (sh.length < (wide ? 48 : 32)) throw new RangeError("PN_XNUM without section header 0");
    phnum = new DataView(sh.buffer, sh.byteOffset, sh.length).getUint32(wide ? 44 : 28, true);
  }
  if (phoff + phnum * phentsize > fileSize) throw new RangeError(`program headers at 0x${phoff.toString(16)} (${phnum} of ${phentsize} bytes) run past the end of the file`);
  const table = readAt(phoff, phnum * phentsize);
  const t = new DataView(table.buffer, table.byteOffset, table.length);
  const out: ElfLoadSegment[] = [];
  for (let i = 0; i < phnum; i++) {
    const at = i * phentsize;
    if (t.getUint32(at, true) !== PT_LOAD) continue;
    const seg = wide
      ? { offset: u64(t, at + 8, `PT_LOAD ${i} p_offset`), paddr: u64(t, at + 24, `PT_LOAD ${i} p_paddr`), filesz: u64(t, at + 32, `PT_LOAD ${i} p_filesz`), memsz: u64(t, at + 40, `PT_LOAD ${i} p_memsz`) }
      : { offset: t.getUint32(at + 4, true), paddr: t.getUint32(at + 12, true), filesz: t.getUint32(at + 16, true), memsz: t.getUint32(at + 20, true) };
    if (seg.memsz === 0) continue;
    if (seg.filesz > seg.memsz) throw new RangeError(`PT_LOAD ${i}: p_filesz 0x${seg.filesz.toString(16)} exceeds p_memsz 0x${seg.memsz.toString(16)}`);
    if (seg.offset + seg.filesz > fileSize) throw new RangeError(`PT_LOAD ${i}: its bytes [0x${seg.offset.toString(16)}, +0x${seg.filesz.toString(16)}) run past the end of the file (truncated core?)`);
    out.push(seg);
  }
  if (out.length === 0) throw new RangeError("the core has no PT_LOAD segment");
  if (out.length > 1 && out.every((s) => s.paddr === 0)) throw new RangeError("the core's PT_LOAD segments carry no physical addresses (p_paddr all 0)");
  return out;
}
