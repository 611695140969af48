import { describe, expect, it } from "vitest";
import { GuestMemory, HostMemory, Perm } from "@viommu/core";
import { vtdShadowAdmit } from "../../src/vmm/shadow-admission.js";

const GIB = 2 ** 30;

describe("what a VT-d guest leaf becomes in the shadow", () => {
  const memory = new GuestMemory(new HostMemory(), 1, { sizeBytes: 4 * GIB });
  const leaf = (output: number, pageShift: number, perms: number) => ({ input: 0x10_0000, output, pageShift, perms, level: 1 + (pageShift - 12) / 9, entryAddress: 0 });

  it("installs a leaf's read/write permissions when its output is guest RAM", () => {
    expect(vtdShadowAdmit(memory, false)(leaf(0x2000_0000, 12, Perm.ReadWrite))).toBe(Perm.ReadWrite);
    expect(vtdShadowAdmit(memory, false)(leaf(0x2000_0000, 21, Perm.Read))).toBe(Perm.Read);
  });

  it("leaves out a first-level leaf without U/S: requests without PASID are user requests (RID_PRIV 0)", () => {
    expect(vtdShadowAdmit(memory, true)(leaf(0x2000_0000, 12, Perm.ReadWrite))).toBe(0);
    expect(vtdShadowAdmit(memory, true)(leaf(0x2000_0000, 12, Perm.ReadWrite | Perm.User))).toBe(Perm.ReadWrite);
    // Second-level leaves have no U/S.
    expect(vtdShadowAdmit(memory, false)(leaf(0x2000_0000, 12, Perm.ReadWrite))).toBe(Perm.ReadWrite);
  });

  it("leaves out any leaf overlapping the interrupt range 0xFEE00000-0xFEEFFFFF, even inside guest RAM", () => {
    const admit = vtdShadowAdmit(memory, false);
    expect(admit(leaf(0xfee0_0000, 12, Perm.ReadWrite))).toBe(0);
    expect(admit(leaf(0xfeef_f000, 12, Perm.ReadWrite))).toBe(0);
    expect(admit(leaf(0xc000_0000, 30, Perm.ReadWrite))).toBe(0);
    expect(admit(leaf(0xfec0_0000, 21, Perm.ReadWrite))).toBe(Perm.ReadWrite);
    expect(admit(leaf(0xfedf_f000, 12, Perm.ReadWrite))).toBe(Perm.ReadWrite);
    expect(admit(leaf(0xfef0_0000, 12, Perm.ReadWrite))).toBe(Perm.ReadWrite);
  });

  it("leaves out a leaf whose output is not all guest RAM", () => {
    const admit = vtdShadowAdmit(memory, false);
    expect(admit(leaf(4 * GIB, 12, Perm.ReadWrite))).toBe(0);
    expect(admit(leaf(4 * GIB - 0x1000, 21, Perm.ReadWrite))).toBe(0);
    expect(admit(leaf(2 ** 52, 12, Perm.ReadWrite))).toBe(0);
  });

  it("installs nothing for a leaf with neither read nor write", () => {
    expect(vtdShadowAdmit(memory, false)(leaf(0x2000_0000, 12, 0))).toBe(0);
  });
});
