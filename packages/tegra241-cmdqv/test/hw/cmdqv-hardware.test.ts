import { beforeEach, describe, expect, it } from "vitest";
import { HostMemory, type RawBits } from "@viommu/core";
import {
  cmdqAllocOffset,
  CmdqvReg,
  cmdqvParamLayout,
  decodeReg32,
  encodeReg32,
  lvcmdqPage0,
  lvcmdqPage1,
  vcmdqConsIndxLayout,
  VcmdqCerror,
  vcmdqPage0,
  VcmdqPage0Reg,
  VcmdqPage1Reg,
  vintfBase,
  vintfConfigLayout,
  VintfReg,
  vintfSidMatchOffset,
  vintfSidReplaceOffset,
  vintfStatusLayout,
} from "../../src/format/index.js";
import { Tegra241Cmdqv } from "../../src/hw/cmdqv.js";
import { DEFAULT_CMDQV_PARAM } from "../../src/hw/cmdqv-hw-config.js";

/** The SMMU behind the CMDQV, seen from the queue: what it was asked to execute. */
class ExecutedCommands {
  readonly commands: number[][] = [];
  answer = 0;
  executeCommand(command: RawBits): number {
    this.commands.push([...command]);
    return this.answer;
  }
}

const VM = 7;
const VMID = 0x2a;
const V = 3;
const QUEUE_LOG2 = 4;

let memory: HostMemory;
let smmu: ExecutedCommands;
let cmdqv: Tegra241Cmdqv;
let queuePa: number;
let interrupts: number;

function cmd(w0: number, w1 = 0, w2 = 0, w3 = 0): number[] {
  return [w0 >>> 0, w1 >>> 0, w2 >>> 0, w3 >>> 0];
}

function put(slot: number, words: number[]): void {
  const bytes = new Uint8Array(16);
  const view = new DataView(bytes.buffer);
  words.forEach((w, i) => view.setUint32(i * 4, w, true));
  memory.writeBytes(queuePa + slot * 16, bytes);
}

const page0 = (reg: number, l = 0): number => lvcmdqPage0(V, l) + reg;
const guestRead = (reg: number, l = 0): number => Number(cmdqv.vintfs[V]!.page0.read(l * 0x80 + reg, 4));
const guestWrite = (reg: number, value: number, l = 0): void => cmdqv.vintfs[V]!.page0.write(l * 0x80 + reg, 4, BigInt(value));

/** The host driver's part, through registers: CMDQV on, global VCMDQ 2·V mapped as LVCMDQ 0 of VINTF V, its BASE. */
beforeEach(() => {
  memory = new HostMemory();
  smmu = new ExecutedCommands();
  cmdqv = new Tegra241Cmdqv({ param: DEFAULT_CMDQV_PARAM, physicalBase: 0x11_0000_0000 }, memory, smmu);
  interrupts = 0;
  cmdqv.onInterrupt = () => interrupts++;
  queuePa = memory.allocate(VM, 1)!;
  cmdqv.write32(CmdqvReg.CONFIG, 1);
  cmdqv.write32(cmdqAllocOffset(2 * V), 1 | (0 << 1) | (V << 15));
  cmdqv.write32(vintfBase(V) + VintfReg.CONFIG, encodeReg32(vintfConfigLayout, { VINTF_EN: 1, VINTF_VMID: VMID }));
  cmdqv.vintfs[V]!.owner = VM;
  cmdqv.write32(vintfSidReplaceOffset(V, 2), 0x1234);
  cmdqv.write32(vintfSidMatchOffset(V, 2), (0x10 << 1) | 1);
  cmdqv.mmio.write(lvcmdqPage1(V, 0) + VcmdqPage1Reg.BASE, 8, BigInt(queuePa) | BigInt(QUEUE_LOG2));
  guestWrite(VcmdqPage0Reg.CONFIG, 1);
});

