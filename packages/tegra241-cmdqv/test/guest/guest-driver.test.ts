import { afterEach, describe, expect, it } from "vitest";
import fc from "fast-check";
import { buildAcpiTable, unwrap } from "@viommu/core";
import type { Testbed } from "@viommu/conformance";
import { encodeCommand, Smmuv3GuestDriver } from "@viommu/smmuv3";
import { buildCmdqvSsdt, cmdqAllocLayout, cmdqAllocOffset, CmdqvReg, decodeReg32, vintfBase, vintfConfigLayout, VintfReg } from "../../src/format/index.js";
import { findCmdqvDevices } from "../../src/guest/cmdqv-acpi-probe.js";
import { GuestCmdqv } from "../../src/guest/guest-cmdqv.js";
import { Tegra241GuestDriver } from "../../src/guest/tegra241-driver.js";
import { DEFAULT_CMDQV_BASE } from "../../src/vmm/tegra241-device.js";
import { device, driver, guestCmdqv, hardware, IOVA, mapped, tegraBed } from "../support.js";

let bed: Testbed | undefined;
afterEach(() => {
  bed?.dispose();
  bed = undefined;
});

describe("finding the CMDQV in the firmware (Linux's ACPI probe)", () => {
  it("reads _UID, the memory window and the interrupt of every NVDA200C device", () => {
    const ssdt = buildCmdqvSsdt([
      { name: "CV00", uid: 1, base: 0x0b00_0000, length: 0x50000, gsiv: 0x90 },
      { name: "CV01", uid: 7, base: 0x1_0000_0000, length: 0x830000, gsiv: 0x91 },
    ]);
    expect(findCmdqvDevices(ssdt)).toEqual([
      { uid: 1, base: 0x0b00_0000, length: 0x50000, gsiv: 0x90 },
      { uid: 7, base: 0x1_0000_0000, length: 0x830000, gsiv: 0x91 },
    ]);
  });

  it("finds nothing in a table without the device and never throws on garbage", () => {
    expect(findCmdqvDevices(buildAcpiTable({ signature: "SSDT", revision: 2 }, Uint8Array.of(0x10, 0x05, 0x5c, 0x5f, 0x53, 0x42, 0x5f)))).toEqual([]);
    fc.assert(
      fc.property(fc.uint8Array({ maxLength: 300 }), fc.nat(200), (body, cut) => {
        const good = buildCmdqvSsdt([{ name: "CV00", uid: 1, base: 0x1000_0000, length: 0x50000, gsiv: 0x90 }]);
        const mixed = new Uint8Array(good.length + body.length);
        mixed.set(good.subarray(0, Math.min(cut + 36, good.length)));
        mixed.set(body, Math.min(cut + 36, good.length));
        expect(Array.isArray(findCmdqvDevices(mixed))).toBe(true);
        expect(Array.isArray(findCmdqvDevices(body))).toBe(true);
      }),
      { numRuns: 300, seed: 3 },
    );
  });
});

