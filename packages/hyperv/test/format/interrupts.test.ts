import { describe, expect, it } from "vitest";
import fc from "fast-check";
import { fromBytes, toHex64 } from "@viommu/core";
import {
  HV_HYP_PAGE_SIZE,
  HV_PARTITION_ID_SELF,
  HvGenericSetFormat,
  HvInterruptSource,
  HvInterruptTriggerMode,
  HvInterruptType,
  HvStatus,
  decodeHypercallInputPage,
  decodeHypercallOutput,
  encodeHypercall,
  encodeHypercallOutput,
  hvMapDeviceInterrupt,
  hvRetargetInterrupt,
  hvRetargetInterruptArm64,
  hvUnmapDeviceInterrupt,
  interruptEntryX64,
  ioapicDeviceId,
  mapDeviceInterruptInputLayouts,
  msiMessageOf,
  readInterruptEntry,
  retargetInterruptInputLayouts,
  targetProcessors,
  unmapDeviceInterruptInputLayouts,
  vpSetVariableHeader,
  writeStruct,
  defineByteLayout,
} from "../../src/format/index.js";

function words(bytes: Uint8Array): string[] {
  const padded = new Uint8Array(Math.ceil(bytes.length / 8) * 8);
  padded.set(bytes);
  return toHex64(fromBytes(padded, 0, padded.length * 8));
}

function page(bytes: Uint8Array): Uint8Array {
  const p = new Uint8Array(HV_HYP_PAGE_SIZE);
  p.set(bytes);
  return p;
}

const entryLayout = defineByteLayout("entry", 16, [{ name: "e", offset: 0, codec: interruptEntryX64 }] as const);

// Offsets: spec arm-hyperv-virtio.md §5.2 and Linux include/hyperv/hvhdk_mini.h / hvgdk_mini.h (packed structures).
describe("interrupt hypercall layouts (spec §5.2)", () => {
  it("MAP_DEVICE_INTERRUPT: fixed header 72 bytes on x86 (descriptor @40, target @56), 80 on arm64", () => {
    expect(mapDeviceInterruptInputLayouts.x64.size).toBe(72);
    expect(mapDeviceInterruptInputLayouts.arm64.size).toBe(80);
    expect(mapDeviceInterruptInputLayouts.x64.fields.map((f) => [f.name, f.offset])).toEqual([
      ["partition_id", 0],
      ["device_id", 8],
      ["flags", 16],
      ["base_irt_idx", 20],
      ["logical_interrupt_entry", 24],
      ["interrupt_descriptor", 40],
    ]);
  });

  it("RETARGET_INTERRUPT: reserved @32 / int_target @40 on x86, @40 / @48 on arm64 (spec §5.2)", () => {
    const offsets = (l: typeof retargetInterruptInputLayouts.x64 | typeof retargetInterruptInputLayouts.arm64): number[] => l.fields.map((f) => f.offset);
    expect(offsets(retargetInterruptInputLayouts.x64)).toEqual([0, 8, 16, 32, 40]);
    expect(offsets(retargetInterruptInputLayouts.arm64)).toEqual([0, 8, 16, 40, 48]);
    expect(retargetInterruptInputLayouts.x64.size).toBe(56);
    expect(retargetInterruptInputLayouts.arm64.size).toBe(64);
  });

  it("UNMAP_DEVICE_INTERRUPT: interrupt_entry @16, flags after it (36 bytes x86, 44 arm64)", () => {
    expect(unmapDeviceInterruptInputLayouts.x64.size).toBe(36);
    expect(unmapDeviceInterruptInputLayouts.arm64.size).toBe(44);
  });
});

