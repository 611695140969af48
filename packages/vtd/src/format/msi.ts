import { decodeLayout, defineLayout, encodeLayout, type Fields, type RawBits } from "@viommu/core";

/**
 * Interrupt requests as the remapping unit sees them: a DWORD write to 0xFEEx_xxxx. Intel VT-d spec §5.1.2;
 * ../shared/spec/x86.md A9.1 (QEMU `VTD_IR_MSIAddress`, Linux `fill_msi_msg` and `struct msi_address_lo`,
 * VirtualBox `VTD_BF_REMAPPABLE_MSI_*`). Bit 4 of the address selects the format: 1 remappable (the request
 * carries an IRTE handle), 0 compatibility (the request carries its own destination and vector).
 * The address layouts span 64 bits so the upper half can be checked: it must be zero in remappable format.
 */
export const MSI_ADDRESS_BASE = 0xfee;

/** The interrupt address range 0xFEE0_0000–0xFEEF_FFFF (VT-d §3.15): DMA there is an interrupt request, never memory. */
export const INTERRUPT_RANGE_FIRST = 0xfee0_0000;
export const INTERRUPT_RANGE_LAST = 0xfeef_ffff;

/** Whether [base, base + size) overlaps the interrupt address range. */
export function overlapsInterruptRange(base: number, size: number): boolean {
  return base <= INTERRUPT_RANGE_LAST && base + size - 1 >= INTERRUPT_RANGE_FIRST;
}

/** Interrupt format bit values (address bit 4). */
export const InterruptFormat = { COMPATIBILITY: 0, REMAPPABLE: 1 } as const;

export const remappableMsiAddressLayout = defineLayout("remappable_msi_address", 64, [
  /** Handle bit 15. */
  { name: "HANDLE_15", bit: 2, width: 1 },
  /** Sub-handle valid: the data's low 16 bits are added to the handle. */
  { name: "SHV", bit: 3, width: 1 },
  { name: "INTERRUPT_FORMAT", bit: 4, width: 1 },
  /** Handle bits 14:0. */
  { name: "HANDLE_14_0", bit: 5, width: 15 },
  /** Must be 0xFEE (fault 0x20 otherwise). */
  { name: "ADDR_BASE", bit: 20, width: 12 },
  /** Address bits 63:32; must be zero (fault 0x20 otherwise). */
  { name: "ADDR_UPPER", bit: 32, width: 32 },
] as const);

export const remappableMsiDataLayout = defineLayout("remappable_msi_data", 32, [
  /** Added to the handle when SHV = 1; with SHV = 1, bits [31:16] must be zero (fault 0x20). */
  { name: "SUBHANDLE", bit: 0, width: 16 },
] as const);

/**
 * Compatibility-format MSI address (Intel SDM vol. 3 §11.11.1). Bits [11:5] are reserved in the SDM (Linux
 * uses them for a paravirtual extended destination id, which VT-d does not define).
 */
export const compatMsiAddressLayout = defineLayout("compat_msi_address", 64, [
  /** Destination mode: 1 logical. */
  { name: "DM", bit: 2, width: 1 },
  /** Redirection hint. */
  { name: "RH", bit: 3, width: 1 },
  { name: "INTERRUPT_FORMAT", bit: 4, width: 1 },
  { name: "DEST_ID", bit: 12, width: 8 },
  { name: "ADDR_BASE", bit: 20, width: 12 },
  { name: "ADDR_UPPER", bit: 32, width: 32 },
] as const);

/** Compatibility-format MSI data (Intel SDM vol. 3 §11.11.2). */
export const compatMsiDataLayout = defineLayout("compat_msi_data", 32, [
  { name: "VECTOR", bit: 0, width: 8 },
  /** APIC delivery mode: 0 fixed, 1 lowest priority, 2 SMI, 4 NMI, 5 INIT, 7 ExtINT. */
  { name: "DELIVERY_MODE", bit: 8, width: 3 },
  /** Level for level-triggered interrupts: 1 assert. */
  { name: "LEVEL", bit: 14, width: 1 },
  /** Trigger mode: 1 level. */
  { name: "TRIGGER_MODE", bit: 15, width: 1 },
] as const);

export type RemappableMsiAddressFields = Fields<typeof remappableMsiAddressLayout>;
export type CompatMsiAddressFields = Fields<typeof compatMsiAddressLayout>;
export type CompatMsiDataFields = Fields<typeof compatMsiDataLayout>;

