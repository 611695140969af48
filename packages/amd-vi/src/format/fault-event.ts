import { WalkFault } from "@viommu/core";
import { encodeEvent, EventCode, EventFlag } from "./event-log-entry.js";

/**
 * The event an AMD-Vi IOMMU logs for a failed DMA translation (spec x86.md B7), from the walker's
 * vendor-neutral result:
 * - not present, address beyond the table's range: IO_PAGE_FAULT, PR = 0;
 * - present but the access is not granted: IO_PAGE_FAULT with PR and PE;
 * - reserved bits or an invalid level encoding: IO_PAGE_FAULT with PR and RZ;
 * - a table fetch that reached no memory: PAGE_TAB_HARDWARE_ERROR naming the entry's address.
 * RW is set for writes; with a PASID, GN is set and the PASID replaces the DomainID (QW0[19:16] and [47:32]).
 */
export interface DmaFaultDescription {
  readonly deviceId: number;
  readonly domainId: number;
  /** The request's PASID, or undefined for a request without one. */
  readonly pasid: number | undefined;
  readonly address: number;
  readonly write: boolean;
  readonly fault: WalkFault;
  /** A leaf was found (permission faults). */
  readonly mapped: boolean;
  /** The last table entry read (for hardware-error events). */
  readonly entryAddress: number;
}

/** An address as an event's 64-bit field: what a number that is no address (negative, NaN, infinite) records is 0. */
function addressWord(address: number): bigint {
  return Number.isFinite(address) && address > 0 ? BigInt(Math.floor(address)) & 0xffff_ffff_ffff_ffffn : 0n;
}

export function dmaFaultEvent(d: DmaFaultDescription): Uint32Array {
  const gn = d.pasid !== undefined;
  const idField = gn ? d.pasid! & 0xffff : d.domainId & 0xffff;
  const pasidHigh = gn ? (d.pasid! >>> 16) & 0xf : 0;
  const rw = d.write ? 1 : 0;
  if (d.fault === WalkFault.External) {
    return encodeEvent(EventCode.PAGE_TAB_HARDWARE_ERROR, {
      DeviceID: d.deviceId & 0xffff,
      DomainIDOrPASID: idField,
      GN: gn ? 1 : 0,
      RW: rw,
      Address: addressWord(d.entryAddress - (d.entryAddress % 8)),
    });
  }
  let flags = d.write ? EventFlag.RW : 0;
  if (gn) flags |= EventFlag.GN;
  if (d.fault === WalkFault.Permission || d.mapped) flags |= EventFlag.PR | EventFlag.PE;
  if (d.fault === WalkFault.Reserved) flags |= EventFlag.PR | EventFlag.RZ;
  return encodeEvent(EventCode.IO_PAGE_FAULT, {
    DeviceID: d.deviceId & 0xffff,
    PASID_19_16: pasidHigh,
    DomainIDOrPASID: idField,
    GN: flags & EventFlag.GN ? 1 : 0,
    PR: flags & EventFlag.PR ? 1 : 0,
    RW: rw,
    PE: flags & EventFlag.PE ? 1 : 0,
    RZ: flags & EventFlag.RZ ? 1 : 0,
    Address: addressWord(d.address),
  });
}

/** ILLEGAL_DEV_TABLE_ENTRY for a request through a malformed DTE (`interrupt` sets I for an MSI). */
export function illegalDteEvent(deviceId: number, address: number, write: boolean, interrupt = false): Uint32Array {
  return encodeEvent(EventCode.ILLEGAL_DEV_TABLE_ENTRY, {
    DeviceID: deviceId & 0xffff,
    I: interrupt ? 1 : 0,
    RW: write ? 1 : 0,
    RZ: 1,
    Address: addressWord(address),
  });
}

/** An interrupt request refused by remapping: IO_PAGE_FAULT with I set (Linux EVENT_FLAG_I), the MSI address. */
export function interruptFaultEvent(deviceId: number, msiAddress: number, present: boolean, reserved: boolean): Uint32Array {
  return encodeEvent(EventCode.IO_PAGE_FAULT, {
    DeviceID: deviceId & 0xffff,
    I: 1,
    RW: 1,
    PR: present ? 1 : 0,
    RZ: reserved ? 1 : 0,
    Address: addressWord(msiAddress),
  });
}

/** DEV_TAB_HARDWARE_ERROR: the DTE at `dteAddress` could not be read (outside memory, or private to an SNP guest). */
export function devTabHardwareErrorEvent(deviceId: number, dteAddress: number, interrupt: boolean, write: boolean): Uint32Array {
  return encodeEvent(EventCode.DEV_TAB_HARDWARE_ERROR, {
    DeviceID: deviceId & 0xffff,
    I: interrupt ? 1 : 0,
    RW: write ? 1 : 0,
    Address: addressWord(dteAddress),
  });
}

/** PAGE_TAB_HARDWARE_ERROR for an interrupt table that could not be read (I set). */
export function irtHardwareErrorEvent(deviceId: number, irteAddress: number): Uint32Array {
  return encodeEvent(EventCode.PAGE_TAB_HARDWARE_ERROR, { DeviceID: deviceId & 0xffff, I: 1, RW: 1, Address: addressWord(irteAddress) });
}

/** ILLEGAL_COMMAND_ERROR: the physical (guest-physical, for a vIOMMU) address of the offending command. */
export function illegalCommandEvent(commandAddress: number): Uint32Array {
  return encodeEvent(EventCode.ILLEGAL_COMMAND_ERROR, { Address: addressWord(commandAddress) });
}

/**
 * COMMAND_HARDWARE_ERROR: the IOMMU could not access `address`, the system physical address it attempted (pub. 48882
 * §2.5.7): a command's own address when fetching it fails, the 8-byte-aligned store address when a COMPLETION_WAIT's
 * store fails (VirtualBox's DevIommuAmd.cpp, a second reading, records the store address too).
 */
export function commandHardwareErrorEvent(address: number): Uint32Array {
  return encodeEvent(EventCode.COMMAND_HARDWARE_ERROR, { Address: addressWord(address) });
}

/**
 * RMP_PAGE_FAULT (SNP host; spec x86.md B7, Linux amd_iommu_report_rmp_fault): a device access the RMP refused.
 * DeviceID, VMG tag (the guest the page is assigned to) in QW0[47:32], RW in the flags, the guest-physical
 * address in QW1. The RMP flags (QW0[23:16]) are left 0: their meanings are not in the sources read.
 */
export function rmpPageFaultEvent(options: { deviceId: number; vmgTag: number; gpa: number; write: boolean }): Uint32Array {
  const raw = encodeEvent(EventCode.RMP_PAGE_FAULT, { DeviceID: options.deviceId & 0xffff, VMGTag: options.vmgTag & 0xffff, GPA: addressWord(options.gpa) });
  if (options.write) raw[1] = (raw[1]! | (EventFlag.RW << 16)) >>> 0;
  return raw;
}
