/**
 * What a vendor gives the debugging tools beyond `walk` and `decode`: every mapping in a dump's tables, its
 * ACPI table decoded field by field, Linux's debugfs dumps read back, and QEMU-named device properties.
 * Each is optional; the command line says which vendor lacks which.
 */

/** One translation context the tables configure: a requester (and PASID) with translation on. */
export interface TranslationContext {
  readonly rid: number;
  readonly pasid?: number;
  /** The domain / ASID / VMID the entry tags translations with, where the architecture has one. */
  readonly domain?: number;
  /** Guest-physical address of the context's top-level page table (several contexts may share it). */
  readonly root: number;
  /** Translation mode in the architecture's words ("second-level", "stage 1", "passthrough" …). */
  readonly mode: string;
  /** What is wrong with the entry that configures it (reserved bits set, a pointer outside RAM …). */
  readonly anomalies?: readonly string[];
}

/** One leaf of a context's tables. */
export interface MappingLeaf {
  readonly iova: number;
  readonly output: number;
  readonly size: number;
  readonly read: boolean;
  readonly write: boolean;
  /** Guest-physical address of the leaf entry (its table page tells tables shared between contexts). */
  readonly entryAddress: number;
  readonly anomalies?: readonly string[];
}

/** Every context and every leaf of a dump's tables (for `viommu mappings`). */
export interface TableInspector {
  /** The contexts configured, in requester-id then PASID order. Passthrough contexts have no leaves. */
  contexts(): readonly TranslationContext[];
  /** Calls `visit` for each leaf of the context, in IOVA order; returns the number visited. */
  leaves(context: TranslationContext, visit: (leaf: MappingLeaf) => void): number;
}

/** One field of an ACPI table, as iasl's disassembly lists it. */
export interface AcpiField {
  /** Byte offset in the table. */
  readonly offset: number;
  readonly length: number;
  /** The field's name as the specification (and iasl) gives it. */
  readonly name: string;
  /** The value as text (hex for numbers, the signature for strings). */
  readonly value: string;
  /** Nesting: 0 for the header, 1 for a subtable, 2 for its entries. */
  readonly depth: number;
}

/** One entry read back from a Linux debugfs dump. */
export interface DebugfsEntry {
  /** The structure, as the kernel's dump names it ("root entry", "context entry", "IRTE", "DTE" …). */
  readonly structure: string;
  /** The line of the file it came from (1-based). */
  readonly line: number;
  /** Where the structure lives, when the dump prints it. */
  readonly address?: number;
  /** Which entry (index, BDF, PASID …) as the dump prints it. */
  readonly index?: string;
  /** The raw 64-bit words, lowest first. */
  readonly raw: readonly string[];
  /** The vendor's decoding of the raw words. */
  readonly fields: Readonly<Record<string, number | bigint | boolean | string>>;
}

/** Reads the files Linux writes under /sys/kernel/debug/iommu/<vendor>/ (for `viommu import`). */
export interface DebugfsImporter {
  /** The file names it understands (as debugfs names them). */
  readonly files: readonly string[];
  /** Parses one file's text; lines it cannot parse are reported with their line number, not thrown. */
  parse(file: string, text: string): { readonly entries: readonly DebugfsEntry[]; readonly errors: readonly string[] };
}

/** A device property, under QEMU's name and meaning where the concept is the same (`caching-mode`, `aw-bits`). */
/** The values of an on/off device property, as QEMU spells them. */
export const PROPERTY_ON_OFF: readonly string[] = ["on", "off"];
/** The values of an on/off/auto device property (auto: the emulator decides, as QEMU's OnOffAuto). */
export const PROPERTY_ON_OFF_AUTO: readonly string[] = ["on", "off", "auto"];

export interface DeviceProperty {
  readonly name: string;
  readonly description: string;
  /** The values it takes, for enumerations and booleans ("on", "off"); absent for numbers. */
  readonly values?: readonly string[];
  /** The default as QEMU prints it. */
  readonly defaultValue: string;
  /** The value is refused with this reason, or undefined when it is acceptable. */
  check?(value: string): string | undefined;
}

/** Skipping one class of invalidation in the reference driver, to show the stale-translation audit catching it. */
export type SkippedInvalidation = "iotlb" | "context" | "interrupt";

/**
 * A cached translation the audit found to differ from what the guest's tables now say: the symptom of a
 * missing or wrong invalidation.
 */
export interface StaleTranslationFinding {
  readonly vm: number;
  readonly unit: string;
  /** The cache that held it ("IOTLB", "context cache", "PASID cache", "interrupt entry cache"). */
  readonly cache: string;
  readonly rid: number;
  readonly pasid?: number;
  readonly iova: number;
  /** What was used, and what the tables say now ("fault: not present" when nothing maps it). */
  readonly cached: string;
  readonly tables: string;
  /** The last invalidation that covered this address, and when (the unit's clock), if any did. */
  readonly lastInvalidation?: { readonly what: string; readonly at: number };
}

/**
 * Checks device properties against what a plugin declares (QEMU answers an unknown property or a bad value by
 * refusing to create the device): the first problem, naming the property, or undefined when all are accepted.
 */
export function devicePropertyProblem(declared: readonly DeviceProperty[] | undefined, given: Readonly<Record<string, string>> | undefined): string | undefined {
  for (const [name, value] of Object.entries(given ?? {})) {
    const property = declared?.find((p) => p.name === name);
    if (property === undefined) {
      const known = (declared ?? []).map((p) => p.name);
      return `property '${name}' not found (this device has ${known.length > 0 ? known.join(", ") : "no properties"})`;
    }
    if (property.values !== undefined && !property.values.includes(value)) return `property '${name}' takes ${property.values.join(", ")}, not '${value}'`;
    const refused = property.check?.(value);
    if (refused !== undefined) return `property '${name}': ${refused}`;
  }
  return undefined;
}
