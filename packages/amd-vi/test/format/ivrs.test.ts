import { iasl as findIasl } from "../../../../test-support/external-tools.js";
import { describe, expect, it } from "vitest";
import fc from "fast-check";
import { spawnSync } from "node:child_process";
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { acpiChecksum, decodeLayout } from "@viommu/core";
import {
  IVHD_EXT_ATS_DISABLED,
  decodeIvrs,
  dteSettingLayout,
  encodeIvrs,
  integerUid,
  ivInfoLayout,
  ivhdEntryLength,
  ivhdFeatureReportingLayout,
  ivhdFlagsLayout,
  ivmdFlagsLayout,
  stringUid,
  type IvrsDescription,
} from "../../src/format/index.js";

function hex(bytes: Uint8Array): string {
  return Array.from(bytes, (b) => b.toString(16).padStart(2, "0")).join("");
}

/** QEMU 7.2's IVRS as spec x86.md B9 describes it: IVinfo 0x2800, one IVHD 10h (flags 0xD1, features 0x44), the IOAPIC special entry. */
const qemu72: IvrsDescription = {
  ivInfo: 0x2800,
  identity: { revision: 1 },
  blocks: [
    {
      kind: "IVHD",
      type: 0x10,
      flags: 0xd1,
      deviceId: 0x0010,
      capabilityOffset: 0x40,
      baseAddress: 0xfed80000n,
      pciSegment: 0,
      info: 0,
      features: 0x44,
      entries: [{ kind: "SPECIAL", deviceId: 0, dteSetting: 0, handle: 0, sourceDeviceId: 0x00a0, variety: 1 }],
    },
  ],
};

/** Every block and device-entry type that iASL 20200925 (Debian bookworm's acpica-tools) disassembles. */
const everyClassicType: IvrsDescription = {
  ivInfo: 0x00203041,
  blocks: [
    {
      kind: "IVHD",
      type: 0x10,
      flags: 0xd1,
      deviceId: 0x10,
      capabilityOffset: 0x40,
      baseAddress: 0xfed80000n,
      pciSegment: 0,
      info: 0x0102,
      features: 0x44,
      entries: [
        { kind: "PAD4", deviceId: 0, dteSetting: 0 },
        { kind: "ALL", deviceId: 0, dteSetting: 0 },
        { kind: "SELECT", deviceId: 0x8, dteSetting: 0 },
        { kind: "START_OF_RANGE", deviceId: 0x100, dteSetting: 0 },
        { kind: "END_OF_RANGE", deviceId: 0x1ff, dteSetting: 0 },
        { kind: "PAD8", deviceId: 0, dteSetting: 0, extendedData: 0 },
        { kind: "ALIAS_SELECT", deviceId: 0x300, dteSetting: 0, sourceDeviceId: 0x2f8 },
        { kind: "ALIAS_START_OF_RANGE", deviceId: 0x400, dteSetting: 0, sourceDeviceId: 0x3f8 },
        { kind: "END_OF_RANGE", deviceId: 0x4ff, dteSetting: 0 },
        { kind: "EXT_SELECT", deviceId: 0x500, dteSetting: 0, extendedData: IVHD_EXT_ATS_DISABLED },
        { kind: "EXT_START_OF_RANGE", deviceId: 0x600, dteSetting: 0, extendedData: 0 },
        { kind: "END_OF_RANGE", deviceId: 0x6ff, dteSetting: 0 },
        { kind: "SPECIAL", deviceId: 0, dteSetting: 0xd7, handle: 0, sourceDeviceId: 0xa0, variety: 1 },
        { kind: "SPECIAL", deviceId: 0, dteSetting: 0, handle: 0, sourceDeviceId: 0xa5, variety: 2 },
      ],
    },
    {
      kind: "IVHD",
      type: 0x11,
      flags: 0xd1,
      deviceId: 0x10,
      capabilityOffset: 0x40,
      baseAddress: 0xfed80000n,
      pciSegment: 0,
      info: 0,
      features: 0,
      efr: 0x29d3n,
      efr2: 0x100n,
      entries: [{ kind: "ALL", deviceId: 0, dteSetting: 0 }],
    },
    { kind: "IVMD", type: 0x20, flags: 0x7, deviceId: 0, auxData: 0, pciSegment: 0, startAddress: 0xa0000n, length: 0x20000n },
    { kind: "IVMD", type: 0x21, flags: 0x3, deviceId: 0x8, auxData: 0, pciSegment: 0, startAddress: 0x1000000n, length: 0x1000n },
    { kind: "IVMD", type: 0x22, flags: 0x8, deviceId: 0x100, auxData: 0x1ff, pciSegment: 0, startAddress: 0x2000000n, length: 0x10000n },
  ],
};

