import { iasl as findIasl } from "../../../../test-support/external-tools.js";
import { execFileSync } from "node:child_process";
import { existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import fc from "fast-check";
import { checkProperty } from "../support.js";
import { describe, expect, it } from "vitest";
import { acpiChecksum } from "@viommu/core";
import {
  decodeDmar,
  deviceScopeSourceId,
  DeviceScopeType,
  DmarFlags,
  encodeDmar,
  type DmarDeviceScope,
  type DmarStructure,
  type DmarTable,
} from "../../src/format/index.js";
import { fixturePath } from "./fixtures.js";

/** ACPICA's iasl on PATH (CI requires it; locally its absence skips these checks). */
const IASL_TOOL = findIasl();
const IASL = IASL_TOOL.command ?? "iasl";

/** Disassembles `bytes` with ACPICA's iasl; returns its console output and the .dsl text. */
function iaslDisassemble(bytes: Uint8Array): { console: string; dsl: string } {
  const dir = mkdtempSync(join(tmpdir(), "vtd-dmar-"));
  try {
    const bin = join(dir, "dmar.bin");
    writeFileSync(bin, bytes);
    const console = execFileSync(IASL, ["-d", bin], { cwd: dir, encoding: "utf8", stdio: ["ignore", "pipe", "pipe"] });
    return { console, dsl: readFileSync(join(dir, "dmar.dsl"), "utf8") };
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}

/** Problems iasl reports: console errors/warnings, or "****" / "Unknown" / "Invalid" remarks in the disassembly. */
function iaslProblems(out: { console: string; dsl: string }): string[] {
  const lines = [...out.console.split("\n"), ...out.dsl.split("\n")];
  return lines.filter((l) => /\berror\b|\bwarning\b|\*\*\*\*|unknown|invalid/i.test(l));
}

/** "Name : Value" pairs of the disassembly, in order. */
function iaslFields(dsl: string): [string, string][] {
  return [...dsl.matchAll(/^\[[0-9A-F]+h \d+ +\d+\]\s+(.+?) : (.*)$/gm)].map((m) => [m[1]!.trim(), m[2]!.trim()]);
}

const pciScope = (type: number, bus: number, device: number, fn: number): DmarDeviceScope => ({ type, enumerationId: 0, startBus: bus, path: [{ device, function: fn }] });

describe("DMAR ACPI table (VT-d chapter 8)", () => {
  const fixture = new Uint8Array(readFileSync(fixturePath("acpi-DMAR.bin")));

  it("decodes the DMAR QEMU 7.2 built for the real guest", () => {
    const result = decodeDmar(fixture);
    expect(result.ok).toBe(true);
    if (!result.ok) return;
    const t = result.table;
    expect(t.header).toMatchObject({ signature: "DMAR", length: 0x90, revision: 1, checksum: 0xa7, oemId: "BOCHS ", oemTableId: "BXPC    ", oemRevision: 1, creatorId: "BXPC", creatorRevision: 1 });
    expect(t.hostAddressWidth).toBe(48);
    expect(t.flags).toBe(DmarFlags.INTR_REMAP);
    expect(t.structures).toEqual([
      {
        type: "DRHD",
        flags: 0,
        size: 0,
        segment: 0,
        registerBase: 0xfed9_0000n,
        scopes: [
          { type: DeviceScopeType.IOAPIC, flags: 0, enumerationId: 0, startBus: 0xff, path: [{ device: 0, function: 0 }] },
          { ...pciScope(DeviceScopeType.PCI_ENDPOINT, 0, 0x00, 0), flags: 0 },
          { ...pciScope(DeviceScopeType.PCI_SUB_HIERARCHY, 0, 0x04, 0), flags: 0 },
          { ...pciScope(DeviceScopeType.PCI_ENDPOINT, 0, 0x06, 0), flags: 0 },
          { ...pciScope(DeviceScopeType.PCI_ENDPOINT, 0, 0x07, 0), flags: 0 },
          { ...pciScope(DeviceScopeType.PCI_SUB_HIERARCHY, 0, 0x08, 0), flags: 0 },
          { ...pciScope(DeviceScopeType.PCI_ENDPOINT, 0, 0x1f, 0), flags: 0 },
          { ...pciScope(DeviceScopeType.PCI_ENDPOINT, 0, 0x1f, 2), flags: 0 },
          { ...pciScope(DeviceScopeType.PCI_ENDPOINT, 0, 0x1f, 3), flags: 0 },
        ],
      },
      { type: "ATSR", flags: 1, segment: 0, scopes: [] },
    ]);
    const drhd = t.structures[0]!;
    if (drhd.type === "DRHD") expect(drhd.scopes.map(deviceScopeSourceId)).toEqual([0xff00, 0x00, 0x20, 0x30, 0x38, 0x40, 0xf8, 0xfa, 0xfb]);
  });

  it("re-encodes the fixture byte for byte", () => {
    const result = decodeDmar(fixture);
    if (!result.ok) throw new Error(result.problem);
    expect(Buffer.from(encodeDmar(result.table)).toString("hex")).toBe(Buffer.from(fixture).toString("hex"));
  });

  const scopes: DmarDeviceScope[] = [pciScope(DeviceScopeType.PCI_ENDPOINT, 0, 3, 0)];
  const base: DmarStructure[] = [
    {
      type: "DRHD",
      flags: 1,
      size: 1,
      segment: 0,
      registerBase: 0xfed9_0000n,
      scopes: [
        { type: DeviceScopeType.IOAPIC, enumerationId: 2, startBus: 0xf0, path: [{ device: 0x1f, function: 0 }] },
        { type: DeviceScopeType.MSI_CAPABLE_HPET, enumerationId: 0, startBus: 0, path: [{ device: 0x1f, function: 0 }] },
        { type: DeviceScopeType.ACPI_NAMESPACE_DEVICE, enumerationId: 1, startBus: 0, path: [{ device: 0x15, function: 0 }] },
        { type: DeviceScopeType.PCI_SUB_HIERARCHY, enumerationId: 0, startBus: 0, path: [{ device: 0x1c, function: 0 }, { device: 0, function: 0 }] },
      ],
    },
    { type: "RMRR", segment: 0, baseAddress: 0x7ef0_5000n, endAddress: 0x7f14_efffn, scopes },
    { type: "ATSR", flags: 0, segment: 0, scopes: [pciScope(DeviceScopeType.PCI_SUB_HIERARCHY, 0, 1, 0)] },
    { type: "RHSA", registerBase: 0xfed9_0000n, proximityDomain: 1 },
    { type: "ANDD", acpiDeviceNumber: 1, objectName: "\\_SB.PCI0.I2C0" },
  ];
  const satc: DmarStructure = { type: "SATC", flags: 1, segment: 0, scopes };
  const sidp: DmarStructure = { type: "SIDP", segment: 0, scopes };
  const everyType = (structures: DmarStructure[]): DmarTable => ({
    hostAddressWidth: 48,
    flags: DmarFlags.INTR_REMAP | DmarFlags.X2APIC_OPT_OUT | DmarFlags.DMA_CTRL_PLATFORM_OPT_IN,
    structures,
  });

  it("encodes every structure type to the byte layout of the spec and decodes it back", () => {
    const bytes = encodeDmar(everyType([...base, satc, sidp]));
    expect(acpiChecksum(bytes)).toBe(0);
    // Hand-checked offsets (VT-d §8.3–8.9): DRHD length 0x32 with a two-hop bridge scope of length 10.
    expect([...bytes.subarray(36, 38)]).toEqual([47, 7]);
    expect([...bytes.subarray(48, 56)]).toEqual([0, 0, 0x32, 0, 1, 1, 0, 0]);
    expect([...bytes.subarray(0x58, 0x62)]).toEqual([2, 10, 0, 0, 0, 0, 0x1c, 0, 0, 0]);
    const andd = bytes.indexOf(0x5c);
    expect(String.fromCharCode(...bytes.subarray(andd, andd + 15))).toBe("\\_SB.PCI0.I2C0\0");
    const result = decodeDmar(bytes);
    if (!result.ok) throw new Error(result.problem);
    const flagsFilled = (s: DmarStructure): DmarStructure =>
      "scopes" in s ? ({ ...s, scopes: s.scopes.map((sc) => ({ ...sc, flags: sc.flags ?? 0 })) } as DmarStructure) : s;
    expect(result.table.structures).toEqual([...base, satc, sidp].map(flagsFilled));
    expect(result.table.flags).toBe(7);
  });

  it.skipIf(IASL_TOOL.command === undefined)("disassembles with iasl without errors or warnings: DRHD, RMRR, ATSR, RHSA, ANDD and every scope type", () => {
    const out = iaslDisassemble(encodeDmar(everyType(base)));
    expect(iaslProblems(out)).toEqual([]);
    const fields = iaslFields(out.dsl);
    const values = (name: string): string[] => fields.filter(([n]) => n === name).map(([, v]) => v);
    expect(values("Host Address Width")).toEqual(["2F"]);
    expect(values("Subtable Type").map((v) => v.slice(0, 4))).toEqual(["0000", "0001", "0002", "0003", "0004"]);
    expect(values("Register Base Address")).toEqual(["00000000FED90000"]);
    expect(values("Base Address")).toEqual(["000000007EF05000", "00000000FED90000"]);
    expect(values("End Address (limit)")).toEqual(["000000007F14EFFF"]);
    expect(values("Proximity Domain")).toEqual(["00000001"]);
    expect(values("Device Name")).toEqual(['"\\_SB.PCI0.I2C0"']);
    expect(values("Device Scope Type")).toEqual([
      "03 [IOAPIC Device]",
      "04 [Message-capable HPET Device]",
      "05 [Namespace Device]",
      "02 [PCI Bridge Device]",
      "01 [PCI Endpoint Device]",
      "02 [PCI Bridge Device]",
    ]);
    expect(values("PCI Path")).toEqual(["1F,00", "1F,00", "15,00", "1C,00", "00,00", "03,00", "01,00"]);
  });

  for (const [what, extra] of [
    ["SATC", [satc]],
    ["SATC and SIDP", [satc, sidp]],
  ] as const) {
    it.skipIf(IASL_TOOL.command === undefined)(`disassembles with iasl without errors or warnings with ${what} added (skipped when this iasl predates the type)`, (ctx) => {
      const out = iaslDisassemble(encodeDmar(everyType([...base, ...extra])));
      const problems = iaslProblems(out);
      const unknownType = problems.find((p) => /Unknown DMAR subtable type 0x[56]/.test(p));
      const version = /version (\d{8})/.exec(out.console)?.[1] ?? "unknown";
      if (unknownType !== undefined) ctx.skip(`iasl ${version} does not know this DMAR subtable type ("${unknownType.trim()}")`);
      expect(problems).toEqual([]);
    });
  }

  const malformed: [string, (b: Uint8Array) => Uint8Array][] = [
    ["a table shorter than its header", (b) => b.subarray(0, 20)],
    ["a bad checksum", (b) => Uint8Array.from(b, (v, i) => (i === 9 ? v ^ 1 : v))],
    ["a length field larger than the table", (b) => fixLength(Uint8Array.from(b), 0x32, 0xff)],
    ["a device scope running past its structure", (b) => fixLength(Uint8Array.from(b), 0x41, 0x50)],
    ["a device scope of length 5", (b) => fixLength(Uint8Array.from(b), 0x41, 5)],
    ["a structure of length 2", (b) => fixLength(Uint8Array.from(b), 0x8a, 2)],
  ];
  for (const [what, corrupt] of malformed) {
    it(`reports ${what} as a problem instead of throwing`, () => {
      const result = decodeDmar(corrupt(fixture));
      expect(result.ok).toBe(false);
    });
  }

  it("keeps a structure of an unknown type as raw bytes", () => {
    const bytes = encodeDmar({ hostAddressWidth: 39, flags: 0, structures: [{ type: "UNKNOWN", code: 9, body: Uint8Array.of(1, 2, 3, 4) }] });
    const result = decodeDmar(bytes);
    expect(result.ok && result.table.structures).toEqual([{ type: "UNKNOWN", code: 9, body: Uint8Array.of(1, 2, 3, 4) }]);
  });

  it("never throws on random bytes after a valid header", () => {
    checkProperty(
      fc.property(fc.uint8Array({ maxLength: 200 }), (tail) => {
        const bytes = new Uint8Array(fixture.length + tail.length);
        bytes.set(fixture);
        bytes.set(tail, 48);
        const fixed = fixLength(bytes, 4, bytes.length);
        decodeDmar(fixed);
      }),
    );
  });
});

/** Writes a byte (or, at offset 4, the 32-bit table length) and repairs the checksum so only the intended fault remains. */
function fixLength(bytes: Uint8Array, at: number, value: number): Uint8Array {
  if (at === 4) new DataView(bytes.buffer, bytes.byteOffset).setUint32(4, value, true);
  else bytes[at] = value;
  bytes[9] = 0;
  bytes[9] = (0x100 - acpiChecksum(bytes)) & 0xff;
  return bytes;
}
