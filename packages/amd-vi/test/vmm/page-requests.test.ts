import { describe, expect, it } from "vitest";
import { NO_PASID, Perm, unwrap, type GuestEvent } from "@viommu/core";
import { buildCompletePprRequest, buildCompletionWait } from "../../src/format/command.js";
import { decodePprLogEntry } from "../../src/format/ppr-log-entry.js";
import { MmioOffset } from "../../src/format/mmio-register-map.js";
import { StatusBit } from "../../src/format/status-register.js";
import type { AmdViGuestDriver } from "../../src/guest/amd-vi-driver.js";
import { amdBed, DATA_GPA, pattern } from "../support.js";

const PAGE = 4096;
const USER_VA = 0x7f00_0000_0000;

/** A VM with a PRI- and PASID-capable device whose process is bound at `pasid`, one page mapped. */
function bound(commandBuffer: "hw-vqueue" | "trapped", pasid = 9, enable = true) {
  const bed = amdBed({
    vms: [{ devices: [{ rid: 0x100, guestRid: 0x10, pasidBits: 20, pri: true }], vcpus: 4 }],
    eventInterrupts: commandBuffer === "trapped" ? "vmm" : "direct",
    guest: { x2apic: true, eventVector: 0x61, eventDestination: 2 },
  });
  const v = bed.vms[0]!;
  const driver = v.drivers[0] as AmdViGuestDriver;
  const process = unwrap(driver.createProcess!());
  unwrap(process.map(USER_VA, DATA_GPA, PAGE, Perm.ReadWrite));
  if (enable) unwrap(driver.enablePageRequests!(0x10));
  unwrap(driver.bindProcess!(0x10, pasid, process));
  return { bed, v, driver, process, dev: v.devices[0]!.device, mmio: v.iommus[0]!.mmioBase };
}

function requests(t: ReturnType<typeof bound>): GuestEvent[] {
  t.bed.poll();
  return t.driver.readEvents().filter((e) => e.kind === "page-request");
}

function hostLog(t: ReturnType<typeof bound>): string[] {
  return t.bed.platform.host.log.entries().map((e) => e.message);
}

