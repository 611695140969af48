import { afterEach, describe, expect, it } from "vitest";
import { unwrap, type GuestQueueView, type VirtualMachine } from "@viommu/core";
import type { Testbed } from "@viommu/conformance";
import { encodeCommand } from "@viommu/smmuv3";
import { vintfBase, VintfReg } from "../../src/format/index.js";
import { DEFAULT_CMDQV_BASE } from "../../src/vmm/tegra241-device.js";
import { device, driver, hardware, IOVA, mapped, tegraBed } from "../support.js";

let bed: Testbed | undefined;
afterEach(() => {
  bed?.dispose();
  bed = undefined;
});

function open(options?: Parameters<typeof tegraBed>[0]): Testbed {
  bed = tegraBed(options);
  return bed;
}

const BASE = DEFAULT_CMDQV_BASE;
const HYP_OWN = 1 << 17;

/** A harness that knows only the view: reads PROD, writes a raw entry at base + index × entryBytes, advances PROD. */
function produceRaw(vm: VirtualMachine, q: GuestQueueView, entry: Uint32Array): void {
  const base = q.base();
  if (base === undefined) throw new Error(`${q.name} is not configured`);
  const current = vm.mmioRead(q.producer.address, q.producer.size);
  const at = q.producer.decode(current);
  vm.memory.writeWords(base + at.index * q.entryBytes, entry);
  const next = at.index + 1 === q.entries() ? { index: 0, wrap: !at.wrap } : { index: at.index + 1, wrap: at.wrap };
  vm.mmioWrite(q.producer.address, q.producer.size, q.producer.encode(next, current));
}

describe("the Tegra241 device's contract members", () => {
  it("options are the SMMUv3 half's, the ones the device was created with", () => {
    const v = open().vms[0]!;
    expect(device(v).options).toBe(device(v).smmu.options);
    expect(device(v).options.vm).toBe(v.vm);
    expect(device(v).options.iommufd).toBe(v.iommufd);
    expect(device(v).options).toMatchObject({ ioasId: v.ioasId, parentHwptId: v.parentHwptId, mode: "nested" });
  });

  it("guestQueues lists the SMMU's CMDQ, EVTQ, PRIQ and the guest's VCMDQs, guest-produced, in the directly mapped VINTF page 0", () => {
    const v = open().vms[0]!;
    const views = device(v).guestQueues();
    expect(views.map((q) => [q.name, q.producedBy, q.entryBytes])).toEqual([
      ["CMDQ", "guest", 16],
      ["EVTQ", "device", 32],
      ["PRIQ", "device", 16],
      ["VCMDQ0", "guest", 16],
      ["VCMDQ1", "guest", 16],
    ]);
    const vcmdq = views[3]!;
    expect(vcmdq.base()).toBeDefined();
    // PROD_INDX / CONS_INDX of logical VCMDQ 0 in VINTF0's page 0, which the VMM maps straight into the VM.
    expect([vcmdq.producer.address, vcmdq.consumer.address]).toEqual([BASE + 0x30004, BASE + 0x30000]);
    expect(v.vm.mmioRegions().find((r) => r.base <= vcmdq.producer.address && vcmdq.producer.address < r.base + r.size)).toMatchObject({ direct: true });
    // CONS_INDX.ERR [30:24] is kept when a position is encoded.
    expect(vcmdq.consumer.encode({ index: 2, wrap: true }, 1n << 24n)).toBe(BigInt(2 + vcmdq.entries()) | (1n << 24n));
  });

  it("a harness using only a VCMDQ view invalidates without an exit: raw TLBI_NH_VA and CMD_SYNC at PROD", () => {
    const v = open().vms[0]!;
    const domain = mapped(v);
    const dev = v.devices[0]!.device;
    expect(dev.read(IOVA, 4).ok).toBe(true);
    // The guest unmaps behind its driver's back (no TLBI from it), then the harness invalidates through the view.
    const { asid, root } = driver(v).smmu.domainInfo(domain)!;
    let table = root;
    for (const shift of [39, 30, 21]) table = Number(v.vm.memory.read64(table + (Math.floor(IOVA / 2 ** shift) % 512) * 8) & 0x0000_ffff_ffff_f000n);
    v.vm.memory.write64(table + (Math.floor(IOVA / 4096) % 512) * 8, 0n);
    const q = device(v).guestQueues().find((x) => x.name === "VCMDQ0")!;
    const exits = v.vm.interventions;
    produceRaw(v.vm, q, encodeCommand("CMD_TLBI_NH_VA", { ASID: asid, TG: 1, TTL: 3, Leaf: 1, Addr: BigInt(IOVA) }));
    produceRaw(v.vm, q, encodeCommand("CMD_SYNC", {}));
    expect(v.vm.interventions).toBe(exits);
    expect(dev.read(IOVA, 4).ok).toBe(false);
    const cons = q.consumer.decode(v.vm.mmioRead(q.consumer.address, 4));
    expect(cons).toEqual(q.producer.decode(v.vm.mmioRead(q.producer.address, 4)));
  });

  it("unassignDevice clears the device's SID slot in the VINTF with its vDEVICE; renumberDevice programs the new vSID", () => {
    const v = open().vms[0]!;
    mapped(v);
    const hw = hardware(bed!);
    const vintf = hw.vintfs.find((x) => x.owner === v.vm.id)!;
    expect(vintf.physicalSid(0x10)).toBe(0x100);
    unwrap(device(v).renumberDevice(0x10, 0x18));
    expect(vintf.physicalSid(0x10)).toBe(-1);
    expect(vintf.physicalSid(0x18)).toBe(0x100);
    unwrap(device(v).unassignDevice(0x18));
    expect(vintf.physicalSid(0x18)).toBe(-1);
    expect(v.devices[0]!.device.read(IOVA, 4).ok).toBe(false);
    expect(device(v).unassignDevice(0x18)).toMatchObject({ ok: false, error: { errno: "ENOENT" } });
  });
});

