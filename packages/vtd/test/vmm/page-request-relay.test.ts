import { describe, expect, it } from "vitest";
import { NO_PASID, Perm, PgfaultPerm, unwrap, type GuestEvent, type GuestProcess } from "@viommu/core";
import { encodeInvDesc, PageResponseCode } from "../../src/format/inv-desc.js";
import { decodePageRequest } from "../../src/format/page-request.js";
import type { VtdUnit } from "../../src/hw/vtd-unit.js";
import { DATA_GPA, IOVA, mapped, vtdBed, type VtdBed } from "../support.js";

const PAGE = 4096;
const USER_VA = 0x7f00_0000_0000;

/** A nested bed whose device has PASIDs and (unless `pri` is false) PRI, page requests enabled, a process bound at PASID 9. */
function setup(pri = true, enable = true): { b: VtdBed; process: GuestProcess } {
  const b = vtdBed("nested", undefined, {}, [{ rid: 0x100, guestRid: 0x10, pasidBits: 20, pri }]);
  mapped(b, 0x10, IOVA, DATA_GPA, PAGE);
  const process = unwrap(b.driver.createProcess());
  unwrap(process.map(USER_VA, DATA_GPA, PAGE, Perm.ReadWrite));
  if (enable) unwrap(b.driver.enablePageRequests(0x10));
  unwrap(b.driver.bindProcess(0x10, 9, process));
  return { b, process };
}

/** An event's raw 64-bit words ("0x…", lowest first) as 32-bit halves. */
function words(raw: readonly string[]): Uint32Array {
  return Uint32Array.from(raw.flatMap((w) => [Number(BigInt(w) & 0xffff_ffffn), Number(BigInt(w) >> 32n)]));
}

function dev(b: VtdBed) {
  return b.bed.vms[0]!.devices[0]!.device;
}

function requests(b: VtdBed): GuestEvent[] {
  b.bed.poll();
  return b.driver.readEvents().filter((e) => e.kind === "page-request");
}

function submit(b: VtdBed, descs: Uint32Array[]): void {
  unwrap((b.driver as unknown as { submit(d: Uint32Array[]): ReturnType<VtdBed["driver"]["flush"]> }).submit(descs));
}

