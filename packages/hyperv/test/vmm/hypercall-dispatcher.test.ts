import { describe, expect, it } from "vitest";
import { Perm, unwrap } from "@viommu/core";
import { readStruct } from "../../src/format/byte-layout.js";
import { HV_DEVICE_DOMAIN_ID_DEFAULT, HV_DEVICE_DOMAIN_ID_NULL, HvDeviceDomainType } from "../../src/format/device-domain.js";
import { ioapicDeviceId, logicalDeviceId, pciDeviceId } from "../../src/format/device-id.js";
import { HvGenericSetFormat, vpSetVariableHeader } from "../../src/format/device-interrupt-target.js";
import { HvStatus } from "../../src/format/hv-status.js";
import {
  HV_PARTITION_ID_SELF,
  hvAttachDevice,
  hvAttachDeviceDomain,
  hvConfigureDeviceDomain,
  hvCreateDeviceDomain,
  hvDeleteDeviceDomain,
  hvDetachDevice,
  hvDetachDeviceDomain,
  hvFlushDeviceDomain,
  hvFlushDeviceDomainList,
  hvGetIommuCapabilities,
  hvGetLogicalDeviceProperty,
  hvMapDeviceGpaPages,
  hvMapDeviceInterrupt,
  hvUnmapDeviceInterrupt,
} from "../../src/format/hypercalls.js";
import { encodeHypercallInput } from "../../src/format/hypercall-input.js";
import { decodeHypercallResult } from "../../src/format/hypercall-result.js";
import { getIommuCapabilitiesOutputLayout, getLogicalDevicePropertyOutputLayout, HV_LOGICAL_DEVICE_PROPERTY_PVIOMMU } from "../../src/format/iommu-discovery.js";
import { MAX_DEVICE_DOMAINS } from "../../src/vmm/device-domains.js";
import { REPS_PER_CALL } from "../../src/vmm/hypercall-dispatcher.js";
import { DATA_GPA, dd, hvBed, IOVA, RAW_INPUT, RAW_OUTPUT, rawCall } from "../support.js";

const S = HvStatus;
const S2 = HvDeviceDomainType.HV_DEVICE_DOMAIN_TYPE_S2;