describe("the CMDQV register file", () => {
  it("PARAM reads what the hardware is, STATUS follows CONFIG.CMDQV_EN", () => {
    expect(decodeReg32(cmdqvParamLayout, cmdqv.read32(CmdqvReg.PARAM))).toEqual({ CMDQV_VER: 1, CMDQV_NUM_VCMDQ_LOG2: 7, CMDQV_NUM_VINTF_LOG2: 6, CMDQV_NUM_SID_PER_VM_LOG2: 4 });
    expect(cmdqv.read32(CmdqvReg.STATUS)).toBe(1);
    cmdqv.write32(CmdqvReg.CONFIG, 0);
    expect(cmdqv.read32(CmdqvReg.STATUS)).toBe(0);
    cmdqv.write32(CmdqvReg.PARAM, 0);
    expect(cmdqv.read32(CmdqvReg.PARAM)).toBe(DEFAULT_CMDQV_PARAM);
  });

  it("a mapped global VCMDQ and its LVCMDQ alias are one set of registers", () => {
    guestWrite(VcmdqPage0Reg.PROD_INDX, 0);
    cmdqv.write32(vcmdqPage0(2 * V) + VcmdqPage0Reg.GERRORN, 4);
    expect(guestRead(VcmdqPage0Reg.GERRORN)).toBe(4);
    expect(cmdqv.read32(page0(VcmdqPage0Reg.GERRORN))).toBe(4);
    expect(cmdqv.read32(lvcmdqPage1(V, 0) + VcmdqPage1Reg.BASE)).toBe((queuePa | QUEUE_LOG2) >>> 0);
  });

  it("an unmapped logical VCMDQ reads zero and ignores writes", () => {
    guestWrite(VcmdqPage0Reg.CONFIG, 1, 1);
    expect(guestRead(VcmdqPage0Reg.CONFIG, 1)).toBe(0);
    expect(guestRead(VcmdqPage0Reg.STATUS, 1)).toBe(0);
  });

  it("VINTF CONFIG keeps EN, VMID and HYP_OWN; STATUS.ENABLED follows EN", () => {
    expect(cmdqv.read32(vintfBase(V) + VintfReg.CONFIG)).toBe(1 | (VMID << 1));
    expect(decodeReg32(vintfStatusLayout, cmdqv.read32(vintfBase(V) + VintfReg.STATUS))).toMatchObject({ VINTF_ENABLED: 1, VINTF_STATUS: 0 });
  });

  it("the VCMDQ enable handshake: STATUS.CMDQ_EN_OK follows CONFIG.CMDQ_EN", () => {
    expect(guestRead(VcmdqPage0Reg.STATUS)).toBe(1);
    guestWrite(VcmdqPage0Reg.CONFIG, 0);
    expect(guestRead(VcmdqPage0Reg.STATUS)).toBe(0);
  });
});

