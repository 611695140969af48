import type { DependencyContainer } from "tsyringe";
import { token } from "../di/token.js";
import type { Result } from "../errors/errno.js";
import type { GuestMemory } from "../memory/guest-memory.js";
import type { HostServices } from "../platform/host-services.js";
import type { Capabilities } from "./capabilities.js";
import type { GuestContext, GuestInitOptions, GuestIommuDriver } from "./guest-driver.js";
import type { PhysicalIommu } from "./iommu-unit.js";
import type { StructureDecoder } from "./structure-decoder.js";
import type { AcpiField, DebugfsImporter, DeviceProperty, TableInspector } from "./debug-tools.js";
import type { FigureSpec } from "../bench/interleaved.js";
import type { EmulatedIommu, VmmDeviceOptions } from "./vmm-device.js";

/** One `viommu walk` request. */
export interface WalkRequest {
  /** Requester id: SID / BDF / DeviceID. */
  readonly rid: number;
  readonly pasid?: number;
  /** The input address; exact below 2^53. */
  readonly iova: number;
  /**
   * The input address as the device sent it, all 64 bits: given (to tools declaring `wideAddresses`) when it is
   * at or above 2^53 — 5-level tables, sign-extended or TTB1 addresses, or a value beyond the configured width.
   */
  readonly address?: bigint;
  readonly write: boolean;
}

/** One entry a walk read, in the architecture's terms (for `viommu walk`'s step table). */
export interface WalkStep {
  /** The structure, as the specification names it: "root entry", "context entry", "STE", "CD", "PML4E". */
  readonly what: string;
  /** Guest-physical address of the entry. */
  readonly address: number;
  /** The raw entry as 64-bit hex words, lowest first. */
  readonly raw: readonly string[];
  /** Table level (leaf level 1), where the structure is a page-table level. */
  readonly level?: number;
  /** Which stage, where two nest. */
  readonly stage?: 1 | 2;
  /** Decoded fields, by the specification's names. */
  readonly fields?: Readonly<Record<string, number | string | boolean>>;
  /** The size the entry maps, when it is a leaf. */
  readonly pageSize?: number;
}

/** One `viommu walk` answer, in the command line's JSON shape. `steps`: optional, the entries read on the way. */
export type WalkAnswer =
  | { readonly ok: true; readonly output: number; readonly pageSize: number; readonly read: boolean; readonly write: boolean; readonly domain?: number; readonly asid?: number; readonly steps?: readonly WalkStep[] }
  | { readonly ok: false; readonly fault: { readonly code: number; readonly name: string }; readonly steps?: readonly WalkStep[] };

/** `viommu walk`: translation from a raw guest-memory image and the registers the guest driver wrote. */
export interface WalkTool {
  /** Register names the tool takes (e.g. RTADDR; STRTAB_BASE and STRTAB_BASE_CFG; DEV_TAB_BASE). */
  readonly registers: readonly string[];
  /** Builds a walker over `memory`; EINVAL when a register is missing or malformed. */
  prepare(memory: GuestMemory, registers: Readonly<Record<string, bigint>>): Result<(request: WalkRequest) => WalkAnswer>;
  /**
   * Optional. The walker answers requests at or above 2^53 from `WalkRequest.address` (absent: the command line
   * refuses such addresses for this vendor, saying so).
   */
  readonly wideAddresses?: boolean;
  /** Optional (`viommu mappings`). Every context and leaf the tables configure, from the same registers. */
  inspect?(memory: GuestMemory, registers: Readonly<Record<string, bigint>>): Result<TableInspector>;
}

/** `viommu acpi`: the vendor's table for a topology the command line describes (defaults when omitted). */
export interface AcpiTool {
  readonly signature: string;
  generate(): Uint8Array;
  /**
   * Optional (`viommu acpi --decode FILE`). A table of this signature someone else built (firmware, QEMU), field
   * by field with offsets, from the end of the standard 36-byte header (the command line decodes that); a
   * malformed table is EINVAL naming the offset, never an exception.
   */
  decode?(table: Uint8Array): Result<readonly AcpiField[]>;
}

/** How `viommu demo` sets up this vendor's VM (defaults: 8 vCPUs, device at physical 0x100, guest id 0x10). */
export interface DemoProfile {
  readonly vcpus?: number;
  readonly rid?: number;
  readonly guestRid?: number;
  readonly guest?: Partial<GuestInitOptions>;
}

/**
 * A figure a vendor adds to `viommu bench` the old way: it measures and checks itself inside `run` (throwing when
 * its work is wrong) and is printed as reported. New figures use the core harness's `FigureSpec` instead, which
 * the command line measures interleaved against the baseline and verifies every round.
 */
export interface BenchFigure {
  readonly name: string;
  readonly unit: string;
  run(): { value: number; baseline?: number; ratio?: number; note?: string };
}

/**
 * A vendor plugin: the one object a vendor package exports (from `plugin.ts`) and declares in its
 * package.json (`"viommu": { "plugin": "<export subpath>" }`). Core finds installed plugins; nothing in core
 * names a vendor.
 */
export const VendorPlugin = token<VendorPlugin>("VendorPlugin");
export interface VendorPlugin {
  /** Command-line id, lower-case, e.g. `mock`. */
  readonly id: string;
  readonly displayName: string;
  /** Optional. A plugin extending another names its parent; the parent works without it. Absent: standalone. */
  readonly extends?: string;
  /** Mandatory. Declared honestly: the conformance suite reports a case n/a only for an absent capability. */
  readonly capabilities: Capabilities;
  /** Mandatory. The uapi type values this vendor implements, for `viommu plugins`. */
  readonly types: Readonly<Record<string, number>>;
  /** Mandatory (may be empty). The structures `viommu decode` knows for this vendor. */
  readonly structures: readonly StructureDecoder[];
  /** Optional. Absent: `viommu walk` answers that the vendor has no table walker. */
  readonly walk?: WalkTool;
  /** Optional (capability `acpi`). Absent: `viommu acpi` answers with the capability's reason. */
  readonly acpi?: AcpiTool;
  /** Optional. Vendor figures `viommu bench` adds after the core ones. */
  readonly bench?: readonly (BenchFigure | FigureSpec)[];
  /** Optional (`viommu import`). Reads Linux's debugfs dumps of this IOMMU. */
  readonly debugfs?: DebugfsImporter;
  /**
   * Optional. The emulated device's properties under QEMU's names (`caching-mode`, `aw-bits`, `ril` …), which
   * `viommu demo --property`, the Testbed and `VmmDeviceOptions.properties` accept; `viommu plugins` lists them.
   */
  readonly properties?: readonly DeviceProperty[];
  /** Optional. Absent: the demo's defaults. */
  readonly demo?: DemoProfile;

  /** Mandatory. Adds the plugin's services to a container (one registration function per plugin; no import-time side effects). */
  register(container: DependencyContainer): void;

  /** Mandatory. Host half: a physical IOMMU unit of this vendor. */
  createUnit(host: HostServices, index: number): PhysicalIommu;

  /** Mandatory. VMM half: the guest-visible device for one VM. */
  createDevice(options: VmmDeviceOptions): Result<EmulatedIommu>;

  /** Mandatory. Guest half: the reference driver for `device`. */
  createDriver(context: GuestContext, device: EmulatedIommu): GuestIommuDriver;
}