// arch/x86/hyperv/irqdomain.c hv_map_interrupt(): memset 0, partition_id, device_id, interrupt_type FIXED,
// vector_count 1, target.vector, trigger level/edge, vp_set SPARSE_4K built by cpumask_to_vpset, flags
// PROCESSOR_SET, var_size = nr_bank + 1, hv_do_rep_hypercall(HVCALL_MAP_DEVICE_INTERRUPT, 0, var_size, ...).
describe("MAP_DEVICE_INTERRUPT as the root partition maps an IO-APIC pin", () => {
  const build = (vps: number[]): ReturnType<typeof encodeHypercall<typeof hvMapDeviceInterrupt>> =>
    encodeHypercall(hvMapDeviceInterrupt, {
      input: {
        partition_id: 1n,
        device_id: ioapicDeviceId(0),
        interrupt_descriptor: {
          interrupt_type: HvInterruptType.HV_X64_INTERRUPT_TYPE_FIXED,
          trigger_mode: HvInterruptTriggerMode.HV_INTERRUPT_TRIGGER_MODE_LEVEL,
          vector_count: 1,
          target: { vector: 0x30, flags: { processor_set: 1 }, vp_set: { format: BigInt(HvGenericSetFormat.HV_GENERIC_SET_SPARSE_4K) } },
        },
      },
      varHeader: vpSetVariableHeader(vps),
    });

  it("VP 0: var header = valid_bank_mask 1 + one bank → control 0x4007c", () => {
    const { control, bytes } = build([0]);
    expect(control).toBe(0x000000000004007cn);
    expect(words(bytes)).toEqual([
      "0x0000000000000001", // partition_id
      "0x8000000000000000", // device_id: IO-APIC 0
      "0x0000000000000000", // flags, base_irt_idx
      "0x0000000000000000", // logical_interrupt_entry (left zero by Linux)
      "0x0000000000000000",
      "0x0000000100000000", // interrupt_type FIXED, trigger_mode LEVEL
      "0x0000000000000001", // vector_count 1, reserved
      "0x0000000200000030", // target.vector 0x30, target.flags PROCESSOR_SET
      "0x0000000000000000", // vp_set.format SPARSE_4K
      "0x0000000000000001", // var header: valid_bank_mask
      "0x0000000000000001", // bank_contents[0]: VP 0
    ]);
    const d = decodeHypercallInputPage(hvMapDeviceInterrupt, control, page(bytes));
    expect(d.ok).toBe(true);
    if (!d.ok) return;
    expect(d.varHeader).toEqual([1n, 1n]);
    expect(d.input.logical_interrupt_entry.source).toBe(0);
    const t = d.input.interrupt_descriptor.target;
    expect(targetProcessors(t.flags.processor_set, t.vp_set.format, d.varHeader, 127)).toEqual([0]);
  });

  it("VP 65: cpumask_to_vpset keeps empty bank 0 → valid_bank_mask 0b11, var header 3", () => {
    const { control, bytes } = build([65]);
    expect(control).toBe(0x000000000006007cn);
    expect(words(bytes).slice(9)).toEqual(["0x0000000000000003", "0x0000000000000000", "0x0000000000000002"]);
    const d = decodeHypercallInputPage(hvMapDeviceInterrupt, control, page(bytes));
    expect(d.ok && targetProcessors(1, 0n, d.varHeader, 127)).toEqual([65]);
  });

  it.each([
    ["a var header one word short of the VP set", 0x000000000002007cn, HvStatus.HV_STATUS_INVALID_HYPERCALL_INPUT],
    ["a var header one word too long", 0x000000000006007cn, HvStatus.HV_STATUS_INVALID_HYPERCALL_INPUT],
    ["no var header with PROCESSOR_SET", 0x000000000000007cn, HvStatus.HV_STATUS_INVALID_HYPERCALL_INPUT],
  ])("rejects %s", (_what, control, status) => {
    expect(decodeHypercallInputPage(hvMapDeviceInterrupt, control, page(build([0]).bytes))).toMatchObject({ ok: false, status });
  });

  it("rejects an unknown VP set format and a reserved descriptor word", () => {
    const { control, bytes } = build([0]);
    const badFormat = page(bytes);
    badFormat[64] = 5;
    expect(decodeHypercallInputPage(hvMapDeviceInterrupt, control, badFormat)).toMatchObject({ ok: false, status: HvStatus.HV_STATUS_INVALID_PARAMETER });
    const badReserved = page(bytes);
    badReserved[52] = 1;
    expect(decodeHypercallInputPage(hvMapDeviceInterrupt, control, badReserved)).toMatchObject({ ok: false, status: HvStatus.HV_STATUS_INVALID_PARAMETER });
  });

  it("output: the IO-APIC RTE to program (entry source 2) and five deprecated status words", () => {
    const out = encodeHypercallOutput(hvMapDeviceInterrupt, {
      interrupt_entry: {
        source: HvInterruptSource.HV_INTERRUPT_SOURCE_IOAPIC,
        ioapic_rte: { vector: 0x30, destination_mode: 1, trigger_mode: 1, destination_id: 1 },
      },
    });
    expect(out.length).toBe(56);
    expect(words(out).slice(0, 2)).toEqual(["0x0000000000000002", "0x0100000000008830"]);
    const decoded = decodeHypercallOutput(hvMapDeviceInterrupt, out);
    expect(decoded?.interrupt_entry.ioapic_rte).toMatchObject({ vector: 0x30, destination_mode: 1, trigger_mode: 1, destination_id: 1, interrupt_mask: 0 });
    expect(decoded?.interrupt_entry.msi_entry).toBeUndefined();
  });
});