describe("the hypercall dispatcher validates before it acts", () => {
  it("answers INVALID_HYPERCALL_CODE for a call it does not know, and for no handler at all after the last instance goes", () => {
    const { bed, v, iommu } = hvBed();
    const call = (code: number): number => decodeHypercallResult(v.vm.hypercall(encodeHypercallInput({ call_code: code }), RAW_INPUT, RAW_OUTPUT)).status;
    expect(call(0x1234)).toBe(S.HV_STATUS_INVALID_HYPERCALL_CODE);
    iommu.destroy();
    expect(call(0x125)).toBe(S.HV_STATUS_INVALID_HYPERCALL_CODE);
    v.iommus.length = 0;
    bed.dispose();
  });

  it("refuses a fast call, a misaligned input GPA and an input GPA outside RAM before reading it", () => {
    const { bed, v } = hvBed();
    const input = { input: { partition_id: HV_PARTITION_ID_SELF } };
    expect(rawCall(v, hvGetIommuCapabilities, input, { control: (c) => c | (1n << 16n) }).status).toBe(S.HV_STATUS_INVALID_HYPERCALL_INPUT);
    expect(rawCall(v, hvGetIommuCapabilities, input, { inputGpa: RAW_INPUT + 4 }).status).toBe(S.HV_STATUS_INVALID_ALIGNMENT);
    const end = v.vm.memory.end;
    expect(decodeHypercallResult(v.vm.hypercall(encodeHypercallInput({ call_code: 0x125 }), end, RAW_OUTPUT)).status).toBe(S.HV_STATUS_INVALID_PARAMETER);
    // Beyond 2^53: an aligned GPA is outside RAM, a misaligned one misaligned, as for any other GPA.
    expect(decodeHypercallResult(v.vm.hypercall(encodeHypercallInput({ call_code: 0x125 }), 2 ** 60, RAW_OUTPUT)).status).toBe(S.HV_STATUS_INVALID_PARAMETER);
    expect(decodeHypercallResult(v.vm.hypercall(encodeHypercallInput({ call_code: 0x125 }), 2 ** 53 + 2, RAW_OUTPUT)).status).toBe(S.HV_STATUS_INVALID_ALIGNMENT);
    expect(rawCall(v, hvGetIommuCapabilities, input, { outputGpa: 2 ** 60 }).status).toBe(S.HV_STATUS_INVALID_PARAMETER);
    expect(bed.platform.host.memory.violations).toEqual([]);
    bed.dispose();
  });

  it("answers INVALID_HYPERCALL_INPUT for reserved control bits and rep fields on a simple call, INVALID_PARAMETER for reserved input", () => {
    const { bed, v } = hvBed();
    const input = { input: { device_domain: dd(100) } };
    expect(rawCall(v, hvCreateDeviceDomain, input, { control: (c) => c | (1n << 40n) }).status).toBe(S.HV_STATUS_INVALID_HYPERCALL_INPUT);
    expect(rawCall(v, hvCreateDeviceDomain, input, { control: (c) => c | (1n << 28n) }).status).toBe(S.HV_STATUS_INVALID_HYPERCALL_INPUT);
    v.vm.memory.write8(RAW_INPUT + 10, 1); // padding of hv_input_device_domain
    const { control } = { control: encodeHypercallInput({ call_code: hvCreateDeviceDomain.code }) };
    expect(decodeHypercallResult(v.vm.hypercall(control, RAW_INPUT, RAW_OUTPUT)).status).toBe(S.HV_STATUS_INVALID_PARAMETER);
    bed.dispose();
  });

  it("refuses another partition's id and a VTL other than 0, creating nothing", () => {
    const { bed, v, iommu } = hvBed();
    const before = iommu.partition.domains!.count;
    expect(rawCall(v, hvCreateDeviceDomain, { input: { device_domain: { ...dd(100), partition_id: 12345n } } }).status).toBe(S.HV_STATUS_INVALID_PARTITION_ID);
    expect(rawCall(v, hvCreateDeviceDomain, { input: { device_domain: { ...dd(100), owner_vtl: { target_vtl: 1, use_target_vtl: 1 } } } }).status).toBe(S.HV_STATUS_INVALID_PARAMETER);
    expect(rawCall(v, hvCreateDeviceDomain, { input: { device_domain: { ...dd(100), partition_id: BigInt(v.vm.id) } } }).status).toBe(S.HV_STATUS_SUCCESS);
    expect(iommu.partition.domains!.count).toBe(before + 1);
    bed.dispose();
  });
});

describe("discovery hypercalls", () => {
  it("GET_IOMMU_CAPABILITIES answers the host unit's capabilities; a bad output GPA is refused before anything is written", () => {
    const { bed, v } = hvBed();
    const r = rawCall(v, hvGetIommuCapabilities, { input: { partition_id: HV_PARTITION_ID_SELF } });
    expect(r.status).toBe(S.HV_STATUS_SUCCESS);
    const caps = readStruct(getIommuCapabilitiesOutputLayout, v.vm.memory.readBytes(RAW_OUTPUT, 24));
    expect(caps.iommu_cap).toMatchObject({ PRESENT: 1, S1: 1, S2: 1 });
    expect(caps.max_iova_width).toBe(48);
    const input = { input: { partition_id: HV_PARTITION_ID_SELF } };
    expect(rawCall(v, hvGetIommuCapabilities, input, { outputGpa: RAW_OUTPUT + 4 }).status).toBe(S.HV_STATUS_INVALID_ALIGNMENT);
    expect(rawCall(v, hvGetIommuCapabilities, input, { outputGpa: RAW_OUTPUT + 4088 }).status).toBe(S.HV_STATUS_INVALID_ALIGNMENT);
    expect(rawCall(v, hvGetIommuCapabilities, input, { outputGpa: v.vm.memory.end }).status).toBe(S.HV_STATUS_INVALID_PARAMETER);
    bed.dispose();
  });

  it("GET_LOGICAL_DEVICE_PROPERTY: every 16-bit logical id is behind the pvIOMMU; other codes are UNKNOWN_PROPERTY", () => {
    const { bed, v } = hvBed();
    const ask = (id: bigint, code = HV_LOGICAL_DEVICE_PROPERTY_PVIOMMU): number =>
      rawCall(v, hvGetLogicalDeviceProperty, { input: { partition_id: HV_PARTITION_ID_SELF, logical_device_id: id, code } }).status;
    expect(ask(0x10n)).toBe(S.HV_STATUS_SUCCESS);
    expect(readStruct(getLogicalDevicePropertyOutputLayout, v.vm.memory.readBytes(RAW_OUTPUT, 16)).device_iommu.HV_DEVICE_IOMMU_ENABLED).toBe(1);
    expect(ask(0x10n, 3)).toBe(S.HV_STATUS_UNKNOWN_PROPERTY);
    expect(ask(0x1_0000n)).toBe(S.HV_STATUS_NOT_FOUND);
    bed.dispose();
  });
});

