import { describe, expect, it } from "vitest";
import { NO_PASID, Perm, unwrap } from "@viommu/core";
import { decodeEvent, EventType } from "../../src/format/event-record.js";
import { faultRecord } from "../../src/translate/fault-record.js";
import { newSmmuWalkInfo } from "../../src/translate/walk-info.js";
import { smmuBed } from "../support.js";

/** IHI0070 §3.9: "A PCIe transaction without a PASID is considered Data, unprivileged." §7.3: PnU 1 = privileged, InD 1 = instruction. */
describe("event records name a transaction's privilege and instruction/data as the SMMU received it", () => {
  const info = { ...newSmmuWalkInfo(), event: EventType.F_TRANSLATION, record: true };

  it("a request without a PASID is recorded unprivileged data (PnU 0, InD 0), whatever the model's access bits", () => {
    for (const access of [Perm.Read, Perm.Write, Perm.Read | Perm.Exec]) {
      const f = decodeEvent(faultRecord(info, { sid: 0x10, ssid: NO_PASID, iova: 0x1000, access })!).fields;
      expect(f, `access ${access}`).toMatchObject({ PnU: 0, InD: 0 });
    }
  });

  it("a request with a PASID carries the prefix's Privileged and Execute bits", () => {
    expect(decodeEvent(faultRecord(info, { sid: 0x10, ssid: 3, iova: 0x1000, access: Perm.Read, privileged: true })!).fields).toMatchObject({ PnU: 1, InD: 0, SSV: 1 });
    expect(decodeEvent(faultRecord(info, { sid: 0x10, ssid: 3, iova: 0x1000, access: Perm.Read | Perm.Exec, privileged: false })!).fields).toMatchObject({ PnU: 0, InD: 1 });
  });

  it("a nested guest's DMA fault without a PASID reaches its event queue with PnU 0", () => {
    const { bed, driver, device } = smmuBed();
    const domain = unwrap(driver.createDomain());
    unwrap(driver.attach(0x10, domain));
    expect(device.read(0x9000_0000, 8).ok).toBe(false);
    bed.poll();
    const events = driver.readEvents();
    expect(events.length).toBe(1);
    const raw = events[0]!.raw;
    // dw1 bit 33 (record bit 97) is PnU, bit 34 InD.
    const dw1 = BigInt(raw[1]!);
    expect((dw1 >> 33n) & 1n).toBe(0n);
    expect((dw1 >> 34n) & 1n).toBe(0n);
  });
});