// hv_interrupt_entry with an x86 MSI payload (hvgdk_mini.h hv_msi_address_register / hv_msi_data_register).
describe("hv_interrupt_entry (spec §5.2)", () => {
  it("MSI entry: address 0xFEE01000 (msi_base 0xFEE, destination_id 1), data vector 0x41 edge fixed", () => {
    const bytes = writeStruct(entryLayout, {
      e: { source: HvInterruptSource.HV_INTERRUPT_SOURCE_MSI, msi_entry: { address: { msi_base: 0xfee, destination_id: 1 }, data: { vector: 0x41 } } },
    });
    expect(words(bytes)).toEqual(["0x0000000000000001", "0x00000041fee01000"]);
    expect(readInterruptEntry("x64", bytes).msi_entry).toEqual({
      address: { destination_mode: 0, redirection_hint: 0, destination_id: 1, msi_base: 0xfee },
      data: { vector: 0x41, delivery_mode: 0, level_assert: 0, trigger_mode: 0 },
    });
    // The MSI message Linux's root partition composes from the returned entry (irqdomain.c entry_to_msi_msg).
    expect(msiMessageOf(bytes)).toEqual({ address_lo: 0xfee01000, address_hi: 0, data: 0x41 });
  });

  it("arm64 MSI entry: 64-bit address, data, reserved (24-byte entry)", () => {
    const d = readInterruptEntry("arm64", Uint8Array.from([1, 0, 0, 0, 0, 0, 0, 0, 0x40, 0, 0x8a, 0x08, 0, 0, 0, 0, 0x41, 0, 0, 0, 0, 0, 0, 0]));
    expect(d.msi_entry).toEqual({ address: 0x088a0040n, data: 0x41, reserved: 0 });
  });
});