describe("device domains", () => {
  it("CREATE refuses the predefined ids, duplicates and unknown types, and the partition's table is bounded", () => {
    const { bed, v, iommu } = hvBed();
    const create = (id: number, type: number = HvDeviceDomainType.HV_DEVICE_DOMAIN_TYPE_S1): number => rawCall(v, hvCreateDeviceDomain, { input: { device_domain: dd(id, type) } }).status;
    expect(create(HV_DEVICE_DOMAIN_ID_DEFAULT)).toBe(S.HV_STATUS_INVALID_PARAMETER);
    expect(create(HV_DEVICE_DOMAIN_ID_NULL)).toBe(S.HV_STATUS_INVALID_PARAMETER);
    expect(create(500, 2)).toBe(S.HV_STATUS_INVALID_PARAMETER);
    expect(create(500)).toBe(S.HV_STATUS_SUCCESS);
    expect(create(500)).toBe(S.HV_STATUS_INVALID_PARAMETER);
    let last: number = S.HV_STATUS_SUCCESS;
    for (let id = 1000; last === S.HV_STATUS_SUCCESS && id < 1000 + MAX_DEVICE_DOMAINS; id++) last = create(id);
    expect(last).toBe(S.HV_STATUS_NO_RESOURCES);
    expect(iommu.partition.domains!.count).toBe(MAX_DEVICE_DOMAINS);
    bed.dispose();
  });

  it("CONFIGURE refuses a root outside RAM or unaligned, blocked without translation, and 5-level on a 4-level host", () => {
    const { bed, v } = hvBed();
    expect(rawCall(v, hvCreateDeviceDomain, { input: { device_domain: dd(600) } }).status).toBe(S.HV_STATUS_SUCCESS);
    const configure = (flags: object, root: bigint): number => rawCall(v, hvConfigureDeviceDomain, { input: { device_domain: dd(600), settings: { flags, page_table_root: root } } }).status;
    expect(configure({ translation_enabled: 1 }, BigInt(v.vm.memory.end))).toBe(S.HV_STATUS_INVALID_PARAMETER);
    expect(configure({ translation_enabled: 1 }, BigInt(DATA_GPA + 8))).toBe(S.HV_STATUS_INVALID_PARAMETER);
    expect(configure({ translation_enabled: 0, blocked: 1 }, 0n)).toBe(S.HV_STATUS_INVALID_PARAMETER);
    expect(configure({ translation_enabled: 1, first_stage_paging_mode: 1 }, BigInt(DATA_GPA))).toBe(S.HV_STATUS_INVALID_PARAMETER);
    expect(configure({ translation_enabled: 1 }, BigInt(DATA_GPA))).toBe(S.HV_STATUS_SUCCESS);
    expect(rawCall(v, hvConfigureDeviceDomain, { input: { device_domain: dd(601), settings: { flags: { translation_enabled: 1 } } } }).status).toBe(S.HV_STATUS_NOT_FOUND);
    bed.dispose();
  });

  it("DELETE of a domain with a device in it is refused; once the device has left, the domain goes", () => {
    const { bed, v, driver, iommu } = hvBed();
    const d = unwrap(driver.createDomain());
    unwrap(driver.attach(0x10, d));
    unwrap(driver.map(d, IOVA, DATA_GPA, 0x1000, Perm.ReadWrite));
    expect(rawCall(v, hvDeleteDeviceDomain, { input: { device_domain: dd(d) } }).status).toBe(S.HV_STATUS_OPERATION_DENIED);
    expect(v.devices[0]!.device.read(IOVA, 4).ok).toBe(true);
    unwrap(driver.detach(0x10));
    expect(rawCall(v, hvDeleteDeviceDomain, { input: { device_domain: dd(d) } }).status).toBe(S.HV_STATUS_SUCCESS);
    expect(iommu.partition.domains!.get(d)).toBeUndefined();
    expect(rawCall(v, hvDeleteDeviceDomain, { input: { device_domain: dd(d) } }).status).toBe(S.HV_STATUS_NOT_FOUND);
    bed.dispose();
  });

  it("ATTACH to the domain a device is in answers DEVICE_ALREADY_IN_DOMAIN; DETACH blocks its DMA; DETACH outside a domain is refused", () => {
    const { bed, v, driver } = hvBed();
    const d = unwrap(driver.createDomain());
    unwrap(driver.attach(0x10, d));
    unwrap(driver.map(d, IOVA, DATA_GPA, 0x1000, Perm.ReadWrite));
    expect(rawCall(v, hvAttachDeviceDomain, { input: { device_domain: dd(d), device_id: logicalDeviceId(0x10) } }).status).toBe(S.HV_STATUS_DEVICE_ALREADY_IN_DOMAIN);
    // The PCI view of the same device names it too.
    expect(rawCall(v, hvAttachDeviceDomain, { input: { device_domain: dd(d), device_id: pciDeviceId({ bus: 0, device: 2, function: 0 }) } }).status).toBe(S.HV_STATUS_DEVICE_ALREADY_IN_DOMAIN);
    expect(rawCall(v, hvDetachDeviceDomain, { input: { partition_id: HV_PARTITION_ID_SELF, device_id: logicalDeviceId(0x10) } }).status).toBe(S.HV_STATUS_SUCCESS);
    expect(v.devices[0]!.device.read(IOVA, 4).ok).toBe(false);
    expect(v.devices[0]!.device.read(DATA_GPA, 4).ok).toBe(false);
    expect(rawCall(v, hvDetachDeviceDomain, { input: { partition_id: HV_PARTITION_ID_SELF, device_id: logicalDeviceId(0x10) } }).status).toBe(S.HV_STATUS_INVALID_PARAMETER);
    // The default domain 0 is identity: DMA addresses are GPAs.
    expect(rawCall(v, hvAttachDeviceDomain, { input: { device_domain: dd(0), device_id: logicalDeviceId(0x10) } }).status).toBe(S.HV_STATUS_SUCCESS);
    expect(v.devices[0]!.device.read(DATA_GPA, 4).ok).toBe(true);
    expect(rawCall(v, hvAttachDeviceDomain, { input: { device_domain: dd(999), device_id: logicalDeviceId(0x10) } }).status).toBe(S.HV_STATUS_NOT_FOUND);
    expect(rawCall(v, hvAttachDeviceDomain, { input: { device_domain: dd(d), device_id: ioapicDeviceId(1) } }).status).toBe(S.HV_STATUS_INVALID_PARAMETER);
    bed.dispose();
  });

  it("a reconfigured domain moves its devices to the new table", () => {
    const { bed, v, driver } = hvBed();
    const d = unwrap(driver.createDomain());
    unwrap(driver.attach(0x10, d));
    unwrap(driver.map(d, IOVA, DATA_GPA, 0x1000, Perm.ReadWrite));
    expect(v.devices[0]!.device.read(IOVA, 4).ok).toBe(true);
    // Point the domain at another (empty) table: the cached translation must not survive.
    const empty = v.pages.allocate(1)!;
    expect(rawCall(v, hvConfigureDeviceDomain, { input: { device_domain: dd(d), settings: { flags: { translation_enabled: 1 }, page_table_root: BigInt(empty) } } }).status).toBe(S.HV_STATUS_SUCCESS);
    expect(v.devices[0]!.device.read(IOVA, 4).ok).toBe(false);
    expect(rawCall(v, hvConfigureDeviceDomain, { input: { device_domain: dd(d), settings: { flags: { translation_enabled: 0 } } } }).status).toBe(S.HV_STATUS_SUCCESS);
    expect(v.devices[0]!.device.read(DATA_GPA, 4).ok).toBe(true);
    bed.dispose();
  });

  it("flushes: FLUSH_DEVICE_DOMAIN takes no flags; a list needs IOMMU_FORMAT and stops at a misaligned entry", () => {
    const { bed, v, driver } = hvBed();
    const d = unwrap(driver.createDomain());
    expect(rawCall(v, hvFlushDeviceDomain, { input: { device_domain: dd(d), flags: 1 } }).status).toBe(S.HV_STATUS_INVALID_PARAMETER);
    expect(rawCall(v, hvFlushDeviceDomain, { input: { device_domain: dd(d) } }).status).toBe(S.HV_STATUS_SUCCESS);
    const reps = [{ iova: { page_number: 0, page_mask_shift: 0 } }, { iova: { page_number: 8, page_mask_shift: 3 } }, { iova: { page_number: 9, page_mask_shift: 3 } }];
    expect(rawCall(v, hvFlushDeviceDomainList, { input: { device_domain: dd(d) }, reps }).status).toBe(S.HV_STATUS_INVALID_PARAMETER);
    const r = rawCall(v, hvFlushDeviceDomainList, { input: { device_domain: dd(d), flags: { iommu_format: 1 } }, reps });
    expect(r).toMatchObject({ status: S.HV_STATUS_INVALID_PARAMETER, repsCompleted: 2 });
    bed.dispose();
  });
});

