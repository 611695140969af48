import type { DebugfsEntry, DebugfsImporter, Layout } from "@viommu/core";
import { commandLayout, commandProblem, CommandOpcode, decodeCommand, invalidationRange } from "./command.js";
import { decodeDte, dteProblem } from "./device-table-entry.js";
import { decodeIrte128 } from "./irte128.js";
import { decodeIrte32 } from "./irte32.js";
import { fieldRecord } from "./layout-tools.js";
import { decodeMmioRead, MMIO_LAST_READ_OFFSET } from "./mmio-register-read.js";
import { baseAddressLowLayout, capabilityHeaderLayout, CapabilityOffset, miscInfo0Layout, miscInfo1Layout, rangeLayout } from "./pci-capability.js";

/**
 * Linux's AMD IOMMU debugfs files (/sys/kernel/debug/iommu/amd/, written by drivers/iommu/amd/debugfs.c; line
 * formats from its seq_printf/seq_puts formats in torvalds/linux at 0d081b16946e, ABI in
 * Documentation/ABI/testing/debugfs-amd-iommu) read back and every value decoded with this package's formats.
 * Per IOMMU: `iommuXX/mmio` and `iommuXX/capability` print the register at the offset last written into them;
 * `iommuXX/cmdbuf` prints the whole command buffer. Globally: `devid` prints the device last written into it,
 * and `devtbl` / `irqtbl` print that device's DTE and valid IRTEs. A file may hold several reads one after
 * another (one per offset or device written). Messages that carry no state are recognised and skipped; any
 * other line is an error naming its number.
 */
export const amdViDebugfs: DebugfsImporter = {
  files: ["mmio", "capability", "cmdbuf", "devid", "devtbl", "irqtbl"],

  parse(file: string, text: string): { readonly entries: readonly DebugfsEntry[]; readonly errors: readonly string[] } {
    const parser = Object.hasOwn(PARSERS, file) ? PARSERS[file] : undefined;
    if (parser === undefined) return { entries: [], errors: [`${file}: not an AMD-Vi debugfs file this reads (${amdViDebugfs.files.join(", ")})`] };
    const entries: DebugfsEntry[] = [];
    const errors: string[] = [];
    const state: ParseState = { head: undefined, tail: undefined, device: undefined, irteBits: undefined };
    text.split("\n").forEach((raw, i) => {
      let line = raw.replace(/[ \t\r]+$/, "");
      // Two of the kernel's messages end without a newline, so the next read's first line follows them directly.
      for (const message of UNTERMINATED) if (line.startsWith(message)) line = line.slice(message.length);
      if (line === "") return;
      const problem = parser(line, i + 1, entries, state);
      if (problem !== undefined) errors.push(`${file}:${i + 1}: ${problem}: ${JSON.stringify(raw.length > 120 ? `${raw.slice(0, 120)}…` : raw)}`);
    });
    return { entries, errors };
  },
};

interface ParseState {
  /** cmdbuf: the head and tail entry indices of the last header. */
  head: number | undefined;
  tail: number | undefined;
  /** irqtbl: the device of the last "DeviceId" line, and the IRTE width seen under it. */
  device: string | undefined;
  irteBits: 32 | 128 | undefined;
}

type Fields = Record<string, number | bigint | boolean | string>;
type LineParser = (line: string, n: number, out: DebugfsEntry[], state: ParseState) => string | undefined;

/** "Device table not found" (dump_dte, dump_irte) and the IRT length message (dump_irte) are printed without "\n". */
const UNTERMINATED = ["Device table not found", "The device's DTE contains an invalid IRT length value."];

const H8 = "([0-9a-fA-F]{8})";
const H16 = "([0-9a-fA-F]{16})";
/** "%04x:%02x:%02x.%x": segment, bus, slot, function. */
const SBDF = "([0-9a-fA-F]{4}):([0-9a-fA-F]{2}):([0-9a-fA-F]{2})\\.([0-7])";
/** Command buffer entries (CMD_BUFFER_SIZE 8192 / 16 bytes, amd_iommu_types.h). */
const CMD_BUFFER_ENTRIES = 512;
/** The largest interrupt remapping table Linux allocates (DTE_INTTABLEN_2K). */
const MAX_IRT_ENTRIES = 2048;

const hex64 = (hi: number, lo: number): string => `0x${hi.toString(16).padStart(8, "0")}${lo.toString(16).padStart(8, "0")}`;
const half = (q: string, which: "lo" | "hi"): number => parseInt(which === "lo" ? q.slice(8) : q.slice(0, 8), 16);