// drivers/pci/controller/pci-hyperv.c hv_arch_irq_unmask(): partition SELF, vPCI device id, MSI int_entry from the
// composed message, int_target.vector, PROCESSOR_SET with var_size = 1 + nr_bank (protocol ≥ 1.2) or vp_mask.
describe("RETARGET_INTERRUPT as the vPCI driver issues it", () => {
  const input = {
    partition_id: HV_PARTITION_ID_SELF,
    device_id: 0x9abcdef0n,
    int_entry: { source: HvInterruptSource.HV_INTERRUPT_SOURCE_MSI, msi_entry: { address: { msi_base: 0xfee, destination_id: 1 }, data: { vector: 0x41 } } },
  };

  it("with a VP set (VPs 1 and 2): var_size 2, control 0x4007e", () => {
    const { control, bytes } = encodeHypercall(hvRetargetInterrupt, {
      input: { ...input, int_target: { vector: 0x41, flags: { processor_set: 1 }, vp_set: { format: 0n } } },
      varHeader: vpSetVariableHeader([1, 2]),
    });
    expect(control).toBe(0x000000000004007en);
    expect(words(bytes)).toEqual([
      "0xffffffffffffffff",
      "0x000000009abcdef0",
      "0x0000000000000001",
      "0x00000041fee01000",
      "0x0000000000000000", // reserved2 @32
      "0x0000000200000041", // int_target @40: vector, flags
      "0x0000000000000000", // vp_set.format
      "0x0000000000000001", // valid_bank_mask
      "0x0000000000000006", // bank 0: VPs 1, 2
    ]);
    expect(decodeHypercallInputPage(hvRetargetInterrupt, control, page(bytes)).ok).toBe(true);
  });

  it("with a 64-bit vp_mask (protocol < 1.2): no variable header", () => {
    const { control, bytes } = encodeHypercall(hvRetargetInterrupt, { input: { ...input, int_target: { vector: 0x41, vp_mask: 0x6n } } });
    expect(control).toBe(0x7en);
    expect(words(bytes).slice(5)).toEqual(["0x0000000000000041", "0x0000000000000006"]);
    const d = decodeHypercallInputPage(hvRetargetInterrupt, control, page(bytes));
    expect(d.ok && targetProcessors(0, d.input.int_target.vp_mask, d.varHeader, 63)).toEqual([1, 2]);
    // A variable header the target does not call for is rejected.
    expect(decodeHypercallInputPage(hvRetargetInterrupt, 0x2007en, page(bytes))).toMatchObject({ ok: false, status: HvStatus.HV_STATUS_INVALID_HYPERCALL_INPUT });
  });

  it("rejects a nonzero reserved2 word", () => {
    const { control, bytes } = encodeHypercall(hvRetargetInterrupt, { input: { ...input, int_target: { vector: 0x41, vp_mask: 1n } } });
    const bad = page(bytes);
    bad[32] = 1;
    expect(decodeHypercallInputPage(hvRetargetInterrupt, control, bad)).toMatchObject({ ok: false, status: HvStatus.HV_STATUS_INVALID_PARAMETER });
  });

  it("arm64: int_target at @48, the VP set's var header at @64", () => {
    const { bytes } = encodeHypercall(hvRetargetInterruptArm64, {
      input: { partition_id: HV_PARTITION_ID_SELF, device_id: 0x9abcdef0n, int_entry: { source: 1, msi_entry: { address: 0x088a0040n, data: 0x41 } }, int_target: { vector: 0x41, flags: { processor_set: 1 } } },
      varHeader: vpSetVariableHeader([0]),
    });
    expect(words(bytes).slice(6)).toEqual(["0x0000000200000041", "0x0000000000000000", "0x0000000000000001", "0x0000000000000001"]);
  });
});

describe("UNMAP_DEVICE_INTERRUPT as irqdomain.c hv_unmap_interrupt issues it", () => {
  it("copies back the entry MAP returned; flags @32", () => {
    const { control, bytes } = encodeHypercall(hvUnmapDeviceInterrupt, {
      input: { partition_id: 1n, device_id: ioapicDeviceId(0), interrupt_entry: { source: 2, ioapic_rte: { vector: 0x30, trigger_mode: 1 } } },
    });
    expect(control).toBe(0x7dn);
    expect(bytes.length).toBe(36);
    expect(words(bytes)).toEqual(["0x0000000000000001", "0x8000000000000000", "0x0000000000000002", "0x0000000000008030", "0x0000000000000000"]);
  });
});

describe("VP sets", () => {
  it("decode what vpSetVariableHeader encodes, for any VP list", () => {
    fc.assert(
      fc.property(fc.uniqueArray(fc.integer({ min: 0, max: 4095 }), { maxLength: 20 }), (vps) => {
        const header = vpSetVariableHeader(vps);
        expect(targetProcessors(1, 0n, header, 4095)).toEqual([...vps].sort((a, b) => a - b));
      }),
    );
  });

  it("HV_GENERIC_SET_ALL selects every VP", () => {
    expect(targetProcessors(1, 1n, [0n], 3)).toEqual([0, 1, 2, 3]);
  });
});
