import { describe, expect, it } from "vitest";
import { GuestMemory, HostMemory, unwrap, type WalkAnswer } from "@viommu/core";
import { smmuv3Plugin } from "../src/plugin.js";
import { EventType } from "../src/format/event-record.js";
import { fixtureBytes, fixtureJson } from "./format/fixtures.js";

interface Recorded {
  readonly sid: string;
  readonly iova: string;
  readonly translated: string;
  readonly read: boolean;
  readonly write: boolean;
  readonly at_dump: {
    readonly fault: string | null;
    readonly translated?: string;
    readonly page_size?: number;
    readonly read?: boolean;
    readonly write?: boolean;
    readonly asid?: number;
  };
}

interface Recording {
  readonly memory_base: string;
  readonly strtab_base: string;
  readonly strtab_base_cfg: string;
  readonly translations: readonly Recorded[];
}

/** The real Linux 6.1 guest on QEMU 7.2 (shared fixtures README): a raw image of guest RAM from 0x40000000. */
function loadImage(base: number): GuestMemory {
  const image = fixtureBytes("memdump-iommu.raw.gz");
  const memory = new GuestMemory(new HostMemory(), 1, { sizeBytes: image.length, base });
  memory.loadImage(image);
  return memory;
}

function mismatch(t: Recorded, got: WalkAnswer): string | undefined {
  const d = t.at_dump;
  if (d.fault === null) {
    const want = { ok: true, output: Number(BigInt(d.translated!)), pageSize: d.page_size, read: d.read, write: d.write, asid: d.asid };
    if (!got.ok || got.output !== want.output || got.pageSize !== want.pageSize || got.read !== want.read || got.write !== want.write || got.asid !== want.asid) {
      return `${t.sid} ${t.iova}: want ${JSON.stringify(want)}, got ${JSON.stringify(got)}`;
    }
    return undefined;
  }
  if (got.ok || got.fault.code !== EventType.F_TRANSLATION || got.fault.name !== "F_TRANSLATION") return `${t.sid} ${t.iova}: want F_TRANSLATION, got ${JSON.stringify(got)}`;
  return undefined;
}

describe("viommu walk on a real Linux guest's SMMUv3 tables (QEMU 7.2, Linux 6.1)", () => {
  const all = fixtureJson<Recording>("translations-all.json.gz");
  const memory = loadImage(Number(BigInt(all.memory_base)));
  const walk = unwrap(smmuv3Plugin.walk!.prepare(memory, { STRTAB_BASE: BigInt(all.strtab_base), STRTAB_BASE_CFG: BigInt(all.strtab_base_cfg) }));

  it("reproduces every translation still mapped at the dump and faults every unmapped one with F_TRANSLATION", () => {
    const problems: string[] = [];
    let mapped = 0;
    for (const t of all.translations) {
      // A read shows the mapping and its permissions as they were at the dump (some pages were remapped read-only).
      const got = walk({ rid: Number(BigInt(t.sid)), iova: Number(BigInt(t.iova)), write: false });
      if (t.at_dump.fault === null) mapped++;
      const m = mismatch(t, got);
      if (m !== undefined) problems.push(m);
    }
    expect(all.translations.length).toBe(11208);
    expect(mapped).toBe(1006);
    expect(problems.slice(0, 5)).toEqual([]);
  });

  it("gives the translated address of the IOVA itself, page offset included, as QEMU did", () => {
    const recorded = fixtureJson<Recording>("translations.json");
    for (const t of recorded.translations) {
      const got = walk({ rid: Number(BigInt(t.sid)), iova: Number(BigInt(t.iova)), write: t.at_dump.write === true });
      expect(got).toMatchObject({ ok: true, output: Number(BigInt(t.translated)) });
    }
  });

  it("refuses writes through the read-only mappings the guest made (F_PERMISSION), still reading them", () => {
    const readOnly = all.translations.filter((t) => t.at_dump.fault === null && t.at_dump.write === false);
    expect(readOnly.length).toBeGreaterThan(0);
    for (const t of readOnly) {
      const rid = Number(BigInt(t.sid));
      const iova = Number(BigInt(t.iova));
      expect(walk({ rid, iova, write: true })).toMatchObject({ ok: false, fault: { code: EventType.F_PERMISSION, name: "F_PERMISSION" } });
      expect(walk({ rid, iova, write: false })).toMatchObject({ ok: true, write: false });
    }
  });

  it("names the configuration event for streams and substreams the guest never set up", () => {
    // StreamID 0x48 shares a level-2 table with the devices but its STE is Linux's abort STE: terminated, no event.
    expect(walk({ rid: 0x48, iova: 0x1000, write: false })).toMatchObject({ ok: false, fault: { code: 0, name: "ABORT" } });
    // Beyond the 2^16 StreamIDs the table covers.
    expect(walk({ rid: 0x1_0000, iova: 0x1000, write: false })).toMatchObject({ ok: false, fault: { code: EventType.C_BAD_STREAMID, name: "C_BAD_STREAMID" } });
    // A SubstreamID on a stream whose STE has S1CDMax = 0.
    expect(walk({ rid: 0x28, pasid: 1, iova: 0xffffb000, write: false })).toMatchObject({ ok: false, fault: { code: EventType.C_BAD_SUBSTREAMID, name: "C_BAD_SUBSTREAMID" } });
  });

  it("answers a few hundred requests over the 512 MiB image quickly (the image is loaded sparsely)", () => {
    const start = performance.now();
    for (const t of all.translations.slice(0, 500)) walk({ rid: Number(BigInt(t.sid)), iova: Number(BigInt(t.iova)), write: t.write });
    expect(performance.now() - start).toBeLessThan(2000);
  });
});