describe("the guest's CMDQV driver", () => {
  it("resets as Linux does: every VCMDQ assigned to VINTF0 and mapped, VINTF0 enabled (HYP_OWN read back 0), both queues up", () => {
    bed = tegraBed();
    const v = bed.vms[0]!;
    const base = DEFAULT_CMDQV_BASE;
    expect(guestCmdqv(v).enabledQueues).toBe(2);
    for (const q of [0, 1]) {
      expect(decodeReg32(cmdqAllocLayout, Number(v.vm.mmioRead(base + cmdqAllocOffset(q), 4)))).toEqual({ CMDQV_CMDQ_ALLOCATED: 1, CMDQV_CMDQ_ALLOC_LVCMDQ: q, CMDQV_CMDQ_ALLOC_VINTF: 0 });
    }
    expect(decodeReg32(vintfConfigLayout, Number(v.vm.mmioRead(base + vintfBase(0) + VintfReg.CONFIG, 4)))).toEqual({ VINTF_EN: 1, VINTF_VMID: 0, VINTF_HYP_OWN: 0 });
    expect(Number(v.vm.mmioRead(base + CmdqvReg.STATUS, 4))).toBe(1);
  });

  it("sends TLB invalidations to its VCMDQ without exits and configuration changes to the trapped SMMU queue", () => {
    bed = tegraBed();
    const v = bed.vms[0]!;
    const trapped = device(v).smmu.stats.trapped;
    const domain = mapped(v);
    const afterAttach = device(v).smmu.stats.trapped;
    expect(afterAttach).toBeGreaterThan(trapped);
    const exits = v.vm.interventions;
    unwrap(v.drivers[0]!.flush(domain, IOVA, 0x4000));
    unwrap(v.drivers[0]!.flush(domain));
    expect(v.vm.interventions).toBe(exits);
    expect(device(v).smmu.stats.trapped).toBe(afterAttach);
    expect(guestCmdqv(v).stats.batches).toBe(2);
  });

  it("is the SMMUv3 driver's get_secondary_cmdq: batches the SMMUv3 driver itself issues go to the VCMDQ when it takes them", () => {
    bed = tegraBed();
    const v = bed.vms[0]!;
    mapped(v);
    const smmu = driver(v).smmu;
    const tlbi = [encodeCommand("CMD_TLBI_NH_ASID", { ASID: 1 })];
    const cfgi = [encodeCommand("CMD_CFGI_STE", { SID: 0x10, Leaf: 1 })];
    expect(guestCmdqv(v).getSecondaryCmdq(smmu, tlbi)).toBeDefined();
    expect(guestCmdqv(v).getSecondaryCmdq(smmu, cfgi)).toBeUndefined();
    const exits = v.vm.interventions;
    const batches = guestCmdqv(v).stats.batches;
    unwrap(smmu.submitCommands(tlbi));
    expect(v.vm.interventions).toBe(exits);
    expect(guestCmdqv(v).stats.batches).toBe(batches + 1);
    const trapped = device(v).smmu.stats.trapped;
    unwrap(smmu.submitCommands(cfgi));
    expect(device(v).smmu.stats.trapped - trapped).toBe(2);
    expect(guestCmdqv(v).stats.batches).toBe(batches + 1);
  });

  it("leaves the SMMUv3 driver without the hook when the firmware has no CMDQV: plain SMMUv3, every batch trapped", () => {
    bed = tegraBed();
    const v = bed.vms[0]!;
    const context = { vm: v.vm, memory: v.vm.memory, pages: v.pages, acpi: device(v).acpiTables().filter((t) => t.signature === "IORT"), mmioBase: device(v).mmioBase };
    const plain = new Tegra241GuestDriver(context, new Smmuv3GuestDriver(context));
    unwrap(plain.init({ translation: true, interruptRemapping: false }));
    v.drivers[0] = plain;
    expect(plain.cmdqv).toBeUndefined();
    const domain = mapped(v);
    const trapped = device(v).smmu.stats.trapped;
    unwrap(plain.flush(domain, IOVA, 0x1000));
    expect(device(v).smmu.stats.trapped - trapped).toBe(2);
  });

  it("with bypassVcmdq (Linux's module parameter) keeps the CMDQV reset but invalidates through the trapped queue", () => {
    bed = tegraBed();
    const v = bed.vms[0]!;
    const context = { vm: v.vm, memory: v.vm.memory, pages: v.pages, acpi: device(v).acpiTables(), mmioBase: device(v).mmioBase };
    const bypass = new Tegra241GuestDriver(context, new Smmuv3GuestDriver(context), { bypassVcmdq: true });
    unwrap(bypass.init({ translation: true, interruptRemapping: false }));
    v.drivers[0] = bypass;
    const domain = mapped(v);
    const exits = v.vm.interventions;
    unwrap(bypass.flush(domain, IOVA, 0x1000));
    expect(v.vm.interventions).toBeGreaterThan(exits);
    expect(bypass.cmdqv?.stats.batches).toBe(0);
  });

  it("routes a batch to a VCMDQ only when every command is TLBI_NH_ASID, TLBI_NH_VA or ATC_INV", () => {
    expect(GuestCmdqv.routes([Uint32Array.of(0x11, 0, 0, 0), Uint32Array.of(0x12, 0, 0, 0), Uint32Array.of(0x40, 0, 0, 0)])).toBe(true);
    for (const op of [0x03, 0x04, 0x05, 0x10, 0x13, 0x30, 0x46]) expect(GuestCmdqv.routes([Uint32Array.of(0x11, 0, 0, 0), Uint32Array.of(op, 0, 0, 0)])).toBe(false);
    expect(GuestCmdqv.routes([])).toBe(false);
  });

  it("falls back to the SMMU queue while its VCMDQ is stopped on an error, and resumes after the interrupt handler", () => {
    bed = tegraBed();
    const v = bed.vms[0]!;
    const domain = mapped(v);
    guestCmdqv(v).issueRaw(0, [Uint32Array.of(0x05, 0x10, 0, 0)]);
    const trapped = device(v).smmu.stats.trapped;
    unwrap(v.drivers[0]!.flush(domain, IOVA, 0x1000));
    expect(device(v).smmu.stats.trapped).toBeGreaterThan(trapped);
    bed.poll();
    expect(driver(v).readEvents().filter((e) => e.kind === "command-error")).toHaveLength(1);
    const hw = hardware(bed).vintfs[1]!.lvcmdqs[0]!;
    expect(hw.inError).toBe(false);
    const exits = v.vm.interventions;
    unwrap(v.drivers[0]!.flush(domain, IOVA, 0x1000));
    expect(v.vm.interventions).toBe(exits);
  });
});