/** IVHD 40h with ACPI HID entries (UID none / integer / string); Linux accepts HID entries only in 40h. */
const withAcpiHid: IvrsDescription = {
  ivInfo: 0x00203041,
  blocks: [
    {
      kind: "IVHD",
      type: 0x40,
      flags: 0xd1,
      deviceId: 0x10,
      capabilityOffset: 0x40,
      baseAddress: 0xfed80000n,
      pciSegment: 0,
      info: 0,
      features: 0,
      efr: 0x29d3n,
      efr2: 0n,
      entries: [
        { kind: "ALL", deviceId: 0, dteSetting: 0 },
        { kind: "ACPI_HID", deviceId: 0xa5, dteSetting: 0, hid: "AMDI0020", cid: "", uidFormat: 2, uid: stringUid("ID00") },
        { kind: "ACPI_HID", deviceId: 0xa6, dteSetting: 0, hid: "AMDI0020", cid: "PNP0C02", uidFormat: 1, uid: integerUid(3) },
        { kind: "ACPI_HID", deviceId: 0xa7, dteSetting: 0, hid: "AMDI0020", cid: "", uidFormat: 0, uid: new Uint8Array(0) },
      ],
    },
  ],
};

describe("IVRS encoding (spec x86.md B9)", () => {
  it("writes QEMU 7.2's IVHD 10h and IOAPIC special entry byte for byte", () => {
    const table = encodeIvrs(qemu72);
    expect(table.length).toBe(48 + 24 + 8);
    expect(hex(table.subarray(0, 4))).toBe(hex(new TextEncoder().encode("IVRS")));
    expect(table[8]).toBe(1);
    expect(acpiChecksum(table)).toBe(0);
    expect(hex(table.subarray(36, 48))).toBe("002800000000000000000000");
    // Type 10, flags D1, length 0x20, DeviceID 0x0010, capability 0x40, base 0xFED80000, segment 0, info 0, features 0x44.
    expect(hex(table.subarray(48, 72))).toBe("10d12000100040000000d8fe0000000000000000" + "44000000");
    // SPECIAL: type 48, DeviceID 0, setting 0, handle 0, used DeviceID 00:14.0 (0x00A0), variety 1 (IOAPIC).
    expect(hex(table.subarray(72, 80))).toBe("48000000" + "00a00001");
  });

  it("writes IVHD 11h/40h with the EFR and EFR2 images and IVMD blocks of 32 bytes", () => {
    const table = encodeIvrs(everyClassicType);
    expect(table[8]).toBe(2);
    const decoded = decodeIvrs(table);
    if (!decoded.ok) throw new Error(decoded.problem);
    const ivhd11 = decoded.table.blocks[1]!;
    expect(ivhd11).toMatchObject({ kind: "IVHD", type: 0x11, efr: 0x29d3n, efr2: 0x100n });
    const ivmdOffset = table.length - 3 * 32;
    // Type 20, flags 07 (Unity | IR | IW), length 0x20, DeviceID 0, aux 0, segment 0, 6 reserved, start 0xA0000, length 0x20000.
    expect(hex(table.subarray(ivmdOffset, ivmdOffset + 32))).toBe("2007200000000000" + "0000000000000000" + "00000a0000000000" + "0000020000000000");
  });

  it("decodes what it encodes, for every block and entry type", () => {
    for (const description of [qemu72, everyClassicType, withAcpiHid]) {
      const decoded = decodeIvrs(encodeIvrs(description));
      if (!decoded.ok) throw new Error(decoded.problem);
      expect(decoded.table.ivInfo).toBe(description.ivInfo);
      expect(decoded.table.blocks).toEqual(description.blocks);
    }
  });

  it("gives device entries Linux's lengths: 4 << (type >> 6), 22 + UID length for 0xF0, none for reserved long types", () => {
    expect([0x00, 0x04, 0x40, 0x48, 0x7f].map((t) => ivhdEntryLength(t))).toEqual([4, 4, 8, 8, 8]);
    expect(ivhdEntryLength(0xf0, 4)).toBe(26);
    expect(ivhdEntryLength(0x80)).toBeUndefined();
    expect(ivhdEntryLength(0xc0)).toBeUndefined();
  });

  it("names the byte fields as ACPICA and Linux do", () => {
    expect(decodeLayout(ivInfoLayout, new Uint32Array([0x00203041]))).toEqual({ EFRSup: 1, DMARemap: 0, GVAsize: 2, PAsize: 0x30, VAsize: 0x40, HtAtsResv: 0 });
    expect(decodeLayout(ivhdFlagsLayout, new Uint32Array([0xd1]))).toEqual({ HtTunEn: 1, PassPW: 0, ResPassPW: 0, Isoc: 0, IotlbSup: 1, Coherent: 0, PrefSup: 1, PPRSup: 1 });
    expect(decodeLayout(ivhdFeatureReportingLayout, new Uint32Array([0x44]))).toMatchObject({ GTSup: 1, GASup: 1, XTSup: 0 });
    expect(decodeLayout(ivmdFlagsLayout, new Uint32Array([0x7]))).toEqual({ Unity: 1, IR: 1, IW: 1, ExclusionRange: 0 });
    expect(decodeLayout(dteSettingLayout, new Uint32Array([0xd7]))).toEqual({ INITPass: 1, EIntPass: 1, NMIPass: 1, SysMgt: 1, Lint0Pass: 1, Lint1Pass: 1 });
  });
});

