import { describe, expect, it } from "vitest";
import { newWalkResult, NO_PASID, unwrap } from "@viommu/core";
import { buildCompletePprRequest } from "../../src/format/command.js";
import { MmioOffset } from "../../src/format/mmio-register-map.js";
import { StatusBit } from "../../src/format/status-register.js";
import type { AmdViDevice } from "../../src/vmm/amd-vi-device.js";
import { Ctl, RawGuest } from "../raw-guest.js";
import { amdBed, oneVm } from "../support.js";

function rawVm(path: "trapped" | "hw-vqueue"): { g: RawGuest; device: AmdViDevice } {
  const bed = amdBed({ vms: [{ devices: [{ rid: 0x100, guestRid: 0x10 }] }], noInit: true, eventInterrupts: path === "trapped" ? "vmm" : "direct" });
  const v = bed.vms[0]!;
  const device = v.iommus[0] as AmdViDevice;
  return { g: new RawGuest(v, device.mmioBase), device };
}

/** A fault of an emulated device behind a blocked DTE (V = TV = 1, no permission): one IO_PAGE_FAULT. */
function fault(device: AmdViDevice, iova: number): void {
  device.translateEmulated(0x28, NO_PASID, iova, false, newWalkResult());
}

for (const path of ["trapped", "hw-vqueue"] as const) {
  describe(`event log (${path})`, () => {
    it("a full log sets EventOverflow and interrupts, then logs nothing until software clears it", () => {
      const { g, device } = rawVm(path);
      g.setUp({ evtCode: 2, control: Ctl.IommuEn | Ctl.CmdBufEn | Ctl.EventLogEn | Ctl.EventIntEn });
      g.dte(0x28, [3, 0, 0, 0, 0, 0, 0, 0]);
      g.write(MmioOffset.MsiAddressLow, 0xfee0_1000, 4);
      g.write(MmioOffset.MsiData, 0x61, 4);
      // MsiEn through the MSI capability header\'s MMIO mirror (0x158, bit 16).
      g.write(MmioOffset.MsiData - 0xc, 1 << 16, 4);
      g.v.vm.interrupts.take();
      for (let i = 0; i < 6; i++) fault(device, 0x1000 * (i + 1));
      expect(g.status() & StatusBit.EventOverflow).toBe(StatusBit.EventOverflow);
      expect(g.v.vm.interrupts.take().filter((x) => x.vector === 0x61)).toHaveLength(4);
      const seen = g.events();
      expect(seen.map((e) => [e.name, e.fields["Address"]])).toEqual([
        ["IO_PAGE_FAULT", 0x1000n],
        ["IO_PAGE_FAULT", 0x2000n],
        ["IO_PAGE_FAULT", 0x3000n],
      ]);
      fault(device, 0x9000);
      expect(g.events()).toHaveLength(0);
      g.write(MmioOffset.Status, StatusBit.EventOverflow, 4);
      fault(device, 0xa000);
      expect(g.events().map((e) => e.fields["Address"])).toEqual([0xa000n]);
    });

    it("every logged event sets EventLogInt (W1C)", () => {
      const { g, device } = rawVm(path);
      g.setUp();
      g.dte(0x28, [3, 0, 0, 0, 0, 0, 0, 0]);
      fault(device, 0x1000);
      expect(g.status() & StatusBit.EventLogInt).toBe(StatusBit.EventLogInt);
      g.write(MmioOffset.Status, StatusBit.EventLogInt, 4);
      expect(g.status() & (StatusBit.EventLogInt | StatusBit.EventOverflow)).toBe(0);
      expect(g.status() & StatusBit.EventLogRun).toBe(StatusBit.EventLogRun);
    });

    it("writing the event log base resets head and tail", () => {
      const { g, device } = rawVm(path);
      g.setUp();
      g.dte(0x28, [3, 0, 0, 0, 0, 0, 0, 0]);
      fault(device, 0x1000);
      expect(Number(g.read(MmioOffset.EventLogTail, 4))).toBe(16);
      g.setControl(g.control & ~Ctl.EventLogEn);
      g.write(MmioOffset.EventLogBase, BigInt(g.evt) | (8n << 56n));
      expect([Number(g.read(MmioOffset.EventLogHead, 4)), Number(g.read(MmioOffset.EventLogTail, 4))]).toEqual([0, 0]);
    });
  });
}

