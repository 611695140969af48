import { spawnSync } from "node:child_process";
import { mkdtempSync, readFileSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import fc from "fast-check";
import { describe, expect, it } from "vitest";
import { unwrap, type AcpiField } from "@viommu/core";
import { decodeDmarFields } from "../../src/format/dmar-fields.js";
import { encodeDmar, type DmarDeviceScope } from "../../src/format/dmar.js";
import { vtdPlugin } from "../../src/plugin.js";
import { checkProperty, vtdBed } from "../support.js";
import { fixturePath } from "./fixtures.js";

const iasl = spawnSync("iasl", ["-v"], { encoding: "utf8" });
const haveIasl = iasl.status === 0 || /ACPI/.test(`${iasl.stdout}${iasl.stderr}`);

interface IaslLine {
  readonly offset: number;
  readonly length: number;
  readonly name: string;
  readonly value: string;
}

/** Runs `iasl -d` on the table and reads back every field line ("[OFFh DDDD LLL]  Name : Value") from offset 36. */
function iaslFields(table: Uint8Array): { fields: IaslLine[]; unknownSubtable: boolean } {
  const dir = mkdtempSync(join(tmpdir(), "vtd-dmar-"));
  writeFileSync(join(dir, "t.bin"), table);
  const r = spawnSync("iasl", ["-d", "t.bin"], { cwd: dir, encoding: "utf8" });
  expect(r.status, r.stderr).toBe(0);
  const dsl = readFileSync(join(dir, "t.dsl"), "utf8");
  const fields: IaslLine[] = [];
  for (const line of dsl.split("\n")) {
    const m = /^\[([0-9A-F]+)h (\d{4}) +(\d+)\]\s+(.*?) : (.*?)\s*$/.exec(line);
    if (m === null || Number(m[2]) < 36) continue;
    expect(parseInt(m[1]!, 16)).toBe(Number(m[2]));
    fields.push({ offset: Number(m[2]), length: Number(m[3]), name: m[4]!, value: m[5]! });
  }
  return { fields, unknownSubtable: /\*\*\*\* Unknown DMAR subtable type/.test(dsl) };
}

/**
 * Every field iasl prints must be ours, at the same offset, with the same length, name and value; where iasl
 * stops at a subtable type it does not know (SATC and SIDP are newer than some installed iasl versions), only the
 * type's bracketed name may differ and our fields may continue past it.
 */
function judge(table: Uint8Array): AcpiField[] {
  const ours = unwrap(decodeDmarFields(table)) as AcpiField[];
  const theirs = iaslFields(table);
  expect(theirs.fields.length).toBeGreaterThan(3);
  theirs.fields.forEach((f, i) => {
    const mine = ours[i]!;
    const unknownType = theirs.unknownSubtable && f.name === "Subtable Type" && f.value.endsWith("[Unknown Subtable Type]");
    const value = unknownType ? mine.value.replace(/\[.*\]$/, "[Unknown Subtable Type]") : mine.value;
    expect({ offset: mine.offset, length: mine.length, name: mine.name, value }, `field ${i} at ${f.offset}`).toEqual(f);
  });
  if (!theirs.unknownSubtable) expect(ours.length).toBe(theirs.fields.length);
  return ours;
}

const scope = (type: number, bus: number, device: number, fn: number, enumerationId = 0): DmarDeviceScope => ({ type, enumerationId, startBus: bus, path: [{ device, function: fn }] });

describe.skipIf(!haveIasl)("DMAR decode judged by iasl -d", () => {
  it("decodes the DMAR QEMU built for the real guest (DRHD with INCLUDE_PCI_ALL scopes, ATSR) field for field", () => {
    const fields = judge(new Uint8Array(readFileSync(fixturePath("acpi-DMAR.bin"))));
    expect(fields.filter((f) => f.name === "PCI Path")).toHaveLength(9);
  });

  it("decodes the plugin's generated DMAR and the emulated unit's own (with endpoint scopes)", () => {
    judge(vtdPlugin.acpi!.generate());
    const b = vtdBed("nested", undefined, {}, [
      { rid: 0x100, guestRid: 0x10 },
      { rid: 0x101, guestRid: 0x218 },
    ]);
    judge(b.device.acpiTables()[0]!.bytes);
  });

  it("decodes DRHD, RMRR, ATSR, RHSA and ANDD with IOAPIC, HPET, bridge (two-entry path) and endpoint scopes", () => {
    const table = encodeDmar({
      hostAddressWidth: 48,
      flags: 5,
      structures: [
        { type: "DRHD", flags: 1, size: 2, segment: 0, registerBase: 0xfed9_0000n, scopes: [scope(3, 0xf0, 0x1f, 0, 2), scope(4, 0, 0x1f, 7, 1)] },
        { type: "DRHD", flags: 0, size: 0, segment: 1, registerBase: 0x1_fed9_1000n, scopes: [scope(1, 0x80, 2, 1), scope(5, 0, 0, 0, 1)] },
        { type: "RMRR", segment: 0, baseAddress: 0x7e00_0000n, endAddress: 0x7eff_ffffn, scopes: [scope(1, 0, 2, 0)] },
        { type: "ATSR", flags: 1, segment: 0, scopes: [{ type: 2, enumerationId: 0, startBus: 0, path: [{ device: 1, function: 0 }, { device: 0, function: 1 }] }] },
        { type: "RHSA", registerBase: 0xfed9_0000n, proximityDomain: 1 },
        { type: "ANDD", acpiDeviceNumber: 1, objectName: "\\_SB.PCI0.I2C0" },
      ],
    });
    const fields = judge(table);
    expect(fields.find((f) => f.name === "Device Name")).toMatchObject({ value: '"\\_SB.PCI0.I2C0"', length: 15 });
  });

  it("decodes SATC by the specification (iasl versions without it list its type and length alike)", () => {
    const table = encodeDmar({ hostAddressWidth: 39, flags: 1, structures: [{ type: "SATC", flags: 1, segment: 0, scopes: [scope(1, 0, 3, 0)] }] });
    const fields = judge(table);
    expect(fields.slice(3).map((f) => [f.name, f.value])).toEqual([
      ["Subtable Type", "0005 [SoC Integrated Address Translation Cache]"],
      ["Length", "0010"],
      ["Flags", "01"],
      ["Reserved", "00"],
      ["PCI Segment Number", "0000"],
      ["Device Scope Type", "01 [PCI Endpoint Device]"],
      ["Entry Length", "08"],
      ["Reserved", "0000"],
      ["Enumeration ID", "00"],
      ["PCI Bus Number", "00"],
      ["PCI Path", "03,00"],
    ]);
  });
});

describe("DMAR decode of malformed tables", () => {
  const good = (): Uint8Array => new Uint8Array(readFileSync(fixturePath("acpi-DMAR.bin")));

  it("answers a truncated table, an oversized Table Length and lengths that do not fit with EINVAL naming the offset", () => {
    expect(decodeDmarFields(good().subarray(0, 40))).toMatchObject({ ok: false, error: { errno: "EINVAL", message: expect.stringContaining("0x30") } });
    const long = good();
    long[4] = 0xff;
    expect(decodeDmarFields(long)).toMatchObject({ ok: false, error: { errno: "EINVAL", message: expect.stringContaining("offset 0x4") } });
    const sub = good();
    sub[0x32] = 0xff;
    expect(decodeDmarFields(sub)).toMatchObject({ ok: false, error: { errno: "EINVAL", message: expect.stringContaining("offset 0x30") } });
    const scopeLength = good();
    scopeLength[0x41] = 3;
    expect(decodeDmarFields(scopeLength)).toMatchObject({ ok: false, error: { errno: "EINVAL", message: expect.stringContaining("offset 0x40") } });
    const shortDrhd = good();
    shortDrhd[0x32] = 8;
    expect(decodeDmarFields(shortDrhd)).toMatchObject({ ok: false, error: { errno: "EINVAL", message: expect.stringContaining("offset 0x30") } });
  });

  it("answers any bytes, any truncation and any corruption of a real table with fields or EINVAL, never an exception", () => {
    const base = good();
    checkProperty(
      fc.property(fc.nat(base.length), fc.array(fc.tuple(fc.nat(base.length - 1), fc.nat(255)), { maxLength: 8 }), fc.uint8Array({ maxLength: 200 }), (cut, edits, noise) => {
        const t = base.slice(0, cut);
        for (const [at, v] of edits) if (at < t.length) t[at] = v;
        for (const table of [t, noise]) {
          const r = decodeDmarFields(table);
          if (!r.ok) {
            expect(r.error.errno).toBe("EINVAL");
            expect(r.error.message).toMatch(/offset|bytes/);
          } else for (const f of r.value) expect(f.offset + f.length).toBeLessThanOrEqual(table.length);
        }
      }),
      { numRuns: 2000 },
    );
  });
});
