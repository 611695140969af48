import { describe, expect, it } from "vitest";
import fc from "fast-check";
import { toHex64, fromBytes } from "@viommu/core";
import {
  HV_HYP_PAGE_SIZE,
  HV_IOMMU_PGSIZES_X86,
  HV_LOGICAL_DEVICE_PROPERTY_PVIOMMU,
  HV_PARTITION_ID_SELF,
  HvStatus,
  decodeHypercallInputPage,
  decodeHypercallOutput,
  encodeDeviceDomainId,
  encodeHypercall,
  encodeHypercallOutput,
  flushRangeEntry,
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
  hvUnmapDeviceGpaPages,
  hypervHypercalls,
  hypercallGpaProblem,
  logicalDeviceId,
  pciDeviceId,
  structProblem,
  type HypercallSpec,
} from "../../src/format/index.js";

/** The input bytes as 64-bit words, lowest first (a trailing partial word zero-padded). */
function words(bytes: Uint8Array): string[] {
  const padded = new Uint8Array(Math.ceil(bytes.length / 8) * 8);
  padded.set(bytes);
  return toHex64(fromBytes(padded, 0, padded.length * 8));
}

/** A page holding `bytes` at page offset `at` (cut at the page end), seen from the input GPA on. */
function page(bytes: Uint8Array, at = 0): Uint8Array {
  const p = new Uint8Array(HV_HYP_PAGE_SIZE);
  p.set(bytes.subarray(0, HV_HYP_PAGE_SIZE - at), at);
  return p.subarray(at);
}

const SELF = "0xffffffffffffffff";
const s1Domain1 = { partition_id: HV_PARTITION_ID_SELF, domain_id: { type: 1, id: 1 } };

