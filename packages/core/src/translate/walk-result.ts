import type { PermBits } from "./access.js";
import { WalkFault } from "./page-table-format.js";

/**
 * The outcome of one translation, reused across walks (the walker fills it; nothing is allocated per
 * access). When `ok` is false, `fault` says why and `stage`, `level`, `faultInput` and `tableFetch` say
 * where; when a leaf was found but denied the access, `mapped` is true and the translation fields are set.
 */
export interface WalkResult {
  ok: boolean;
  /** The translated address of the input itself, page offset included. */
  output: number;
  pageShift: number;
  perms: PermBits;
  fault: WalkFault;
  /** The level the walk stopped at (the leaf's level on success). */
  level: number;
  /** Which stage stopped the walk: 1 or 2. */
  stage: 1 | 2;
  /** The address the faulting stage was translating (the IOVA for stage 1, the IPA/GPA for stage 2). */
  faultInput: number;
  /** A stage-2 fault hit while fetching a stage-1 table (not while translating stage 1's output). */
  tableFetch: boolean;
  /** A leaf was found (so output/pageShift/perms are meaningful even if the access was denied). */
  mapped: boolean;
  /** Address and halves of the last entry read, for fault records and traces. */
  entryAddress: number;
  entryLo: number;
  entryHi: number;
  /** Table fetches this walk made (both stages), for the benchmarks and tests. */
  fetches: number;
  /**
   * The page request group the unit raised for this faulting access (a PRI-capable device under a domain with a
   * fault queue, or a stall), or -1 when the fault is final. The device waits for that group's response.
   */
  pageRequest: number;
}

export function newWalkResult(): WalkResult {
  return {
    ok: false,
    output: 0,
    pageShift: 0,
    perms: 0,
    fault: WalkFault.None,
    level: 0,
    stage: 1,
    faultInput: 0,
    tableFetch: false,
    mapped: false,
    entryAddress: 0,
    entryLo: 0,
    entryHi: 0,
    fetches: 0,
    pageRequest: -1,
  };
}

export function resetWalkResult(r: WalkResult): void {
  r.ok = false;
  r.output = 0;
  r.pageShift = 0;
  r.perms = 0;
  r.fault = WalkFault.None;
  r.level = 0;
  r.stage = 1;
  r.faultInput = 0;
  r.tableFetch = false;
  r.mapped = false;
  r.entryAddress = 0;
  r.entryLo = 0;
  r.entryHi = 0;
  r.fetches = 0;
  r.pageRequest = -1;
}

export const walkFaultNames: Readonly<Record<WalkFault, string>> = {
  [WalkFault.None]: "none",
  [WalkFault.Translation]: "translation",
  [WalkFault.Permission]: "permission",
  [WalkFault.Reserved]: "reserved",
  [WalkFault.AddressSize]: "address-size",
  [WalkFault.AccessFlag]: "access-flag",
  [WalkFault.External]: "external-abort",
};

/** Copies every field of one result into another (no allocation). */
export function copyWalkResult(from: WalkResult, to: WalkResult): void {
  to.ok = from.ok;
  to.output = from.output;
  to.pageShift = from.pageShift;
  to.perms = from.perms;
  to.fault = from.fault;
  to.level = from.level;
  to.stage = from.stage;
  to.faultInput = from.faultInput;
  to.tableFetch = from.tableFetch;
  to.mapped = from.mapped;
  to.entryAddress = from.entryAddress;
  to.entryLo = from.entryLo;
  to.entryHi = from.entryHi;
  to.fetches = from.fetches;
  to.pageRequest = from.pageRequest;
}
