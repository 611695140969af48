import { describe, expect, it } from "vitest";
import { spawnSync } from "node:child_process";
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import fc from "fast-check";
import { unwrap, type AcpiField } from "@viommu/core";
import { encodeIvrs, type IvhdBlock, type IvrsBlock } from "../../src/format/ivrs.js";
import type { IvhdDeviceEntry } from "../../src/format/ivhd-device-entry.js";
import { amdViPlugin } from "../../src/plugin.js";
import { fuzzParams } from "../support.js";

const haveIasl = spawnSync("iasl", ["-v"], { encoding: "utf8" }).status === 0;

/** iasl's own disassembly of a table: every `[OFFh DDDD LEN] Name : Value` line from offset 36 on. */
function iaslFields(table: Uint8Array): { offset: number; length: number; name: string; value: string }[] {
  const dir = mkdtempSync(join(tmpdir(), "ivrs-"));
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
const decode = amdViPlugin.acpi!.decode!;

/** Every device entry kind iasl (20200925) disassembles: select and range, alias, extended, special (IOAPIC, HPET), PAD4. */
const entries: IvhdDeviceEntry[] = [
  { kind: "ALL", deviceId: 0, dteSetting: 0 },
  { kind: "SELECT", deviceId: 0x10, dteSetting: 0xd7 },
  { kind: "START_OF_RANGE", deviceId: 0x100, dteSetting: 0 },
  { kind: "END_OF_RANGE", deviceId: 0x1ff, dteSetting: 0 },
  { kind: "ALIAS_SELECT", deviceId: 0x200, dteSetting: 1, sourceDeviceId: 0x208 },
  { kind: "ALIAS_START_OF_RANGE", deviceId: 0x300, dteSetting: 2, sourceDeviceId: 0x308 },
  { kind: "END_OF_RANGE", deviceId: 0x3ff, dteSetting: 0 },
  { kind: "EXT_SELECT", deviceId: 0x400, dteSetting: 0, extendedData: 0x8000_0000 },
  { kind: "EXT_START_OF_RANGE", deviceId: 0x500, dteSetting: 0, extendedData: 0 },
  { kind: "END_OF_RANGE", deviceId: 0x5ff, dteSetting: 0 },
  { kind: "SPECIAL", deviceId: 0, dteSetting: 0xd7, handle: 0x21, sourceDeviceId: 0xa0, variety: 1 },
  { kind: "SPECIAL", deviceId: 0, dteSetting: 0, handle: 0, sourceDeviceId: 0xa5, variety: 2 },
  { kind: "PAD4", deviceId: 0, dteSetting: 0 },
];
const ivhd = (type: 0x10 | 0x11 | 0x40, list: IvhdDeviceEntry[] = entries): IvhdBlock => ({
  kind: "IVHD",
  type,
  flags: 0xb0,
  deviceId: 2,
  capabilityOffset: 0x40,
  baseAddress: 0xfeb8_0000n,
  pciSegment: 0,
  info: 0x1300,
  features: 0x8004_8f6e,
  efr: 0x2465_77ef_a225_4afan,
  efr2: 0n,
  entries: list,
});
const ivmds: IvrsBlock[] = [
  { kind: "IVMD", type: 0x20, flags: 7, deviceId: 0, auxData: 0, pciSegment: 0, startAddress: 0xfd00_0000n, length: 0x100_0000n },
  { kind: "IVMD", type: 0x21, flags: 1, deviceId: 0x10, auxData: 0, pciSegment: 0, startAddress: 0x1000n, length: 0x2000n },
  { kind: "IVMD", type: 0x22, flags: 8, deviceId: 0x100, auxData: 0x1ff, pciSegment: 0, startAddress: 0x1_0000n, length: 0x1_0000n },
];
const everyKind = encodeIvrs({ ivInfo: 0x20_3041, blocks: [ivhd(0x10), ivhd(0x11), ...ivmds] });
const hid: IvhdDeviceEntry = { kind: "ACPI_HID", deviceId: 0xa7, dteSetting: 0x40, hid: "AMDI0020", cid: "", uidFormat: 2, uid: new TextEncoder().encode("ID00") };
/** IVHD 40h ending in an ACPI_HID entry: cut anywhere, its UID Length is read at the edge. */
const withHid = encodeIvrs({ ivInfo: 0x20_3041, blocks: [ivhd(0x40, [{ kind: "SELECT", deviceId: 0x10, dteSetting: 0 }, hid])] });

describe.skipIf(!haveIasl)("viommu acpi --decode for IVRS, judged by iasl -d", () => {
  for (const [what, table] of [
    ["QEMU 7.2's IVRS (q35 + amd-iommu, read from fw_cfg: test/fixtures/README.md)", new Uint8Array(readFileSync(new URL("../fixtures/qemu-7.2-IVRS.bin", import.meta.url)))],
    ["the generator's IVRS (IVHD 10h and 11h, QEMU's entries)", amdViPlugin.acpi!.generate()],
    ["an IVRS with IVHD 10h and 11h holding every entry kind, and IVMD 20h, 21h, 22h", everyKind],
  ] as const) {
    it(`${what}: every field's offset, length, name and value as iasl prints them`, () => {
      const expected = iaslFields(table);
      expect(expected.length).toBeGreaterThan(20);
      expect(mine(unwrap(decode(table)))).toEqual(expected);
    });
  }
});

describe("IVRS decode beyond what iasl 20200925 disassembles", () => {
  it("IVHD 40h is decoded as 11h is (same header), and an ACPI_HID entry (F0h) gives _HID, _CID and its UID", () => {
    const t = encodeIvrs({ ivInfo: 0x20_3041, blocks: [ivhd(0x40, [hid, { kind: "SELECT", deviceId: 0x10, dteSetting: 0 }])] });
    const f = unwrap(decode(t));
    expect(f.find((x) => x.name === "Subtable Type")).toMatchObject({ offset: 48, value: "40 [Hardware Definition Block - Mixed Format]", depth: 1 });
    expect(f.find((x) => x.name === "EFR Image")).toMatchObject({ offset: 48 + 24, length: 8, value: "246577EFA2254AFA" });
    const at = 48 + 40;
    expect(f.filter((x) => x.offset >= at && x.offset < at + 26).map((x) => [x.offset - at, x.length, x.name, x.value])).toEqual([
      [0, 1, "Entry Type", "F0"],
      [1, 2, "Device ID", "00A7"],
      [3, 1, "Data Setting", "40"],
      [4, 8, "ACPI HID", '"AMDI0020"'],
      [12, 8, "ACPI CID", "0000000000000000"],
      [20, 1, "UID Format", "02"],
      [21, 1, "UID Length", "04"],
      [22, 4, "UID String", '"ID00"'],
    ]);
    // The entry after it is found at 22 + UID Length.
    expect(f.find((x) => x.offset === at + 26)).toMatchObject({ name: "Entry Type", value: "02" });
  });

  it("a truncated table, a block or entry running beyond its container, is EINVAL naming the offset", () => {
    const cut = everyKind.slice(0, 0x50);
    new DataView(cut.buffer).setUint32(4, cut.length, true);
    const r = decode(cut);
    expect(!r.ok && r.error.errno).toBe("EINVAL");
    if (!r.ok) expect(r.error.message).toMatch(/^subtable at offset 0x30: Length 0x[0-9a-f]+ runs beyond the table \(0x50\)$/);
    const lying = decode(everyKind.slice(0, 100));
    expect(!lying.ok && lying.error.message).toMatch(/offset 0x4/);
    const entry = everyKind.slice();
    // The first IVHD (at 0x30, entries from 0x48) made to end 4 bytes into its alias entry at 0x58.
    entry[0x32] = 0x2c;
    entry[0x33] = 0;
    const e = decode(entry);
    expect(!e.ok && e.error.message).toBe("device entry type 0x42 at offset 0x58: its 8 bytes run beyond the IVHD (0x5c)");
  });

  it("never throws, whatever the bytes (VIOMMU_SEED)", () => {
    fc.assert(
      fc.property(fc.uint8Array({ minLength: 0, maxLength: 300 }), fc.constantFrom(everyKind, withHid), fc.nat(), fc.array(fc.tuple(fc.nat(), fc.nat({ max: 255 })), { maxLength: 8 }), (noise, base, cut, flips) => {
        const t = base.slice(0, cut % (base.length + 1));
        // The declared length follows the cut half the time, so the blocks themselves are what runs short.
        if (cut % 2 === 0 && t.length >= 8) new DataView(t.buffer).setUint32(4, t.length, true);
        for (const [i, v] of flips) if (t.length > 0) t[i % t.length] = v;
        for (const table of [t, noise]) {
          const r = decode(table);
          if (!r.ok) expect(r.error.errno).toBe("EINVAL");
          else for (const f of r.value) expect(f.offset + f.length).toBeLessThanOrEqual(table.length);
        }
      }),
      fuzzParams(3000),
    );
  });
});
