import {
  readStruct,
  structProblem,
  viewOf,
  writeStruct,
  type ByteFields,
  type ByteInit,
  type ByteLayout,
} from "./byte-layout.js";
import {
  attachDeviceDomainInputLayout,
  configureDeviceDomainInputLayout,
  createDeviceDomainInputLayout,
  deleteDeviceDomainInputLayout,
  detachDeviceDomainInputLayout,
  flushDeviceDomainInputLayout,
  flushDeviceDomainListInputLayout,
  iommuFlushVaElementLayout,
} from "./device-domain-hypercalls.js";
import { gpaPageListElementLayout, mapDeviceGpaPagesInputLayout, unmapDeviceGpaPagesInputLayout } from "./device-gpa-pages.js";
import { targetVariableHeaderProblem } from "./device-interrupt-target.js";
import { attachDeviceInputLayout, detachDeviceInputLayout } from "./direct-attach.js";
import { HvStatus, type HvStatusCode } from "./hv-status.js";
import { decodeHypercallInput, encodeHypercallInput, hypercallInputProblem } from "./hypercall-input.js";
import {
  getIommuCapabilitiesInputLayout,
  getIommuCapabilitiesOutputLayout,
  getLogicalDevicePropertyInputLayout,
  getLogicalDevicePropertyOutputLayout,
} from "./iommu-discovery.js";
import {
  interruptTargetOffset,
  mapDeviceInterruptInputLayouts,
  mapDeviceInterruptOutputLayouts,
  retargetInterruptInputLayouts,
  unmapDeviceInterruptInputLayouts,
} from "./interrupt-hypercalls.js";

/** HV_PARTITION_ID_SELF and HV_PARTITION_ID_INVALID (Linux hvgdk_mini.h). */
export const HV_PARTITION_ID_SELF = (1n << 64n) - 1n;
export const HV_PARTITION_ID_INVALID = 0n;

/** Hypercall input and output pages are one 4 KiB hypervisor page (HV_HYP_PAGE_SIZE). */
export const HV_HYP_PAGE_SIZE = 4096;

/** HVCALL_* codes (Linux hvgdk_mini.h and the pvIOMMU series' additions to it). */
export const HvCallCode = {
  HVCALL_MAP_DEVICE_INTERRUPT: 0x007c,
  HVCALL_UNMAP_DEVICE_INTERRUPT: 0x007d,
  HVCALL_RETARGET_INTERRUPT: 0x007e,
  HVCALL_ATTACH_DEVICE: 0x0082,
  HVCALL_DETACH_DEVICE: 0x0083,
  HVCALL_CREATE_DEVICE_DOMAIN: 0x00b1,
  HVCALL_ATTACH_DEVICE_DOMAIN: 0x00b2,
  HVCALL_MAP_DEVICE_GPA_PAGES: 0x00b3,
  HVCALL_UNMAP_DEVICE_GPA_PAGES: 0x00b4,
  HVCALL_DETACH_DEVICE_DOMAIN: 0x00c4,
  HVCALL_DELETE_DEVICE_DOMAIN: 0x00c5,
  HVCALL_CONFIGURE_DEVICE_DOMAIN: 0x00ce,
  HVCALL_FLUSH_DEVICE_DOMAIN: 0x00d0,
  HVCALL_FLUSH_DEVICE_DOMAIN_LIST: 0x00d1,
  HVCALL_GET_IOMMU_CAPABILITIES: 0x0125,
  HVCALL_GET_LOGICAL_DEVICE_PROPERTY: 0x0127,
} as const;

export type HvCallName = keyof typeof HvCallCode;

/** How a hypercall's variable header is used (spec §5.2): only the interrupt calls carry one, holding a VP set. */
export type VariableHeaderUse = "none" | "vp-set";

/**
 * One hypercall as data: its code, whether it is a rep call, the layout of its fixed input header, the element of
 * its rep list (rep calls that pass per-rep data), its output, and where its definition comes from.
 */
export interface HypercallSpec<In extends ByteLayout = ByteLayout, Rep extends ByteLayout | undefined = ByteLayout | undefined, Out extends ByteLayout | undefined = ByteLayout | undefined> {
  /** The command-line id (`viommu decode --vendor hyperv --structure <id>`). */
  readonly id: string;
  readonly name: HvCallName;
  readonly code: number;
  readonly rep: boolean;
  readonly input: In;
  /** Per-rep input element of a rep call; undefined for simple calls and for rep calls whose reps carry no data. */
  readonly repElement: Rep;
  readonly output: Out;
  readonly variableHeader: VariableHeaderUse;
  /**
   * True for codes and layouts known only from the unmerged pvIOMMU / passthrough patch series (spec §5.4, §9
   * item 10): they may change before they land.
   */
  readonly provisional: boolean;
  readonly source: string;
}