describe("rep hypercalls", () => {
  function s2Domain(v: Parameters<typeof rawCall>[0], id: number): void {
    expect(rawCall(v, hvCreateDeviceDomain, { input: { device_domain: dd(id, S2) } }).status).toBe(S.HV_STATUS_SUCCESS);
    expect(rawCall(v, hvAttachDeviceDomain, { input: { device_domain: dd(id, S2), device_id: logicalDeviceId(0x10) } }).status).toBe(S.HV_STATUS_SUCCESS);
  }

  it("are processed in time slices: SUCCESS with the reps completed, resumed from the rep start index", () => {
    const { bed, v, iommu } = hvBed();
    s2Domain(v, 700);
    const reps = Array.from({ length: 300 }, (_, i) => ({ gpa_page_number: BigInt(DATA_GPA / 4096 + i) }));
    const input = { device_domain: dd(700, S2), map_flags: { READABLE: 1, WRITABLE: 1 }, target_device_va_base: BigInt(IOVA) };
    const done: number[] = [];
    let start = 0;
    for (let guard = 0; guard < 10 && start < 300; guard++) {
      const r = rawCall(v, hvMapDeviceGpaPages, { input, reps, repStartIndex: start });
      expect(r.status).toBe(S.HV_STATUS_SUCCESS);
      done.push(r.repsCompleted);
      start = r.repsCompleted;
    }
    expect(done).toEqual([REPS_PER_CALL, 2 * REPS_PER_CALL, 300]);
    expect(iommu.partition.domains!.get(700)!.s2!.size).toBe(300);
    // Consecutive frames went to the host as one mapping per slice.
    expect(iommu.partition.domains!.get(700)!.s2!.areaCount).toBe(3);
    expect(v.devices[0]!.device.write(IOVA + 299 * 4096, Uint8Array.of(9)).ok).toBe(true);
    expect(v.vm.memory.read8(DATA_GPA + 299 * 4096)).toBe(9);
    bed.dispose();
  });

  it("stop at a bad rep, reporting the reps completed before it, which stay mapped", () => {
    const { bed, v, iommu } = hvBed();
    s2Domain(v, 701);
    const end = v.vm.memory.end / 4096;
    const reps = [0, 1, 2, 3, 4].map((i) => ({ gpa_page_number: BigInt(end - 3 + i) }));
    const r = rawCall(v, hvMapDeviceGpaPages, { input: { device_domain: dd(701, S2), map_flags: { READABLE: 1 }, target_device_va_base: BigInt(IOVA) }, reps });
    expect(r).toMatchObject({ status: S.HV_STATUS_INVALID_PARAMETER, repsCompleted: 3 });
    expect(iommu.partition.domains!.get(701)!.s2!.size).toBe(3);
    expect(v.devices[0]!.device.read(IOVA + 2 * 4096, 4).ok).toBe(true);
    expect(v.devices[0]!.device.read(IOVA + 3 * 4096, 4).ok).toBe(false);
    // Read-only: a device write is refused by the stage-2 domain.
    expect(v.devices[0]!.device.write(IOVA, Uint8Array.of(1)).ok).toBe(false);
    // A page already mapped stops the call too.
    const again = rawCall(v, hvMapDeviceGpaPages, { input: { device_domain: dd(701, S2), map_flags: { READABLE: 1 }, target_device_va_base: BigInt(IOVA - 4096) }, reps: reps.slice(0, 2) });
    expect(again).toMatchObject({ status: S.HV_STATUS_INVALID_PARAMETER, repsCompleted: 1 });
    bed.dispose();
  });

  it("MAP needs READABLE, allows WRITABLE only, a page-aligned base and a stage-2 domain", () => {
    const { bed, v, driver } = hvBed();
    s2Domain(v, 702);
    const reps = [{ gpa_page_number: BigInt(DATA_GPA / 4096) }];
    const map = (flags: object, base = BigInt(IOVA), id = 702, type: number = S2): number =>
      rawCall(v, hvMapDeviceGpaPages, { input: { device_domain: dd(id, type), map_flags: flags, target_device_va_base: base }, reps }).status;
    expect(map({ WRITABLE: 1 })).toBe(S.HV_STATUS_INVALID_PARAMETER);
    expect(map({ READABLE: 1, KERNEL_EXECUTABLE: 1 })).toBe(S.HV_STATUS_INVALID_PARAMETER);
    expect(map({ READABLE: 1 }, BigInt(IOVA + 8))).toBe(S.HV_STATUS_INVALID_PARAMETER);
    const s1 = unwrap(driver.createDomain());
    expect(map({ READABLE: 1 }, BigInt(IOVA), s1, HvDeviceDomainType.HV_DEVICE_DOMAIN_TYPE_S1)).toBe(S.HV_STATUS_INVALID_PARAMETER);
    expect(map({ READABLE: 1 }, BigInt(IOVA), 702, HvDeviceDomainType.HV_DEVICE_DOMAIN_TYPE_S1)).toBe(S.HV_STATUS_INVALID_PARAMETER);
    expect(map({ READABLE: 1 })).toBe(S.HV_STATUS_SUCCESS);
    bed.dispose();
  });
});