/** A segment:bus:slot.function as the kernel prints it, or why no PCI function has it. */
function sbdf(m: readonly string[], at: number): { text: string; deviceId: number } | string {
  const bus = parseInt(m[at + 1]!, 16);
  const slot = parseInt(m[at + 2]!, 16);
  const fn = Number(m[at + 3]);
  if (slot > 0x1f) return `slot 0x${slot.toString(16)} is not a PCI device number (0x00–0x1f)`;
  return { text: `${m[at]}:${m[at + 1]}:${m[at + 2]}.${fn}`.toLowerCase(), deviceId: (bus << 8) | (slot << 3) | fn };
}

/**
 * iommuXX/mmio: "Offset:0x%x Value:0x%016llx" (iommu_mmio_show: a readq at the offset written last), or
 * "Please provide mmio register's offset" before one was. iommu_mmio_write refuses offsets above
 * mmio_phys_end - 8, so none beyond the window with performance counters can appear.
 */
const mmio: LineParser = (line, n, out) => {
  if (line === "Please provide mmio register's offset") return undefined;
  const m = new RegExp(`^Offset:0x([0-9a-fA-F]{1,8}) Value:0x${H16}$`).exec(line);
  if (m === null) return "not an MMIO line (Offset:0x%x Value:0x%016llx)";
  const offset = parseInt(m[1]!, 16);
  if (offset > MMIO_LAST_READ_OFFSET) return `offset 0x${offset.toString(16)} is beyond the MMIO window (the kernel accepts at most 0x${MMIO_LAST_READ_OFFSET.toString(16)})`;
  const lo = half(m[2]!, "lo");
  const hi = half(m[2]!, "hi");
  const read = decodeMmioRead(offset, lo, hi);
  out.push({ structure: "MMIO register", line: n, address: offset, index: read.name, raw: [hex64(hi, lo)], fields: read.fields });
  return undefined;
};

/** The IOMMU capability block's dwords by their offset from the capability pointer (spec x86.md B1). */
const CAPABILITY_REGISTERS: ReadonlyMap<number, { readonly name: string; readonly layout?: Layout }> = new Map([
  [CapabilityOffset.Header, { name: "CapabilityHeader", layout: capabilityHeaderLayout }],
  [CapabilityOffset.BaseAddressLow, { name: "BaseAddressLow", layout: baseAddressLowLayout }],
  [CapabilityOffset.BaseAddressHigh, { name: "BaseAddressHigh" }],
  [CapabilityOffset.Range, { name: "Range", layout: rangeLayout }],
  [CapabilityOffset.MiscInfo0, { name: "MiscInfo0", layout: miscInfo0Layout }],
  [CapabilityOffset.MiscInfo1, { name: "MiscInfo1", layout: miscInfo1Layout }],
]);

/**
 * iommuXX/capability: "Offset:0x%x Value:0x%08x" (iommu_capability_show: the dword at cap_ptr + the offset
 * written last, which iommu_capability_write bounds to 0x14); "Please provide capability register's offset in
 * the range [0x00 - 0x14]" before one was, and "Not able to read capability register at 0x%x" when the
 * configuration read fails (as it does for an offset that is not dword-aligned).
 */
const capability: LineParser = (line, n, out) => {
  if (line === "Please provide capability register's offset in the range [0x00 - 0x14]" || /^Not able to read capability register at 0x[0-9a-fA-F]+$/.test(line)) return undefined;
  const m = new RegExp(`^Offset:0x([0-9a-fA-F]{1,8}) Value:0x${H8}$`).exec(line);
  if (m === null) return "not a capability line (Offset:0x%x Value:0x%08x)";
  const offset = parseInt(m[1]!, 16);
  const register = CAPABILITY_REGISTERS.get(offset);
  if (register === undefined) {
    return offset > CapabilityOffset.MiscInfo1 ? `offset 0x${offset.toString(16)} is beyond the capability block (the kernel accepts 0x00–0x14)` : `offset 0x${offset.toString(16)} is not dword-aligned (the kernel cannot read it)`;
  }
  const value = parseInt(m[2]!, 16);
  const fields: Fields = register.layout !== undefined ? fieldRecord(register.layout, Uint32Array.of(value)) : { BaseAddress_63_32: value };
  out.push({ structure: "capability register", line: n, address: offset, index: register.name, raw: [`0x${m[2]!.toLowerCase()}`], fields });
  return undefined;
};

