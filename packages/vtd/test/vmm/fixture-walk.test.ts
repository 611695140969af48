import { readFileSync } from "node:fs";
import { gunzipSync } from "node:zlib";
import { beforeAll, describe, expect, it } from "vitest";
import { GuestMemory, HostMemory, unwrap, type WalkAnswer, type WalkRequest } from "@viommu/core";
import { vtdWalkTool } from "../../src/vmm/walk-tool.js";
import { fixturePath, readJsonGz } from "../format/fixtures.js";

interface FixtureTranslation {
  readonly sid: string;
  readonly iova: string;
  readonly domain: number;
  readonly at_dump: { readonly fault: string | null; readonly translated?: string; readonly page_size?: number; readonly read?: boolean; readonly write?: boolean; readonly domain?: number };
}

interface FixtureFile {
  readonly rtaddr_reg: string;
  readonly translations: readonly FixtureTranslation[];
}

/** The real Linux 6.1 guest under QEMU 7.2 (../shared/fixtures/real-guest/vtd-legacy): its 256 MiB memory image, walked from RTADDR. */
describe("viommu walk on the real-guest VT-d legacy image", () => {
  let walkWithSteps: (request: WalkRequest) => WalkAnswer;
  // The answers without their steps (compared whole below).
  const walk = (request: WalkRequest): WalkAnswer => {
    const { steps: _steps, ...answer } = walkWithSteps(request);
    return answer as WalkAnswer;
  };
  let loadMs = 0;

  beforeAll(() => {
    const started = performance.now();
    const host = new HostMemory();
    const memory = new GuestMemory(host, 1, { sizeBytes: 256 * 2 ** 20 });
    memory.loadImage(gunzipSync(readFileSync(fixturePath("memdump-iommu.raw.gz"))));
    const fixture = readJsonGz<FixtureFile>("translations.json.gz");
    walkWithSteps = unwrap(vtdWalkTool.prepare(memory, { RTADDR: BigInt(fixture.rtaddr_reg) }));
    loadMs = performance.now() - started;
  });

  it("loads the 256 MiB gzip image and prepares the walker in seconds", () => {
    expect(loadMs).toBeLessThan(20_000);
  });

  it("reproduces every translation still mapped at dump time: output, page size, R/W and domain id", () => {
    const fixture = readJsonGz<FixtureFile>("translations.json.gz");
    expect(fixture.translations.length).toBeGreaterThan(100);
    for (const t of fixture.translations) {
      const answer = walk({ rid: Number(t.sid), iova: Number(t.iova), write: false });
      const d = t.at_dump;
      expect(answer, `${t.sid} ${t.iova}`).toEqual({ ok: true, output: Number(d.translated), pageSize: d.page_size, read: d.read, write: d.write, domain: d.domain });
    }
  });

  it("reproduces every translation of the run, and faults not-present (read: 0x6) for those unmapped before the dump", () => {
    const all = readJsonGz<FixtureFile>("translations-all.json.gz");
    let mapped = 0;
    let faulted = 0;
    const started = performance.now();
    for (const t of all.translations) {
      const answer = walk({ rid: Number(t.sid), iova: Number(t.iova), write: false });
      const d = t.at_dump;
      if (d.fault === null) {
        mapped++;
        expect(answer, `${t.sid} ${t.iova}`).toEqual({ ok: true, output: Number(d.translated), pageSize: d.page_size, read: d.read, write: d.write, domain: d.domain });
      } else {
        faulted++;
        expect(d.fault).toBe("not-present");
        expect(answer, `${t.sid} ${t.iova}`).toEqual({ ok: false, fault: { code: 0x6, name: "READ" } });
      }
    }
    expect(mapped).toBeGreaterThan(1000);
    expect(faulted).toBeGreaterThan(9000);
    // Ten thousand walks well inside a second: the walk allocates nothing per request.
    expect(performance.now() - started).toBeLessThan(5_000);
  });

  it("answers a write through a read-only leaf with the write fault (0x5)", () => {
    const all = readJsonGz<FixtureFile>("translations-all.json.gz");
    const readOnly = all.translations.find((t) => t.at_dump.fault === null && t.at_dump.write === false);
    expect(readOnly).toBeDefined();
    expect(walk({ rid: Number(readOnly!.sid), iova: Number(readOnly!.iova), write: true })).toEqual({ ok: false, fault: { code: 0x5, name: "WRITE" } });
  });

  it("faults context-entry-not-present (0x2) for a device the guest never attached, and root-not-present (0x1) on an empty bus", () => {
    expect(walk({ rid: 0x0008, iova: 0x1000, write: false })).toEqual({ ok: false, fault: { code: 0x2, name: "CONTEXT_ENTRY_P" } });
    expect(walk({ rid: 0x7f00, iova: 0x1000, write: false })).toEqual({ ok: false, fault: { code: 0x1, name: "ROOT_ENTRY_P" } });
  });
});