describe("PPR log", () => {
  it("a page request from an emulated device lands in the PPR log with PPRInt, and COMPLETE_PPR_REQUEST answers it", () => {
    const t = oneVm({ eventInterrupts: "vmm" });
    expect(t.device.pageRequest(0x28, 5, 0x7000_1000, true, 0x1a3)).toBe(true);
    const requests = t.driver.readPageRequests();
    // A one-request group: tag bit 9 marks it the group's last request (Linux ppr.c PPR_TAG & 0x200).
    expect(requests).toEqual([expect.objectContaining({ deviceId: 0x28, pasid: 5, gn: true, group: 0x1a3, last: true, address: 0x7000_1000n, write: true })]);
    unwrap(t.driver.completePageRequest(0x28, 0x1a3, 0, 5));
    expect(t.device.pprResponses).toEqual([{ deviceId: 0x28, tag: 0x1a3, status: 0 }]);
  });

  it("a full PPR log sets PPROverflow and drops the request", () => {
    const t = oneVm({ eventInterrupts: "vmm" });
    let accepted = 0;
    for (let i = 0; i < 520; i++) if (t.device.pageRequest(0x28, 1, i * 0x1000, false, i & 0x1ff)) accepted++;
    expect(accepted).toBe(511);
    expect(Number(t.v.vm.mmioRead(t.device.mmioBase + MmioOffset.Status, 4)) & StatusBit.PPROverflow).toBe(StatusBit.PPROverflow);
    expect(buildCompletePprRequest({ deviceId: 1, tag: 2, status: 0 })[3]).toBe(2);
  });
});

describe("a Device Table Base Address Register never written", () => {
  it("is its reset value 0: a 4 KiB table at 0 whose zero DTE (V = 0) passes DMA through and logs nothing (difftest found an ILLEGAL_DEV_TABLE_ENTRY; QEMU logs none)", () => {
    const { g, device } = rawVm("trapped");
    const evt = 0x40_0000;
    g.write(MmioOffset.EventLogBase, BigInt(evt) | (8n << 56n));
    g.write(MmioOffset.Control, Ctl.IommuEn | Ctl.EventLogEn);
    const w = newWalkResult();
    device.translateEmulated(0x28, NO_PASID, 0x5000, true, w);
    expect(w.ok).toBe(true);
    expect(w.output).toBe(0x5000);
    expect(Number(g.v.vm.mmioRead(device.mmioBase + MmioOffset.EventLogTail, 4))).toBe(0);
  });
});

describe("a request translated, or passed through, to where no memory is", () => {
  it("fails at its target without an IO_PAGE_FAULT: the IOMMU's walk did not fail (difftest found the model logging one; QEMU logs none)", () => {
    const { g, device } = rawVm("trapped");
    g.setUp();
    // DeviceID 0x28's DTE stays zero (V = 0): its requests pass through untranslated.
    const w = newWalkResult();
    device.translateEmulated(0x28, NO_PASID, 2 ** 50 + 0x40, false, w);
    expect(w.ok).toBe(false);
    expect(g.events()).toEqual([]);
    // A walk that does fail still logs: a DTE with V = TV = 1 and no permission.
    g.dte(0x28, [3, 0, 0, 0, 0, 0, 0, 0]);
    device.translateEmulated(0x28, NO_PASID, 0x1000, false, newWalkResult());
    expect(g.events().map((e) => e.name)).toEqual(["IO_PAGE_FAULT"]);
  });
});