/**
 * iommuXX/cmdbuf: "CMD Buffer Head Offset:%d Tail Offset:%d" (the head and tail registers' entry indices,
 * (reg >> 4) & 0x7fff), then "%3d: %08x %08x %08x %08x" for every one of the 512 entries, data[0] first
 * (iommu_cmdbuf_show). Each written entry is decoded by its opcode; entries never written (all zero) are
 * skipped; an entry between head and tail is one the IOMMU has not consumed yet (Pending).
 */
const cmdbuf: LineParser = (line, n, out, state) => {
  const header = /^CMD Buffer Head Offset:(\d+) Tail Offset:(\d+)$/.exec(line);
  if (header !== null) {
    const head = Number(header[1]);
    const tail = Number(header[2]);
    if (head >= CMD_BUFFER_ENTRIES || tail >= CMD_BUFFER_ENTRIES) return `head or tail beyond the ${CMD_BUFFER_ENTRIES}-entry command buffer`;
    state.head = head;
    state.tail = tail;
    out.push({ structure: "command buffer", line: n, raw: [], fields: { Head: head, Tail: tail, Pending: (tail - head + CMD_BUFFER_ENTRIES) % CMD_BUFFER_ENTRIES } });
    return undefined;
  }
  const m = new RegExp(`^ *(\\d+): ${H8} ${H8} ${H8} ${H8}$`).exec(line);
  if (m === null) return "not a command line (%3d: %08x %08x %08x %08x)";
  const index = Number(m[1]);
  if (index >= CMD_BUFFER_ENTRIES) return `entry ${index} is beyond the ${CMD_BUFFER_ENTRIES}-entry command buffer`;
  const raw = Uint32Array.of(parseInt(m[2]!, 16), parseInt(m[3]!, 16), parseInt(m[4]!, 16), parseInt(m[5]!, 16));
  if (raw.every((w) => w === 0)) return undefined;
  const decoded = decodeCommand(raw);
  const fields: Fields = { ...decoded.fields };
  if (decoded.code === CommandOpcode.INVALIDATE_IOMMU_PAGES || decoded.code === CommandOpcode.INVALIDATE_IOTLB_PAGES || decoded.code === CommandOpcode.PREFETCH_IOMMU_PAGES) {
    const range = invalidationRange(raw[2]!, raw[3]!);
    fields["Range"] = range.all ? "all" : `0x${range.base.toString(16)}-0x${(range.base + range.size - 1).toString(16)}`;
  }
  if (decoded.name === "UNKNOWN") fields["Problem"] = "unknown opcode";
  else if (commandLayout(decoded.code) !== undefined && commandProblem(raw) === "reserved-bits") fields["Problem"] = "reserved bits set";
  if (state.head !== undefined && state.tail !== undefined) fields["Pending"] = (index - state.head + CMD_BUFFER_ENTRIES) % CMD_BUFFER_ENTRIES < (state.tail - state.head + CMD_BUFFER_ENTRIES) % CMD_BUFFER_ENTRIES;
  out.push({ structure: decoded.name, line: n, index: String(index), raw: [hex64(raw[1]!, raw[0]!), hex64(raw[3]!, raw[2]!)], fields });
  return undefined;
};

/** devid: "%04x:%02x:%02x.%x" (devid_show: the device written last), or "No or Invalid input provided". */
const devid: LineParser = (line, n, out) => {
  if (line === "No or Invalid input provided") return undefined;
  const m = new RegExp(`^${SBDF}$`).exec(line);
  if (m === null) return "not a device line (%04x:%02x:%02x.%x)";
  const device = sbdf(m, 1);
  if (typeof device === "string") return device;
  const fields: Fields = { Segment: parseInt(m[1]!, 16), Bus: parseInt(m[2]!, 16), Device: parseInt(m[3]!, 16), Function: Number(m[4]), DeviceID: device.deviceId };
  out.push({ structure: "selected device", line: n, index: device.text, raw: [], fields });
  return undefined;
};

/** dump_dte's header line: "%-12s %16s %16s %16s %16s iommu". */
const DTE_HEADER = `${"DeviceId".padEnd(12)} ${["QWORD[3]", "QWORD[2]", "QWORD[1]", "QWORD[0]"].map((q) => q.padStart(16)).join(" ")} iommu`;

/**
 * devtbl: the header "%-12s %16s %16s %16s %16s iommu" (DeviceId, QWORD[3] … QWORD[0]), then
 * "%04x:%02x:%02x.%x " + "%016llx " for data[3] down to data[0] + "iommu%d" (dump_dte); "Enter a valid device
 * ID to 'devid' file" before a device was chosen. The 256-bit DTE is decoded by field, with the reason the
 * hardware would reject it (ILLEGAL_DEV_TABLE_ENTRY) when it would.
 */