// Input pages as the Linux pvIOMMU driver (series (a), drivers/iommu/hyperv/iommu.c, 2026 revision read through the
// search index) fills them: memset 0, partition_id = HV_PARTITION_ID_SELF, domain_id.type = S1, id from the ida range.
// Offsets: spec arm-hyperv-virtio.md §5.4 table. All PROVISIONAL (unmerged series).
describe("device-domain hypercall inputs (spec §5.4)", () => {
  it("CREATE_DEVICE_DOMAIN: device_domain @0, flags @24 with forward_progress_required = 1", () => {
    const { control, bytes } = encodeHypercall(hvCreateDeviceDomain, {
      input: { device_domain: s1Domain1, create_device_domain_flags: { forward_progress_required: 1 } },
    });
    expect(control).toBe(0xb1n);
    expect(bytes.length).toBe(28);
    expect(words(bytes)).toEqual([SELF, "0x0000000000000000", "0x0000000100000001", "0x0000000000000001"]);
    const d = decodeHypercallInputPage(hvCreateDeviceDomain, control, page(bytes));
    expect(d.ok && d.input.device_domain.domain_id).toEqual({ type: 1, id: 1 });
    expect(d.ok && d.input.create_device_domain_flags).toEqual({ forward_progress_required: 1, inherit_owning_vtl: 0 });
  });

  it.each([
    ["identity: translation_enabled = 0", { translation_enabled: 0 }, 0n, "0x0000000000000000"],
    ["blocking: translation_enabled = 1, blocked = 1", { translation_enabled: 1, blocked: 1 }, 0n, "0x0000000000000003"],
    ["paging, 4-level, root 0x123456000", { translation_enabled: 1 }, 0x123456000n, "0x0000000000000001"],
    ["paging, 5-level (first_stage_paging_mode = 1)", { translation_enabled: 1, first_stage_paging_mode: 1 }, 0x7000n, "0x0000000000000005"],
  ])("CONFIGURE_DEVICE_DOMAIN %s: settings.flags @24, page_table_root @32", (_what, flags, root, flagsWord) => {
    const { control, bytes } = encodeHypercall(hvConfigureDeviceDomain, { input: { device_domain: s1Domain1, settings: { flags, page_table_root: root } } });
    expect(control).toBe(0xcen);
    expect(words(bytes)).toEqual([SELF, "0x0000000000000000", "0x0000000100000001", flagsWord, `0x${root.toString(16).padStart(16, "0")}`]);
    const d = decodeHypercallInputPage(hvConfigureDeviceDomain, control, page(bytes));
    expect(d.ok && d.input.settings.page_table_root).toBe(root);
  });

  it("ATTACH_DEVICE_DOMAIN: device_id @24 = logical (prefix | PCI function)", () => {
    const { control, bytes } = encodeHypercall(hvAttachDeviceDomain, { input: { device_domain: s1Domain1, device_id: logicalDeviceId(0x9abcdef1n) } });
    expect(control).toBe(0xb2n);
    expect(words(bytes)).toEqual([SELF, "0x0000000000000000", "0x0000000100000001", "0x000000009abcdef1"]);
    const d = decodeHypercallInputPage(hvAttachDeviceDomain, control, page(bytes));
    expect(d.ok && d.input.device_id).toEqual({ kind: "LOGICAL", fields: { id: 0x9abcdef1n, device_type: 0 } });
  });

  it("DETACH_DEVICE_DOMAIN: partition_id @0, device_id @8, no domain", () => {
    const { control, bytes } = encodeHypercall(hvDetachDeviceDomain, { input: { partition_id: HV_PARTITION_ID_SELF, device_id: logicalDeviceId(0x9abcdef1n) } });
    expect(control).toBe(0xc4n);
    expect(words(bytes)).toEqual([SELF, "0x000000009abcdef1"]);
  });

  it("DELETE_DEVICE_DOMAIN and FLUSH_DEVICE_DOMAIN carry the device domain (flush: flags @24, reserved @28)", () => {
    expect(words(encodeHypercall(hvDeleteDeviceDomain, { input: { device_domain: s1Domain1 } }).bytes)).toEqual([SELF, "0x0000000000000000", "0x0000000100000001"]);
    const flush = encodeHypercall(hvFlushDeviceDomain, { input: { device_domain: s1Domain1 } });
    expect(flush.control).toBe(0xd0n);
    expect(words(flush.bytes)).toEqual([SELF, "0x0000000000000000", "0x0000000100000001", "0x0000000000000000"]);
  });

  it("FLUSH_DEVICE_DOMAIN_LIST: IOMMU_FORMAT flag, one (page_number, page_mask_shift) rep (hv_iommu_calc_flush_range)", () => {
    // [0x11000, 0x12fff]: start ^ end = 0x3fff → 2^14 bytes from 0x10000: page 0x10, shift 2 (over-flush, as VT-d PSI).
    const entry = flushRangeEntry(0x11000n, 0x12fffn);
    expect(entry).toEqual({ page_number: 0x10, page_mask_shift: 2 });
    const { control, bytes } = encodeHypercall(hvFlushDeviceDomainList, {
      input: { device_domain: s1Domain1, flags: { iommu_format: 1 } },
      reps: [{ iova: entry }],
    });
    expect(control).toBe(0x00000001000000d1n);
    expect(words(bytes)).toEqual([SELF, "0x0000000000000000", "0x0000000100000001", "0x0000000000000001", "0x0000000000010002"]);
    const d = decodeHypercallInputPage(hvFlushDeviceDomainList, control, page(bytes));
    expect(d.ok && d.reps).toEqual([{ iova: { page_mask_shift: 2, page_number: 0x10 } }]);
  });

  it.each([
    [0x10000n, 0x10fffn, 0x10, 0],
    [0x10000n, 0x13fffn, 0x10, 2],
    [0x0n, 0x1fffffn, 0x0, 9],
    [0x123n, 0x123n, 0x0, 0],
    [0x0n, (1n << 64n) - 1n, 0x0, 52],
  ])("flush range [%i, %i] → page %i, shift %i (Linux hv_iommu_calc_flush_range)", (start, end, pageNumber, shift) => {
    expect(flushRangeEntry(start, end)).toEqual({ page_number: pageNumber, page_mask_shift: shift });
  });
});

