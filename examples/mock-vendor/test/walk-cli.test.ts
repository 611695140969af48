/**
 * The built `viommu walk` and `viommu mappings` on a mock guest's RAM written out as a user has it: a raw image
 * (pmemsave) and an ELF64 core (one PT_LOAD placed by p_paddr, as dump-guest-memory writes it). Every answer must
 * be the emulated device's own translation.
 */
import { spawnSync } from "node:child_process";
import { existsSync, mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { createRequire } from "node:module";
import { tmpdir } from "node:os";
import { dirname, join } from "node:path";
import { afterAll, describe, expect, it } from "vitest";
import { Testbed } from "@viommu/conformance";
import { newWalkResult, NO_PASID, Perm, unwrap } from "@viommu/core";
import { MockReg } from "../src/format/registers.js";
import { mockPlugin } from "../src/plugin.js";

/** The installed command line (a workspace link here, a dependency in a package made from this template). */
function installedCli(): string | undefined {
  try {
    return dirname(createRequire(import.meta.url).resolve("@viommu/cli/package.json"));
  } catch {
    return undefined;
  }
}
const cli = installedCli();
const built = cli !== undefined && existsSync(join(cli, "dist/main.js"));

/** `viommu` as a user runs it where this package is developed, so the plugin is found from its own sources. */
function viommu(args: readonly string[]): { status: number | null; stdout: string; stderr: string } {
  const r = spawnSync(process.execPath, [join(cli!, "bin/viommu.js"), ...args], { cwd: join(import.meta.dirname, ".."), encoding: "utf8", maxBuffer: 64 * 2 ** 20 });
  return { status: r.status, stdout: r.stdout, stderr: r.stderr };
}

const RAM = 2 ** 26;

/** An ELF64 little-endian core with one PT_LOAD holding `ram` at physical 0 (System V gABI offsets). */
function elfCore(ram: Uint8Array): Uint8Array {
  const headers = 64 + 56;
  const out = new Uint8Array(headers + ram.length);
  const v = new DataView(out.buffer);
  out.set([0x7f, 0x45, 0x4c, 0x46, 2, 1, 1]);
  v.setUint16(16, 4, true); // ET_CORE
  v.setUint16(18, 62, true); // EM_X86_64
  v.setUint32(20, 1, true);
  v.setBigUint64(32, 64n, true); // e_phoff
  v.setUint16(52, 64, true);
  v.setUint16(54, 56, true);
  v.setUint16(56, 1, true);
  v.setUint32(64, 1, true); // PT_LOAD
  v.setBigUint64(64 + 8, BigInt(headers), true);
  v.setBigUint64(64 + 16, 0xffff_8880_0000_0000n, true); // p_vaddr: never the placement
  v.setBigUint64(64 + 24, 0n, true); // p_paddr
  v.setBigUint64(64 + 32, BigInt(ram.length), true);
  v.setBigUint64(64 + 40, BigInt(ram.length), true);
  out.set(ram, headers);
  return out;
}

describe.skipIf(!built)(`viommu walk / mappings --vendor ${mockPlugin.id} on a raw image and an ELF core`, () => {
  const dir = mkdtempSync(join(tmpdir(), "viommu-mock-walk-"));
  afterAll(() => rmSync(dir, { recursive: true, force: true }));
  const bed = unwrap(Testbed.create({ plugin: mockPlugin, vms: [{ devices: [{ rid: 0x100, guestRid: 0x10 }], memoryBytes: RAM }] }));
  const v = bed.vms[0]!;
  const driver = v.drivers[0]!;
  const d = unwrap(driver.createDomain());
  unwrap(driver.attach(0x10, d));
  unwrap(driver.map(d, 0x40_0000, 0x10_0000, 0x3000, Perm.ReadWrite));
  unwrap(driver.map(d, 0x80_0000, 0x20_0000, 0x20_0000, Perm.Read));
  const devtab = v.vm.mmioRead(v.iommus[0]!.mmioBase + MockReg.DEVTAB_BASE, 8);
  const ram = v.vm.memory.readBytes(0, RAM);
  writeFileSync(join(dir, "ram.raw"), ram);
  writeFileSync(join(dir, "ram.elf"), elfCore(ram));
  const iovas = [0x40_0000, 0x40_1234, 0x40_2ff8, 0x40_3000, 0x81_2345, 0x9f_ffff, 0xa0_0000, 0x1_0000_0000];

  for (const image of ["ram.raw", "ram.elf"]) {
    it(`${image}: every walk is the device's translation, with the entries named`, () => {
      const out = newWalkResult();
      for (const iova of iovas) {
        const r = viommu(["walk", "--json", "--steps", "--vendor", mockPlugin.id, "--memory", join(dir, image), "--reg", `DEVTAB_BASE=0x${devtab.toString(16)}`, "--rid", "0x10", "--iova", `0x${iova.toString(16)}`]);
        expect(r.stderr).toBe("");
        const answer = JSON.parse(r.stdout) as { ok: boolean; output?: string | number; steps?: { what: string }[] };
        v.iommus[0]!.translateEmulated(0x10, NO_PASID, iova, false, out);
        expect(answer.ok, `0x${iova.toString(16)}`).toBe(out.ok);
        if (out.ok) expect(Number(answer.output)).toBe(out.output);
        expect(answer.steps?.[0]?.what).toBe("device table entry");
      }
    });

    it(`${image}: mappings lists the device's ranges`, () => {
      const r = viommu(["mappings", "--json", "--vendor", mockPlugin.id, "--memory", join(dir, image), "--reg", `DEVTAB_BASE=0x${devtab.toString(16)}`]);
      expect(r.stderr).toBe("");
      const report = JSON.parse(r.stdout) as { contexts: { rid: string; mode: string; leaves: number; ranges: { iova: string; output: string; length: string; read: boolean; write: boolean }[] }[] };
      expect(report.contexts).toMatchObject([
        {
          rid: "0x10",
          mode: "stage 1",
          leaves: 4,
          ranges: [
            { iova: "0x400000", output: "0x100000", length: "0x3000", read: true, write: true },
            { iova: "0x800000", output: "0x200000", length: "0x200000", read: true, write: false },
          ],
        },
      ]);
    });
  }
});