const devtbl: LineParser = (line, n, out) => {
  if (line === "Enter a valid device ID to 'devid' file" || line === DTE_HEADER) return undefined;
  const m = new RegExp(`^${SBDF} ${H16} ${H16} ${H16} ${H16} iommu(\\d+)$`).exec(line);
  if (m === null) return "not a DTE line (%04x:%02x:%02x.%x %016llx %016llx %016llx %016llx iommu%d)";
  const device = sbdf(m, 1);
  if (typeof device === "string") return device;
  const qwords = [m[8]!, m[7]!, m[6]!, m[5]!];
  const raw = new Uint32Array(8);
  qwords.forEach((q, i) => {
    raw[2 * i] = half(q, "lo");
    raw[2 * i + 1] = half(q, "hi");
  });
  const fields: Fields = { DeviceID: device.deviceId, ...decodeDte(raw), IOMMU: `iommu${m[9]}` };
  const problem = dteProblem(raw);
  if (problem !== undefined) fields["Problem"] = problem;
  out.push({ structure: "DTE", line: n, index: device.text, raw: qwords.map((q) => `0x${q.toLowerCase()}`), fields });
  return undefined;
};

/**
 * irqtbl: "DeviceId %04x:%02x:%02x.%x", then each valid entry as "IRT[%04d] %016llx %016llx" (128-bit, high
 * then low: dump_128_irte) or "IRT[%04d] %08x" (32-bit: dump_32_irte), which one by the kernel's guest
 * interrupt mode (AMD_IOMMU_GUEST_IR_GA), then an empty line (dump_irte). Also "Interrupt remapping is
 * disabled", "Enter a valid device ID to 'devid' file" and "IRQ lookup table not set for %04x:%02x:%02x:%x".
 * A 128-bit entry decodes as remapped or guest virtual APIC by its GuestMode bit.
 */
const irqtbl: LineParser = (line, n, out, state) => {
  if (line === "Interrupt remapping is disabled" || line === "Enter a valid device ID to 'devid' file" || /^IRQ lookup table not set for [0-9a-fA-F]{4}:[0-9a-fA-F]{2}:[0-9a-fA-F]{2}:[0-7]$/.test(line)) return undefined;
  const header = new RegExp(`^DeviceId ${SBDF}$`).exec(line);
  if (header !== null) {
    const device = sbdf(header, 1);
    if (typeof device === "string") return device;
    state.device = device.text;
    state.irteBits = undefined;
    return undefined;
  }
  const m = new RegExp(`^IRT\\[(\\d{4,})\\] (?:${H16} ${H16}|${H8})$`).exec(line);
  if (m === null) return "not an IRTE line (IRT[%04d] %016llx %016llx, or IRT[%04d] %08x)";
  const index = Number(m[1]);
  if (index >= MAX_IRT_ENTRIES) return `entry ${index} is beyond the largest (${MAX_IRT_ENTRIES}-entry) interrupt remapping table`;
  const bits = m[4] !== undefined ? 32 : 128;
  if (state.irteBits !== undefined && state.irteBits !== bits) return `a ${bits}-bit IRTE among ${state.irteBits}-bit ones (the kernel prints one format)`;
  state.irteBits = bits;
  const where = `${state.device !== undefined ? `${state.device} ` : ""}IRT[${index}]`;
  if (bits === 32) {
    const decoded = decodeIrte32(Uint32Array.of(parseInt(m[4]!, 16)));
    out.push({ structure: "IRTE (32-bit)", line: n, index: where, raw: [`0x${m[4]!.toLowerCase()}`], fields: { ...decoded.fields } });
    return undefined;
  }
  const hi = m[2]!;
  const lo = m[3]!;
  const decoded = decodeIrte128(Uint32Array.of(half(lo, "lo"), half(lo, "hi"), half(hi, "lo"), half(hi, "hi")));
  const form = decoded.name === "GUEST_VIRTUAL_APIC" ? "guest virtual APIC" : "remapped";
  out.push({ structure: `IRTE (128-bit, ${form})`, line: n, index: where, raw: [`0x${lo.toLowerCase()}`, `0x${hi.toLowerCase()}`], fields: { ...decoded.fields } });
  return undefined;
};

const PARSERS: Readonly<Record<string, LineParser>> = { mmio, capability, cmdbuf, devid, devtbl, irqtbl };
