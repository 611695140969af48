import { iasl as findIasl } from "../../../../test-support/external-tools.js";
import { describe, expect, it } from "vitest";
import fc from "fast-check";
import { spawnSync } from "node:child_process";
import { existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { acpiChecksum } from "@viommu/core";
import { IortNodeType, decodeIort, encodeIort, iortMapId, type IortTable } from "../../src/format/index.js";
import { fixtureBytes } from "./fixtures.js";

const qemuIort = fixtureBytes("acpi-IORT.bin");

/** QEMU 7.2's table for `-machine virt,iommu=smmuv3` (buses 0–1 behind the SMMU), as a typed description. */
const qemuDescription: IortTable = {
  revision: 3,
  oemId: "BOCHS ",
  oemTableId: "BXPC    ",
  oemRevision: 1,
  creatorId: "BXPC",
  creatorRevision: 1,
  nodes: [
    { type: "its-group", revision: 1, identifier: 0, itsIdentifiers: [0] },
    {
      type: "smmuv3",
      revision: 4,
      identifier: 1,
      baseAddress: 0x09050000n,
      flags: 1,
      model: 0,
      eventGsiv: 0x6a,
      priGsiv: 0x6b,
      gerrGsiv: 0x6d,
      syncGsiv: 0x6c,
      mappings: [{ inputBase: 0, idCount: 0xffff, outputBase: 0, outputNode: 0 }],
    },
    {
      type: "root-complex",
      revision: 3,
      identifier: 2,
      memoryAccess: { cacheCoherency: 1, allocationHints: 0, memoryAccessFlags: 3 },
      atsAttribute: 0,
      pciSegment: 0,
      memoryAddressSizeLimit: 64,
      mappings: [
        { inputBase: 0, idCount: 0x200, outputBase: 0, outputNode: 1 },
        { inputBase: 0x200, idCount: 0xfdff, outputBase: 0x200, outputNode: 0 },
      ],
    },
  ],
};

describe("IORT from a real QEMU 7.2 guest (DEN 0049, spec §3)", () => {
  const decoded = decodeIort(qemuIort);

  it("decodes the header and the three nodes with their offsets, revisions and identifiers", () => {
    expect(decoded.ok).toBe(true);
    if (!decoded.ok) return;
    const t = decoded.table;
    expect(t).toMatchObject({ revision: 3, oemId: "BOCHS ", oemTableId: "BXPC    ", oemRevision: 1, creatorId: "BXPC", creatorRevision: 1 });
    expect(t.nodes.map((n) => [n.type, n.revision, n.identifier])).toEqual([
      ["its-group", 1, 0],
      ["smmuv3", 4, 1],
      ["root-complex", 3, 2],
    ]);
  });

  it("decodes the ITS group: one ITS, identifier 0, no mappings", () => {
    if (!decoded.ok) throw new Error(decoded.problem);
    expect(decoded.table.nodes[0]).toEqual({ type: "its-group", revision: 1, identifier: 0, mappings: [], itsIdentifiers: [0] });
  });

  it("decodes the SMMUv3 node: base 0x09050000, COHACC override, generic model, GSIVs 0x6a/0x6b/0x6d/0x6c, all IDs to the ITS", () => {
    if (!decoded.ok) throw new Error(decoded.problem);
    expect(decoded.table.nodes[1]).toEqual({
      type: "smmuv3",
      revision: 4,
      identifier: 1,
      baseAddress: 0x09050000n,
      flags: 1,
      vatosAddress: 0n,
      model: 0,
      eventGsiv: 0x6a,
      priGsiv: 0x6b,
      gerrGsiv: 0x6d,
      syncGsiv: 0x6c,
      proximityDomain: 0,
      deviceIdMappingIndex: 0,
      // QEMU 7.2 writes the count minus one here (spec §9.18).
      mappings: [{ inputBase: 0, idCount: 0xffff, outputBase: 0, outputNode: 0, outputReference: 0x30, flags: 0 }],
    });
  });

  it("decodes the root complex: coherent, segment 0, 64-bit limit, buses 0–1 to the SMMU and the rest to the ITS", () => {
    if (!decoded.ok) throw new Error(decoded.problem);
    const rc = decoded.table.nodes[2]!;
    expect(rc).toEqual({
      type: "root-complex",
      revision: 3,
      identifier: 2,
      memoryAccess: { cacheCoherency: 1, allocationHints: 0, memoryAccessFlags: 3 },
      atsAttribute: 0,
      pciSegment: 0,
      memoryAddressSizeLimit: 64,
      mappings: [
        { inputBase: 0, idCount: 0x200, outputBase: 0, outputNode: 1, outputReference: 0x48, flags: 0 },
        { inputBase: 0x200, idCount: 0xfdff, outputBase: 0x200, outputNode: 0, outputReference: 0x30, flags: 0 },
      ],
    });
    // RID 0x28 (00:05.0) goes through the SMMU as StreamID 0x28; 0x1ff is the last RID of bus 1.
    expect(iortMapId(rc.mappings![0]!, 0x28)).toBe(0x28);
    expect(iortMapId(rc.mappings![1]!, 0x28)).toBeUndefined();
    expect(iortMapId(rc.mappings![1]!, 0xffff)).toBe(0xffff);
    // QEMU's plain count 0x200 makes RID 0x200 match both mappings under the count − 1 reading (spec §9.6).
    expect(iortMapId(rc.mappings![0]!, 0x200)).toBe(0x200);
    expect(iortMapId(rc.mappings![1]!, 0x200)).toBe(0x200);
  });

  it("re-encodes the decoded table byte for byte", () => {
    if (!decoded.ok) throw new Error(decoded.problem);
    expect(Buffer.from(encodeIort(decoded.table)).toString("hex")).toBe(Buffer.from(qemuIort).toString("hex"));
  });

  it("encodes QEMU's table from a typed description to exactly QEMU's bytes", () => {
    const bytes = encodeIort(qemuDescription);
    expect(bytes.length).toBe(0xec);
    expect(Buffer.from(bytes).toString("hex")).toBe(Buffer.from(qemuIort).toString("hex"));
  });
});

/** A table with every typed node kind: ITS group, SMMUv3, root complexes of revisions 3 and 4, named component. */
function everyNodeTable(): IortTable {
  return {
    revision: 3,
    nodes: [
      { type: "its-group", itsIdentifiers: [0, 1] },
      {
        type: "smmuv3",
        baseAddress: 0x09050000n,
        flags: 1 | (2 << 1) | (1 << 4),
        vatosAddress: 0n,
        model: 0,
        eventGsiv: 0x6a,
        priGsiv: 0x6b,
        gerrGsiv: 0x6d,
        syncGsiv: 0x6c,
        proximityDomain: 0,
        deviceIdMappingIndex: 1,
        mappings: [
          { inputBase: 0, idCount: 0xffff, outputBase: 0, outputNode: 0 },
          { inputBase: 0, idCount: 0, outputBase: 0x10000, outputNode: 0, flags: 1 },
        ],
      },
      {
        type: "root-complex",
        memoryAccess: { cacheCoherency: 1, allocationHints: 0, memoryAccessFlags: 3 },
        atsAttribute: 1,
        pciSegment: 0,
        memoryAddressSizeLimit: 48,
        mappings: [
          { inputBase: 0, idCount: 0x1ff, outputBase: 0, outputNode: 1 },
          { inputBase: 0x200, idCount: 0xfdff, outputBase: 0x200, outputNode: 0 },
        ],
      },
      {
        type: "named-component",
        nodeFlags: 1 | (5 << 1),
        memoryAccess: { cacheCoherency: 1, allocationHints: 0, memoryAccessFlags: 3 },
        memoryAddressSizeLimit: 44,
        deviceName: "\\_SB.DMA0",
        mappings: [{ inputBase: 0, idCount: 0, outputBase: 0x300, outputNode: 1, flags: 1 }],
      },
      {
        type: "root-complex",
        revision: 4,
        memoryAccess: { cacheCoherency: 1, allocationHints: 0, memoryAccessFlags: 3 },
        atsAttribute: 7,
        pciSegment: 1,
        memoryAddressSizeLimit: 48,
        pasidCapabilities: 20,
        flags: 1,
        mappings: [{ inputBase: 0, idCount: 0xffff, outputBase: 0x10000, outputNode: 1 }],
      },
    ],
  };
}

function runIasl(bytes: Uint8Array): { status: number | null; log: string; dsl: string } {
  const dir = mkdtempSync(join(tmpdir(), "smmuv3-iort-"));
  try {
    writeFileSync(join(dir, "iort.aml"), bytes);
    const r = spawnSync("iasl", ["-d", "iort.aml"], { cwd: dir, encoding: "utf8" });
    const dslPath = join(dir, "iort.dsl");
    return { status: r.status, log: `${r.stdout}\n${r.stderr}`, dsl: existsSync(dslPath) ? readFileSync(dslPath, "utf8") : "" };
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}

/** ACPICA's iasl on PATH (CI requires it; locally its absence skips these checks). */
const haveIasl = findIasl().command !== undefined;

describe("encoding an IORT with every node type", () => {
  it("round-trips through the decoder", () => {
    const table = everyNodeTable();
    const bytes = encodeIort(table);
    expect(acpiChecksum(bytes)).toBe(0);
    const back = decodeIort(bytes);
    expect(back.ok).toBe(true);
    if (!back.ok) return;
    expect(back.table.nodes.map((n) => n.type)).toEqual(["its-group", "smmuv3", "root-complex", "named-component", "root-complex"]);
    expect(back.table.nodes[3]).toMatchObject({ deviceName: "\\_SB.DMA0", nodeFlags: 11, memoryAddressSizeLimit: 44, revision: 4, identifier: 3 });
    expect(Buffer.from(encodeIort(back.table)).equals(Buffer.from(bytes))).toBe(true);
  });

  it("lays out the named component as DEN 0049 says: flags @16, memory access @20, size limit @28, ASCIIZ name @29, 4-byte padded", () => {
    const bytes = encodeIort(everyNodeTable());
    const decoded = decodeIort(bytes);
    if (!decoded.ok) throw new Error(decoded.problem);
    const at = 48 + 28 + 108 + 76; // ITS with 2 ids (28 B), SMMUv3 with 2 mappings (108 B), RC with 2 mappings (76 B)
    expect(bytes[at]).toBe(IortNodeType.NamedComponent);
    const view = new DataView(bytes.buffer, bytes.byteOffset);
    expect(view.getUint16(at + 1, true)).toBe(16 + 4 + 8 + 1 + 10 + 1 + 20);
    expect(view.getUint32(at + 12, true)).toBe(40);
    expect(view.getUint32(at + 16, true)).toBe(11);
    expect(bytes[at + 28]).toBe(44);
    expect(Buffer.from(bytes.subarray(at + 29, at + 40)).toString("latin1")).toBe("\\_SB.DMA0\0\0");
    expect(view.getUint32(at + 40 + 12, true)).toBe(48 + 28);
  });

  it("writes a revision-4 root complex with PASID capabilities and flags", () => {
    const rc = { ...everyNodeTable().nodes[2]!, revision: 4, pasidCapabilities: 20, flags: 1 } as const;
    const bytes = encodeIort({ revision: 5, nodes: [{ type: "its-group", itsIdentifiers: [0] }, rc] });
    const view = new DataView(bytes.buffer, bytes.byteOffset);
    const at = 48 + 0x18;
    expect(view.getUint32(at + 12, true)).toBe(40);
    expect(view.getUint16(at + 33, true)).toBe(20);
    expect(view.getUint32(at + 36, true)).toBe(1);
    const back = decodeIort(bytes);
    expect(back.ok && back.table.nodes[1]).toMatchObject({ type: "root-complex", revision: 4, pasidCapabilities: 20, flags: 1 });
  });

  it("keeps node types it does not type (a PMCG) as raw bytes", () => {
    const body = new Uint8Array(24);
    new DataView(body.buffer).setUint32(12, 0x48, true);
    const bytes = encodeIort({ revision: 3, nodes: [{ type: "its-group", itsIdentifiers: [0] }, { type: "raw", nodeType: IortNodeType.Pmcg, revision: 1, body }] });
    const back = decodeIort(bytes);
    expect(back.ok && back.table.nodes[1]).toMatchObject({ type: "raw", nodeType: 5, revision: 1, body });
    if (back.ok) expect(Buffer.from(encodeIort(back.table)).equals(Buffer.from(bytes))).toBe(true);
  });

  const iaslTitle = haveIasl ? "passes ACPICA's iasl -d without errors or warnings" : "iasl -d cross-check SKIPPED: iasl is not installed (Debian package acpica-tools)";
  it.skipIf(!haveIasl)(iaslTitle, () => {
    const r = runIasl(encodeIort(everyNodeTable()));
    expect(r.status, r.log).toBe(0);
    expect(r.log).not.toMatch(/error|warning/i);
    expect(r.dsl).toContain("[IO Remapping Table]");
    expect(r.dsl).not.toMatch(/\*\*\*\*|error|warning|unknown|invalid/i);
    expect(r.dsl).toMatch(/Type : 01[\s\S]*Device Name : "\\_SB.DMA0"/);
  });
});

describe("decoding malformed IORTs", () => {
  it.each([
    ["an empty buffer", new Uint8Array(0)],
    ["a truncated table", qemuIort.subarray(0, 100)],
    ["a wrong signature", Uint8Array.from(qemuIort, (b, i) => (i === 0 ? 0x58 : b))],
    ["a bad checksum", Uint8Array.from(qemuIort, (b, i) => (i === 9 ? (b + 1) & 0xff : b))],
  ])("reports %s as a problem", (_what, bytes) => {
    expect(decodeIort(bytes)).toMatchObject({ ok: false });
  });

  function withChecksum(bytes: Uint8Array): Uint8Array {
    const out = bytes.slice();
    out[9] = 0;
    out[9] = (0x100 - acpiChecksum(out)) & 0xff;
    return out;
  }

  it.each([
    ["a node length of zero", 0x49, 0x00],
    ["a node running past the table", 0x4a, 0x01],
    ["mappings past the node", 0x54, 0x50],
    ["too many nodes", 0x24, 0x09],
    ["an SMMUv3 body too short", 0x49, 0x20],
  ])("reports %s as a problem", (_what, offset, value) => {
    const bytes = qemuIort.slice();
    bytes[offset] = value;
    expect(decodeIort(withChecksum(bytes))).toMatchObject({ ok: false });
  });

  it("never throws on random bytes or on random corruption of a real table", () => {
    fc.assert(
      fc.property(fc.uint8Array({ maxLength: 300 }), (bytes) => {
        decodeIort(bytes);
      }),
    );
    fc.assert(
      fc.property(fc.array(fc.tuple(fc.nat(qemuIort.length - 1), fc.nat(255)), { minLength: 1, maxLength: 8 }), (edits) => {
        const bytes = qemuIort.slice();
        for (const [at, v] of edits) bytes[at] = v;
        decodeIort(withChecksum(bytes));
      }),
    );
  });
});

describe("IORT encoding through core's ByteWriter", () => {
  it("encodes a table larger than the writer's first 256-byte buffer and decodes it back", () => {
    const smmus = Array.from({ length: 6 }, (_, i) => ({
      type: "smmuv3" as const,
      baseAddress: BigInt(0x0905_0000 + i * 0x20000),
      flags: 1,
      model: 0,
      eventGsiv: 0x6a + i * 4,
      priGsiv: 0x6b + i * 4,
      gerrGsiv: 0x6d + i * 4,
      syncGsiv: 0x6c + i * 4,
      mappings: [{ inputBase: 0, idCount: 0xffff, outputBase: 0, outputNode: 0 }],
    }));
    const table: IortTable = { revision: 3, nodes: [{ type: "its-group", itsIdentifiers: [0] }, ...smmus] };
    const bytes = encodeIort(table);
    expect(bytes.length).toBeGreaterThan(256);
    expect(acpiChecksum(bytes)).toBe(0);
    const back = decodeIort(bytes);
    expect(back.ok).toBe(true);
    if (back.ok) expect(encodeIort(back.table)).toEqual(bytes);
  });
});