// Series (b), root / L1VH passthrough (Mukesh Rathor): hv_iommu_map_pgs fills the domain (S2), map_flags
// READABLE | WRITABLE, target_device_va_base = iova and one GPA frame number per rep.
describe("stage-2 map/unmap and direct attach inputs (spec §5.4, provisional)", () => {
  const s2Domain7 = { partition_id: HV_PARTITION_ID_SELF, domain_id: { type: 0, id: 7 } };

  it("MAP_DEVICE_GPA_PAGES: map_flags @28, target_device_va_base @32, gpa_page_list @40, rep count = pages", () => {
    const { control, bytes } = encodeHypercall(hvMapDeviceGpaPages, {
      input: { device_domain: s2Domain7, map_flags: { READABLE: 1, WRITABLE: 1 }, target_device_va_base: 0x100000n },
      reps: [{ gpa_page_number: 0x80000n }, { gpa_page_number: 0x80001n }],
    });
    expect(control).toBe(0x00000002000000b3n);
    expect(words(bytes)).toEqual([SELF, "0x0000000000000000", "0x0000000700000000", "0x0000000300000000", "0x0000000000100000", "0x0000000000080000", "0x0000000000080001"]);
    const d = decodeHypercallInputPage(hvMapDeviceGpaPages, control, page(bytes));
    expect(d.ok && d.reps.map((r) => r.gpa_page_number)).toEqual([0x80000n, 0x80001n]);
  });

  it("UNMAP_DEVICE_GPA_PAGES: target_device_va_base @24, the rep count alone says how many pages", () => {
    const { control, bytes } = encodeHypercall(hvUnmapDeviceGpaPages, { input: { device_domain: s2Domain7, target_device_va_base: 0x100000n }, repCount: 2 });
    expect(control).toBe(0x00000002000000b4n);
    expect(words(bytes)).toEqual([SELF, "0x0000000000000000", "0x0000000700000000", "0x0000000000100000"]);
    expect(decodeHypercallInputPage(hvUnmapDeviceGpaPages, control, page(bytes))).toMatchObject({ ok: true, repCount: 2, reps: [] });
  });

  it("ATTACH_DEVICE: flags @16, attdev_vtl @20, logical_devid @24, PCI caps @32, pf_pci_rid @36 (40 bytes)", () => {
    const { control, bytes } = encodeHypercall(hvAttachDevice, {
      input: {
        partition_id: 5n,
        device_id: pciDeviceId({ bus: 0x3a, device: 2, function: 1 }),
        attdev_flags: { logical_id: 1, ats_supported: 1 },
        logical_devid: 0x1234n,
        dev_pcicaps: { max_pasid_width: 20, invalidate_qdepth: 0, global_inval: 1 },
        pf_pci_rid: 0x3a10,
      },
    });
    expect(control).toBe(0x82n);
    expect(words(bytes)).toEqual(["0x0000000000000005", "0x4000000000003a11", "0x0000000000000041", "0x0000000000001234", "0x00003a1000000414"]);
  });

  it("DETACH_DEVICE: partition_id, logical_devid", () => {
    expect(words(encodeHypercall(hvDetachDevice, { input: { partition_id: 5n, logical_devid: 0x1234n } }).bytes)).toEqual(["0x0000000000000005", "0x0000000000001234"]);
  });
});