for (const path of ["hw-vqueue", "trapped"] as const) {
  describe(`page requests of a passthrough device (${path} command buffer)`, () => {
    it("a fault the guest can resolve becomes a PAGE_SERVICE_REQUEST in the guest's PPR log: guest DeviceID, PASID with GN, the page, the access, the group with bit 9 for its last request, US clear for a privileged request; PPRInt and the PPR interrupt follow", () => {
      const t = bound(path);
      t.v.vm.interrupts.take();
      const r = t.dev.write(USER_VA + 3 * PAGE + 0x10, pattern(4, 1), 9);
      expect(r).toMatchObject({ ok: false, pageRequest: expect.any(Number) });
      const group = (r as { pageRequest: number }).pageRequest;
      t.bed.poll();
      expect(Number(t.v.vm.mmioRead(t.mmio + MmioOffset.Status, 4)) & StatusBit.PPRInt).toBe(StatusBit.PPRInt);
      expect(t.v.vm.interrupts.take().filter((i) => i.vector === 0x61 && i.destination === 2)).toHaveLength(1);
      const [entry] = t.driver.readPageRequests();
      const f = decodePprLogEntry(entry!.raw).fields;
      expect(f).toMatchObject({ DeviceID: 0x10, PASID: 9, Tag: group | 0x200, GN: 1, WRITE: 1, READ: 0, US: 0, RVSD: 0, Type: 1, Address: BigInt(USER_VA + 3 * PAGE) });
    });

    it("the guest's COMPLETE_PPR_REQUEST reaches the device through the fault queue: success lets the retry through, failure leaves it failed", () => {
      const t = bound(path);
      const first = t.dev.write(USER_VA + PAGE, pattern(8, 2), 9) as { pageRequest: number };
      const [pr] = requests(t);
      expect(pr).toMatchObject({ rid: 0x10, pasid: 9, group: first.pageRequest, last: true, write: true, address: USER_VA + PAGE });
      expect(t.dev.pageRequestStatus(first.pageRequest)).toBe("waiting");
      unwrap(t.process.map(USER_VA + PAGE, DATA_GPA + PAGE, PAGE, Perm.ReadWrite));
      unwrap(t.driver.respondPageRequest!(pr!, true));
      t.bed.poll();
      expect(t.dev.pageRequestStatus(first.pageRequest)).toBe("success");
      expect(t.dev.write(USER_VA + PAGE, pattern(8, 2), 9).ok).toBe(true);
      const second = t.dev.read(USER_VA + 5 * PAGE, 4, 9) as { pageRequest: number };
      unwrap(t.driver.respondPageRequest!(requests(t)[0]!, false));
      t.bed.poll();
      expect(t.dev.pageRequestStatus(second.pageRequest)).toBe("invalid");
    });

    it("a COMPLETE_PPR_REQUEST naming no outstanding request (a wrong tag, DeviceID or PASID) completes like any command, answers nothing and is noted in the host log", () => {
      const t = bound(path);
      const r = t.dev.write(USER_VA + PAGE, pattern(4, 3), 9) as { pageRequest: number };
      const [pr] = requests(t);
      const raw = t.driver as unknown as { submit(c: Uint32Array[]): { ok: boolean } };
      for (const wrong of [
        buildCompletePprRequest({ deviceId: 0x10, tag: (pr!.group! + 1) & 0x1ff, status: 0, pasid: 9 }),
        buildCompletePprRequest({ deviceId: 0x11, tag: pr!.group!, status: 0, pasid: 9 }),
        buildCompletePprRequest({ deviceId: 0x10, tag: pr!.group!, status: 0, pasid: 8 }),
        buildCompletePprRequest({ deviceId: 0xffff, tag: 0x1ff, status: 0xf, pasid: 0xfffff }),
      ]) {
        expect(() => raw.submit([wrong])).not.toThrow();
        expect(raw.submit([wrong]).ok).toBe(true);
      }
      t.bed.poll();
      expect(t.dev.pageRequestStatus(r.pageRequest)).toBe("waiting");
      expect(hostLog(t).filter((m) => m.includes("answers no outstanding page request")).length).toBeGreaterThanOrEqual(4);
      // The right one still answers it.
      unwrap(t.driver.respondPageRequest!(pr!, true));
      t.bed.poll();
      expect(t.dev.pageRequestStatus(r.pageRequest)).toBe("success");
    });

    it("a request without a PASID, or from a device whose DTE lacks PPR, is a final fault, never a page request", () => {
      const t = bound(path);
      expect(t.dev.read(USER_VA + 2 * PAGE, 4, NO_PASID)).toMatchObject({ ok: false });
      expect((t.dev.read(USER_VA + 2 * PAGE, 4, NO_PASID) as { pageRequest?: number }).pageRequest).toBeUndefined();
      const u = bound(path, 9, false);
      const r = u.dev.read(USER_VA + 2 * PAGE, 4, 9);
      expect(r.ok).toBe(false);
      expect((r as { pageRequest?: number }).pageRequest).toBeUndefined();
      expect(requests(u)).toEqual([]);
    });

    it("a PPR log base the guest points outside its RAM (or at 2^52 − 4 KiB) takes nothing, throws nothing, and the group is answered INVALID", () => {
      for (const base of [2n ** 52n - 0x1000n, BigInt(2 ** 40)]) {
        const t = bound(path);
        t.v.vm.mmioWrite(t.mmio + MmioOffset.PprLogBase, 8, base | (9n << 56n));
        const r = t.dev.write(USER_VA + 6 * PAGE, pattern(4, 5), 9) as { pageRequest: number };
        expect(() => t.bed.poll()).not.toThrow();
        expect(t.dev.pageRequestStatus(r.pageRequest)).toBe("invalid");
        expect(t.bed.platform.host.memory.violations).toEqual([]);
      }
    });

    it("a group the guest's PPR log cannot take (disabled) is answered INVALID at once and written to the host log", () => {
      const t = bound(path);
      const control = t.v.vm.mmioRead(t.mmio + MmioOffset.Control, 8);
      t.v.vm.mmioWrite(t.mmio + MmioOffset.Control, 8, control & ~(1n << 13n));
      const r = t.dev.write(USER_VA + 7 * PAGE, pattern(4, 4), 9) as { pageRequest: number };
      t.bed.poll();
      expect(t.dev.pageRequestStatus(r.pageRequest)).toBe("invalid");
      expect(hostLog(t).some((m) => m.includes("PPR log did not take"))).toBe(true);
    });
  });
}

describe("the reference driver's page-request handling (Linux ppr.c)", () => {
  it("answers a request without GN (or with PASID 0) itself with IOMMU_PAGE_RESP_FAILURE and does not report it", () => {
    const bed = amdBed({ vms: [{ devices: [{ rid: 0x100, guestRid: 0x10 }] }], eventInterrupts: "vmm" });
    const v = bed.vms[0]!;
    const device = v.iommus[0] as unknown as { pageRequest(rid: number, pasid: number, address: number, write: boolean, tag: number): boolean; pprResponses: unknown[] };
    expect(device.pageRequest(0x28, NO_PASID, 0x4000, false, 0x12)).toBe(true);
    expect(device.pageRequest(0x28, 0, 0x5000, false, 0x13)).toBe(true);
    expect(v.drivers[0]!.readEvents().filter((e) => e.kind === "page-request")).toEqual([]);
    expect(device.pprResponses).toEqual([
      { deviceId: 0x28, tag: 0x12, status: 2 },
      { deviceId: 0x28, tag: 0x13, status: 2 },
    ]);
    expect(buildCompletionWait(0x1000, 1n)).toBeDefined();
  });

  it("respondPageRequest refuses anything that is not a page request it could have read", () => {
    const t = bound("trapped");
    const fake: GuestEvent = { kind: "page-request", code: 1, name: "PAGE_SERVICE_REQUEST", rid: 0x1_0000, group: 1, raw: [] };
    expect(t.driver.respondPageRequest!(fake, true)).toMatchObject({ ok: false, error: { errno: "EINVAL" } });
    expect(t.driver.respondPageRequest!({ ...fake, rid: 0x10, group: 512 }, true)).toMatchObject({ ok: false, error: { errno: "EINVAL" } });
    expect(t.driver.respondPageRequest!({ ...fake, kind: "dma-fault", rid: 0x10 }, true)).toMatchObject({ ok: false, error: { errno: "EINVAL" } });
  });
});
