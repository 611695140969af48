import { describe, expect, it } from "vitest";
import fc from "fast-check";
import {
  HV_DEVICE_DOMAIN_ID_FIRST,
  HV_DEVICE_DOMAIN_ID_LAST,
  HV_DEVICE_DOMAIN_ID_NULL,
  HvDeviceDomainType,
  acpiDeviceId,
  decodeDeviceDomainId,
  decodeDeviceId,
  deviceIdProblem,
  encodeDeviceDomainId,
  ioapicDeviceId,
  logicalDeviceId,
  pciDeviceId,
  vpciDeviceId,
} from "../../src/format/index.js";

// hv_device_id: spec arm-hyperv-virtio.md §5.2 and Linux include/hyperv/hvhdk_mini.h union hv_device_id.
describe("hv_device_id (spec §5.2)", () => {
  it("IO-APIC: device_type 2 in [63:62], ioapic_id in [7:0] (irqdomain.c hv_map_ioapic_interrupt)", () => {
    expect(ioapicDeviceId(0)).toBe(0x8000000000000000n);
    expect(ioapicDeviceId(8)).toBe(0x8000000000000008n);
    expect(decodeDeviceId(0x8000000000000008n)).toEqual({ kind: "IOAPIC", fields: { ioapic_id: 8, device_type: 2 } });
  });

  it("PCI: rid = bus:device.function in [15:0], segment [31:16] (irqdomain.c hv_build_pci_dev_id)", () => {
    const id = pciDeviceId({ segment: 1, bus: 0x3a, device: 2, function: 1 });
    expect(id).toBe(0x4000000000013a11n);
    expect(decodeDeviceId(id)).toMatchObject({ kind: "PCI", fields: { segment: 1, bus: 0x3a, device: 2, function: 1, source_shadow: 0 } });
  });

  it("PCI behind a PCI-X bridge: shadow bus range [47:32] (subordinate low byte) and source_shadow bit 50", () => {
    const id = pciDeviceId({ bus: 0x3a, device: 2, function: 1, segment: 1, secondary_bus: 0x40, subordinate_bus: 0x4f, source_shadow: 1 });
    expect(id).toBe(0x4004404f00013a11n);
  });

  it("logical: id [61:0], as the pvIOMMU driver builds prefix | PCI function", () => {
    expect(logicalDeviceId(0x9abcdef1n)).toBe(0x000000009abcdef1n);
    expect(decodeDeviceId(0x000000009abcdef1n)).toEqual({ kind: "LOGICAL", fields: { id: 0x9abcdef1n, device_type: 0 } });
  });

  it("ACPI: input_mapping_base [31:0], input_mapping_count [61:32]", () => {
    expect(acpiDeviceId(0x100, 0x20)).toBe(0xc000002000000100n);
  });

  it("reports reserved bits of the selected view", () => {
    expect(deviceIdProblem(0x4000000000013a11n)).toBeUndefined();
    expect(deviceIdProblem(0x4008000000013a11n)).toMatch(/reserved/); // bit 51 of the PCI view
    expect(deviceIdProblem(0x8000000000000108n)).toMatch(/reserved/); // bit 8 of the IO-APIC view
    expect(deviceIdProblem(0x3fffffffffffffffn)).toBeUndefined(); // a logical id uses all 62 bits
  });

  it("vPCI device id from the VMBus instance GUID (pci-hyperv.c: b[5]<<24 | b[4]<<16 | b[7]<<8 | b[6]&0xF8 | fn)", () => {
    // GUID 12345678-9abc-def0-1122-334455667788 in memory order: 78 56 34 12 bc 9a f0 de 11 22 ...
    const guid = Uint8Array.of(0x78, 0x56, 0x34, 0x12, 0xbc, 0x9a, 0xf0, 0xde, 0x11, 0x22, 0x33, 0x44, 0x55, 0x66, 0x77, 0x88);
    expect(vpciDeviceId(guid, 0)).toBe(0x9abcdef0n);
    expect(vpciDeviceId(guid, 3)).toBe(0x9abcdef3n);
  });

  it("decodes every 64-bit value without throwing", () => {
    fc.assert(
      fc.property(fc.bigInt({ min: 0n, max: (1n << 64n) - 1n }), (v) => {
        const d = decodeDeviceId(v);
        expect(d.fields.device_type).toBe(Number(v >> 62n));
        deviceIdProblem(v);
      }),
    );
  });
});

// hv_device_domain_id: spec §5.4 (type [3:0], reserved [31:4], id [63:32]); ids from the pvIOMMU driver.
describe("hv_device_domain_id (spec §5.4, provisional)", () => {
  it.each([
    ["S1 domain 1 (first guest id)", { type: HvDeviceDomainType.HV_DEVICE_DOMAIN_TYPE_S1, id: HV_DEVICE_DOMAIN_ID_FIRST }, 0x0000000100000001n],
    ["S2 default domain", { type: HvDeviceDomainType.HV_DEVICE_DOMAIN_TYPE_S2, id: 0 }, 0x0000000000000000n],
    ["S2 NULL domain", { type: HvDeviceDomainType.HV_DEVICE_DOMAIN_TYPE_S2, id: HV_DEVICE_DOMAIN_ID_NULL }, 0xffffffff00000000n],
    ["SoC domain 7", { type: HvDeviceDomainType.HV_DEVICE_DOMAIN_TYPE_SOC, id: 7 }, 0x0000000700000002n],
    ["last guest id", { type: 1, id: HV_DEVICE_DOMAIN_ID_LAST }, 0xfffffffe00000001n],
  ])("%s", (_what, fields, value) => {
    expect(encodeDeviceDomainId(fields)).toBe(value);
    expect(decodeDeviceDomainId(value)).toEqual(fields);
  });
});
