import { Perm, type IopfHandler, type NestedDomain, type PagingDomain, type PermBits, type PhysicalIommu, type RawBits, type ViommuCore } from "@viommu/core";
import { dteGcr3Root } from "../format/device-table-entry.js";
import type { Stage2Access } from "./stage2-access.js";

/** A guest DomainID's host DomainID on one vIOMMU, shared by every nested domain carrying that gDomID. */
export interface GuestDomainMapping {
  readonly gdomId: number;
  readonly hdomId: number;
  users: number;
}

/** What a nested domain needs back from its vIOMMU: its host DomainID held and let go, and its release. */
export interface NestedDomainOwner {
  readonly core: ViommuCore;
  releaseGuestDomain(mapping: GuestDomainMapping): void;
  retainDomainId(hdomId: number): void;
  releaseDomainId(hdomId: number): void;
}

/**
 * A nested domain (Linux nested.c): the guest's DTE, validated, with its guest DomainID mapped to a host
 * DomainID. Attaching it programs the host DTE the way set_dte_nested does: the parent's v1 table and the
 * host DomainID, GV forced on, and from the guest DTE only PPR, GLX, GIoV, the GCR3 table root (a guest
 * physical address: Control.GCR3TRPMode) and GuestPagingMode.
 *
 * With the guest's GV clear the host still translates through stage 2 alone; this model then also applies
 * the guest's IR/IW (a guest identity mapping that withholds a permission), which Linux's set_dte_nested
 * does not copy.
 */
export class AmdNestedDomain implements NestedDomain {
  readonly kind = "nested" as const;
  readonly gv: boolean;
  readonly giov: boolean;
  readonly glx: number;
  readonly gcr3Root: number;
  /** DTE.PPR: the device's page requests are logged (Linux copies it from the guest DTE in set_dte_nested). */
  readonly ppr: boolean;
  /** Guest page-table levels: 4, or 5 with GuestPagingMode = 1. */
  readonly guestLevels: 4 | 5;
  /** DTE IR/IW as permissions (stage-2-only translation with GV clear). */
  readonly dtePerms: PermBits;
  /** Set by the core when the HWPT has a fault queue: where page requests go. */
  iopf?: IopfHandler;
  private destroyed = false;

  constructor(
    readonly unit: PhysicalIommu,
    readonly parent: PagingDomain,
    readonly guestDte: RawBits,
    readonly mapping: GuestDomainMapping,
    /** The vIOMMU it was allocated on; its vDEVICEs name the guest's DeviceIDs in fault records. */
    readonly owner: NestedDomainOwner,
    /** How the IOMMU reads the GCR3 table: by GPA through the parent (Control.GCR3TRPMode). */
    readonly stage2: Stage2Access,
  ) {
    const q0hi = guestDte[1]!;
    this.gv = ((q0hi >>> 23) & 1) === 1;
    this.giov = ((q0hi >>> 22) & 1) === 1;
    this.glx = (q0hi >>> 24) & 3;
    this.ppr = ((q0hi >>> 20) & 1) === 1;
    this.gcr3Root = dteGcr3Root(guestDte);
    this.guestLevels = ((guestDte[5]! >>> 22) & 3) === 1 ? 5 : 4;
    const ir = (q0hi >>> 29) & 1;
    const iw = (q0hi >>> 30) & 1;
    this.dtePerms = this.gv ? Perm.All : (ir ? Perm.Read : 0) | (iw ? Perm.Write : 0) | Perm.Exec | Perm.User;
  }

  get gdomId(): number {
    return this.mapping.gdomId;
  }

  get hdomId(): number {
    return this.mapping.hdomId;
  }

  /** PASIDs the GCR3 table covers: 9 bits per level. */
  get pasidLimit(): number {
    return 2 ** (9 * (this.glx + 1));
  }

  /**
   * The translations it caches are tagged by the host DomainID (not the parent's VMID): every attached device
   * holds that id, so it cannot name another guest's domain while the device may still hit those entries.
   */
  retainTag(): void {
    this.owner.retainDomainId(this.mapping.hdomId);
  }

  releaseTag(): void {
    this.owner.releaseDomainId(this.mapping.hdomId);
  }

  destroy(): void {
    if (this.destroyed) return;
    this.destroyed = true;
    this.owner.releaseGuestDomain(this.mapping);
  }
}