function spec<const In extends ByteLayout, const Rep extends ByteLayout | undefined, const Out extends ByteLayout | undefined>(
  s: HypercallSpec<In, Rep, Out>,
): HypercallSpec<In, Rep, Out> {
  if (s.code !== HvCallCode[s.name]) throw new Error(`${s.name}: code 0x${s.code.toString(16)} disagrees with HvCallCode`);
  return s;
}

const seriesA = "Hyper-V guest pvIOMMU series (Yu Zhang et al.), include/hyperv/hvhdk_mini.h";
const seriesB = "Hyper-V root / L1VH passthrough series (Mukesh Rathor), include/hyperv/hvhdk_mini.h";
const mainline = "Linux include/hyperv/hvhdk_mini.h";

export const hvCreateDeviceDomain = spec({
  id: "create-device-domain",
  name: "HVCALL_CREATE_DEVICE_DOMAIN",
  code: 0xb1,
  rep: false,
  input: createDeviceDomainInputLayout,
  repElement: undefined,
  output: undefined,
  variableHeader: "none",
  provisional: true,
  source: `${seriesA}; ${seriesB}`,
});

export const hvDeleteDeviceDomain = spec({
  id: "delete-device-domain",
  name: "HVCALL_DELETE_DEVICE_DOMAIN",
  code: 0xc5,
  rep: false,
  input: deleteDeviceDomainInputLayout,
  repElement: undefined,
  output: undefined,
  variableHeader: "none",
  provisional: true,
  source: `${seriesA}; ${seriesB}`,
});

export const hvAttachDeviceDomain = spec({
  id: "attach-device-domain",
  name: "HVCALL_ATTACH_DEVICE_DOMAIN",
  code: 0xb2,
  rep: false,
  input: attachDeviceDomainInputLayout,
  repElement: undefined,
  output: undefined,
  variableHeader: "none",
  provisional: true,
  source: `${seriesA}; ${seriesB}`,
});

export const hvDetachDeviceDomain = spec({
  id: "detach-device-domain",
  name: "HVCALL_DETACH_DEVICE_DOMAIN",
  code: 0xc4,
  rep: false,
  input: detachDeviceDomainInputLayout,
  repElement: undefined,
  output: undefined,
  variableHeader: "none",
  provisional: true,
  source: `${seriesA}; ${seriesB}`,
});

export const hvConfigureDeviceDomain = spec({
  id: "configure-device-domain",
  name: "HVCALL_CONFIGURE_DEVICE_DOMAIN",
  code: 0xce,
  rep: false,
  input: configureDeviceDomainInputLayout,
  repElement: undefined,
  output: undefined,
  variableHeader: "none",
  provisional: true,
  source: seriesA,
});

export const hvFlushDeviceDomain = spec({
  id: "flush-device-domain",
  name: "HVCALL_FLUSH_DEVICE_DOMAIN",
  code: 0xd0,
  rep: false,
  input: flushDeviceDomainInputLayout,
  repElement: undefined,
  output: undefined,
  variableHeader: "none",
  provisional: true,
  source: seriesA,
});

export const hvFlushDeviceDomainList = spec({
  id: "flush-device-domain-list",
  name: "HVCALL_FLUSH_DEVICE_DOMAIN_LIST",
  code: 0xd1,
  rep: true,
  input: flushDeviceDomainListInputLayout,
  repElement: iommuFlushVaElementLayout,
  output: undefined,
  variableHeader: "none",
  provisional: true,
  source: `${seriesA} (page-selective flush patch, 2026 revisions)`,
});

export const hvMapDeviceGpaPages = spec({
  id: "map-device-gpa-pages",
  name: "HVCALL_MAP_DEVICE_GPA_PAGES",
  code: 0xb3,
  rep: true,
  input: mapDeviceGpaPagesInputLayout,
  repElement: gpaPageListElementLayout,
  output: undefined,
  variableHeader: "none",
  provisional: true,
  source: seriesB,
});

export const hvUnmapDeviceGpaPages = spec({
  id: "unmap-device-gpa-pages",
  name: "HVCALL_UNMAP_DEVICE_GPA_PAGES",
  code: 0xb4,
  rep: true,
  input: unmapDeviceGpaPagesInputLayout,
  repElement: undefined,
  output: undefined,
  variableHeader: "none",
  provisional: true,
  source: seriesB,
});

