import { describe, expect, it } from "vitest";
import { NO_PASID, unwrap } from "@viommu/core";
import type { PageResponse } from "../../src/vmm/vtd-device.js";
import { DATA_GPA, IOVA, mapped, vtdBed } from "../support.js";

describe("VT-d page request queue", () => {
  it("queues an emulated device's page request for a context with PRE, and routes the guest's page group response back", () => {
    const b = vtdBed("nested");
    mapped(b, 0x10, IOVA, DATA_GPA, 0x1000);
    unwrap(b.driver.enablePageRequests(0x10));
    const responses: PageResponse[] = [];
    b.device.onPageResponse = (r) => responses.push(r);
    expect(b.device.requestPage(0x10, NO_PASID, 0x4000_0123, true, 5, true)).toBe(true);
    expect(b.device.prq.prs & 1).toBe(1);
    const evs = b.driver.readEvents();
    expect(evs.map((e) => [e.kind, e.name, e.code, e.rid, e.pasid, e.address, e.write, e.group, e.last])).toEqual([["page-request", "PAGE_REQ", 5, 0x10, undefined, 0x4000_0000, true, 5, true]]);
    expect(b.device.prq.prs).toBe(0);
    expect(responses).toEqual([]);
    unwrap(b.driver.respondPageRequest(evs[0]!, false));
    expect(responses).toEqual([{ rid: 0x10, pasid: undefined, prgi: 5, lastInGroup: true, code: 1 }]);
    expect(b.driver.respondPageRequest(evs[0]!, true)).toMatchObject({ ok: false, error: { errno: "ENOENT" } });
  });

  it("records the context's fault instead when PRE is clear (0x47), and in legacy mode (0x32)", () => {
    const b = vtdBed("nested");
    mapped(b, 0x10, IOVA, DATA_GPA, 0x1000);
    expect(b.device.requestPage(0x10, NO_PASID, 0x5000, false, 1, true)).toBe(false);
    expect(b.driver.readEvents().map((e) => [e.code, e.name])).toEqual([[0x47, "SM_CONTEXT_PRE"]]);
    const l = vtdBed("shadow", "legacy");
    mapped(l, 0x10, IOVA, DATA_GPA, 0x1000);
    expect(l.device.requestPage(0x10, NO_PASID, 0x5000, false, 1, true)).toBe(false);
    expect(l.driver.readEvents().map((e) => e.code)).toEqual([0x32]);
  });

  it("sets PRS.PRO and FSTS.PRO and drops the request when the queue is full (one slot stays free)", () => {
    const b = vtdBed("nested");
    mapped(b, 0x10, IOVA, DATA_GPA, 0x1000);
    unwrap(b.driver.enablePageRequests(0x10));
    const accepted = Array.from({ length: 130 }, (_, i) => b.device.requestPage(0x10, NO_PASID, i * 0x1000, false, i & 0x1ff, false)).filter(Boolean).length;
    expect(accepted).toBe(127);
    expect(b.device.prq.prs).toBe(3);
    expect(Number(b.device.registers.read(0x34, 4)) & 0x80).toBe(0x80);
    expect(b.driver.readEvents().filter((e) => e.kind === "page-request").length).toBe(127);
  });
});
