import fc from "fast-check";
import { describe, expect, it } from "vitest";
import { Perm, unwrap } from "@viommu/core";
import { encodeInvDesc, PageResponseCode } from "../src/format/inv-desc.js";
import { decodeSmContextEntry } from "../src/format/sm-context-entry.js";
import { checkProperty, DATA_GPA, IOVA, mapped, vtdBed, type VtdBed } from "./support.js";

const u32 = fc.integer({ min: 0, max: 0xffff_ffff });
const USER_VA = 0x7f00_0000_0000;

function submit(b: VtdBed, descs: Uint32Array[]): void {
  (b.driver as unknown as { submit(d: Uint32Array[]): unknown }).submit(descs);
}

/** Address of PASID `pasid`'s entry in the device's table (PASIDs 0–63 share the first table). */
function entryAddress(b: VtdBed, pasid: number): number {
  const mem = b.bed.vms[0]!.vm.memory;
  const ctp = (mem.read32(b.device.translator.rootTable) & ~0xfff) >>> 0;
  const ctx = decodeSmContextEntry(mem.readWords(ctp + 0x10 * 32, new Uint32Array(8)));
  const dir = mem.read32(Number(ctx.PASIDDIRPTR));
  return ((dir & ~0xfff) >>> 0) + 64 * pasid;
}

describe("fuzzing guest PASID tables and page group responses", { timeout: 120_000 }, () => {
  it("answers any PASID-table contents and PASID-cache invalidation with a translation or a fault: no exception, nothing outside the VM", () => {
    const entry = fc.tuple(fc.integer({ min: 1, max: 63 }), fc.array(u32, { minLength: 16, maxLength: 16 }), fc.integer({ min: 0, max: 7 }));
    checkProperty(
      fc.property(fc.array(entry, { minLength: 1, maxLength: 6 }), fc.constantFrom(0, 1, 2, 3), (entries, g) => {
        const b = vtdBed("nested", undefined, {}, [{ rid: 0x100, guestRid: 0x10, pasidBits: 20 }]);
        const d = mapped(b, 0x10, IOVA, DATA_GPA, 0x2000);
        unwrap(b.driver.attachPasid(0x10, 1, d));
        const mem = b.bed.vms[0]!.vm.memory;
        for (const [pasid, words, keep] of entries) {
          const raw = Uint32Array.from(words);
          // Sometimes a plausible entry: present, first-level, a table pointer inside RAM.
          if (keep & 1) raw[0] = ((raw[0]! & ~0x1c0) | 0x41) >>> 0;
          if (keep & 2) raw[5] = 0;
          mem.writeWords(entryAddress(b, pasid), raw);
        }
        submit(b, [encodeInvDesc("PC_INV", { G: g, DID: 2, PASID: entries[0]![0] }, 256)]);
        const dev = b.bed.vms[0]!.devices[0]!.device;
        for (const [pasid] of entries) expect(() => dev.read(IOVA, 8, pasid)).not.toThrow();
        b.bed.poll();
        expect(() => b.driver.readEvents()).not.toThrow();
        expect(b.bed.platform.host.memory.violations).toEqual([]);
        expect(b.bed.dispose()).toEqual([]);
      }),
      { numRuns: 40 },
    );
  });

  it("resolves an outstanding page request only with the response that names its RID, PASID and group", () => {
    const response = fc.record({ RID: fc.constantFrom(0x10, 0x11, 0x0), PP: fc.integer({ min: 0, max: 1 }), PASID: fc.constantFrom(9, 8, 0, 0xfffff), PRGI: fc.integer({ min: 0, max: 0x1ff }), RESPONSE_CODE: fc.constantFrom(0, 1, 0xf, 5), LPIG: fc.integer({ min: 0, max: 1 }) });
    checkProperty(
      fc.property(fc.array(response, { minLength: 1, maxLength: 8 }), (responses) => {
        const b = vtdBed("nested", undefined, {}, [{ rid: 0x100, guestRid: 0x10, pasidBits: 20, pri: true }]);
        mapped(b, 0x10, IOVA, DATA_GPA, 0x1000);
        const p = unwrap(b.driver.createProcess());
        unwrap(p.map(USER_VA, DATA_GPA, 0x1000, Perm.ReadWrite));
        unwrap(b.driver.enablePageRequests(0x10));
        unwrap(b.driver.bindProcess(0x10, 9, p));
        const dev = b.bed.vms[0]!.devices[0]!.device;
        const r = dev.read(USER_VA + 0x5000, 4, 9);
        const prgi = !r.ok ? r.pageRequest! : -1;
        expect(prgi).toBeGreaterThanOrEqual(0);
        b.bed.poll();
        b.driver.readEvents();
        let expected: string = "waiting";
        for (const resp of responses) {
          submit(b, [encodeInvDesc("PG_RESP", resp, 256)]);
          const matches = resp.RID === 0x10 && resp.PP === 1 && resp.PASID === 9 && resp.PRGI === (prgi & 0x1ff);
          if (matches && expected === "waiting") expected = resp.RESPONSE_CODE === PageResponseCode.SUCCESS ? "success" : "invalid";
          expect(dev.pageRequestStatus(prgi)).toBe(expected);
        }
        expect(b.bed.dispose()).toEqual([]);
      }),
      { numRuns: 40 },
    );
  });
});