describe("VCMDQ page-1 registers", () => {
  it("keep only their defined bits: BASE_H holds addr[47:32], CONS_INDX_BASE_H the same", () => {
    const v = open().vms[0]!;
    const page1 = BASE + 0x40000;
    v.vm.mmioWrite(page1 + 4, 4, 0xffff_ffff);
    expect(Number(v.vm.mmioRead(page1 + 4, 4))).toBe(0xffff);
    v.vm.mmioWrite(page1 + 0xc, 4, 0xabcd_1234);
    expect(Number(v.vm.mmioRead(page1 + 0xc, 4))).toBe(0x1234);
  });
});

describe("a VCMDQ the host will not set up", () => {
  it("is written to the host log (configuration-refused) and stays down: its page 0 reads zero in the guest", () => {
    const b = open();
    const v = b.vms[0]!;
    const page1 = BASE + 0x40000 + 0x80;
    // VCMDQ1 BASE moved to an address not aligned to its 512-entry (8 KiB) size: the host's HW queue rules refuse it.
    v.vm.mmioWrite(page1, 8, BigInt(0x4000_1000) | 9n);
    expect(b.platform.host.log.entries({ vm: v.vm.id, kind: "configuration-refused" })).toMatchObject([{ errno: "EINVAL", source: `tegra241-cmdqv@0x${BASE.toString(16)}` }]);
    expect(device(v).guestQueues().find((q) => q.name === "VCMDQ1")!.base()).toBeUndefined();
  });
});

describe("HYP_OWN stays the host's", () => {
  it("the host's VINTF for the VM has HYP_OWN = 0; a guest write of HYP_OWN to its VINTF0 CONFIG reads back 0", () => {
    const v = open().vms[0]!;
    mapped(v);
    const vintf = hardware(bed!).vintfs.find((x) => x.owner === v.vm.id)!;
    // What the kernel wrote for the VMM's vIOMMU (tegra241_vintf_hw_init with hyp_own false for a user VINTF).
    expect(vintf.hypOwn).toBe(false);
    expect(vintf.readConfig() & HYP_OWN).toBe(0);
    expect(vintf.vmid).toBe(unwrap(v.iommufd.viommu(device(v).smmu.viommuId!)).parent.vmid);
    // Linux's guest driver asks for HYP_OWN on VINTF0 (tegra241_vintf_hw_init(vintf0, true)) and reads it back.
    const config = BASE + vintfBase(0) + VintfReg.CONFIG;
    v.vm.mmioWrite(config, 4, HYP_OWN | 1);
    expect(Number(v.vm.mmioRead(config, 4)) & HYP_OWN).toBe(0);
    expect(Number(v.vm.mmioRead(config, 4)) & 1).toBe(1);
    expect(vintf.hypOwn).toBe(false);
  });

  it("so the guest's VCMDQs keep the guest command filter: a CFGI_STE on a VCMDQ stops it with CERROR_ILL", () => {
    const v = open().vms[0]!;
    mapped(v);
    const q = device(v).guestQueues().find((x) => x.name === "VCMDQ0")!;
    produceRaw(v.vm, q, encodeCommand("CMD_CFGI_STE", { SID: 0x10, Leaf: 1 }));
    const cons = Number(v.vm.mmioRead(q.consumer.address, 4));
    expect((cons >>> 24) & 0x7f).toBe(1);
  });
});

describe("a VCMDQ stopping on a command error", () => {
  it("has executed every command before the failing one: the TLBIs ahead of an illegal command took effect", () => {
    const v = open().vms[0]!;
    const domain = mapped(v);
    const dev = v.devices[0]!.device;
    for (let p = 0; p < 3; p++) expect(dev.read(IOVA + p * 0x1000, 4).ok).toBe(true);
    const { asid, root } = driver(v).smmu.domainInfo(domain)!;
    for (let p = 0; p < 3; p++) {
      let table = root;
      for (const shift of [39, 30, 21]) table = Number(v.vm.memory.read64(table + (Math.floor((IOVA + p * 0x1000) / 2 ** shift) % 512) * 8) & 0x0000_ffff_ffff_f000n);
      v.vm.memory.write64(table + (Math.floor((IOVA + p * 0x1000) / 4096) % 512) * 8, 0n);
    }
    const q = device(v).guestQueues().find((x) => x.name === "VCMDQ0")!;
    for (let p = 0; p < 3; p++) produceRaw(v.vm, q, encodeCommand("CMD_TLBI_NH_VA", { ASID: asid, TG: 1, TTL: 3, Leaf: 1, Addr: BigInt(IOVA + p * 0x1000) }));
    produceRaw(v.vm, q, Uint32Array.of(0x7f, 0, 0, 0));
    const cons = Number(v.vm.mmioRead(q.consumer.address, 4));
    expect([cons & 0xf_ffff, (cons >>> 24) & 0x7f]).toEqual([3, 1]);
    for (let p = 0; p < 3; p++) expect(dev.read(IOVA + p * 0x1000, 4).ok).toBe(false);
  });
});