describe("direct attach (HVCALL_ATTACH_DEVICE / HVCALL_DETACH_DEVICE)", () => {
  it("gives the device GPA-identity DMA under its logical id, which DETACH_DEVICE names to block it again", () => {
    const { bed, v, driver } = hvBed();
    unwrap(driver.detach(0x10));
    expect(v.devices[0]!.device.read(DATA_GPA, 4).ok).toBe(false);
    const pci = pciDeviceId({ bus: 0, device: 2, function: 0 });
    expect(rawCall(v, hvAttachDevice, { input: { partition_id: HV_PARTITION_ID_SELF, device_id: pci, logical_devid: 0x77n } }).status).toBe(S.HV_STATUS_INVALID_PARAMETER);
    expect(rawCall(v, hvAttachDevice, { input: { partition_id: HV_PARTITION_ID_SELF, device_id: pci, attdev_flags: { logical_id: 1 }, logical_devid: 0x77n } }).status).toBe(S.HV_STATUS_SUCCESS);
    expect(v.devices[0]!.device.read(DATA_GPA, 4).ok).toBe(true);
    // While given to the partition, device domains cannot take it.
    const d = unwrap(driver.createDomain());
    expect(rawCall(v, hvAttachDeviceDomain, { input: { device_domain: dd(d), device_id: logicalDeviceId(0x10) } }).status).toBe(S.HV_STATUS_OPERATION_DENIED);
    expect(rawCall(v, hvDetachDevice, { input: { partition_id: HV_PARTITION_ID_SELF, logical_devid: 0x78n } }).status).toBe(S.HV_STATUS_NOT_FOUND);
    expect(rawCall(v, hvDetachDevice, { input: { partition_id: HV_PARTITION_ID_SELF, logical_devid: 0x77n } }).status).toBe(S.HV_STATUS_SUCCESS);
    expect(v.devices[0]!.device.read(DATA_GPA, 4).ok).toBe(false);
    bed.dispose();
  });
});

