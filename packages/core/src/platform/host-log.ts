import type { ErrnoName, IommuError } from "../errors/errno.js";
import type { EventBus } from "../events/event-bus.js";
import type { OwnerId } from "../memory/host-memory.js";
import type { Clock } from "../sim/clock.js";
import type { CoreEvents } from "./core-events.js";

/**
 * What the host refused or could not do on a VM's behalf, which the guest may see only as an architectural
 * error (or not at all): an invalidation iommufd refused, a shadow mapping the back end would not install, a
 * state stream that failed validation. The VMM's operator needs each one, as QEMU's `error_report` lines give.
 */
export type HostLogKind =
  /** IOMMU_HWPT_INVALIDATE (or the vendor's forwarding call) failed: the guest saw the architecture's error. */
  | "invalidation-refused"
  /** A shadow mapping was not installed (type1 `dma_entry_limit` ENOSPC, IOAS errors): DMA to it will fault. */
  | "shadow-map-refused"
  /** A shadow unmap failed: the host may still translate what the guest removed. */
  | "shadow-unmap-refused"
  /** A nested configuration (HWPT alloc / attach) the guest asked for was refused by the host. */
  | "configuration-refused"
  /** Anything else a vendor VMM reports (its message says what). */
  | "other";

export interface HostLogEntry {
  /** Simulated time of the entry (ns). */
  readonly time: number;
  readonly vm?: OwnerId;
  /** Who reports it: an emulated IOMMU (its plugin id and MMIO base, "<id>@0x…"), a unit, a back end. */
  readonly source: string;
  readonly kind: HostLogKind;
  readonly errno?: ErrnoName;
  readonly message: string;
}

export interface HostLogInput {
  readonly vm?: OwnerId;
  readonly source: string;
  readonly kind: HostLogKind;
  readonly error?: IommuError;
  readonly message?: string;
}

/**
 * The host's log of refusals. Bounded so that a guest that provokes refusals in a loop cannot grow the
 * host's memory; `dropped` counts what fell off the front. Every entry is also published as a `hostLog`
 * event.
 */
export class HostLog {
  private readonly ring: HostLogEntry[] = [];
  private droppedCount = 0;

  constructor(
    private readonly clock: Clock,
    private readonly events: EventBus<CoreEvents>,
    readonly capacity = 4096,
  ) {}

  record(input: HostLogInput): HostLogEntry {
    const message = input.message ?? input.error?.message ?? input.kind;
    const entry: HostLogEntry = { time: this.clock.now(), vm: input.vm, source: input.source, kind: input.kind, errno: input.error?.errno, message };
    if (this.ring.length >= this.capacity) {
      this.ring.shift();
      this.droppedCount++;
    }
    this.ring.push(entry);
    this.events.emit("hostLog", entry);
    return entry;
  }

  /** The entries kept, oldest first; optionally only one VM's or one kind's. */
  entries(filter: { vm?: OwnerId; kind?: HostLogKind } = {}): HostLogEntry[] {
    return this.ring.filter((e) => (filter.vm === undefined || e.vm === filter.vm) && (filter.kind === undefined || e.kind === filter.kind));
  }

  /** Entries that no longer fit and were discarded. */
  get dropped(): number {
    return this.droppedCount;
  }
}
