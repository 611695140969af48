/**
 * `viommu walk` on the dumps users have, made by QEMU itself (not by this project): an ELF core from QMP
 * dump-guest-memory (PT_LOAD segments split around the PCI hole on q35, RAM at 1 GiB on arm virt), raw
 * pmemsave images of two ranges, and a compressed kdump that must be refused by name. The guest memory loaded
 * into QEMU is the shared real-guest dump, so each walk must reproduce what QEMU translated in that guest.
 */
import { spawnSync } from "node:child_process";
import { closeSync, existsSync, mkdtempSync, openSync, readFileSync, rmSync, writeFileSync, writeSync, ftruncateSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { gunzipSync } from "node:zlib";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { externalTool } from "../../../test-support/external-tools.js";
import { builtMain, conversation, oneLine, viommu } from "./run-cli.js";

/** The shared real-guest fixtures, as the vendor packages keep their copies (the repository stands alone). */
const fixtureDirs: Record<string, string> = {
  "vtd-legacy": join(import.meta.dirname, "../../vtd/test/fixtures/real-guest/vtd-legacy"),
  smmuv3: join(import.meta.dirname, "../../smmuv3/test/fixtures/real-guest/smmuv3"),
};

function fixture(vendor: string, file: string): string {
  return join(fixtureDirs[vendor]!, file);
}

/** A fixture file, gunzipped when the copy is kept compressed. */
function fixtureText(vendor: string, file: string): string {
  const plain = fixture(vendor, file);
  return existsSync(plain) ? readFileSync(plain, "utf8") : gunzipSync(readFileSync(`${plain}.gz`)).toString("utf8");
}
const qemuX86 = externalTool("qemu-system-x86_64", ["--version"], "qemu-system-x86");
const qemuArm = externalTool("qemu-system-aarch64", ["--version"], "qemu-system-arm");

interface Translation {
  readonly sid: string;
  readonly iova: string;
  readonly at_dump: {
    readonly fault: string | null;
    readonly translated?: string;
    readonly page_size?: number;
    readonly read?: boolean;
    readonly write?: boolean;
    /** The entries the fixture's own walker read, in order. */
    readonly walk?: readonly { readonly what: string; readonly addr: string; readonly lo?: string; readonly val?: string | readonly string[] }[];
  };
}

function translations(vendor: string): { header: Record<string, string>; list: Translation[] } {
  const doc = JSON.parse(fixtureText(vendor, "translations.json")) as Record<string, unknown> & { translations: Translation[] };
  return { header: doc as unknown as Record<string, string>, list: doc.translations.filter((t) => t.at_dump.fault === null) };
}

/** Runs QEMU stopped with the raw image loaded at `addr`, and sends it QMP commands on stdin. */
function qemu(binary: string, machine: string[], raw: string, addr: number, commands: readonly object[]): void {
  const input = [{ execute: "qmp_capabilities" }, ...commands, { execute: "quit" }].map((c) => JSON.stringify(c)).join("\n");
  const r = spawnSync(binary, [...machine, "-accel", "tcg", "-nodefaults", "-display", "none", "-S", "-qmp", "stdio", "-device", `loader,file=${raw},addr=0x${addr.toString(16)},force-raw=on`], { input, encoding: "utf8", timeout: 120_000 });
  if (r.status !== 0 || /"error"/.test(r.stdout)) throw new Error(`QEMU failed (${r.status}): ${r.stdout}${r.stderr}`);
}

const hex = (n: string | number): number => (typeof n === "number" ? n : Number(BigInt(n)));

/** Every mapped translation of a fixture, walked by the CLI from the given memory options. */
function walkAll(vendor: "vtd" | "smmuv3", memory: string[]): void {
  const { header, list } = translations(vendor === "vtd" ? "vtd-legacy" : "smmuv3");
  const regs = vendor === "vtd" ? ["--reg", `RTADDR=${header.rtaddr_reg}`] : ["--reg", `STRTAB_BASE=${header.strtab_base}`, "--reg", `STRTAB_BASE_CFG=${header.strtab_base_cfg}`];
  const dir = mkdtempSync(join(tmpdir(), "viommu-walk-"));
  const requests = join(dir, "requests.jsonl");
  writeFileSync(requests, list.map((t) => JSON.stringify({ rid: t.sid, iova: t.iova })).join("\n"));
  const r = viommu(["walk", "--vendor", vendor, ...memory.flatMap((m) => ["--memory", m]), ...regs, "--requests", requests, "--json", "--steps"]);
  rmSync(dir, { recursive: true });
  expect(r.stderr).toBe("");
  expect(r.status).toBe(0);
  type Read = { address: string; value: string[] };
  const answers = r.stdout.trim().split("\n").map((l) => JSON.parse(l) as { ok: boolean; output: string; pageSize: number; read: boolean; write: boolean; reads: Read[]; outsideImage?: string[] });
  expect(answers).toHaveLength(list.length);
  list.forEach((t, i) => {
    const a = answers[i]!;
    expect(a.ok, `${t.sid} ${t.iova}`).toBe(true);
    expect(hex(a.output), `${t.sid} ${t.iova}`).toBe(hex(t.at_dump.translated!));
    expect(a.pageSize).toBe(t.at_dump.page_size);
    expect([a.read, a.write]).toEqual([t.at_dump.read, t.at_dump.write]);
    expect(a.outsideImage).toBeUndefined();
    // The entries the fixture's walker read appear among the walk's reads, in order, with the same values.
    let at = 0;
    // The SMMUv3 walker keeps the stream table and CD entries it has read: each walk reads its table levels.
    for (const step of (t.at_dump.walk ?? []).filter((w) => vendor === "vtd" || w.what === "pte")) {
      while (at < a.reads.length && hex(a.reads[at]!.address) !== hex(step.addr)) at++;
      expect(at, `${t.sid} ${t.iova}: no read of ${step.addr} after the earlier steps`).toBeLessThan(a.reads.length);
      // The first 64-bit word of the entry (walkers read a multi-word STE or CD a word at a time, or whole).
      const first = step.lo ?? (Array.isArray(step.val) ? step.val[0]! : (step.val as string));
      expect(BigInt(a.reads[at]!.value[0]!), `${t.sid} ${t.iova} at ${step.addr}`).toBe(BigInt(first));
      at++;
    }
    if (vendor === "vtd") expect(a.reads.map((x) => hex(x.address))).toEqual((t.at_dump.walk ?? []).map((w) => hex(w.addr)));
  });
}

describe.skipIf(!existsSync(builtMain) || qemuX86.command === undefined)(`walk on QEMU's dumps of the real VT-d guest (${qemuX86.version || qemuX86.skipReason})`, () => {
  let dir = "";
  beforeAll(() => {
    dir = mkdtempSync(join(tmpdir(), "viommu-dumps-"));
    writeFileSync(join(dir, "vtd.raw"), gunzipSync(readFileSync(fixture("vtd-legacy", "memdump-iommu.raw.gz"))));
    // q35 with RAM above 128 MiB moved over the 4 GiB line: PT_LOADs for low RAM, the ROMs and high RAM.
    qemu(qemuX86.command!, ["-machine", "q35,max-ram-below-4g=128M", "-m", "256M"], join(dir, "vtd.raw"), 0, [
      { execute: "dump-guest-memory", arguments: { paging: false, protocol: `file:${join(dir, "q35.elf")}` } },
      { execute: "dump-guest-memory", arguments: { paging: false, format: "kdump-zlib", protocol: `file:${join(dir, "q35.kdump")}` } },
      { execute: "pmemsave", arguments: { val: 0, size: 0x200_0000, filename: join(dir, "low.raw") } },
      { execute: "pmemsave", arguments: { val: 0x200_0000, size: 0x200_0000, filename: join(dir, "high.raw") } },
    ]);
  }, 180_000);
  afterAll(() => rmSync(dir, { recursive: true, force: true }));

  it("walks QEMU's ELF core (PT_LOADs placed by p_paddr) to every translation QEMU made", () => {
    walkAll("vtd", [join(dir, "q35.elf")]);
  });

  it("walks two pmemsave ranges given as FILE@BASE", () => {
    walkAll("vtd", [join(dir, "low.raw"), `${join(dir, "high.raw")}@0x2000000`]);
  });

  it("prints the steps as a table, and says when a table pointer lies outside the memory image", () => {
    const good = viommu(["walk", "--vendor", "vtd", "--memory", join(dir, "vtd.raw"), "--reg", "RTADDR=0x387f000", "--rid", "02:00.0", "--iova", "0xffffd000"]);
    expect(good.status).toBe(0);
    expect(good.stdout.split("\n")[0]).toBe("0xffffd000  →  0x3bbd000  4K rw  domain 9");
    expect(good.stdout).toMatch(/^\s+6\s+SL-PTE\s+0x3e21fe8\s+1 \(4K\)\s+0x3bbd003\s+R=1 W=1 .*ADDR=0x3bbd000/m);
    // An input beyond 2^53 is printed as given, all 64 bits, with the fault for an address beyond the width.
    const wide = viommu(["walk", "--vendor", "vtd", "--memory", join(dir, "vtd.raw"), "--reg", "RTADDR=0x387f000", "--rid", "02:00.0", "--iova", "0xffff0000ffffb002"]);
    expect(wide.stdout.split("\n")[0]).toBe("0xffff0000ffffb002  FAULT ADDR_BEYOND_MGAW (code 0x4)");
    const wrong = viommu(["walk", "--vendor", "vtd", "--memory", join(dir, "vtd.raw"), "--reg", "RTADDR=0x20000000", "--rid", "02:00.0", "--iova", "0xffffd000"]);
    expect(wrong.status).toBe(0);
    expect(wrong.stdout).toMatch(/FAULT .*\(read 0x20000020 outside the memory image\)/);
    const json = viommu(["walk", "--vendor", "vtd", "--memory", join(dir, "vtd.raw"), "--reg", "RTADDR=0x20000000", "--rid", "02:00.0", "--iova", "0xffffd000", "--json"]);
    expect(JSON.parse(json.stdout)).toMatchObject({ ok: false, outsideImage: ["0x20000020"] });
  });

  it("refuses QEMU's kdump-compressed dump by name, and an ELF core given a base", () => {
    const kdump = viommu(["walk", "--vendor", "vtd", "--memory", join(dir, "q35.kdump"), "--reg", "RTADDR=0x387f000", "--rid", "0x200", "--iova", "0"]);
    expect(kdump.status).toBe(1);
    expect(oneLine(kdump.stderr)).toBe(true);
    expect(kdump.stderr).toMatch(/q35\.kdump: .*kdump.*ELF/);
    const based = viommu(["walk", "--vendor", "vtd", "--memory", `${join(dir, "q35.elf")}@0x1000`, "--reg", "RTADDR=0x387f000", "--rid", "0x200", "--iova", "0"]);
    expect(based.status).toBe(2);
    expect(based.stderr).toMatch(/PT_LOAD/);
  });

  it("refuses a truncated core, a non-core ELF and overlapping ranges, each in one line", () => {
    const cut = join(dir, "cut.elf");
    const elf = readFileSync(join(dir, "q35.elf"));
    writeFileSync(cut, elf.subarray(0, 0x10_0000));
    const truncated = viommu(["walk", "--vendor", "vtd", "--memory", cut, "--reg", "RTADDR=0x387f000", "--rid", "0x200", "--iova", "0"]);
    expect(truncated.status).toBe(1);
    expect(oneLine(truncated.stderr)).toBe(true);
    expect(truncated.stderr).toMatch(/PT_LOAD \d+: .*past the end of the file/);
    const program = viommu(["walk", "--vendor", "vtd", "--memory", process.execPath, "--reg", "RTADDR=0x387f000", "--rid", "0x200", "--iova", "0"]);
    expect(program.status).toBe(1);
    expect(program.stderr).toMatch(/not a core file/);
    const overlap = viommu(["walk", "--vendor", "vtd", "--memory", join(dir, "low.raw"), "--memory", `${join(dir, "high.raw")}@0x1000000`, "--reg", "RTADDR=0x387f000", "--rid", "0x200", "--iova", "0"]);
    expect(overlap.status).toBe(2);
    expect(overlap.stderr).toMatch(/overlaps/);
  });

  it("walks a 3 GiB image within twice the memory of the 256 MiB one, reading only the pages it walks", async () => {
    // The same real-guest pages in a sparse 3 GiB file.
    const big = join(dir, "big.raw");
    const raw = readFileSync(join(dir, "vtd.raw"));
    const fd = openSync(big, "w");
    ftruncateSync(fd, 3 * 2 ** 30);
    for (let at = 0; at < raw.length; at += 4096) if (raw.subarray(at, at + 4096).some((b) => b !== 0)) writeSync(fd, raw, at, 4096, at);
    closeSync(fd);
    const { header, list } = translations("vtd-legacy");
    const lines = list.map((t) => JSON.stringify({ rid: t.sid, iova: t.iova }));
    const run = (image: string) => conversation(["walk", "--vendor", "vtd", "--memory", image, "--reg", `RTADDR=${header.rtaddr_reg}`, "--requests", "-", "--json"], lines);
    const small = await run(join(dir, "vtd.raw"));
    const large = await run(big);
    expect(large.stderr).toBe("");
    expect(large.answers).toEqual(small.answers);
    expect(large.answers.every((a) => (JSON.parse(a) as { ok: boolean }).ok)).toBe(true);
    expect(large.peakRssKiB).toBeLessThan(2 * small.peakRssKiB);
    expect(large.peakRssKiB).toBeLessThan(400 * 1024);
  }, 120_000);
});

describe.skipIf(!existsSync(builtMain) || qemuArm.command === undefined)(`walk on QEMU's ELF core of the real SMMUv3 guest (${qemuArm.version || qemuArm.skipReason})`, () => {
  let dir = "";
  beforeAll(() => {
    dir = mkdtempSync(join(tmpdir(), "viommu-dumps-"));
    // QEMU keeps its device tree in RAM's first MiB; the guest's IOMMU structures all lie above it.
    const raw = gunzipSync(readFileSync(fixture("smmuv3", "memdump-iommu.raw.gz")));
    expect(raw.subarray(0, 2 ** 20).every((b) => b === 0)).toBe(true);
    writeFileSync(join(dir, "smmu.raw"), raw.subarray(2 ** 20));
    qemu(qemuArm.command!, ["-machine", "virt", "-cpu", "cortex-a57", "-m", "512M"], join(dir, "smmu.raw"), 0x4010_0000, [
      { execute: "dump-guest-memory", arguments: { paging: false, protocol: `file:${join(dir, "virt.elf")}` } },
    ]);
  }, 180_000);
  afterAll(() => rmSync(dir, { recursive: true, force: true }));

  it("walks the core, its RAM placed at 1 GiB by p_paddr, to every translation QEMU made", () => {
    walkAll("smmuv3", [join(dir, "virt.elf")]);
  });
});

describe("a gzip image, kept sparse", () => {
  it("keeps every page with a nonzero byte, wherever the byte is, and reads the rest as zero", async () => {
    const { MemoryImage } = await import("../src/memory/memory-image.js");
    const { gzipSync } = await import("node:zlib");
    const dir = mkdtempSync(join(tmpdir(), "viommu-gz-"));
    try {
      // Page 0 nonzero in its first byte, page 1 in its last, page 2 zero, then a partial page nonzero in its last byte.
      const raw = new Uint8Array(3 * 4096 + 100);
      raw[0] = 0x11;
      raw[2 * 4096 - 1] = 0x22;
      raw[raw.length - 1] = 0x33;
      writeFileSync(join(dir, "m.raw.gz"), gzipSync(raw));
      const image = await MemoryImage.open([join(dir, "m.raw.gz")]);
      const out = new Uint8Array(raw.length + 4096);
      image.read(0, out);
      image.close();
      expect(out.subarray(0, raw.length)).toEqual(raw);
      expect(out.subarray(raw.length).every((b) => b === 0)).toBe(true);
      expect(image.covers(raw.length - 1)).toBe(true);
      expect(image.covers(raw.length)).toBe(false);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });
});