describe("interrupt hypercalls", () => {
  const descriptor = (vector: number, extra: object = {}): object => ({
    interrupt_type: 0,
    trigger_mode: 0,
    vector_count: 1,
    target: { vector, flags: { processor_set: 1 }, vp_set: { format: BigInt(HvGenericSetFormat.HV_GENERIC_SET_SPARSE_4K) } },
    ...extra,
  });

  it("refuse VPs the VM lacks, bad vectors, several vectors and IO-APIC ids", () => {
    const { bed, v } = hvBed({ vms: [{ devices: [{ rid: 0x100, guestRid: 0x10 }], vcpus: 8 }] });
    const map = (desc: object, vps: number[], id = logicalDeviceId(0x10)): number =>
      rawCall(v, hvMapDeviceInterrupt, { input: { partition_id: HV_PARTITION_ID_SELF, device_id: id, interrupt_descriptor: desc as never }, varHeader: vpSetVariableHeader(vps) }).status;
    expect(map(descriptor(0x40), [7])).toBe(S.HV_STATUS_SUCCESS);
    expect(map(descriptor(0x40), [8])).toBe(S.HV_STATUS_INVALID_VP_INDEX);
    expect(map(descriptor(0x05), [1])).toBe(S.HV_STATUS_INVALID_PARAMETER);
    expect(map(descriptor(0x40, { vector_count: 2 }), [1])).toBe(S.HV_STATUS_INVALID_PARAMETER);
    expect(map(descriptor(0x40, { interrupt_type: 4 }), [1])).toBe(S.HV_STATUS_INVALID_PARAMETER);
    expect(map(descriptor(0x40), [1], ioapicDeviceId(0))).toBe(S.HV_STATUS_INVALID_PARAMETER);
    // A VP set whose variable header disagrees with its bank mask is malformed input.
    expect(
      rawCall(v, hvMapDeviceInterrupt, { input: { partition_id: HV_PARTITION_ID_SELF, device_id: logicalDeviceId(0x10), interrupt_descriptor: descriptor(0x40) as never }, varHeader: [3n, 1n] }).status,
    ).toBe(S.HV_STATUS_INVALID_HYPERCALL_INPUT);
    bed.dispose();
  });

  it("an MSI through an unmapped entry, or another device's entry, is dropped", () => {
    const { bed, v, driver } = hvBed();
    const msi = unwrap(driver.mapInterrupt(0x10, 0x41, 3));
    v.vm.interrupts.take();
    expect(v.iommus[0]!.deliverMsi(0x18, msi)).toMatchObject({ ok: false, fault: { name: "SOURCE_MISMATCH" } });
    expect(v.iommus[0]!.deliverMsi(0x10, { address: 0x1234_0000, data: 0 })).toMatchObject({ ok: false, fault: { name: "NOT_AN_MSI" } });
    unwrap(driver.unmapInterrupt(0x10, msi));
    expect(v.iommus[0]!.deliverMsi(0x10, msi)).toMatchObject({ ok: false, fault: { name: "NO_ENTRY" } });
    expect(v.vm.interrupts.take()).toEqual([]);
    const again = rawCall(v, hvUnmapDeviceInterrupt, {
      input: { partition_id: HV_PARTITION_ID_SELF, device_id: logicalDeviceId(0x10), interrupt_entry: { source: 1, msi_entry: { address: { msi_base: 0xfee }, data: { vector: 0x41 } } } as never },
    });
    expect(again.status).toBe(S.HV_STATUS_INVALID_PARAMETER);
    bed.dispose();
  });

  it("exist without a pvIOMMU (IR-only), where every device-domain call is an unknown call", () => {
    const { bed, v, driver } = hvBed({ mode: "ir-only", guest: { translation: false } });
    expect(rawCall(v, hvGetIommuCapabilities, { input: { partition_id: HV_PARTITION_ID_SELF } }).status).toBe(S.HV_STATUS_INVALID_HYPERCALL_CODE);
    expect(rawCall(v, hvCreateDeviceDomain, { input: { device_domain: dd(5) } }).status).toBe(S.HV_STATUS_INVALID_HYPERCALL_CODE);
    expect(driver.mapInterrupt(0x10, 0x50, 1).ok).toBe(true);
    expect(driver.createDomain().ok).toBe(false);
    bed.dispose();
  });
});

describe("a frozen partition", () => {
  it("answers INVALID_PARTITION_STATE until thawed", () => {
    const { bed, v, iommu } = hvBed();
    iommu.freeze();
    expect(rawCall(v, hvCreateDeviceDomain, { input: { device_domain: dd(800) } }).status).toBe(S.HV_STATUS_INVALID_PARTITION_STATE);
    iommu.thaw();
    expect(rawCall(v, hvCreateDeviceDomain, { input: { device_domain: dd(800) } }).status).toBe(S.HV_STATUS_SUCCESS);
    bed.dispose();
  });
});