describe("IVRS decoding of malformed tables", () => {
  const good = encodeIvrs(everyClassicType);
  function withChecksum(bytes: Uint8Array): Uint8Array {
    bytes[9] = 0;
    bytes[9] = (0x100 - acpiChecksum(bytes)) & 0xff;
    return bytes;
  }
  it.each([
    ["a wrong checksum", (b: Uint8Array) => void (b[9] = (b[9]! + 1) & 0xff), /checksum/],
    ["a block longer than the table", (b: Uint8Array) => void withChecksum(((b[50] = 0xff), (b[51] = 0x7f), b)), /length/],
    ["a reserved 16-byte device entry type", (b: Uint8Array) => void withChecksum(((b[72] = 0x80), b)), /no known length/],
  ])("reports %s without throwing", (_what, spoil, problem) => {
    const bytes = good.slice();
    spoil(bytes);
    const result = decodeIvrs(bytes);
    expect(result.ok).toBe(false);
    if (!result.ok) expect(result.problem).toMatch(problem);
  });
  it("keeps blocks of unknown types as bytes", () => {
    const bytes = good.slice();
    bytes[48 + 0x6c] = 0x12;
    const result = decodeIvrs(withChecksum(bytes));
    expect(result.ok && result.table.unknownBlocks.map((b) => b.type)).toEqual([0x12]);
  });
  it("never throws on a mutated table", () => {
    fc.assert(
      fc.property(fc.integer({ min: 36, max: good.length - 1 }), fc.integer({ min: 0, max: 255 }), fc.integer({ min: 0, max: good.length }), (at, value, cut) => {
        const bytes = good.slice(0, Math.max(cut, 40));
        if (at < bytes.length) bytes[at] = value;
        bytes[4] = bytes.length & 0xff;
        bytes[5] = bytes.length >> 8;
        decodeIvrs(withChecksum(bytes));
      }),
    );
  });
});

/** ACPICA's iASL: `iasl -d` on a table must print no error, no warning and no "****" remark. */
function iaslVersion(): number | undefined {
  if (findIasl().command === undefined) return undefined;
  const run = spawnSync("iasl", ["-v"], { encoding: "utf8" });
  if (run.error || run.status !== 0) return undefined;
  const m = /version (\d{8})/.exec(run.stdout + run.stderr);
  return m ? Number(m[1]) : undefined;
}

function disassemble(table: Uint8Array): { status: number | null; output: string; dsl: string } {
  const dir = mkdtempSync(join(tmpdir(), "amdvi-ivrs-"));
  try {
    writeFileSync(join(dir, "ivrs.dat"), table);
    const run = spawnSync("iasl", ["-d", "ivrs.dat"], { cwd: dir, encoding: "utf8" });
    return { status: run.status, output: run.stdout + run.stderr, dsl: readFileSync(join(dir, "ivrs.dsl"), "utf8") };
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}

function expectClean(result: { status: number | null; output: string; dsl: string }): void {
  expect(result.status).toBe(0);
  expect(result.output).not.toMatch(/error|warning/i);
  expect(result.dsl).not.toMatch(/\*\*\*\*|unknown|error|warning/i);
}

const IASL = iaslVersion();
/** IVHD type 40h and the ACPI HID (0xF0) device entry arrived in ACPICA 20210331 ("Add parsing for IVRS IVHD 40h and device entry F0h"). */
const IASL_HID_SUPPORT = 20210331;

describe("IVRS cross-checked with iasl -d", () => {
  it.skipIf(IASL === undefined)(`disassembles IVHD 10h/11h with every 4- and 8-byte entry type and IVMD 20h/21h/22h cleanly${IASL === undefined ? " (skipped: iasl not installed)" : ""}`, () => {
    const result = disassemble(encodeIvrs(everyClassicType));
    expectClean(result);
    for (const line of [
      /Subtable Type : 10 \[Hardware Definition Block/,
      /Subtable Type : 11 \[Hardware Definition Block/,
      /(Entry|Subtable) Type : 48/,
      /Source Used Device ID : 00A0/,
      /Source Used Device ID : 03F8/,
      /Extended Data : 80000000/,
      /Variety : 02/,
      /EFR Image : 00000000000029D3/,
      /Subtable Type : 22 \[Memory Definition Block/,
      /Auxiliary Data : 01FF/,
      /Memory Length : 0000000000020000/,
    ]) {
      expect(result.dsl).toMatch(line);
    }
  });

  const hidReason =
    IASL === undefined ? " (skipped: iasl not installed)" : IASL < IASL_HID_SUPPORT ? ` (skipped: iasl ${IASL} predates IVHD 40h / ACPI HID entries, ACPICA ${IASL_HID_SUPPORT})` : "";
  it.skipIf(IASL === undefined || IASL < IASL_HID_SUPPORT)(`disassembles IVHD 40h with ACPI HID entries cleanly${hidReason}`, () => {
    const result = disassemble(encodeIvrs(withAcpiHid));
    expectClean(result);
    expect(result.dsl).toMatch(/AMDI0020/);
  });
});
