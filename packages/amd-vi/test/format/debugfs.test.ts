import { readFileSync } from "node:fs";
import { fileURLToPath } from "node:url";
import fc from "fast-check";
import { describe, expect, it } from "vitest";
import { amdViDebugfs } from "../../src/format/debugfs.js";
import { amdViPlugin } from "../../src/plugin.js";
import { fuzzParams } from "../support.js";

/**
 * The sample files under fixtures/debugfs/ were written by us with the kernel's own formats
 * (drivers/iommu/amd/debugfs.c: iommu_mmio_show, iommu_capability_show, iommu_cmdbuf_show, devid_show,
 * dump_dte, dump_irte / dump_128_irte / dump_32_irte), filled with the state this package's model reached: the
 * reference guest driver on the emulated IOMMU (nested, v2 tables) after attaching 00:02.0, mapping 16 KiB at
 * IOVA 0x100000, unmapping its second page and remapping two MSIs (vector 0x41 to APIC 3, 0x42 to APIC 5);
 * irte32/ is the same run with 32-bit IRTEs (GAEn clear). No AMD-Vi debugfs dump of real hardware is at hand
 * beyond the kernel's documented example output, which the first test decodes.
 */
const sample = (file: string): string => readFileSync(fileURLToPath(new URL(`../fixtures/debugfs/${file}`, import.meta.url)), "utf8");

const parse = (file: string, text: string) => amdViDebugfs.parse(file, text);

