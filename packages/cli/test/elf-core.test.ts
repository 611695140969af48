/**
 * The ELF paths QEMU's dumps do not take (QEMU writes ELF64 with few segments): ELF32 cores and PN_XNUM, laid
 * out by the System V gABI's Elf32_Ehdr / Elf32_Phdr / Elf64_Shdr offsets, and the refusals.
 */
import { describe, expect, it } from "vitest";
import { elfLoadSegments } from "../src/memory/elf-core.js";

function reader(bytes: Uint8Array) {
  return (position: number, length: number) => bytes.subarray(position, Math.min(bytes.length, position + length));
}

/** An ELF32 little-endian core with the given PT_LOADs (paddr, memsz, filesz), data following the headers. */
function elf32(loads: readonly [number, number, number][]): Uint8Array {
  const phoff = 52;
  const out = new Uint8Array(phoff + loads.length * 32 + loads.reduce((n, l) => n + l[2], 0));
  const v = new DataView(out.buffer);
  out.set([0x7f, 0x45, 0x4c, 0x46, 1, 1, 1]);
  v.setUint16(16, 4, true); // ET_CORE
  v.setUint32(28, phoff, true);
  v.setUint16(42, 32, true);
  v.setUint16(44, loads.length, true);
  let data = phoff + loads.length * 32;
  loads.forEach(([paddr, memsz, filesz], i) => {
    const at = phoff + i * 32;
    v.setUint32(at, 1, true);
    v.setUint32(at + 4, data, true);
    v.setUint32(at + 8, 0xc000_0000 + paddr, true); // p_vaddr: a kernel address, never the placement
    v.setUint32(at + 12, paddr, true);
    v.setUint32(at + 16, filesz, true);
    v.setUint32(at + 20, memsz, true);
    data += filesz;
  });
  return out;
}

describe("ELF cores", () => {
  it("reads ELF32 PT_LOADs by p_paddr, not p_vaddr", () => {
    const core = elf32([
      [0x1000, 0x2000, 0x1000],
      [0x10_0000, 0x1000, 0x1000],
    ]);
    expect(elfLoadSegments(reader(core), core.length)).toEqual([
      { paddr: 0x1000, memsz: 0x2000, offset: 52 + 64, filesz: 0x1000 },
      { paddr: 0x10_0000, memsz: 0x1000, offset: 52 + 64 + 0x1000, filesz: 0x1000 },
    ]);
  });

  it("takes the program header count from section header 0 when e_phnum is PN_XNUM", () => {
    const core = elf32([[0x2000, 0x1000, 0x1000]]);
    const withSh = new Uint8Array(core.length + 40);
    withSh.set(core);
    const v = new DataView(withSh.buffer);
    v.setUint16(44, 0xffff, true);
    v.setUint32(32, core.length, true); // e_shoff
    v.setUint32(core.length + 28, 1, true); // sh_info of section header 0
    expect(elfLoadSegments(reader(withSh), withSh.length)).toHaveLength(1);
  });

  it("refuses what is not a little-endian core, and segments past the end", () => {
    const core = elf32([[0x1000, 0x1000, 0x1000]]);
    const exec = core.slice();
    new DataView(exec.buffer).setUint16(16, 2, true);
    expect(() => elfLoadSegments(reader(exec), exec.length)).toThrow(/not a core file/);
    const big = core.slice();
    big[5] = 2;
    expect(() => elfLoadSegments(reader(big), big.length)).toThrow(/big-endian/);
    expect(() => elfLoadSegments(reader(core), core.length - 1)).toThrow(/PT_LOAD 0: .*past the end/);
    const bad = core.slice();
    new DataView(bad.buffer).setUint32(52 + 16, 0x2000, true);
    expect(() => elfLoadSegments(reader(bad), bad.length)).toThrow(/p_filesz .* exceeds p_memsz/);
    expect(() => elfLoadSegments(reader(elf32([])), 52)).toThrow(/no PT_LOAD/);
  });
});
