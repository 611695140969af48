import { readFileSync } from "node:fs";
import { describe, expect, it } from "vitest";
import { Testbed } from "@viommu/conformance";
import { unwrap } from "@viommu/core";
import { decodeIvrs, type IvhdBlock } from "../../src/format/ivrs.js";
import { MmioOffset } from "../../src/format/mmio-register-map.js";
import { AMDVI_CAPABILITY_OFFSET } from "../../src/format/pci-capability.js";
import { amdViPlugin } from "../../src/plugin.js";
import type { AmdViDevice } from "../../src/vmm/amd-vi-device.js";

/** A VM whose emulated IOMMU got `properties`, without a guest driver (the registers as firmware leaves them). */
function device(properties: Record<string, string> = {}): AmdViDevice {
  const bed = unwrap(Testbed.create({ plugin: amdViPlugin, vms: [{ devices: [{ rid: 0x100, guestRid: 0x10 }] }], properties, noInit: true }));
  return bed.vms[0]!.iommus[0] as AmdViDevice;
}

/**
 * An IVRS QEMU 7.2 built for q35 + amd-iommu, read from its fw_cfg (see test/fixtures). QEMU leaves the Checksum
 * byte 0 for the firmware's table loader to fill, so it is filled here as that loader would.
 */
function qemuIvhd10(fixture: string): IvhdBlock {
  const table = new Uint8Array(readFileSync(new URL(`../fixtures/${fixture}`, import.meta.url)));
  table[9] = (0x100 - (table.reduce((sum, b) => sum + b, 0) & 0xff)) & 0xff;
  const decoded = decodeIvrs(table);
  if (!decoded.ok) throw new Error(decoded.problem);
  return decoded.table.blocks.find((b) => b.kind === "IVHD" && b.type === 0x10) as IvhdBlock;
}

function ivhd11(d: AmdViDevice): IvhdBlock {
  const ivrs = d.acpiTables().find((t) => t.signature === "IVRS")!.bytes;
  const decoded = decodeIvrs(ivrs);
  if (!decoded.ok) throw new Error(decoded.problem);
  return decoded.table.blocks.find((b) => b.kind === "IVHD" && b.type === 0x11) as IvhdBlock;
}

describe("device properties under QEMU's names change what the guest sees as QEMU's do", () => {
  it("are listed with their values and defaults (viommu plugins)", () => {
    expect(amdViPlugin.properties!.map((p) => [p.name, p.defaultValue])).toEqual([
      ["xtsup", "on"],
      ["intremap", "auto"],
      ["device-iotlb", "on"],
      ["pt", "on"],
    ]);
  });

  it("xtsup: EFR.XTSup (bit 2) in the MMIO register and the IVHD 11h EFR image", () => {
    const on = device();
    const off = device({ xtsup: "off" });
    const efr = (d: AmdViDevice): bigint => d.options.vm.mmioRead(d.mmioBase + MmioOffset.ExtendedFeature, 8);
    expect(efr(on) & 4n).toBe(4n);
    expect(efr(off) & 4n).toBe(0n);
    expect(efr(on) ^ efr(off)).toBe(4n);
    expect(ivhd11(off).efr! & 4n).toBe(0n);
  });

  it("device-iotlb: IotlbSup in the IVHD flags (bit 4) and in the IOMMU capability header (bit 24)", () => {
    const header = (d: AmdViDevice): number => d.pci.read(AMDVI_CAPABILITY_OFFSET, 4);
    expect(ivhd11(device()).flags).toBe(0xd1);
    expect(ivhd11(device({ "device-iotlb": "off" })).flags).toBe(0xc1);
    expect((header(device()) >>> 24) & 1).toBe(1);
    expect((header(device({ "device-iotlb": "off" })) >>> 24) & 1).toBe(0);
  });

  it("intremap: the IOAPIC SPECIAL entry as QEMU 7.2 lists it with intremap on, and left out with intremap=off", () => {
    const special = (b: IvhdBlock): unknown[] => b.entries.filter((e) => e.kind === "SPECIAL");
    const qemuOn = special(qemuIvhd10("qemu-7.2-IVRS.bin"));
    expect(qemuOn).toHaveLength(1);
    expect(special(ivhd11(device()))).toEqual(qemuOn);
    expect(special(qemuIvhd10("qemu-7.2-IVRS-intremap-off.bin"))).toEqual([]);
    expect(special(ivhd11(device({ intremap: "off" })))).toEqual([]);
  });

  it("intremap=off: no IOAPIC entry in the IVRS, and a remappable MSI passes as written", () => {
    expect(ivhd11(device()).entries.some((e) => e.kind === "SPECIAL")).toBe(true);
    expect(ivhd11(device({ intremap: "auto" })).entries.some((e) => e.kind === "SPECIAL")).toBe(true);
    const off = device({ intremap: "off" });
    expect(ivhd11(off).entries.some((e) => e.kind === "SPECIAL")).toBe(false);
    // IommuEn on, and a DTE for DeviceID 0x10 in the reset-value device table (4 KiB at 0) asking for remapping
    // through an IRT of zero entries (IV, IntTabLen 9, IntCtl 10b): the MSI (IRTE index 3, RemapEn clear) is
    // refused with remapping, and passes as written without it.
    const remappingDte = (d: AmdViDevice): void => {
      d.options.vm.memory.writeWords(0x10 * 32, Uint32Array.of(3, 0, 0, 0, 0x1_0000 | (9 << 1) | 1, 2 << 28, 0, 0));
      d.options.vm.mmioWrite(d.mmioBase + MmioOffset.Control, 8, 1n);
    };
    remappingDte(off);
    expect(off.deliverMsi(0x10, { address: 0xfee0_1000, data: 0x23 })).toMatchObject({ ok: true, irq: { vector: 0x23, destination: 1 } });
    const on = device();
    remappingDte(on);
    expect(on.deliverMsi(0x10, { address: 0xfee0_1000, data: 0x23 }).ok).toBe(false);
  });

  it("pt=off is refused with the reason (EINVAL from core, as QEMU refuses a bad property value)", () => {
    const r = Testbed.create({ plugin: amdViPlugin, vms: [{ devices: [{ rid: 0x100, guestRid: 0x10 }] }], properties: { pt: "off" }, noInit: true });
    expect(r.ok).toBe(false);
    if (!r.ok) expect(r.error.message).toMatch(/pass-through/);
  });
});