export const hvAttachDevice = spec({
  id: "attach-device",
  name: "HVCALL_ATTACH_DEVICE",
  code: 0x82,
  rep: false,
  input: attachDeviceInputLayout,
  repElement: undefined,
  output: undefined,
  variableHeader: "none",
  provisional: true,
  source: seriesB,
});

export const hvDetachDevice = spec({
  id: "detach-device",
  name: "HVCALL_DETACH_DEVICE",
  code: 0x83,
  rep: false,
  input: detachDeviceInputLayout,
  repElement: undefined,
  output: undefined,
  variableHeader: "none",
  provisional: true,
  source: seriesB,
});

export const hvGetIommuCapabilities = spec({
  id: "get-iommu-capabilities",
  name: "HVCALL_GET_IOMMU_CAPABILITIES",
  code: 0x125,
  rep: false,
  input: getIommuCapabilitiesInputLayout,
  repElement: undefined,
  output: getIommuCapabilitiesOutputLayout,
  variableHeader: "none",
  provisional: true,
  source: seriesA,
});

export const hvGetLogicalDeviceProperty = spec({
  id: "get-logical-device-property",
  name: "HVCALL_GET_LOGICAL_DEVICE_PROPERTY",
  code: 0x127,
  rep: false,
  input: getLogicalDevicePropertyInputLayout,
  repElement: undefined,
  output: getLogicalDevicePropertyOutputLayout,
  variableHeader: "none",
  provisional: true,
  source: seriesA,
});

function interruptSpecs<A extends "x64" | "arm64">(arch: A) {
  const suffix = arch === "x64" ? "" : "-arm64";
  return {
    map: spec({
      id: `map-device-interrupt${suffix}`,
      name: "HVCALL_MAP_DEVICE_INTERRUPT",
      code: 0x7c,
      rep: false,
      input: mapDeviceInterruptInputLayouts[arch],
      repElement: undefined,
      output: mapDeviceInterruptOutputLayouts[arch],
      variableHeader: "vp-set",
      provisional: false,
      source: `${mainline}; arch/x86/hyperv/irqdomain.c`,
    }),
    unmap: spec({
      id: `unmap-device-interrupt${suffix}`,
      name: "HVCALL_UNMAP_DEVICE_INTERRUPT",
      code: 0x7d,
      rep: false,
      input: unmapDeviceInterruptInputLayouts[arch],
      repElement: undefined,
      output: undefined,
      variableHeader: "none",
      provisional: false,
      source: `${mainline}; arch/x86/hyperv/irqdomain.c`,
    }),
    retarget: spec({
      id: `retarget-interrupt${suffix}`,
      name: "HVCALL_RETARGET_INTERRUPT",
      code: 0x7e,
      rep: false,
      input: retargetInterruptInputLayouts[arch],
      repElement: undefined,
      output: undefined,
      variableHeader: "vp-set",
      provisional: false,
      source: `Linux include/hyperv/hvgdk_mini.h; drivers/pci/controller/pci-hyperv.c`,
    }),
  };
}

const x64Interrupts = interruptSpecs("x64");
const arm64Interrupts = interruptSpecs("arm64");

export const hvMapDeviceInterrupt = x64Interrupts.map;
export const hvUnmapDeviceInterrupt = x64Interrupts.unmap;
export const hvRetargetInterrupt = x64Interrupts.retarget;
export const hvMapDeviceInterruptArm64 = arm64Interrupts.map;
export const hvUnmapDeviceInterruptArm64 = arm64Interrupts.unmap;
export const hvRetargetInterruptArm64 = arm64Interrupts.retarget;

/** Every hypercall this package models, x86 layouts for the interrupt calls. */
export const hypervHypercalls: readonly HypercallSpec[] = [
  hvMapDeviceInterrupt,
  hvUnmapDeviceInterrupt,
  hvRetargetInterrupt,
  hvAttachDevice,
  hvDetachDevice,
  hvCreateDeviceDomain,
  hvAttachDeviceDomain,
  hvMapDeviceGpaPages,
  hvUnmapDeviceGpaPages,
  hvDetachDeviceDomain,
  hvDeleteDeviceDomain,
  hvConfigureDeviceDomain,
  hvFlushDeviceDomain,
  hvFlushDeviceDomainList,
  hvGetIommuCapabilities,
  hvGetLogicalDeviceProperty,
];

