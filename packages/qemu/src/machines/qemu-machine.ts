import type { QtestClient } from "../qtest/qtest-client.js";
import { aarch64IdleFirmware, x86HaltingBios } from "./firmware.js";

/** The vendors QEMU emulates an IOMMU for, by viommu vendor id. */
export type QemuVendor = "vtd" | "amd-vi" | "smmuv3";

export const QEMU_VENDORS: readonly QemuVendor[] = ["vtd", "amd-vi", "smmuv3"];

/** PCI configuration space access, the way the machine's firmware would do it. */
export interface PciConfigAccess {
  read(qtest: QtestClient, rid: number, offset: number, size: 1 | 2 | 4): Promise<bigint>;
  write(qtest: QtestClient, rid: number, offset: number, size: 1 | 2 | 4, value: bigint): Promise<void>;
}

/**
 * One of QEMU's machines with its emulated IOMMU: where QEMU puts things and how to reach them. Facts here are
 * QEMU's, each with its source; `edu` devices (hw/misc/edu.c) are the DMA engines.
 */
export interface QemuMachine {
  readonly vendor: QemuVendor;
  /** The system emulator's name on PATH. */
  readonly binary: string;
  /** The IOMMU's register block. */
  readonly iommuBase: number;
  readonly iommuSize: number;
  /** Where guest RAM starts on this machine. */
  readonly ramBase: number;
  /** Slots on bus 0 that an edu may not take (the host bridge, the IOMMU's own function, the LPC bridge). */
  readonly reservedSlots: readonly number[];
  /** Where edu BAR0 number `i` is placed (1 MiB each, inside the machine's PCI memory window). */
  barAddress(index: number): number;
  readonly pci: PciConfigAccess;
  /** Machine and IOMMU options, RAM of `ramBytes`, an edu at each of `slots`. */
  args(ramBytes: number, slots: readonly number[]): string[];
  firmware(): Uint8Array;
  /** The name a report gives the QEMU device. */
  readonly deviceName: string;
  /**
   * Register writes (offset in the IOMMU block, 8 bytes each) that finish QEMU's `system_reset` where it leaves
   * internal state behind its reset registers, so that a reused QEMU starts each trace as a fresh one does.
   */
  readonly completeReset?: readonly { readonly offset: number; readonly value: bigint }[];
}

/** edu's DMA address mask, opened to 64 bits: its default is 28 bits (edu_instance_init, hw/misc/edu.c). */
const EDU_DMA_MASK = "0xffffffffffffffff";

function eduArgs(slots: readonly number[]): string[] {
  return slots.flatMap((slot) => ["-device", `edu,addr=${slot.toString(16)}.0,dma_mask=${EDU_DMA_MASK}`]);
}

/**
 * Options every machine shares: no default devices, no display, no monitor or serial, and `-icount
 * shift=0,sleep=off`, so that with the CPU halted virtual time jumps to the next timer: edu's DMA (a timer 100 ms
 * of virtual time after the command, edu_mmio_write in hw/misc/edu.c) completes at once instead of after 100 ms
 * of wall time. Debian's QEMU has no qtest accelerator, so TCG runs the (halted) CPU.
 */
function commonArgs(ramBytes: number): string[] {
  return ["-accel", "tcg", "-icount", "shift=0,sleep=off", "-m", `${Math.floor(ramBytes / 2 ** 20)}M`, "-nodefaults", "-display", "none", "-monitor", "none", "-serial", "none"];
}

function cf8Address(rid: number, offset: number): number {
  // Configuration mechanism #1: enable bit, bus, device, function, dword-aligned register.
  return (0x8000_0000 | ((rid & 0xffff) << 8) | (offset & 0xfc)) >>> 0;
}

/** x86 configuration mechanism #1 through ports 0xCF8 (address) and 0xCFC–0xCFF (data). */
const cf8Access: PciConfigAccess = {
  async read(qtest, rid, offset, size) {
    await qtest.outl(0xcf8, cf8Address(rid, offset));
    const port = 0xcfc + (offset & 3);
    return BigInt(size === 1 ? await qtest.inb(port) : size === 2 ? await qtest.inw(port) : await qtest.inl(port));
  },
  async write(qtest, rid, offset, size, value) {
    await qtest.outl(0xcf8, cf8Address(rid, offset));
    const port = 0xcfc + (offset & 3);
    const v = Number(value);
    if (size === 1) await qtest.outb(port, v);
    else if (size === 2) await qtest.outw(port, v);
    else await qtest.outl(port, v);
  },
};

