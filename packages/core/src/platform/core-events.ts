import type { OwnerId } from "../memory/host-memory.js";
import type { HostLogEntry } from "./host-log.js";
import type { StaleTranslationFinding } from "../contract/debug-tools.js";

/** A DMA the hardware refused, as the host sees it. */
export interface DmaFaultEvent {
  readonly vm: OwnerId;
  readonly unit: string;
  readonly requesterId: number;
  readonly pasid: number;
  readonly iova: number;
  readonly write: boolean;
  /** Vendor-neutral reason (`walkFaultNames`) and stage. */
  readonly reason: string;
  readonly stage: 1 | 2;
}

export interface OverflowEvent {
  readonly vm: OwnerId;
  readonly queue: string;
}

export interface InvalidationEvent {
  /** The VM whose translations were dropped, when the unit knows it from the tag. */
  readonly vm?: OwnerId;
  readonly unit: string;
  readonly scope: "all" | "vmid" | "asid" | "range" | "device" | "interrupt";
  readonly entriesRemoved: number;
}

export interface LifecycleEvent {
  readonly kind: "created" | "destroyed";
  readonly object: string;
  readonly id: number | string;
  readonly vm?: OwnerId;
}

export interface MigrationEvent {
  readonly vm: OwnerId;
  readonly phase: "freeze" | "saved" | "restored" | "thaw";
  readonly bytes: number;
}

/** The host-wide event map carried by the core's event bus. */
export interface CoreEvents {
  [key: string]: unknown;
  fault: DmaFaultEvent;
  overflow: OverflowEvent;
  invalidation: InvalidationEvent;
  lifecycle: LifecycleEvent;
  migration: MigrationEvent;
  /** Something the host refused on a VM's behalf (also kept in `HostServices.log`). */
  hostLog: HostLogEntry;
  /** The stale-translation audit found a cached translation the guest's tables no longer give. */
  staleTranslation: StaleTranslationFinding;
}