const byCode = new Map<number, HypercallSpec>(hypervHypercalls.map((s) => [s.code, s]));

/** The x86 spec of a call code, or undefined (the hypervisor answers HV_STATUS_INVALID_HYPERCALL_CODE). */
export function hypercallByCode(code: number): HypercallSpec | undefined {
  return byCode.get(code);
}

type RepFields<S extends HypercallSpec> = S["repElement"] extends ByteLayout ? ByteFields<S["repElement"]> : never;
type RepInit<S extends HypercallSpec> = S["repElement"] extends ByteLayout ? ByteInit<S["repElement"]> : never;

/** A decoded input page, or the status the hypervisor answers for a malformed call. */
export type HypercallInputDecode<S extends HypercallSpec> =
  | {
      readonly ok: true;
      readonly input: ByteFields<S["input"]>;
      /** Variable header words (little-endian u64), empty for calls without one. */
      readonly varHeader: readonly bigint[];
      readonly repCount: number;
      readonly repStartIndex: number;
      /** Every rep element, index 0 first (processing starts at repStartIndex); empty when reps carry no data. */
      readonly reps: readonly RepFields<S>[];
    }
  | { readonly ok: false; readonly status: HvStatusCode; readonly reason: string };

function fail(status: HvStatusCode, reason: string): { ok: false; status: HvStatusCode; reason: string } {
  return { ok: false, status, reason };
}

/**
 * Whether the hypervisor accepts an input or output GPA: it must be 8-byte aligned (TLFS common status codes:
 * HV_STATUS_INVALID_ALIGNMENT). The bytes from it to the end of its page are what decodeHypercallInputPage reads.
 * A GPA at or above 2^53 is judged on the value it arrives as (the remainder of an integer-valued number is
 * exact): an aligned one is not an alignment problem, it is outside guest RAM, which the caller answers.
 */
export function hypercallGpaProblem(gpa: number): HvStatusCode | undefined {
  return Number.isInteger(gpa) && gpa >= 0 && gpa % 8 === 0 ? undefined : HvStatus.HV_STATUS_INVALID_ALIGNMENT;
}

/** Bytes the input occupies: fixed header, variable header, then the rep list. */
export function hypercallInputSize(s: HypercallSpec, varHeaderWords: number, repCount: number): number {
  return s.input.size + 8 * varHeaderWords + repCount * (s.repElement?.size ?? 0);
}

/**
 * Decodes a memory-based hypercall's input as the hypervisor sees it. `input` holds the bytes from the input GPA
 * to the end of its 4 KiB page (the parameter list may not span pages). Guest bytes are hostile: every problem
 * becomes the status the hypervisor returns, never an exception —
 * - control word for another call: HV_STATUS_INVALID_HYPERCALL_CODE;
 * - reserved control bits, rep count/start index misuse, a variable header the call does not take or whose size
 *   disagrees with its VP set: HV_STATUS_INVALID_HYPERCALL_INPUT;
 * - a parameter list running past the page: HV_STATUS_INVALID_ALIGNMENT;
 * - reserved members or bits set in the header or a rep element: HV_STATUS_INVALID_PARAMETER (a modelling
 *   choice: the TLFS only says reserved input must be zero).
 */
