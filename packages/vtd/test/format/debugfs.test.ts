import { readFileSync } from "node:fs";
import { fileURLToPath } from "node:url";
import fc from "fast-check";
import { describe, expect, it } from "vitest";
import { vtdDebugfs } from "../../src/format/debugfs.js";
import { vtdPlugin } from "../../src/plugin.js";
import { checkProperty } from "../support.js";

/** Samples written with the kernel's own seq_printf formats (drivers/iommu/intel/debugfs.c), values from the real guest. */
const sample = (file: string): string => readFileSync(fileURLToPath(new URL(`../fixtures/debugfs/${file}`, import.meta.url)), "utf8");

describe("Linux VT-d debugfs import", () => {
  it("is the plugin's importer and names the files it reads", () => {
    expect(vtdPlugin.debugfs).toBe(vtdDebugfs);
    expect(vtdDebugfs.files).toEqual(["iommu_regset", "dmar_translation_struct", "domain_translation_struct", "invalidation_queue", "ir_translation_struct"]);
  });

  it("iommu_regset: every register, CAP and ECAP by field", () => {
    const { entries, errors } = vtdDebugfs.parse("iommu_regset", sample("iommu_regset"));
    expect(errors).toEqual([]);
    expect(entries.map((e) => e.index)).toEqual(["VER", "GCMD", "GSTS", "CAP", "ECAP", "RTADDR", "IQA"]);
    expect(entries.find((e) => e.index === "RTADDR")).toMatchObject({ address: 0x20, raw: ["0x000000000387f000"], line: 8 });
    // CAP 0x00d2008c22260206: SAGAW bits 12:8 = 0b00010, MGAW 21:16 = 0x26, ND 2:0 = 6, CM bit 7 = 0.
    expect(entries.find((e) => e.index === "CAP")!.fields).toMatchObject({ ND: 6, CM: 0, SAGAW: 2, MGAW: 0x26 });
    // ECAP 0xf00f5e: QI bit 1, DT 2, IR 3, EIM 4, PT 6, SC 7 = 0, IRO 17:8 = 0xf.
    expect(entries.find((e) => e.index === "ECAP")!.fields).toMatchObject({ QI: 1, DT: 1, IR: 1, EIM: 1, PT: 1, SC: 0, IRO: 0xf });
  });

  it("dmar_translation_struct: root and context entries (legacy, PASID -1) and scalable-mode ones with the PASID entry; a bad line by number", () => {
    const { entries, errors } = vtdDebugfs.parse("dmar_translation_struct", sample("dmar_translation_struct"));
    expect(errors).toHaveLength(1);
    expect(errors[0]).toMatch(/^dmar_translation_struct:5: not a B\.D\.F line/);
    const [root, ctx] = entries;
    expect(root).toMatchObject({ structure: "root entry", index: "02:00.0", line: 3, raw: ["0x0000000003996001", "0x0000000000000000"], fields: { P: 1, CTP: 0x3996000n } });
    expect(ctx).toMatchObject({ structure: "context entry", fields: { P: 1, TT: 1, SLPTPTR: 0x3995000n, AW: 2, DID: 9 } });
    const sm = entries.filter((e) => e.line === 4);
    expect(sm.map((e) => e.structure)).toEqual(["scalable-mode root entry", "scalable-mode context entry", "PASID table entry"]);
    expect(sm[1]!.fields).toMatchObject({ P: 1, PDTS: 2, PASIDDIRPTR: 0x2000000n, RID_PASID: 1 });
    // val[0] 0x0200000000000041: P, PGTT 1 (first level), AW 0; val[1] DID 0x3000; val[2] 0.
    expect(sm[2]).toMatchObject({ index: "00:03.0 PASID 0", fields: { P: 1, PGTT: 1, DID: 0x3000 } });
  });

  it("domain_translation_struct: each non-zero entry on a leaf's path by level, a 2 MiB PDE leaf included", () => {
    const { entries, errors } = vtdDebugfs.parse("domain_translation_struct", sample("domain_translation_struct"));
    expect(errors).toEqual([]);
    const first = entries.filter((e) => e.line === 3);
    expect(first.map((e) => [e.structure, e.fields.level])).toEqual([
      ["PML4E", 4],
      ["PDPE", 3],
      ["PDE", 2],
      ["PTE", 1],
    ]);
    // The fixture's translation of 02:00.0 at IOVA 0xffffd000: leaf 0x3bbd003.
    expect(first[3]).toMatchObject({ index: "IOVA 0xffffd000", fields: { R: 1, W: 1, ADDR: 0x3bbd000 } });
    const large = entries.filter((e) => e.line === 4);
    expect(large.at(-1)).toMatchObject({ structure: "PDE", fields: { PS: 1, R: 1, W: 1 } });
  });

  it("invalidation_queue: each descriptor decoded by type with its status; a short line by number", () => {
    const { entries, errors } = vtdDebugfs.parse("invalidation_queue", sample("invalidation_queue"));
    expect(entries.map((e) => [e.index, e.structure, e.fields.status])).toEqual([
      ["0", "CC_INV", 1],
      ["1", "IOTLB_INV", 1],
      ["2", "INV_WAIT", 1],
    ]);
    expect(entries[0]!.fields).toMatchObject({ G: 1 });
    expect(entries[1]!.fields).toMatchObject({ G: 3, DID: 9 });
    expect(errors).toEqual([expect.stringMatching(/^invalidation_queue:7: not a descriptor line/)]);
  });

  it("ir_translation_struct: remapped IRTEs (vector, destination) and posted ones", () => {
    const { entries, errors } = vtdDebugfs.parse("ir_translation_struct", sample("ir_translation_struct"));
    expect(errors).toEqual([]);
    expect(entries.map((e) => [e.structure, e.index, e.fields.SID])).toEqual([
      ["IRTE", "0", "00:1f.0"],
      ["IRTE", "17", "02:00.0"],
      ["posted IRTE", "5", "02:00.0"],
    ]);
    expect(entries[1]!.fields).toMatchObject({ P: 1, V: 0x44 });
  });

  it("reports an unknown file, and never throws for any text", () => {
    expect(vtdDebugfs.parse("amd_device_table", "x").errors[0]).toMatch(/not a VT-d debugfs file/);
    checkProperty(
      fc.property(fc.constantFrom(...vtdDebugfs.files), fc.array(fc.oneof(fc.string(), fc.constantFrom("Index\t\tqw0\t\t\tqw1\t\t\tqw2\t\t\tqw3\t\t\tstatus", "    0\t0000000000000011\t0000000000000000\t00000001")), { maxLength: 10 }), (file, lines) => {
        const r = vtdDebugfs.parse(file, lines.join("\n"));
        for (const e of r.errors) expect(e).toMatch(new RegExp(`^${file}:\\d+: `));
      }),
      { numRuns: 500 },
    );
  });
});
