import { describe, expect, it } from "vitest";
import { spawnSync } from "node:child_process";
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import fc from "fast-check";
import { unwrap, type AcpiField } from "@viommu/core";
import { encodeIort } from "../../src/format/iort.js";
import { smmuv3Plugin } from "../../src/plugin.js";
import { fixtureBytes } from "../format/fixtures.js";

const SEED = Number(process.env.VIOMMU_SEED ?? 12);
const iasl = spawnSync("iasl", ["-v"], { encoding: "utf8" });
const haveIasl = iasl.status === 0;

/** iasl's own disassembly of a table: every `[OFFh DDDD LEN] Name : Value` line from offset 36 on. */
function iaslFields(table: Uint8Array): { offset: number; length: number; name: string; value: string }[] {
  const dir = mkdtempSync(join(tmpdir(), "iort-"));
  try {
    writeFileSync(join(dir, "t.bin"), table);
    const r = spawnSync("iasl", ["-d", "t.bin"], { cwd: dir, encoding: "utf8" });
    expect(r.status, r.stderr + r.stdout).toBe(0);
    const out: { offset: number; length: number; name: string; value: string }[] = [];
    for (const line of readFileSync(join(dir, "t.dsl"), "utf8").split("\n")) {
      const m = /^\[([0-9A-F]+)h (\d+)\s+([0-9A-F]+h|\d+)\]\s*(.*?) : (.*)$/.exec(line);
      if (m === null) continue;
      const length = m[3]!.endsWith("h") ? parseInt(m[3]!, 16) : Number(m[3]);
      if (Number(m[2]) >= 36) out.push({ offset: Number(m[2]), length, name: m[4]!.trim(), value: m[5]!.trimEnd() });
    }
    return out;
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}

const mine = (fields: readonly AcpiField[]) => fields.map((f) => ({ offset: f.offset, length: f.length, name: f.name, value: f.value.trimEnd() }));
const memory = { cacheCoherency: 1, allocationHints: 0b1010, memoryAccessFlags: 3 };

/** A table with every node kind the decoder knows: two ITSes, a named component, a root complex with ATS, an SMMUv3 with two mappings. */
const everyNode = encodeIort({
  revision: 3,
  nodes: [
    { type: "its-group", itsIdentifiers: [0, 7] },
    { type: "named-component", nodeFlags: 0b100001, memoryAccess: memory, memoryAddressSizeLimit: 48, deviceName: "\\_SB.DEV0", mappings: [{ inputBase: 0, idCount: 0, outputBase: 0x10, outputNode: 3, flags: 1 }] },
    { type: "root-complex", memoryAccess: memory, atsAttribute: 1, pciSegment: 2, memoryAddressSizeLimit: 64, mappings: [{ inputBase: 0, idCount: 0xffff, outputBase: 0, outputNode: 3 }] },
    { type: "smmuv3", baseAddress: 0x1_2345_0000n, flags: 0b10011, model: 0, eventGsiv: 1, priGsiv: 2, gerrGsiv: 3, syncGsiv: 4, proximityDomain: 5, deviceIdMappingIndex: 1, mappings: [{ inputBase: 0, idCount: 0xffff, outputBase: 0, outputNode: 0 }, { inputBase: 0, idCount: 0, outputBase: 0x20, outputNode: 0, flags: 1 }] },
  ],
});

describe.skipIf(!haveIasl)("viommu acpi --decode for IORT, judged by iasl -d", () => {
  const decode = smmuv3Plugin.acpi!.decode!;
  for (const [what, table] of [
    ["QEMU 7.2's IORT from the real guest", fixtureBytes("acpi-IORT.bin")],
    ["the generator's IORT", smmuv3Plugin.acpi!.generate()],
    ["an IORT with a named component, two ITSes, ATS and two SMMU mappings", everyNode],
  ] as const) {
    it(`${what}: every field's offset, length, name and value as iasl prints them`, () => {
      const expected = iaslFields(table);
      expect(expected.length).toBeGreaterThan(20);
      expect(mine(unwrap(decode(table)))).toEqual(expected);
    });
  }
});

describe("IORT decode of hostile tables", () => {
  const decode = smmuv3Plugin.acpi!.decode!;
  const qemu = fixtureBytes("acpi-IORT.bin");

  it("a truncated table, or one whose node or mapping runs beyond it, is EINVAL naming the offset", () => {
    const cut = qemu.slice(0, 0x90);
    new DataView(cut.buffer).setUint32(4, cut.length, true);
    const r = decode(cut);
    expect(r.ok).toBe(false);
    if (!r.ok) expect(r.error.message).toMatch(/offset 0x48/);
    const long = qemu.slice();
    new DataView(long.buffer).setUint16(0x49, 0x400, true);
    const l = decode(long);
    expect(!l.ok && l.error.errno).toBe("EINVAL");
    if (!l.ok) expect(l.error.message).toMatch(/node 1 at offset 0x48: Length 0x400 runs beyond the table/);
    const lying = decode(qemu.slice(0, 100));
    expect(!lying.ok && lying.error.message).toMatch(/Table Length \(offset 0x4\)/);
  });

  it(`never throws on random truncations and byte changes (seed ${SEED})`, () => {
    fc.assert(
      fc.property(fc.array(fc.tuple(fc.integer({ min: 0, max: qemu.length - 1 }), fc.integer({ min: 0, max: 255 })), { maxLength: 8 }), fc.integer({ min: 0, max: qemu.length }), fc.boolean(), (changes, cutAt, fixLength) => {
        const t = qemu.slice(0, cutAt);
        for (const [at, v] of changes) if (at < t.length && (at < 4 || at >= 8)) t[at] = v;
        if (fixLength && t.length >= 8) new DataView(t.buffer).setUint32(4, t.length, true);
        const r = decode(t);
        if (!r.ok) {
          expect(r.error.errno).toBe("EINVAL");
          expect(r.error.message).toMatch(/offset 0x[0-9a-f]+|the table has \d+/);
        } else for (const f of r.value) expect(f.offset + f.length).toBeLessThanOrEqual(t.length);
      }),
      { seed: SEED, numRuns: 3000 },
    );
  });
});