describe("VT-d page requests of a passthrough device (host fault queue → guest page request queue)", () => {
  it("writes the host's page request as a page request descriptor naming the guest RID, PASID, page, access, PRG index and LPIG", () => {
    const { b } = setup();
    const r = dev(b).write(USER_VA + 3 * PAGE + 0x10, Uint8Array.of(1), 9);
    expect(!r.ok && r.pageRequest).toBeGreaterThanOrEqual(0);
    const prgi = !r.ok ? r.pageRequest! : -1;
    const evs = requests(b);
    expect(evs.length).toBe(1);
    const desc = decodePageRequest(words(evs[0]!.raw));
    expect(desc).toMatchObject({ TYPE: 1, PP: 1, RID: 0x10, PASID: 9, RR: 0, WR: 1, LPIG: 1, PRGI: prgi & 0x1ff, ADDR: BigInt(USER_VA + 3 * PAGE), ER: 0, PM: 0 });
    expect(evs[0]).toMatchObject({ rid: 0x10, pasid: 9, address: USER_VA + 3 * PAGE, write: true, group: prgi & 0x1ff, last: true });
    expect(b.device.pageRequests.pending).toBe(1);
  });

  it("keeps the device waiting on a response that names another group, PASID or RID (logged), and resolves it on the right one", () => {
    const { b } = setup();
    const r = dev(b).read(USER_VA + 5 * PAGE, 4, 9);
    const prgi = !r.ok ? r.pageRequest! : -1;
    const [pr] = requests(b);
    const wrong = [
      { PRGI: (prgi + 1) & 0x1ff, PASID: 9, RID: 0x10, PP: 1 },
      { PRGI: prgi, PASID: 8, RID: 0x10, PP: 1 },
      { PRGI: prgi, PASID: 9, RID: 0x11, PP: 1 },
      { PRGI: prgi, PASID: 9, RID: 0x10, PP: 0 },
    ];
    for (const w of wrong) submit(b, [encodeInvDesc("PG_RESP", { ...w, RESPONSE_CODE: PageResponseCode.SUCCESS, LPIG: 1 }, 256)]);
    b.bed.poll();
    expect(dev(b).pageRequestStatus(prgi)).toBe("waiting");
    expect(b.bed.platform.host.log.entries({ kind: "other" }).filter((e) => /matches no outstanding/.test(e.message)).length).toBe(4);
    unwrap(b.driver.respondPageRequest(pr!, true));
    expect(dev(b).pageRequestStatus(prgi)).toBe("success");
  });

  it("carries a response failure (0xF) back as INVALID, the only failure iommufd's fault file has", () => {
    const { b } = setup();
    const r = dev(b).read(USER_VA + 6 * PAGE, 4, 9);
    const prgi = !r.ok ? r.pageRequest! : -1;
    requests(b);
    submit(b, [encodeInvDesc("PG_RESP", { PP: 1, PASID: 9, RID: 0x10, PRGI: prgi, LPIG: 1, RESPONSE_CODE: PageResponseCode.RESPONSE_FAILURE }, 256)]);
    expect(dev(b).pageRequestStatus(prgi)).toBe("invalid");
  });

  it("never writes part of a group: one that does not fit sets PRS.PRO and FSTS.PRO and is answered success, so the device asks again", () => {
    const { b } = setup();
    // Fill the 128-entry queue to one free slot with an emulated device's requests (one slot always stays free).
    for (let i = 0; i < 126; i++) expect(b.device.requestPage(0x10, NO_PASID, i * PAGE, false, i & 0x1ff, false)).toBe(true);
    const unit = b.bed.units[0] as VtdUnit;
    const domain = unit.domainOf(0x100, 9)!;
    const before = b.device.prq.tail;
    // A two-page group from the device, reported as the unit reports one.
    const reported = domain.iopf!.report(dev(b), 9, 77, [
      { address: USER_VA + 10 * PAGE, perm: PgfaultPerm.READ },
      { address: USER_VA + 11 * PAGE, perm: PgfaultPerm.READ },
    ]);
    expect(reported).toBe(true);
    b.bed.poll();
    expect(b.device.prq.tail).toBe(before);
    expect(b.device.prq.prs & 2).toBe(2);
    expect(Number(b.device.registers.read(0x34, 4)) & 0x80).toBe(0x80);
    expect(b.device.pageRequests.pending).toBe(0);
    // The guest drains (and clears PRO once empty); the device's retry asks again and fits.
    expect(b.driver.readEvents().filter((e) => e.kind === "page-request").length).toBe(126);
    const r = dev(b).read(USER_VA + 10 * PAGE, 4, 9);
    expect(!r.ok && r.pageRequest).toBeGreaterThanOrEqual(0);
    expect(requests(b).length).toBe(1);
  });

  it("writes a multi-page group with LPIG on its last descriptor only", () => {
    const { b } = setup();
    const domain = (b.bed.units[0] as VtdUnit).domainOf(0x100, 9)!;
    domain.iopf!.report(dev(b), 9, 12, [0, 1, 2].map((i) => ({ address: USER_VA + (20 + i) * PAGE, perm: PgfaultPerm.WRITE })));
    const evs = requests(b);
    expect(evs.map((e) => [e.address, e.group, e.last])).toEqual([0, 1, 2].map((i) => [USER_VA + (20 + i) * PAGE, 12, i === 2]));
    // One response answers the whole group, whichever of its pages it is given for.
    unwrap(b.driver.respondPageRequest(evs[0]!, true));
    expect(b.driver.respondPageRequest(evs[2]!, true)).toMatchObject({ ok: false, error: { errno: "ENOENT" } });
    expect(b.device.pageRequests.pending).toBe(0);
  });

  it("raises no page request for a device without PRI, one whose context leaves PRE clear, or a stage-2 hole", () => {
    for (const b of [setup(false).b, setup(true, false).b]) {
      const r = dev(b).read(USER_VA + 2 * PAGE, 4, 9);
      expect(!r.ok && r.pageRequest).toBe(undefined);
      b.bed.poll();
      expect(b.driver.readEvents().map((e) => [e.kind, e.code])).toEqual([["dma-fault", 0x71]]);
    }
    // The process maps a page at a GPA beyond the VM's RAM: the stage 2 has no leaf there, a final fault.
    const { b, process } = setup();
    unwrap(process.map(USER_VA + 7 * PAGE, 2 ** 40, PAGE, Perm.ReadWrite));
    const hole = dev(b).read(USER_VA + 7 * PAGE, 4, 9);
    expect(!hole.ok && hole.pageRequest).toBe(undefined);
    expect(requests(b)).toEqual([]);
  });

  it("answers the device's outstanding groups INVALID when it leaves the guest, and drops a late response", () => {
    const { b } = setup();
    const r = dev(b).read(USER_VA + 5 * PAGE, 4, 9);
    const prgi = !r.ok ? r.pageRequest! : -1;
    const [pr] = requests(b);
    unwrap(b.device.unassignDevice(0x10));
    expect(dev(b).pageRequestStatus(prgi)).toBe("invalid");
    expect(b.device.pageRequests.pending).toBe(0);
    unwrap(b.driver.respondPageRequest(pr!, true));
    expect(dev(b).pageRequestStatus(prgi)).toBe("invalid");
    expect(b.bed.dispose()).toEqual([]);
  });

  it("survives hostile page request queue registers: a queue outside guest RAM or a garbage head takes no request (PRO), never an exception", () => {
    for (const [pqa, pqh] of [
      [0xffff_ffff_f000n | 7n, 0n],
      [2n ** 63n, 0xffff_ffff_ffff_ffffn],
      [0n, 0x7ffe0n],
    ] as const) {
      const { b } = setup();
      const vm = b.bed.vms[0]!.vm;
      vm.mmioWrite(b.device.mmioBase + 0xd0, 8, pqa);
      vm.mmioWrite(b.device.mmioBase + 0xc0, 8, pqh);
      const r = dev(b).read(USER_VA + 5 * PAGE, 4, 9);
      const prgi = !r.ok ? r.pageRequest! : -1;
      b.bed.poll();
      const status = dev(b).pageRequestStatus(prgi);
      // Either the group was queued (and waits for the guest) or it was refused with PRO and answered success.
      expect(status === "waiting" ? b.device.pageRequests.pending : b.device.prq.prs & 2).toBeGreaterThan(0);
      expect(status === "waiting" || status === "success").toBe(true);
      expect(() => b.driver.readEvents()).not.toThrow();
      expect(b.bed.platform.host.memory.violations).toEqual([]);
    }
  });
});
