import { ByteWriter, buildAcpiTable, type AcpiTableIdentity } from "@viommu/core";
import { cmdqvApertureSize } from "./aperture.js";

/**
 * How firmware describes a Tegra241 CMDQV (spec arm-hyperv-virtio.md §4.6): not an IORT node but an ACPI
 * namespace device, _HID "NVDA200C", whose _UID is the Identifier of its companion IORT SMMUv3 node (Linux
 * acpi_smmu_dsdt_probe_tegra241_cmdqv matches the _UID against "%u" of the node identifier), _CCA 1, and a _CRS
 * with one memory window (the CMDQV aperture) and one interrupt (the CMDQV error IRQ; Linux takes the first
 * memory resource and the first interrupt). QEMU (hw/arm/virt-acpi-build.c) emits Device(CVnn) with a QWordMemory
 * window (cacheable, read/write, fixed min/max) and an edge-triggered, active-high, exclusive Interrupt.
 */

export const TEGRA241_CMDQV_HID = "NVDA200C";

export interface Tegra241CmdqvAcpiDevice {
  /** The 4-character ACPI name, e.g. "CV00". */
  readonly name: string;
  /** Identifier of the companion IORT SMMUv3 node. */
  readonly uid: number;
  /** Base of the CMDQV aperture. */
  readonly base: number;
  /** Length of the aperture (cmdqvApertureSize(vintfs); 0x50000 with one VINTF). */
  readonly length: number;
  /** GSIV of the CMDQV error interrupt. */
  readonly gsiv: number;
}

/** The identity every CMDQV device carries (spec §4.6), as data. */
export const tegra241CmdqvAcpiIdentity = {
  hid: TEGRA241_CMDQV_HID,
  /** _CCA 1: DMA is cache-coherent. */
  cca: 1,
  /** _UID: the IORT SMMUv3 node Identifier of the SMMU this CMDQV extends. */
  uid: "IORT SMMUv3 node Identifier",
  resources: ["QWordMemory: the CMDQV MMIO aperture", "Interrupt: the CMDQV error IRQ"],
  iortNode: false,
} as const;

/** A device as QEMU describes its one-VINTF CMDQV. */
export function qemuCmdqvAcpiDevice(index: number, uid: number, base: number, gsiv: number): Tegra241CmdqvAcpiDevice {
  return { name: `CV${index.toString().padStart(2, "0")}`, uid, base, length: cmdqvApertureSize(1), gsiv };
}

// ACPI 6.5 §6.4.3.5.1 (QWord Address Space Descriptor) and §6.4.3.6 (Extended Interrupt Descriptor), §6.4.2.9 (End Tag).
const QWORD_ADDRESS_SPACE = 0x8a;
const QWORD_BODY_LENGTH = 43;
const EXTENDED_INTERRUPT = 0x89;
const END_TAG = 0x79;
const RESOURCE_TYPE_MEMORY = 0;
/** General flags: _MAF (bit 3) and _MIF (bit 2) fixed, _DEC (bit 1) positive decode, bit 0 clear (as QEMU writes). */
const GENERAL_FLAGS_FIXED = 0x0c;
/** Memory flags: _MEM = 1 cacheable (bits 2:1), _RW = 1 read/write (bit 0). */
const MEMORY_FLAGS_CACHEABLE_RW = 0x03;
/** Interrupt flags: consumer (bit 0), edge (_HE, bit 1), active high (_LL = 0), exclusive (_SHR = 0). */
const INTERRUPT_FLAGS_CONSUMER_EDGE = 0x03;

function checkDevice(d: Tegra241CmdqvAcpiDevice): void {
  if (!/^[A-Z_][A-Z0-9_]{3}$/.test(d.name)) throw new RangeError(`ACPI name ${JSON.stringify(d.name)} is not a NameSeg`);
  for (const [what, v] of [["uid", d.uid], ["base", d.base], ["length", d.length], ["gsiv", d.gsiv]] as const) {
    if (!Number.isSafeInteger(v) || v < 0) throw new RangeError(`${what} ${v}`);
  }
  if (d.length === 0 || d.gsiv > 0xffffffff || d.uid > 0xffffffff) throw new RangeError("length 0, or uid / gsiv beyond 32 bits");
}

/** The _CRS resource template: QWordMemory window, one extended interrupt, end tag (57 bytes). */
export function cmdqvCrs(d: Tegra241CmdqvAcpiDevice): Uint8Array {
  checkDevice(d);
  return new ByteWriter()
    .u8(QWORD_ADDRESS_SPACE)
    .u16(QWORD_BODY_LENGTH)
    .u8(RESOURCE_TYPE_MEMORY)
    .u8(GENERAL_FLAGS_FIXED)
    .u8(MEMORY_FLAGS_CACHEABLE_RW)
    .u64(0) // granularity
    .u64(d.base) // minimum
    .u64(d.base + d.length - 1) // maximum
    .u64(0) // translation offset
    .u64(d.length)
    .u8(EXTENDED_INTERRUPT)
    .u16(6)
    .u8(INTERRUPT_FLAGS_CONSUMER_EDGE)
    .u8(1)
    .u32(d.gsiv)
    .u8(END_TAG)
    .u8(0)
    .finish();
}

export interface CmdqvCrsDecode {
  readonly base: number;
  readonly length: number;
  readonly gsiv: number;
  readonly edge: boolean;
  readonly activeHigh: boolean;
  readonly exclusive: boolean;
}

/**
 * Reads a _CRS resource template the way Linux's probe does: the first memory window (QWord form) and the
 * first interrupt. Returns a reason string for a malformed or incomplete template; never throws.
 */