// Series (a) discovery: hv_iommu_detect / hv_iommu_get_dev_property.
describe("discovery hypercalls (spec §5.4, provisional)", () => {
  it("GET_IOMMU_CAPABILITIES: input partition_id SELF; output size, widths @6/@7, iommu_cap @8, pgsize_bitmap @16", () => {
    const { control, bytes } = encodeHypercall(hvGetIommuCapabilities, { input: { partition_id: HV_PARTITION_ID_SELF } });
    expect(control).toBe(0x125n);
    expect(words(bytes)).toEqual([SELF, "0x0000000000000000"]);
    const out = encodeHypercallOutput(hvGetIommuCapabilities, {
      size: 24,
      max_iova_width: 48,
      max_pasid_width: 0,
      iommu_cap: { PRESENT: 1, S1: 1, ATS: 1 },
      pgsize_bitmap: HV_IOMMU_PGSIZES_X86,
    });
    expect(words(out)).toEqual(["0x0030000000000018", "0x0000000000000025", "0x0000000040201000"]);
    expect(decodeHypercallOutput(hvGetIommuCapabilities, out)?.iommu_cap).toEqual({ PRESENT: 1, S2: 0, S1: 1, S1_5LVL: 0, PASID: 0, ATS: 1, PRI: 0 });
    expect(decodeHypercallOutput(hvGetIommuCapabilities, out.subarray(0, 16))).toBeUndefined();
  });

  it("GET_LOGICAL_DEVICE_PROPERTY: code @16 = 10 (PVIOMMU); output device_iommu bit 0", () => {
    const { bytes } = encodeHypercall(hvGetLogicalDeviceProperty, {
      input: { partition_id: HV_PARTITION_ID_SELF, logical_device_id: 0x9abcdef1n, code: HV_LOGICAL_DEVICE_PROPERTY_PVIOMMU },
    });
    expect(words(bytes)).toEqual([SELF, "0x000000009abcdef1", "0x000000000000000a"]);
    const out = encodeHypercallOutput(hvGetLogicalDeviceProperty, { device_iommu: { HV_DEVICE_IOMMU_ENABLED: 1 } });
    expect(words(out)).toEqual(["0x0000000000000001", "0x0000000000000000"]);
  });
});

