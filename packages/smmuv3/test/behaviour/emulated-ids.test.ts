import { describe, expect, it } from "vitest";
import { decodeLayout, encodeLayout, errnoOf, ok, unwrap } from "@viommu/core";
import { idr0Layout, idr1Layout, idr3Layout, idr5Layout, IdrTtEndian } from "../../src/format/id-registers.js";
import { DEFAULT_SMMUV3_HW, type Smmuv3HwConfig } from "../../src/hw/smmuv3-hw-config.js";
import { Smmuv3Device } from "../../src/vmm/smmuv3-device.js";
import { hostConfig, hostSetup } from "../support.js";

function guestIds(config: Smmuv3HwConfig, mode: "nested" | "shadow" = "nested") {
  const h = hostSetup({ config });
  const created = Smmuv3Device.create({ vm: h.vm, iommufd: h.ctx, unit: h.unit, ioasId: h.ioasId, parentHwptId: h.parentId, anchorDevId: h.devId, mode });
  if (!created.ok) return created;
  const read = (offset: number): Uint32Array => Uint32Array.of(Number(h.vm.mmioRead(created.value.mmioBase + offset, 4)));
  return ok({
    idr0: decodeLayout(idr0Layout, read(0x0)),
    idr1: decodeLayout(idr1Layout, read(0x4)),
    idr3: decodeLayout(idr3Layout, read(0xc)),
    idr5: decodeLayout(idr5Layout, read(0x14)),
  });
}

describe("the emulated SMMU's ID registers claim nothing the host unit lacks", () => {
  it("a smaller host: no ATS, no 2-level CDs, 8-bit ASIDs, 12-bit StreamIDs, no SubstreamIDs, no RIL, no 16K granule, a 40-bit OAS", () => {
    const ids = unwrap(
      guestIds(
        hostConfig({
          idr0: { ATS: 0, CD2L: 0, ASID16: 0, COHACC: 0 },
          idr1: { SIDSIZE: 12, SSIDSIZE: 0 },
          idr3: { RIL: 0, HAD: 0, BBML: 0 },
          idr5: { OAS: 2, GRAN16K: 0 },
        }),
      ),
    );
    expect(ids.idr0).toMatchObject({ S1P: 1, S2P: 0, ATS: 0, CD2L: 0, ASID16: 0, HTTU: 0, PRI: 0, HYP: 0, VMID16: 0, BTM: 0, ATOS: 0 });
    expect(ids.idr1).toMatchObject({ SIDSIZE: 12, SSIDSIZE: 0 });
    expect(ids.idr3).toMatchObject({ RIL: 0, HAD: 0, BBML: 0 });
    expect(ids.idr5).toMatchObject({ OAS: 2, GRAN4K: 1, GRAN16K: 0, GRAN64K: 1 });
  });

  it("a larger host is capped where the VMM is the limit: 16-bit StreamIDs, the 48-bit IPA of the host's stage 2", () => {
    const ids = unwrap(guestIds(hostConfig({ idr1: { SIDSIZE: 32 }, idr5: { OAS: 6 } })));
    expect(ids.idr1.SIDSIZE).toBe(16);
    expect(ids.idr5.OAS).toBe(5);
  });

  it("offers little-endian tables only (a mixed-endian host included), and refuses a big-endian-only host (EOPNOTSUPP)", () => {
    expect(unwrap(guestIds(hostConfig({ idr0: { TTENDIAN: IdrTtEndian.Mixed } }))).idr0.TTENDIAN).toBe(IdrTtEndian.LittleOnly);
    expect(errnoOf(guestIds(hostConfig({ idr0: { TTENDIAN: IdrTtEndian.BigOnly } })))).toBe("EOPNOTSUPP");
  });

  it("offers no SubstreamIDs in shadow mode, where the VMM mirrors the untagged address space only", () => {
    expect(unwrap(guestIds(DEFAULT_SMMUV3_HW, "shadow")).idr1.SSIDSIZE).toBe(0);
  });
});