function addressRaw(addressLo: number, addressHi: number): RawBits {
  return Uint32Array.of(addressLo >>> 0, addressHi >>> 0);
}

export interface RemappableMsi {
  readonly format: "remappable";
  readonly handle: number;
  readonly shv: number;
  readonly subhandle: number;
  /** IRTE index: handle + subhandle when SHV = 1. */
  readonly index: number;
  /** True when a reserved field is set: the request faults 0x20 (IR_REQ_RSVD) before the IRTE is read. */
  readonly reservedFault: boolean;
}

export interface CompatMsi {
  readonly format: "compatibility";
  readonly address: CompatMsiAddressFields;
  readonly data: CompatMsiDataFields;
}

/** Decodes an interrupt request (address halves and 32-bit data) in whichever format bit 4 selects. */
export function decodeMsi(addressLo: number, addressHi: number, data: number): RemappableMsi | CompatMsi {
  const address = addressRaw(addressLo, addressHi);
  if (((addressLo >>> 4) & 1) === InterruptFormat.COMPATIBILITY) {
    return {
      format: "compatibility",
      address: decodeLayout(compatMsiAddressLayout, address),
      data: decodeLayout(compatMsiDataLayout, Uint32Array.of(data >>> 0)),
    };
  }
  const a = decodeLayout(remappableMsiAddressLayout, address);
  const handle = a.HANDLE_14_0 | (a.HANDLE_15 << 15);
  const subhandle = a.SHV ? data & 0xffff : 0;
  return {
    format: "remappable",
    handle,
    shv: a.SHV,
    subhandle,
    index: handle + subhandle,
    reservedFault: remappableMsiIndex(addressLo, addressHi, data) < 0,
  };
}

/**
 * The IRTE index of a remappable request, or −1 when a reserved field is set (fault 0x20): upper address
 * non-zero, base not 0xFEE, or data[31:16] non-zero with SHV. Hot path: no allocation. The caller checks the
 * format bit first and compares the index with the table size (fault 0x21).
 */
export function remappableMsiIndex(addressLo: number, addressHi: number, data: number): number {
  if (addressHi !== 0 || addressLo >>> 20 !== MSI_ADDRESS_BASE) return -1;
  const handle = ((addressLo >>> 5) & 0x7fff) | (((addressLo >>> 2) & 1) << 15);
  if ((addressLo & 0x8) === 0) return handle;
  if (data >>> 16 !== 0) return -1;
  return handle + (data & 0xffff);
}

/** Whether address bit 4 marks the request remappable. */
export function isRemappableMsi(addressLo: number): boolean {
  return ((addressLo >>> 4) & 1) === 1;
}

export interface EncodedMsi {
  readonly addressLo: number;
  readonly addressHi: number;
  readonly data: number;
}

/**
 * A remappable MSI as Linux programs a device (`fill_msi_msg`): base 0xFEE, format bit, SHV = 1, the handle
 * split into [19:5] and bit 2, data = sub-handle.
 */
export function encodeRemappableMsi(handle: number, subhandle = 0): EncodedMsi {
  if (!Number.isInteger(handle) || handle < 0 || handle > 0xffff) throw new RangeError(`IRTE handle ${handle} is not 16-bit`);
  if (!Number.isInteger(subhandle) || subhandle < 0 || subhandle > 0xffff) throw new RangeError(`sub-handle ${subhandle} is not 16-bit`);
  const raw = encodeLayout(remappableMsiAddressLayout, {
    HANDLE_15: handle >>> 15,
    SHV: 1,
    INTERRUPT_FORMAT: InterruptFormat.REMAPPABLE,
    HANDLE_14_0: handle & 0x7fff,
    ADDR_BASE: MSI_ADDRESS_BASE,
  });
  return { addressLo: raw[0]!, addressHi: raw[1]!, data: subhandle };
}

/** A compatibility-format MSI (base 0xFEE, format bit 0). */
export function encodeCompatMsi(address: Partial<Omit<CompatMsiAddressFields, "INTERRUPT_FORMAT" | "ADDR_BASE">>, data: Partial<CompatMsiDataFields>): EncodedMsi {
  const a = encodeLayout(compatMsiAddressLayout, { ...address, INTERRUPT_FORMAT: InterruptFormat.COMPATIBILITY, ADDR_BASE: MSI_ADDRESS_BASE });
  const d = encodeLayout(compatMsiDataLayout, data);
  return { addressLo: a[0]!, addressHi: a[1]!, data: d[0]! };
}