describe("hostile input pages become the hypervisor's status", () => {
  const create = encodeHypercall(hvCreateDeviceDomain, { input: { device_domain: s1Domain1, create_device_domain_flags: { forward_progress_required: 1 } } });
  const withByte = (at: number, value: number): Uint8Array => {
    const b = page(create.bytes);
    b[at] = value;
    return b;
  };

  it.each([
    ["a control word for another call", 0xb2n, page(create.bytes), HvStatus.HV_STATUS_INVALID_HYPERCALL_CODE],
    ["a variable header on a call that takes none", 0x200b1n, page(create.bytes), HvStatus.HV_STATUS_INVALID_HYPERCALL_INPUT],
    ["a rep count on a simple call", 0x1000000b1n, page(create.bytes), HvStatus.HV_STATUS_INVALID_HYPERCALL_INPUT],
    ["padding byte 9 set", 0xb1n, withByte(9, 1), HvStatus.HV_STATUS_INVALID_PARAMETER],
    ["owner_vtl reserved bit 5", 0xb1n, withByte(8, 0x20), HvStatus.HV_STATUS_INVALID_PARAMETER],
    ["domain_id reserved bit 4", 0xb1n, withByte(16, 0x11), HvStatus.HV_STATUS_INVALID_PARAMETER],
    ["create flags reserved bit 2", 0xb1n, withByte(24, 0x05), HvStatus.HV_STATUS_INVALID_PARAMETER],
    ["an input running past the page (GPA at page offset 4072, 24 bytes left)", 0xb1n, page(create.bytes, 4072), HvStatus.HV_STATUS_INVALID_ALIGNMENT],
  ])("CREATE_DEVICE_DOMAIN with %s", (_what, control, bytes, status) => {
    expect(decodeHypercallInputPage(hvCreateDeviceDomain, control, bytes)).toMatchObject({ ok: false, status });
  });

  it("requires 8-byte aligned input GPAs", () => {
    expect(hypercallGpaProblem(0x1000)).toBeUndefined();
    expect(hypercallGpaProblem(0x1004)).toBe(HvStatus.HV_STATUS_INVALID_ALIGNMENT);
  });

  it("accepts an input that ends exactly at the page end", () => {
    expect(decodeHypercallInputPage(hvCreateDeviceDomain, 0xb1n, page(create.bytes, 4096 - 28)).ok).toBe(true);
  });

  it("fits (4096 − 40) / 8 = 507 GPA frames in a page (Linux HV_MAP_DEVICE_GPA_BATCH_SIZE), not 508, and rejects zero reps", () => {
    const map = encodeHypercall(hvMapDeviceGpaPages, { input: { device_domain: s1Domain1, map_flags: { READABLE: 1 } }, reps: [{ gpa_page_number: 1n }] });
    expect(decodeHypercallInputPage(hvMapDeviceGpaPages, 0x000001fb000000b3n, page(map.bytes))).toMatchObject({ ok: true, repCount: 507 });
    expect(decodeHypercallInputPage(hvMapDeviceGpaPages, 0x000001fc000000b3n, page(map.bytes))).toMatchObject({ ok: false, status: HvStatus.HV_STATUS_INVALID_ALIGNMENT });
    expect(decodeHypercallInputPage(hvMapDeviceGpaPages, 0xb3n, page(map.bytes))).toMatchObject({ ok: false, status: HvStatus.HV_STATUS_INVALID_HYPERCALL_INPUT });
  });

  it("rejects reserved flag bits in a rep element's header and a reserved PCI device-id bit", () => {
    const list = encodeHypercall(hvFlushDeviceDomainList, { input: { device_domain: s1Domain1, flags: { iommu_format: 1 } }, reps: [{ iova: { page_number: 1 } }] });
    const bad = page(list.bytes);
    bad[24] = 0x03;
    expect(decodeHypercallInputPage(hvFlushDeviceDomainList, list.control, bad)).toMatchObject({ ok: false, status: HvStatus.HV_STATUS_INVALID_PARAMETER });
    const attach = encodeHypercall(hvAttachDeviceDomain, { input: { device_domain: s1Domain1, device_id: 0x4008000000013a11n } });
    expect(decodeHypercallInputPage(hvAttachDeviceDomain, attach.control, page(attach.bytes))).toMatchObject({ ok: false, status: HvStatus.HV_STATUS_INVALID_PARAMETER });
  });

  it("never throws for random control words and page contents, for every hypercall", () => {
    fc.assert(
      fc.property(
        fc.constantFrom(...hypervHypercalls),
        fc.bigInt({ min: 0n, max: (1n << 64n) - 1n }),
        fc.uint8Array({ minLength: 0, maxLength: 256 }),
        fc.integer({ min: 0, max: HV_HYP_PAGE_SIZE }),
        (s: HypercallSpec, control, content, at) => {
          // Force the call's own code half the time so decoding gets past the dispatch check.
          const c = control & 1n ? (control & ~0xffffn) | BigInt(s.code) : control;
          const d = decodeHypercallInputPage(s, c, page(content, at));
          if (!d.ok) expect(Object.values(HvStatus)).toContain(d.status);
        },
      ),
    );
  });

  it("re-encodes what it decoded, byte for byte, for clean headers", () => {
    fc.assert(
      fc.property(fc.constantFrom(...hypervHypercalls.filter((s) => s.variableHeader === "none")), fc.uint8Array({ minLength: 64, maxLength: 64 }), (s, content) => {
        const bytes = content.subarray(0, s.input.size);
        if (structProblem(s.input, bytes) !== undefined) return;
        const control = s.rep ? (1n << 32n) | BigInt(s.code) : BigInt(s.code);
        const p = page(new Uint8Array([...bytes, ...new Uint8Array(8)]));
        const d = decodeHypercallInputPage(s, control, p);
        expect(d.ok).toBe(true);
        if (!d.ok) return;
        const again = encodeHypercall(s, { input: d.input as never, reps: d.reps as never, repCount: d.repCount });
        expect(Array.from(again.bytes.subarray(0, s.input.size))).toEqual(Array.from(bytes));
      }),
    );
  });

  it("keeps the domain-id encoding consistent with the page layout", () => {
    const bytes = encodeHypercall(hvDeleteDeviceDomain, { input: { device_domain: { domain_id: { type: 1, id: 9 } } } }).bytes;
    expect(new DataView(bytes.buffer).getBigUint64(16, true)).toBe(encodeDeviceDomainId({ type: 1, id: 9 }));
  });
});