export function decodeHypercallInputPage<S extends HypercallSpec>(s: S, control: bigint, input: Uint8Array): HypercallInputDecode<S> {
  const c = decodeHypercallInput(control);
  if (c.call_code !== s.code) return fail(HvStatus.HV_STATUS_INVALID_HYPERCALL_CODE, `call code 0x${c.call_code.toString(16)} is not ${s.name}`);
  const controlProblem = hypercallInputProblem(control, s.rep);
  if (controlProblem !== undefined) return fail(controlProblem, "control word: reserved bits or rep fields");
  if (s.variableHeader === "none" && c.variable_header_size !== 0) {
    return fail(HvStatus.HV_STATUS_INVALID_HYPERCALL_INPUT, `${s.name} takes no variable header`);
  }
  const size = hypercallInputSize(s, c.variable_header_size, c.rep_count);
  if (size > input.length) {
    return fail(HvStatus.HV_STATUS_INVALID_ALIGNMENT, `${size} input bytes do not fit the ${input.length} left in the page`);
  }
  const headerProblem = structProblem(s.input, input, 0);
  if (headerProblem !== undefined) return fail(HvStatus.HV_STATUS_INVALID_PARAMETER, headerProblem);
  const view = viewOf(input);
  const varHeader: bigint[] = [];
  for (let i = 0; i < c.variable_header_size; i++) varHeader.push(view.getBigUint64(s.input.size + 8 * i, true));
  if (s.variableHeader === "vp-set") {
    const target = view.getUint32(interruptTargetOffset(s.input) + 4, true);
    const processorSet = (target >>> 1) & 1;
    const format = view.getBigUint64(interruptTargetOffset(s.input) + 8, true);
    const status = targetVariableHeaderProblem(processorSet, format, varHeader);
    if (status !== undefined) return fail(status, "variable header does not match the target's VP set");
  }
  const reps: RepFields<S>[] = [];
  if (s.repElement !== undefined) {
    const base = s.input.size + 8 * c.variable_header_size;
    for (let i = 0; i < c.rep_count; i++) {
      const at = base + i * s.repElement.size;
      const problem = structProblem(s.repElement, input, at);
      if (problem !== undefined) return fail(HvStatus.HV_STATUS_INVALID_PARAMETER, `rep ${i}: ${problem}`);
      reps.push(readStruct(s.repElement, input, at) as RepFields<S>);
    }
  }
  return {
    ok: true,
    input: readStruct(s.input, input, 0) as ByteFields<S["input"]>,
    varHeader,
    repCount: c.rep_count,
    repStartIndex: c.rep_start_index,
    reps,
  };
}

export interface HypercallEncodeOptions<S extends HypercallSpec> {
  readonly input: ByteInit<S["input"]>;
  /** Per-rep elements (rep calls with a rep list). */
  readonly reps?: readonly RepInit<S>[];
  /** Rep count of a rep call whose reps carry no data (HVCALL_UNMAP_DEVICE_GPA_PAGES). */
  readonly repCount?: number;
  readonly repStartIndex?: number;
  readonly varHeader?: readonly bigint[];
}

/**
 * Builds a call as a guest driver issues it: the control word (call code, variable header size, rep count) and
 * the input bytes. Throws RangeError for values that do not fit or an input larger than a page (caller bugs).
 */
export function encodeHypercall<S extends HypercallSpec>(s: S, options: HypercallEncodeOptions<S>): { control: bigint; bytes: Uint8Array } {
  const varHeader = options.varHeader ?? [];
  if (s.variableHeader === "none" && varHeader.length > 0) throw new RangeError(`${s.name} takes no variable header`);
  const reps = options.reps ?? [];
  if (reps.length > 0 && s.repElement === undefined) throw new RangeError(`${s.name} has no rep list`);
  const repCount = s.repElement !== undefined ? reps.length : (options.repCount ?? 0);
  if (!s.rep && repCount !== 0) throw new RangeError(`${s.name} is not a rep call`);
  const size = hypercallInputSize(s, varHeader.length, repCount);
  if (size > HV_HYP_PAGE_SIZE) throw new RangeError(`${s.name}: ${size} input bytes exceed a page`);
  const bytes = new Uint8Array(size);
  writeStruct(s.input, options.input, bytes, 0);
  const view = viewOf(bytes);
  varHeader.forEach((word, i) => view.setBigUint64(s.input.size + 8 * i, word, true));
  if (s.repElement !== undefined) {
    const base = s.input.size + 8 * varHeader.length;
    reps.forEach((rep, i) => writeStruct(s.repElement!, rep as ByteInit<ByteLayout>, bytes, base + i * s.repElement!.size));
  }
  const control = encodeHypercallInput({
    call_code: s.code,
    variable_header_size: varHeader.length,
    rep_count: repCount,
    rep_start_index: options.repStartIndex ?? 0,
  });
  return { control, bytes };
}

type OutputLayout<S extends HypercallSpec> = S["output"] extends ByteLayout ? S["output"] : never;

/** The output page a hypervisor writes for a call with output. */
export function encodeHypercallOutput<S extends HypercallSpec>(s: S, values: ByteInit<OutputLayout<S>>): Uint8Array {
  if (s.output === undefined) throw new RangeError(`${s.name} has no output`);
  return writeStruct(s.output, values as ByteInit<ByteLayout>);
}

/** Decodes an output page; undefined when the bytes are shorter than the output (never throws for guest-sized input). */
export function decodeHypercallOutput<S extends HypercallSpec>(s: S, bytes: Uint8Array): ByteFields<OutputLayout<S>> | undefined {
  if (s.output === undefined || bytes.length < s.output.size) return undefined;
  return readStruct(s.output, bytes, 0) as ByteFields<OutputLayout<S>>;
}
