import { describe, expect, it } from "vitest";
import fc from "fast-check";
import { fromWords64, jsonFields } from "@viommu/core";
import { hypervStructures } from "../../src/format/index.js";

function decode(id: string, words: string[]): ReturnType<(typeof hypervStructures)[number]["decode"]> {
  const s = hypervStructures.find((d) => d.id === id);
  if (!s) throw new Error(`no structure ${id}`);
  expect(s.words).toContain(words.length);
  return s.decode(fromWords64(words));
}

describe("viommu decode --vendor hyperv", () => {
  it("offers the value, PTE and every hypercall input id, once each", () => {
    const ids = hypervStructures.map((s) => s.id);
    expect(new Set(ids).size).toBe(ids.length);
    expect(ids).toEqual(
      expect.arrayContaining([
        "hypercall-input",
        "hypercall-result",
        "pte",
        "create-device-domain",
        "attach-device-domain",
        "detach-device-domain",
        "delete-device-domain",
        "configure-device-domain",
        "flush-device-domain",
        "flush-device-domain-list",
        "map-device-gpa-pages",
        "unmap-device-gpa-pages",
        "attach-device",
        "detach-device",
        "get-iommu-capabilities",
        "get-iommu-capabilities-output",
        "get-logical-device-property",
        "get-logical-device-property-output",
        "map-device-interrupt",
        "map-device-interrupt-output",
        "unmap-device-interrupt",
        "retarget-interrupt",
        "retarget-interrupt-arm64",
      ]),
    );
  });

  it("hypercall-input names the call and reports its code (spec §5.1)", () => {
    expect(decode("hypercall-input", ["0x000000000004007c"])).toMatchObject({
      name: "HVCALL_MAP_DEVICE_INTERRUPT",
      code: 0x7c,
      fields: { call_code: 0x7c, variable_header_size: 2, rep_count: 0 },
    });
    expect(decode("hypercall-input", ["0x0000000000001234"])).toMatchObject({ name: "UNKNOWN", code: 0x1234 });
  });

  it("hypercall-result names the status", () => {
    expect(decode("hypercall-result", ["0x000000030000000b"])).toMatchObject({ name: "HV_STATUS_INSUFFICIENT_MEMORY", code: 0xb, fields: { reps_completed: 3 } });
  });

  it("pte decodes the x86 fields", () => {
    expect(decode("pte", ["0x80000000123450e7"])).toMatchObject({ name: "PRESENT", code: 1, fields: { P: 1, RW: 1, PS: 1, ADDR: 0x12345000, XD: 1 } });
    expect(decode("pte", ["0x0000000000000000"])).toMatchObject({ name: "NOT_PRESENT", code: 0 });
  });

  it("create-device-domain decodes the Linux pvIOMMU input page", () => {
    const d = decode("create-device-domain", ["0xffffffffffffffff", "0x0000000000000000", "0x0000000100000001", "0x0000000000000001"]);
    expect(d.name).toBe("HVCALL_CREATE_DEVICE_DOMAIN");
    expect(d.code).toBe(0xb1);
    expect(d.fields).toEqual({
      "device_domain.partition_id": 0xffffffffffffffffn,
      "device_domain.owner_vtl.target_vtl": 0,
      "device_domain.owner_vtl.use_target_vtl": 0,
      "device_domain.padding": 0n,
      "device_domain.domain_id.type": 1,
      "device_domain.domain_id.id": 1,
      "create_device_domain_flags.forward_progress_required": 1,
      "create_device_domain_flags.inherit_owning_vtl": 0,
    });
    expect(jsonFields(d.fields)["device_domain.partition_id"]).toBe("0xffffffffffffffff");
  });

  it("map-device-interrupt sizes the variable header from the VP set (irqdomain.c page)", () => {
    const d = decode("map-device-interrupt", [
      "0x0000000000000001",
      "0x8000000000000000",
      "0x0000000000000000",
      "0x0000000000000000",
      "0x0000000000000000",
      "0x0000000100000000",
      "0x0000000000000001",
      "0x0000000200000030",
      "0x0000000000000000",
      "0x0000000000000001",
      "0x0000000000000001",
      "0x0000000000000000",
    ]);
    expect(d.fields).toMatchObject({
      "device_id.kind": "IOAPIC",
      "interrupt_descriptor.trigger_mode": 1,
      "interrupt_descriptor.target.vector": 0x30,
      "interrupt_descriptor.target.flags.processor_set": 1,
      "var_header.valid_bank_mask": 1n,
      "var_header.bank_contents[0]": 1n,
    });
    expect(d.fields).not.toHaveProperty("var_header.bank_contents[1]");
  });

  it("rep lists decode every whole element present", () => {
    const d = decode("map-device-gpa-pages", ["0xffffffffffffffff", "0x0", "0x0000000700000000", "0x0000000300000000", "0x100000", "0x80000", "0x80001"]);
    expect(d.fields).toMatchObject({ "map_flags.READABLE": 1, "map_flags.WRITABLE": 1, "gpa_page_list[0]": 0x80000n, "gpa_page_list[1]": 0x80001n });
    const f = decode("flush-device-domain-list", ["0x0", "0x0", "0x0000000100000001", "0x1", "0x0000000000010002"]);
    expect(f.fields).toMatchObject({ "iova_list[0].page_number": 0x10, "iova_list[0].page_mask_shift": 2 });
  });

  it("never throws for random words of any accepted size", () => {
    fc.assert(
      fc.property(fc.constantFrom(...hypervStructures), fc.array(fc.bigInt({ min: 0n, max: (1n << 64n) - 1n }), { minLength: 512, maxLength: 512 }), fc.nat(), (s, words, pick) => {
        const n = s.words[pick % s.words.length]!;
        const d = s.decode(fromWords64(words.slice(0, n)));
        expect(typeof d.name).toBe("string");
        expect(Number.isInteger(d.code)).toBe(true);
      }),
      { numRuns: 300 },
    );
  });
});