describe("a guest-owned VCMDQ consuming guest memory", () => {
  it("executes TLBI_NH_ASID and TLBI_NH_VA with the VINTF's VMID whatever VMID the guest wrote", () => {
    put(0, cmd(0x11, 0x0007_ffff));
    put(1, cmd(0x12 | (1 << 12), 0x0009_0001, 0x1000, 0));
    put(2, cmd(0x46));
    guestWrite(VcmdqPage0Reg.PROD_INDX, 3);
    expect(smmu.commands).toEqual([cmd(0x11, 0x0007_0000 | VMID), cmd(0x12 | (1 << 12), 0x0009_0000 | VMID, 0x1000, 0), cmd(0x46)]);
    expect(guestRead(VcmdqPage0Reg.CONS_INDX)).toBe(3);
  });

  it("replaces ATC_INV's vSID by the SID_REPLACE of the SID_MATCH slot naming it", () => {
    put(0, cmd(0x40, 0x10, 0, 0));
    guestWrite(VcmdqPage0Reg.PROD_INDX, 1);
    expect(smmu.commands).toEqual([cmd(0x40, 0x1234)]);
  });

  it("stops at an ATC_INV whose vSID no slot matches, with CERROR_ILL", () => {
    put(0, cmd(0x40, 0x11, 0, 0));
    guestWrite(VcmdqPage0Reg.PROD_INDX, 1);
    expect(smmu.commands).toEqual([]);
    expect(decodeReg32(vcmdqConsIndxLayout, guestRead(VcmdqPage0Reg.CONS_INDX))).toEqual({ RD: 0, ERR: VcmdqCerror.CERROR_ILL });
  });

  it("clears CMD_SYNC's CS: the guest cannot make the SMMU write an MSI to an address of its choice", () => {
    put(0, cmd(0x46 | (1 << 12), 0xdead, 0xbeef_0000, 0x1));
    guestWrite(VcmdqPage0Reg.PROD_INDX, 1);
    expect(smmu.commands).toEqual([cmd(0x46, 0xdead, 0xbeef_0000, 0x1)]);
  });

  it("stops on a command outside the guest set: CONS on it, CERROR_ILL, GERROR.CMDQ_ERR toggled, error maps and interrupt", () => {
    put(0, cmd(0x11, 0));
    put(1, cmd(0x03, 0x10));
    put(2, cmd(0x46));
    guestWrite(VcmdqPage0Reg.PROD_INDX, 3);
    expect(smmu.commands).toHaveLength(1);
    expect(decodeReg32(vcmdqConsIndxLayout, guestRead(VcmdqPage0Reg.CONS_INDX))).toEqual({ RD: 1, ERR: VcmdqCerror.CERROR_ILL });
    expect(guestRead(VcmdqPage0Reg.GERROR) ^ guestRead(VcmdqPage0Reg.GERRORN)).toBe(1);
    expect(cmdqv.read32(vintfBase(V) + VintfReg.LVCMDQ_ERR_MAP0)).toBe(1);
    expect(cmdqv.read32(CmdqvReg.CMDQ_ERR_MAP0)).toBe(1 << (2 * V));
    expect(cmdqv.read32(CmdqvReg.VINTF_ERR_MAP)).toBe(1 << V);
    expect(decodeReg32(vintfStatusLayout, cmdqv.read32(vintfBase(V) + VintfReg.STATUS)).VINTF_STATUS).toBe(1);
    expect(interrupts).toBe(1);
    // Stopped: a further doorbell executes nothing.
    guestWrite(VcmdqPage0Reg.PROD_INDX, 3);
    expect(smmu.commands).toHaveLength(1);
  });

  it("resumes at CONS once GERRORN acknowledges, re-fetching the command software fixed; the maps clear", () => {
    put(0, cmd(0x03, 0x10));
    put(1, cmd(0x46));
    guestWrite(VcmdqPage0Reg.PROD_INDX, 2);
    put(0, cmd(0x46));
    guestWrite(VcmdqPage0Reg.GERRORN, guestRead(VcmdqPage0Reg.GERROR));
    expect(smmu.commands).toEqual([cmd(0x46), cmd(0x46)]);
    expect(guestRead(VcmdqPage0Reg.CONS_INDX) & 0xfffff).toBe(2);
    expect(cmdqv.read32(CmdqvReg.VINTF_ERR_MAP)).toBe(0);
    expect(cmdqv.read32(vintfBase(V) + VintfReg.LVCMDQ_ERR_MAP0)).toBe(0);
  });

  it("reports the SMMU's own refusal (a TLBI with reserved bits set) the same way", () => {
    smmu.answer = VcmdqCerror.CERROR_ILL;
    put(0, cmd(0x11, 0, 0, 0x8000_0000));
    guestWrite(VcmdqPage0Reg.PROD_INDX, 1);
    expect(decodeReg32(vcmdqConsIndxLayout, guestRead(VcmdqPage0Reg.CONS_INDX))).toEqual({ RD: 0, ERR: VcmdqCerror.CERROR_ILL });
  });

  it("VINTF_INT_MASK masks the VINTF's error interrupt, not the error", () => {
    cmdqv.write32(CmdqvReg.VINTF_INT_MASK, 1 << V);
    put(0, cmd(0xff));
    guestWrite(VcmdqPage0Reg.PROD_INDX, 1);
    expect(interrupts).toBe(0);
    expect(cmdqv.read32(CmdqvReg.VINTF_ERR_MAP)).toBe(1 << V);
  });

  it("wraps with the SMMU wrap bit and consumes at most one ring per doorbell", () => {
    const entries = 2 ** QUEUE_LOG2;
    for (let i = 0; i < entries; i++) put(i, cmd(0x46));
    guestWrite(VcmdqPage0Reg.PROD_INDX, entries - 1);
    guestWrite(VcmdqPage0Reg.PROD_INDX, entries | 2);
    expect(smmu.commands).toHaveLength(entries + 2);
    expect(guestRead(VcmdqPage0Reg.CONS_INDX)).toBe(entries | 2);
    // A PROD one whole ring ahead (same index, other wrap) is a full queue: exactly one pass.
    smmu.commands.length = 0;
    guestWrite(VcmdqPage0Reg.PROD_INDX, 2);
    expect(smmu.commands).toHaveLength(entries);
  });

  it("runs nothing while the queue, the VINTF or the CMDQV is disabled, and catches up when enabled", () => {
    put(0, cmd(0x46));
    cmdqv.write32(vintfBase(V) + VintfReg.CONFIG, VMID << 1);
    guestWrite(VcmdqPage0Reg.PROD_INDX, 1);
    expect(smmu.commands).toHaveLength(0);
    cmdqv.write32(vintfBase(V) + VintfReg.CONFIG, (VMID << 1) | 1);
    expect(smmu.commands).toHaveLength(1);
  });

  it("lets software rewind CONS only while the queue is disabled", () => {
    put(0, cmd(0x46));
    guestWrite(VcmdqPage0Reg.PROD_INDX, 1);
    guestWrite(VcmdqPage0Reg.CONS_INDX, 0);
    expect(guestRead(VcmdqPage0Reg.CONS_INDX)).toBe(1);
    guestWrite(VcmdqPage0Reg.CONFIG, 0);
    guestWrite(VcmdqPage0Reg.CONS_INDX, 0);
    expect(guestRead(VcmdqPage0Reg.CONS_INDX)).toBe(0);
  });

  it("a hypervisor-owned VINTF's queue executes any command unchanged", () => {
    cmdqv.write32(vintfBase(V) + VintfReg.CONFIG, encodeReg32(vintfConfigLayout, { VINTF_EN: 1, VINTF_VMID: VMID, VINTF_HYP_OWN: 1 }));
    put(0, cmd(0x03, 0x55));
    put(1, cmd(0x11, 0x0003_0001));
    guestWrite(VcmdqPage0Reg.PROD_INDX, 2);
    expect(smmu.commands).toEqual([cmd(0x03, 0x55), cmd(0x11, 0x0003_0001)]);
  });

  it("fetches only from memory the VINTF's VM owns: a queue elsewhere aborts the fetch (CERROR_ABT)", () => {
    const foreign = memory.allocate(VM + 1, 1)!;
    cmdqv.mmio.write(lvcmdqPage1(V, 0) + VcmdqPage1Reg.BASE, 8, BigInt(foreign) | BigInt(QUEUE_LOG2));
    guestWrite(VcmdqPage0Reg.PROD_INDX, 1);
    expect(decodeReg32(vcmdqConsIndxLayout, guestRead(VcmdqPage0Reg.CONS_INDX)).ERR).toBe(VcmdqCerror.CERROR_ABT);
    expect(smmu.commands).toEqual([]);
  });
});