/** PCIe enhanced configuration access: each function's 4 KiB at base + (bus << 20 | device << 15 | function << 12). */
function ecamAccess(base: bigint): PciConfigAccess {
  const at = (rid: number, offset: number): bigint => base + (BigInt(rid & 0xffff) << 12n) + BigInt(offset & 0xfff);
  return {
    read: (qtest, rid, offset, size) => qtest.readSized(at(rid, offset), size),
    write: (qtest, rid, offset, size, value) => qtest.writeSized(at(rid, offset), size, value),
  };
}

/**
 * q35 with intel-iommu. The DMAR unit is at 0xFED90000 (Q35_HOST_BRIDGE_IOMMU_ADDR, include/hw/i386/intel_iommu.h);
 * `aw-bits=48` gives 4-level second-level tables as the model offers; `caching-mode=on` sets CAP.CM as the model's
 * emulated unit does whenever DMA is translated (its guests then flush after every map). Interrupt remapping is on
 * by default on q35 (ECAP.IR).
 */
export const vtdMachine: QemuMachine = {
  vendor: "vtd",
  binary: "qemu-system-x86_64",
  iommuBase: 0xfed9_0000,
  iommuSize: 0x1000,
  ramBase: 0,
  reservedSlots: [0, 0x1f],
  barAddress: (i) => 0xfe00_0000 + i * 0x10_0000,
  pci: cf8Access,
  args: (ram, slots) => ["-machine", "q35", ...commonArgs(ram), "-device", "intel-iommu,aw-bits=48,caching-mode=on", ...eduArgs(slots)],
  firmware: x86HaltingBios,
  deviceName: "intel-iommu",
};

/**
 * q35 with amd-iommu: the register block at 0xFED80000 (AMDVI_BASE_ADDR, hw/i386/amd_iommu.h), mapped whatever
 * the PCI function says; the IOMMU's PCI function takes 00:01.0 (the first free slot when it is created first).
 */
export const amdViMachine: QemuMachine = {
  vendor: "amd-vi",
  binary: "qemu-system-x86_64",
  iommuBase: 0xfed8_0000,
  iommuSize: 0x4000,
  ramBase: 0,
  reservedSlots: [0, 1, 0x1f],
  barAddress: (i) => 0xfe00_0000 + i * 0x10_0000,
  pci: cf8Access,
  args: (ram, slots) => ["-machine", "q35", ...commonArgs(ram), "-device", "amd-iommu", ...eduArgs(slots)],
  firmware: x86HaltingBios,
  deviceName: "amd-iommu",
  // amdvi_init() (hw/i386/amd_iommu.c, run by amdvi_sysbus_reset()) clears the registers but keeps s->devtab, the
  // device table address the last guest programmed: a guest that enables translation without writing the Device
  // Table Base Address Register (reset value 0) would walk the previous guest's table. An 8-byte write of the
  // reset value runs amdvi_handle_devtab_write() and sets it to 0, as in a fresh QEMU.
  completeReset: [{ offset: 0x00, value: 0n }],
};

/**
 * virt with `iommu=smmuv3`: the SMMU at 0x09050000 (VIRT_SMMU in hw/arm/virt.c's memmap), RAM from 0x40000000,
 * the PCIe ECAM at 0x4010000000 (VIRT_HIGH_PCIE_ECAM) and 32-bit PCI memory from 0x10000000 (VIRT_PCIE_MMIO). The
 * SMMU's StreamID is the requester id (the virt machine's IORT maps RIDs one to one).
 */
export const smmuv3Machine: QemuMachine = {
  vendor: "smmuv3",
  binary: "qemu-system-aarch64",
  iommuBase: 0x0905_0000,
  iommuSize: 0x2_0000,
  ramBase: 0x4000_0000,
  reservedSlots: [0],
  barAddress: (i) => 0x1000_0000 + i * 0x10_0000,
  pci: ecamAccess(0x40_1000_0000n),
  args: (ram, slots) => ["-machine", "virt,iommu=smmuv3", "-cpu", "cortex-a57", ...commonArgs(ram), ...eduArgs(slots)],
  firmware: aarch64IdleFirmware,
  deviceName: "arm-smmuv3",
};

export function qemuMachine(vendor: string): QemuMachine | undefined {
  return vendor === "vtd" ? vtdMachine : vendor === "amd-vi" ? amdViMachine : vendor === "smmuv3" ? smmuv3Machine : undefined;
}