describe("Linux AMD-Vi debugfs import", () => {
  it("is the plugin's importer and reads every file the kernel creates under iommu/amd/", () => {
    expect(amdViPlugin.debugfs).toBe(amdViDebugfs);
    // amd_iommu_debugfs_setup: iommuXX/{mmio,capability,cmdbuf}, then devid, devtbl, irqtbl.
    expect(amdViDebugfs.files).toEqual(["mmio", "capability", "cmdbuf", "devid", "devtbl", "irqtbl"]);
  });

  /**
   * Documentation/ABI/testing/debugfs-amd-iommu (torvalds/linux): the output AMD documents for each file, from
   * real hardware. Expected fields are worked out by hand from the AMD specification's bit positions (spec
   * x86.md B1 capability, B2.1 Control, B3 DTE, B5.3 IRTE, B6 commands), not from this package's layouts.
   */
  describe("the kernel's documented example output (real hardware)", () => {
    it("mmio 0x18: the Control register by field", () => {
      const { entries, errors } = parse("mmio", "Offset:0x18 Value:0x000c22000003f48d\n");
      expect(errors).toEqual([]);
      expect(entries).toHaveLength(1);
      // 0x8d: bits 0, 2, 3 and [7:5] = 4; 0xf4 << 8: bits 10, 12–15; 0x03 << 16: bits 16, 17; 0x000c2200 << 32: bits 41, 45, 50, 51.
      expect(entries[0]).toMatchObject({ structure: "MMIO register", index: "Control", address: 0x18, line: 1, raw: ["0x000c22000003f48d"] });
      expect(entries[0]!.fields).toMatchObject({
        IommuEn: 1, HtTunEn: 0, EventLogEn: 1, EventIntEn: 1, ComWaitIntEn: 0, InvTimeOut: 4, PassPW: 0, ResPassPW: 0, Coherent: 1, Isoc: 0,
        CmdBufEn: 1, PPRLogEn: 1, PPRIntEn: 1, PPREn: 1, GTEn: 1, GAEn: 1, BlkStopMrkEn: 1, EPHEn: 1, XTEn: 1, IntCapXTEn: 1, GAMEn: 0, GALogEn: 0,
      });
    });

    it("capability 0x10: MiscInfo0 (PAsize 48, VAsize 64, GVAsize 2)", () => {
      const { entries, errors } = parse("capability", "Offset:0x10 Value:0x00203040\n");
      expect(errors).toEqual([]);
      // [4:0] MsiNum 0, [7:5] GVAsize = 0x40 >> 5 = 2, [14:8] PAsize = 0x30, [21:15] VAsize = 0x203040 >> 15 = 0x40.
      expect(entries[0]).toMatchObject({ structure: "capability register", index: "MiscInfo0", address: 0x10, fields: { MsiNum: 0, GVAsize: 2, PAsize: 48, VAsize: 64 } });
    });

    it("cmdbuf: COMPLETION_WAIT and INVALIDATE_IOMMU_PAGES by opcode", () => {
      const text = ["CMD Buffer Head Offset:339 Tail Offset:339", "  0: 00835001 10000001 00003c00 00000000", "  1: 00000000 30000005 fffff003 7fffffff"].join("\n");
      const { entries, errors } = parse("cmdbuf", text);
      expect(errors).toEqual([]);
      expect(entries.map((e) => e.structure)).toEqual(["command buffer", "COMPLETION_WAIT", "INVALIDATE_IOMMU_PAGES"]);
      expect(entries[0]!.fields).toEqual({ Head: 339, Tail: 339, Pending: 0 });
      // Opcode [63:60] = 1; S bit 0; store address [51:3] = 0x1_00835000; store data [127:64] = 0x3c00.
      expect(entries[1]).toMatchObject({ index: "0", raw: ["0x1000000100835001", "0x0000000000003c00"], fields: { Opcode: 1, S: 1, I: 0, F: 0, StoreAddress: 0x1_0083_5000, StoreData: 0x3c00n, Pending: false } });
      // Opcode 3, DomainID [47:32] = 5, S bit 64, PDE bit 65, address 0x7fff_ffff_ffff_f000: Linux's "every page".
      expect(entries[2]).toMatchObject({ index: "1", fields: { Opcode: 3, DomainID: 5, S: 1, PDE: 1, GN: 0, Range: "all" } });
    });

    it("devtbl: the 256-bit DTE by field (V1 table, 3 levels, remapped interrupts)", () => {
      const text = "DeviceId             QWORD[3]         QWORD[2]         QWORD[1]         QWORD[0] iommu\n0000:01:00.0 0000000000000000 20000001373b8013 0000000000000038 6000000114d7b603 iommu3\n";
      const { entries, errors } = parse("devtbl", text);
      expect(errors).toEqual([]);
      expect(entries).toHaveLength(1);
      expect(entries[0]).toMatchObject({ structure: "DTE", index: "0000:01:00.0", line: 2, raw: ["0x6000000114d7b603", "0x0000000000000038", "0x20000001373b8013", "0x0000000000000000"] });
      // QWORD[0]: V bit 0, TV 1, Mode [11:9] = 0x603 >> 9 = 3, root [51:12] = 0x114d7b000, IR 61, IW 62.
      // QWORD[1]: DomainID [79:64] = 0x38. QWORD[2]: IV 128, IntTabLen [132:129] = 9, IRT root [179:134] = 0x1373b8000, IntCtl [189:188] = 2.
      expect(entries[0]!.fields).toMatchObject({
        DeviceID: 0x100, IOMMU: "iommu3", V: 1, TV: 1, Mode: 3, HostPageTableRootPointer: 0x1_14d7_b000, IR: 1, IW: 1, GV: 0, DomainID: 0x38,
        IV: 1, IntTabLen: 9, IG: 0, InterruptTableRootPointer: 0x1_373b_8000, IntCtl: 2, GCR3TableRootPointer: 0,
      });
      expect(entries[0]!.fields).not.toHaveProperty("Problem");
    });

    it("irqtbl: 128-bit IRTEs in the remapped form", () => {
      const text = "DeviceId 0000:01:00.0\nIRT[0000] 0000000000000020 0000000000000241\nIRT[0001] 0000000000000020 0000000000000841\n";
      const { entries, errors } = parse("irqtbl", text);
      expect(errors).toEqual([]);
      // Low: RemapEn bit 0, IntType [4:2] = 0, DM bit 6 = 1 (logical), GuestMode bit 7 = 0, Destination [31:8] = 2 / 8. High: Vector [71:64] = 0x20.
      expect(entries.map((e) => [e.structure, e.index, e.fields.Destination])).toEqual([
        ["IRTE (128-bit, remapped)", "0000:01:00.0 IRT[0]", 2],
        ["IRTE (128-bit, remapped)", "0000:01:00.0 IRT[1]", 8],
      ]);
      expect(entries[0]).toMatchObject({ raw: ["0x0000000000000241", "0x0000000000000020"], fields: { RemapEn: 1, IntType: 0, DM: 1, GuestMode: 0, Destination_23_0: 2, Destination_31_24: 0, Vector: 0x20 } });
    });
  });

  describe("sample files written from the kernel's formats (model state)", () => {
    it("mmio: each offset read named and decoded by register, a read of two 32-bit registers by halves", () => {
      const { entries, errors } = parse("mmio", sample("mmio"));
      expect(errors).toEqual([]);
      expect(entries.map((e) => e.index)).toEqual(["DeviceTableBase", "CommandBufferBase", "EventLogBase", "Control", "ExclusionBase", "ExclusionLimit", "ExtendedFeature", "MsiCapabilityHeader MsiAddressLow", "CommandBufferHead", "CommandBufferTail", "Status"]);
      expect(entries[0]).toMatchObject({ line: 2, address: 0, fields: { Size: 1, DevTabBase: 0xfe00_0000 } });
      // ComLen [59:56] = 9: 512 entries of 16 bytes.
      expect(entries[1]!.fields).toEqual({ ComBase: 0xfe00_2000, ComLen: 9 });
      // 0x3b487: GAEn bit 17 set (128-bit IRTEs), 0x1b487 would be without.
      expect(entries[3]!.fields).toMatchObject({ IommuEn: 1, CmdBufEn: 1, GTEn: 1, GAEn: 1, EventLogEn: 1 });
      // EFR 0x0001401300008cd7: HATS [11:10] = 3 (no host tables: the guest's IOMMU offers v2 only), GTSup bit 4, GASup 7, GIoSup 48, MsiCapMmioSup 46.
      expect(entries[6]!.fields).toMatchObject({ HATS: 3, GTSup: 1, GASup: 1, PPRSup: 1, GIoSup: 1, MsiCapMmioSup: 1 });
      expect(entries[7]!.fields).toEqual({ MsiCapabilityHeader: 0x0080_0005, MsiAddressLow: 0 });
      // Head and tail pointers are byte offsets [18:4]: 0xf0 is entry 15, the cmdbuf header's "Offset:15".
      expect(entries[8]!.fields).toEqual({ CmdHdPtr: 0xf0 });
      expect(entries[10]!.fields).toMatchObject({ CmdBufRun: 1, EventLogRun: 1, PPRLogRun: 1, EventOverflow: 0 });
    });

    it("mmio: a read across two 64-bit registers, an unaligned read, a register without fields", () => {
      const { entries, errors } = parse("mmio", "Offset:0x1c Value:0x0000000100000000\nOffset:0x1 Value:0x00000000000000ff\nOffset:0x190 Value:0x0000000000000001\n");
      expect(errors).toEqual([]);
      expect(entries.map((e) => [e.index, e.fields])).toEqual([
        ["Control[63:32] ExclusionBase[31:0]", { "Control[63:32]": 0, "ExclusionBase[31:0]": 1 }],
        ["unaligned", { value: 0xffn }],
        ["VIommuStatus", { value: 1n }],
      ]);
    });

    it("capability: the five registers by offset, messages without state skipped", () => {
      const { entries, errors } = parse("capability", sample("capability"));
      expect(errors).toEqual([]);
      expect(entries.map((e) => e.index)).toEqual(["CapabilityHeader", "BaseAddressLow", "BaseAddressHigh", "Range", "MiscInfo0", "MiscInfo1"]);
      // 0x1f03580f: CapID 0x0f, CapPtr 0x58, CapType [18:16] = 3 (IOMMU), IotlbSup 24, EFRSup 27.
      expect(entries[0]!.fields).toMatchObject({ CapID: 0x0f, CapPtr: 0x58, CapType: 3, CapRev: 0, IotlbSup: 1, EFRSup: 1 });
      expect(entries[1]!.fields).toEqual({ Enable: 1, BaseAddressLo: 0xfed8_0000 });
      expect(entries[3]!.fields).toMatchObject({ RngValid: 1, BusNumber: 0, FirstDevice: 0, LastDevice: 0xff });
    });

    it("cmdbuf: the written entries by opcode with their invalidation ranges; unwritten slots skipped", () => {
      const { entries, errors } = parse("cmdbuf", sample("cmdbuf"));
      expect(errors).toEqual([]);
      expect(entries[0]).toMatchObject({ structure: "command buffer", line: 1, fields: { Head: 15, Tail: 15, Pending: 0 } });
      const commands = entries.slice(1);
      expect(commands).toHaveLength(15);
      expect(commands.slice(0, 4).map((e) => e.structure)).toEqual(["INVALIDATE_IOMMU_ALL", "COMPLETION_WAIT", "INVALIDATE_DEVTAB_ENTRY", "INVALIDATE_IOMMU_PAGES"]);
      expect(commands[2]!.fields).toMatchObject({ DeviceID: 0x10 });
      // Entry 5: 0x00101007 = S, PDE, GN with address bit 12 set and bit 13 clear: the 16 KiB block at 0x100000 (the map).
      expect(commands[5]).toMatchObject({ index: "5", line: 7, fields: { DomainID: 2, S: 1, PDE: 1, GN: 1, PASID: 0, Range: "0x100000-0x103fff" } });
      // Entry 7: S clear: the one page unmapped.
      expect(commands[7]!.fields).toMatchObject({ S: 0, Range: "0x101000-0x101fff" });
      expect(commands[11]).toMatchObject({ structure: "INVALIDATE_INTERRUPT_TABLE", fields: { DeviceID: 0x10 } });
      expect(commands.every((e) => e.fields.Pending === false && e.fields.Problem === undefined)).toBe(true);
    });

    it("cmdbuf: entries between head and tail are pending (also across the wrap); a bad opcode or reserved bit is named", () => {
      const text = ["CMD Buffer Head Offset:510 Tail Offset:1", "510: 00000010 20000000 00000000 00000000", "  0: 00000010 50000000 00000000 00000000", "  1: 00000000 f0000000 00000000 00000000", "  2: 00000010 20000001 00000000 00000000"].join("\n");
      const { entries, errors } = parse("cmdbuf", text);
      expect(errors).toEqual([]);
      expect(entries[0]!.fields).toEqual({ Head: 510, Tail: 1, Pending: 3 });
      expect(entries.slice(1).map((e) => [e.index, e.structure, e.fields.Pending, e.fields.Problem])).toEqual([
        ["510", "INVALIDATE_DEVTAB_ENTRY", true, undefined],
        ["0", "INVALIDATE_INTERRUPT_TABLE", true, undefined],
        ["1", "UNKNOWN", false, "unknown opcode"],
        ["2", "INVALIDATE_DEVTAB_ENTRY", false, "reserved bits set"],
      ]);
    });

    it("devid: the selected device", () => {
      const { entries, errors } = parse("devid", sample("devid"));
      expect(errors).toEqual([]);
      expect(entries).toEqual([{ structure: "selected device", line: 2, index: "0000:00:02.0", raw: [], fields: { Segment: 0, Bus: 0, Device: 2, Function: 0, DeviceID: 0x10 } }]);
    });

    it("devtbl: a guest (v2) DTE with its GCR3 table root put together", () => {
      const { entries, errors } = parse("devtbl", sample("devtbl"));
      expect(errors).toEqual([]);
      expect(entries).toHaveLength(1);
      // QWORD[0] 0x6cc0000000000003: V, TV, GIoV 54, GV 55, GCR3[14:12] = [60:58] = 3, IR, IW; QWORD[1]: DomainID 2,
      // GCR3[30:15] = 0xfc01, GCR3[51:31] = 1 → 0xfe00b000; QWORD[2]: IRT at 0xfe010000, 512 entries, IntCtl 2.
      expect(entries[0]!.fields).toMatchObject({ DeviceID: 0x10, IOMMU: "iommu0", V: 1, TV: 1, Mode: 0, GIoV: 1, GV: 1, GLX: 0, IR: 1, IW: 1, DomainID: 2, GCR3TableRootPointer: 0xfe00_b000, IV: 1, IntTabLen: 9, InterruptTableRootPointer: 0xfe01_0000, IntCtl: 2 });
    });

    it("devtbl: a DTE the hardware would reject says why", () => {
      const { entries } = parse("devtbl", "0000:00:02.0 0000000000000000 0000000000000000 0000000000000000 0000000000000e01 iommu0\n");
      // Mode [11:9] = 7 is reserved: ILLEGAL_DEV_TABLE_ENTRY.
      expect(entries[0]!.fields).toMatchObject({ Mode: 7, Problem: "reserved-mode" });
    });

    it("irqtbl: 128-bit remapped IRTEs (vector, APIC destination), and 32-bit ones", () => {
      const wide = parse("irqtbl", sample("irqtbl"));
      expect(wide.errors).toEqual([]);
      expect(wide.entries.map((e) => [e.structure, e.index, e.line, e.fields.Vector, e.fields.Destination])).toEqual([
        ["IRTE (128-bit, remapped)", "0000:00:02.0 IRT[0]", 3, 0x41, 3],
        ["IRTE (128-bit, remapped)", "0000:00:02.0 IRT[1]", 4, 0x42, 5],
      ]);
      const narrow = parse("irqtbl", sample("irte32/irqtbl"));
      expect(narrow.errors).toEqual([]);
      // 0x00410301: RemapEn bit 0, Destination [15:8] = 3, Vector [23:16] = 0x41.
      expect(narrow.entries.map((e) => [e.structure, e.raw, e.fields])).toEqual([
        ["IRTE (32-bit)", ["0x00410301"], { RemapEn: 1, SupIOPF: 0, IntType: 0, RqEoi: 0, DM: 0, GuestMode: 0, Destination: 3, Vector: 0x41 }],
        ["IRTE (32-bit)", ["0x00420501"], { RemapEn: 1, SupIOPF: 0, IntType: 0, RqEoi: 0, DM: 0, GuestMode: 0, Destination: 5, Vector: 0x42 }],
      ]);
    });

    it("irqtbl: a guest virtual APIC IRTE (GuestMode) by its own fields", () => {
      // Low: RemapEn, IsRun bit 6, GuestMode bit 7, Destination [31:8] = 3, GATag [63:32] = 0x101; high: Vector 0x41, GA root [115:76] = 0x123456000.
      const { entries, errors } = parse("irqtbl", "DeviceId 0000:00:02.0\nIRT[0005] 0000000123456041 00000101000003c1\n");
      expect(errors).toEqual([]);
      expect(entries[0]).toMatchObject({ structure: "IRTE (128-bit, guest virtual APIC)", index: "0000:00:02.0 IRT[5]", fields: { RemapEn: 1, IsRun: 1, GuestMode: 1, Destination: 3, GATag: 0x101, Vector: 0x41, GARootPtr: 0x1_2345_6000 } });
    });
  });

  describe("what the kernel cannot have printed", () => {
    it("a line fitting no format is an error naming the file and its line; the rest still decodes", () => {
      const cases: [string, string, RegExp][] = [
        ["mmio", "Offset:0x18 Value:0x3f48d", /^mmio:2: not an MMIO line/],
        ["capability", "Offset:0x10 Value:0x203040", /^capability:2: not a capability line/],
        ["cmdbuf", "  3: 00000000 30000005 fffff003", /^cmdbuf:2: not a command line/],
        ["devid", "01:00.0", /^devid:2: not a device line/],
        ["devtbl", "0000:01:00.0 20000001373b8013 0000000000000038 6000000114d7b603 iommu3", /^devtbl:2: not a DTE line/],
        ["irqtbl", "IRT[0000] 0000000000000020", /^irqtbl:2: not an IRTE line/],
      ];
      const good: Record<string, string> = {
        mmio: "Offset:0x18 Value:0x000c22000003f48d",
        capability: "Offset:0x10 Value:0x00203040",
        cmdbuf: "  0: 00835001 10000001 00003c00 00000000",
        devid: "0000:01:00.0",
        devtbl: "0000:01:00.0 0000000000000000 20000001373b8013 0000000000000038 6000000114d7b603 iommu3",
        irqtbl: "IRT[0000] 0000000000000020 0000000000000241",
      };
      for (const [file, bad, error] of cases) {
        const r = parse(file, `${good[file]}\n${bad}\n${good[file]}\n`);
        expect(r.errors, file).toHaveLength(1);
        expect(r.errors[0], file).toMatch(error);
        expect(r.errors[0], file).toContain(JSON.stringify(bad));
        expect(r.entries.map((e) => e.line), file).toEqual([1, 3]);
      }
    });

    it("values outside what the kernel accepts or allocates are errors", () => {
      const errorsOf = (file: string, text: string) => parse(file, text).errors;
      expect(errorsOf("mmio", "Offset:0x7fff8 Value:0x0000000000000000\nOffset:0x7fff9 Value:0x0000000000000000")).toEqual([expect.stringMatching(/^mmio:2: offset 0x7fff9 is beyond the MMIO window/)]);
      expect(errorsOf("capability", "Offset:0x2 Value:0x00000000\nOffset:0x18 Value:0x00000000")).toEqual([expect.stringMatching(/^capability:1: offset 0x2 is not dword-aligned/), expect.stringMatching(/^capability:2: offset 0x18 is beyond the capability block/)]);
      expect(errorsOf("cmdbuf", "CMD Buffer Head Offset:512 Tail Offset:0\n512: 00000010 20000000 00000000 00000000")).toEqual([expect.stringMatching(/^cmdbuf:1: head or tail beyond/), expect.stringMatching(/^cmdbuf:2: entry 512 is beyond/)]);
      expect(errorsOf("devid", "0000:00:20.0")).toEqual([expect.stringMatching(/^devid:1: slot 0x20 is not a PCI device number/)]);
      expect(errorsOf("irqtbl", "IRT[2048] 00410301")).toEqual([expect.stringMatching(/^irqtbl:1: entry 2048 is beyond/)]);
      expect(errorsOf("irqtbl", "DeviceId 0000:00:02.0\nIRT[0000] 00410301\nIRT[0001] 0000000000000042 0000000000000501\nDeviceId 0000:00:03.0\nIRT[0000] 0000000000000042 0000000000000501")).toEqual([expect.stringMatching(/^irqtbl:3: a 128-bit IRTE among 32-bit ones/)]);
    });

    it("the kernel's messages printed without a newline run into the next read's first line, which still decodes", () => {
      const { entries, errors } = parse("irqtbl", "Device table not foundDeviceId 0000:00:02.0\nIRT[0000] 00410301\n\nThe device's DTE contains an invalid IRT length value.");
      expect(errors).toEqual([]);
      expect(entries.map((e) => e.index)).toEqual(["0000:00:02.0 IRT[0]"]);
      const dte = parse("devtbl", "Device table not foundDeviceId             QWORD[3]         QWORD[2]         QWORD[1]         QWORD[0] iommu\n");
      expect(dte).toEqual({ entries: [], errors: [] });
    });

    it("an unknown file is one error; no text throws (fuzzed, seed from VIOMMU_SEED)", () => {
      expect(parse("devtable", "x").errors).toEqual([expect.stringMatching(/^devtable: not an AMD-Vi debugfs file/)]);
      expect(parse("constructor", "x").errors).toEqual([expect.stringMatching(/^constructor: not an AMD-Vi debugfs file/)]);
      const valid = amdViDebugfs.files.flatMap((f) => sample(f).split("\n").slice(0, 12)).concat(sample("irte32/irqtbl").split("\n"));
      const mutated = fc.tuple(fc.constantFrom(...valid), fc.nat(), fc.string({ maxLength: 3 }), fc.nat({ max: 2 })).map(([line, at, text, cut]) => {
        const i = line.length === 0 ? 0 : at % line.length;
        return line.slice(0, i) + text + line.slice(i + cut);
      });
      const hexLine = fc.tuple(fc.constantFrom("Offset:0x%x Value:0x%h", "%d: %8 %8 %8 %8", "IRT[%d] %h %h", "IRT[%d] %8", "0000:%2:%2.%d %h %h %h %h iommu%d", "CMD Buffer Head Offset:%d Tail Offset:%d", "DeviceId 0000:%2:%2.%d"), fc.array(fc.bigInt({ min: 0n, max: 2n ** 64n - 1n }), { minLength: 8, maxLength: 8 })).map(([format, values]) => {
        let k = 0;
        return format.replace(/%([xdh28])/g, (_, c: string) => {
          const v = values[k++]!;
          if (c === "d") return String(v % 4096n);
          if (c === "x") return (v % 0x80000n).toString(16);
          const digits = c === "h" ? 16 : Number(c);
          return (v % 2n ** BigInt(4 * digits)).toString(16).padStart(digits, "0");
        });
      });
      fc.assert(
        fc.property(fc.constantFrom(...amdViDebugfs.files), fc.array(fc.oneof(fc.string(), mutated, hexLine, fc.constantFrom(...valid)), { maxLength: 16 }), (file, lines) => {
          const r = parse(file, lines.join("\n"));
          for (const e of r.errors) expect(e).toMatch(new RegExp(`^${file}:(\\d+): `));
          const erroneous = new Set(r.errors.map((e) => Number(/^[^:]+:(\d+):/.exec(e)![1])));
          for (const e of r.entries) {
            expect(e.line).toBeGreaterThanOrEqual(1);
            expect(e.line).toBeLessThanOrEqual(lines.join("\n").split("\n").length);
            expect(erroneous.has(e.line)).toBe(false);
          }
        }),
        fuzzParams(2000),
      );
    });
  });
});