export function decodeCmdqvCrs(bytes: Uint8Array): CmdqvCrsDecode | string {
  const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  let memory: { base: number; length: number } | undefined;
  let irq: { gsiv: number; flags: number } | undefined;
  let at = 0;
  while (at < bytes.length) {
    const tag = bytes[at]!;
    if (tag === END_TAG) break;
    if ((tag & 0x80) === 0) return `unexpected small resource 0x${tag.toString(16)} at ${at}`;
    if (at + 3 > bytes.length) return `truncated large resource at ${at}`;
    const length = view.getUint16(at + 1, true);
    const end = at + 3 + length;
    if (end > bytes.length) return `resource at ${at} runs past the template`;
    if (tag === QWORD_ADDRESS_SPACE && memory === undefined) {
      if (length < QWORD_BODY_LENGTH) return `QWord descriptor of ${length} bytes`;
      if (bytes[at + 3] !== RESOURCE_TYPE_MEMORY) return "QWord descriptor is not a memory range";
      const base = view.getBigUint64(at + 14, true);
      const len = view.getBigUint64(at + 38, true);
      if (base > BigInt(Number.MAX_SAFE_INTEGER) || len > BigInt(Number.MAX_SAFE_INTEGER)) return "memory window beyond 2^53";
      memory = { base: Number(base), length: Number(len) };
    } else if (tag === EXTENDED_INTERRUPT && irq === undefined) {
      if (length < 6 || bytes[at + 4]! < 1) return "interrupt descriptor without an interrupt";
      irq = { flags: bytes[at + 3]!, gsiv: view.getUint32(at + 5, true) };
    }
    at = end;
  }
  if (memory === undefined) return "no memory window";
  if (irq === undefined) return "no interrupt";
  return { ...memory, gsiv: irq.gsiv, edge: (irq.flags & 2) !== 0, activeHigh: (irq.flags & 4) === 0, exclusive: (irq.flags & 8) === 0 };
}

// AML encoding (ACPI 6.5 §20.2): the few terms a device declaration needs.
const AML_ZERO = 0x00;
const AML_ONE = 0x01;
const AML_BYTE_PREFIX = 0x0a;
const AML_WORD_PREFIX = 0x0b;
const AML_DWORD_PREFIX = 0x0c;
const AML_STRING_PREFIX = 0x0d;
const AML_NAME_OP = 0x08;
const AML_SCOPE_OP = 0x10;
const AML_BUFFER_OP = 0x11;
const AML_EXT_PREFIX = 0x5b;
const AML_DEVICE_OP = 0x82;

/** PkgLength (§20.2.4): the encoded length counts its own bytes. */
function pkgLength(contentLength: number): number[] {
  for (let n = 1; n <= 4; n++) {
    const total = contentLength + n;
    if (n === 1 && total < 0x40) return [total];
    if (n > 1 && total < 2 ** (4 + 8 * (n - 1))) {
      const out = [((n - 1) << 6) | (total & 0x0f)];
      for (let i = 1; i < n; i++) out.push((total >> (4 + 8 * (i - 1))) & 0xff);
      return out;
    }
  }
  throw new RangeError(`AML package of ${contentLength} bytes`);
}

function nameSeg(name: string): number[] {
  if (!/^[A-Z_][A-Z0-9_]{3}$/.test(name)) throw new RangeError(`ACPI name ${JSON.stringify(name)} is not a NameSeg`);
  return Array.from(name, (c) => c.charCodeAt(0));
}

function amlInteger(v: number): number[] {
  if (v === 0) return [AML_ZERO];
  if (v === 1) return [AML_ONE];
  if (v <= 0xff) return [AML_BYTE_PREFIX, v];
  if (v <= 0xffff) return [AML_WORD_PREFIX, v & 0xff, v >> 8];
  return [AML_DWORD_PREFIX, v & 0xff, (v >>> 8) & 0xff, (v >>> 16) & 0xff, v >>> 24];
}

function amlName(name: string, value: number[]): number[] {
  return [AML_NAME_OP, ...nameSeg(name), ...value];
}

function amlBuffer(bytes: Uint8Array): number[] {
  const body = [...amlInteger(bytes.length), ...bytes];
  return [AML_BUFFER_OP, ...pkgLength(body.length), ...body];
}

/** Device(name) { Name(_HID, "NVDA200C") Name(_UID, uid) Name(_CCA, One) Name(_CRS, ResourceTemplate(){…}) } as AML. */
export function cmdqvDeviceAml(d: Tegra241CmdqvAcpiDevice): Uint8Array {
  checkDevice(d);
  const hid = [AML_STRING_PREFIX, ...Array.from(TEGRA241_CMDQV_HID, (c) => c.charCodeAt(0)), 0];
  const body = [
    ...nameSeg(d.name),
    ...amlName("_HID", hid),
    ...amlName("_UID", amlInteger(d.uid)),
    ...amlName("_CCA", amlInteger(tegra241CmdqvAcpiIdentity.cca)),
    ...amlName("_CRS", amlBuffer(cmdqvCrs(d))),
  ];
  return Uint8Array.from([AML_EXT_PREFIX, AML_DEVICE_OP, ...pkgLength(body.length), ...body]);
}

/** An SSDT declaring the devices under \_SB (DSDT-compatible AML; revision 2, 64-bit integers). */
export function buildCmdqvSsdt(devices: readonly Tegra241CmdqvAcpiDevice[], identity: Partial<AcpiTableIdentity> = {}): Uint8Array {
  const sb = [0x5c, ...nameSeg("_SB_")];
  const inner = devices.flatMap((d) => Array.from(cmdqvDeviceAml(d)));
  const body = [...sb, ...inner];
  const scope = Uint8Array.from([AML_SCOPE_OP, ...pkgLength(body.length), ...body]);
  return buildAcpiTable({ ...identity, signature: "SSDT", revision: 2 }, scope);
}
