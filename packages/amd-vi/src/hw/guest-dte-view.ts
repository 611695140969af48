import { Perm, type PermBits, type StaleTranslationAudit } from "@viommu/core";
import { dteGcr3Root, dteProblem } from "../format/device-table-entry.js";

/** What a nested walk needs from a DTE: a nested domain's (as the host holds it) or the guest's DTE as it is now. */
export interface NestedDteView {
  readonly gv: boolean;
  readonly giov: boolean;
  readonly glx: number;
  readonly gcr3Root: number;
  readonly guestLevels: 4 | 5;
  /** DTE IR/IW as permissions (stage-2-only translation with GV clear); every permission with GV set. */
  readonly dtePerms: PermBits;
  /** PASIDs the GCR3 table covers: 9 bits per level. */
  readonly pasidLimit: number;
}

/** What the guest's device table says of a device's DMA now, as its VMM reads it for the audit. */
export const GuestDteState = {
  /** The DTE (in the caller's buffer) decides. */
  Entry: 0,
  /** Translation is off (IommuEn clear) or the DTE has V clear: DMA passes untranslated (stage 2 alone). */
  Untranslated: 1,
  /** The DTE cannot be read (beyond the table, unreadable): the device's DMA is blocked. */
  Blocked: 2,
} as const;
export type GuestDteState = (typeof GuestDteState)[keyof typeof GuestDteState];

/**
 * A passthrough device whose cached translations are audited (VmmDeviceOptions.audit), as its VMM describes it:
 * where findings go, the DeviceID the guest knows it by, and the guest's DTE read from guest memory at each use.
 */
export interface AmdAuditedDevice {
  readonly audit: StaleTranslationAudit;
  readonly vm: number;
  readonly guestRid: number;
  /** Reads the guest's DTE for the device into `out` (8 words) and says what it means for DMA. */
  guestDte(out: Uint32Array): GuestDteState;
}

/** What the audit's fresh walk makes of a guest DTE. */
export const FreshDte = { Walk: 0, Blocked: 1 } as const;

/**
 * The guest's DTE, re-read for the audit, in the shape the unit's nested walk takes. It follows what the VMM does
 * with a DTE in nested mode (vmm/device-entry-handler.ts): V clear or translation off → stage 2 alone; TV clear, a
 * malformed DTE, host translation (Mode ≠ 0, refused in nested mode) or GV clear without IR and IW → blocked;
 * GV clear → stage 2 with IR/IW; GV set → the guest's GCR3 table.
 */
export class GuestDteView implements NestedDteView {
  gv = false;
  giov = false;
  glx = 0;
  gcr3Root = 0;
  guestLevels: 4 | 5 = 4;
  dtePerms: PermBits = Perm.All;

  get pasidLimit(): number {
    return 2 ** (9 * (this.glx + 1));
  }

  /** Fills the view from the guest's DTE state; Blocked when the DTE lets no DMA through. */
  load(state: GuestDteState, w: Uint32Array): (typeof FreshDte)[keyof typeof FreshDte] {
    this.gv = false;
    this.giov = false;
    this.glx = 0;
    this.gcr3Root = 0;
    this.guestLevels = 4;
    this.dtePerms = Perm.All;
    if (state === GuestDteState.Blocked) return FreshDte.Blocked;
    if (state === GuestDteState.Untranslated || (w[0]! & 1) === 0) return FreshDte.Walk;
    if (dteProblem(w) !== undefined || (w[0]! & 2) === 0 || ((w[0]! >>> 9) & 7) !== 0) return FreshDte.Blocked;
    const hi = w[1]!;
    this.gv = ((hi >>> 23) & 1) === 1;
    const ir = (hi >>> 29) & 1;
    const iw = (hi >>> 30) & 1;
    if (!this.gv) {
      if (!ir && !iw) return FreshDte.Blocked;
      this.dtePerms = (ir ? Perm.Read : 0) | (iw ? Perm.Write : 0) | Perm.Exec | Perm.User;
      return FreshDte.Walk;
    }
    this.giov = ((hi >>> 22) & 1) === 1;
    this.glx = (hi >>> 24) & 3;
    this.gcr3Root = dteGcr3Root(w);
    this.guestLevels = ((w[5]! >>> 22) & 3) === 1 ? 5 : 4;
    return FreshDte.Walk;
  }
}

/**
 * Whether the guest's DTE still says what a nested domain was built from: the translation half (words 0–3) and
 * GuestPagingMode. A difference is a DTE change the host was never told of (no INVALIDATE_DEVTAB_ENTRY).
 */
export function sameTranslationDte(now: Uint32Array, built: ArrayLike<number>): boolean {
  for (let i = 0; i < 4; i++) if (now[i] !== built[i]) return false;
  return ((now[5]! ^ built[5]!) & 0x00c0_0000) === 0;
}
