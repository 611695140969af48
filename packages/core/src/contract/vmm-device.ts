import type { Result } from "../errors/errno.js";
import type { IommufdContext } from "../iommufd/context.js";
import type { InterruptResult, MsiMessage } from "../irq/interrupts.js";
import type { Freezable } from "../migration/state.js";
import type { DmaDevice } from "../platform/dma-device.js";
import type { VirtualMachine } from "../platform/vm.js";
import type { WalkResult } from "../translate/walk-result.js";
import type { PhysicalIommu } from "./iommu-unit.js";

/** How the VMM turns the guest's IOMMU programming into host translation. */
export type TranslationMode =
  /** Guest stage 1 nested over the host stage 2 (hardware-accelerated). */
  | "nested"
  /** Caching-mode emulation: the VMM walks guest tables on invalidation and maps the result. */
  | "shadow"
  /** DMA translation off (GPA = IOVA), interrupt remapping on. */
  | "ir-only";

/** The shadow back end: a vfio type1-like container with its DMA entry limit, or an iommufd IOAS. */
export type ShadowBackendKind = "type1" | "iommufd";

/** Everything the VMM half needs to build the guest-visible device for one VM. */
export interface VmmDeviceOptions {
  readonly vm: VirtualMachine;
  /** The VMM's iommufd for this VM. */
  readonly iommufd: IommufdContext;
  /** The physical unit the VM's passthrough devices sit behind. */
  readonly unit: PhysicalIommu;
  /** The IOAS holding guest RAM at IOVA = GPA. */
  readonly ioasId: number;
  /** The shared stage-2 parent (NEST_PARENT HWPT on `ioasId`); several vIOMMUs of one VM share it. */
  readonly parentHwptId: number;
  /** A bound device id on `unit`, used to allocate the vIOMMU (iommufd needs one). */
  readonly anchorDevId: number;
  readonly mode: TranslationMode;
  readonly shadowBackend?: ShadowBackendKind;
  /** type1 back end only: the DMA entry limit (vfio's default 65535). */
  readonly dmaEntryLimit?: number;
  /** Guest physical base of the device's register block (vendors pick a default). */
  readonly mmioBase?: number;
  /** Which IOMMU instance this is in the VM (0 for the first): vendors offset their MMIO by it. */
  readonly instance?: number;
  /** Event interrupts: injected by the VMM, or delivered directly where the hardware can post them. */
  readonly eventInterrupts?: "vmm" | "direct";
  /**
   * Passed-through devices' MSIs: remapped to the host, which injects them (one VMM intervention each), or posted
   * straight to the vCPU where the host unit can (capability `postedInterrupts`). Default "remapped".
   */
  readonly deviceInterrupts?: "remapped" | "posted";
  /** The VMM advertises x2APIC (32-bit destinations) to the guest. */
  readonly x2apic?: boolean;
  /**
   * Device properties by QEMU's names (`caching-mode=on`, `aw-bits=48`), as the plugin declares them in
   * `properties`; checked by core (`checkDeviceProperties`) before the device is created.
   */
  readonly properties?: Readonly<Record<string, string>>;
  /**
   * The stale-translation audit (capability `audit`): on every hit in the emulated unit's caches, re-walk the
   * guest's tables and report a difference as a `staleTranslation` event. Off by default: it costs a walk a hit.
   */
  readonly audit?: boolean;
}

/** A guest-visible ACPI table the VMM publishes. */
export interface AcpiTableBlob {
  readonly signature: string;
  readonly bytes: Uint8Array;
}

/** A ring index as the hardware's pointer register holds it: the slot and, for wrap-bit rings, the wrap flag. */
export interface RingPosition {
  readonly index: number;
  readonly wrap: boolean;
}

/** A register of a guest queue: where it is in the VM's physical address map and how it encodes a position. */
export interface QueuePointerRegister {
  /** Guest physical address of the register (MMIO, or a directly mapped page). */
  readonly address: number;
  readonly size: 4 | 8;
  /** The register value for a position, with the register's other bits as in `current` (read it first). */
  encode(position: RingPosition, current: bigint): bigint;
  /** The position a register value holds (other bits ignored). */
  decode(value: bigint): RingPosition;
}

/**
 * A vendor-neutral description of one guest-visible queue (a command queue, an event log, a page request
 * queue): enough for a harness or a trace tool to write raw entries and advance the producer the way a guest
 * does, or to read what the device produced, without knowing the vendor. The values are what the guest has
 * programmed now; `base` is undefined while the queue is not configured or not enabled.
 */
export interface GuestQueueView {
  /** The architecture's name: "CMDQ", "EVTQ", "IQ", "command buffer", "event log", "VCMDQ3"… */
  readonly name: string;
  readonly role: "command" | "event" | "page-request";
  /** Who produces entries: the guest (commands) or the device (events, page requests). */
  readonly producedBy: "guest" | "device";
  /** Guest physical address of entry 0, as programmed; undefined while unconfigured. */
  base(): number | undefined;
  /** Entries in the ring as programmed (0 while unconfigured). */
  entries(): number;
  readonly entryBytes: number;
  readonly producer: QueuePointerRegister;
  readonly consumer: QueuePointerRegister;
}

/** Counters the VMM keeps, for the demo report and the benchmarks. */
export interface VmmStats {
  /** Commands / descriptors / hypercalls the VMM handled by trapping. */
  trapped: number;
  /** Invalidation entries forwarded to the host (iommufd HWPT_INVALIDATE or shadow updates). */
  forwarded: number;
  /** Events written into the guest's log. */
  eventsInjected: number;
  /** Shadow mappings currently installed. */
  shadowMappings: number;
}

/**
 * The guest-visible IOMMU a VMM emulates for one VM (QEMU's `IOMMUMemoryRegionClass` device plus its
 * iommufd glue). Created by a plugin's `createDevice`; all guest interaction goes through the VM's MMIO map
 * or hypercalls. Freezing stops queue processing so a snapshot is consistent.
 */
export interface EmulatedIommu extends Freezable {
  readonly vendor: string;
  readonly mode: TranslationMode;
  /** Guest physical base of its register block (0 for hypercall-only devices). */
  readonly mmioBase: number;
  readonly stats: VmmStats;
  /**
   * The options it was created with. A VMM restoring a saved state creates a fresh device from these (on
   * the destination, with that host's `vm`, `iommufd`, `unit` and ids substituted).
   */
  readonly options: VmmDeviceOptions;

  /**
   * Mandatory. Makes a passthrough device visible to the guest at `guestRid` (its virtual BDF / StreamID /
   * DeviceID): records the virtual → physical mapping (a vDEVICE where the host has vIOMMU objects) and
   * routes its MSIs through interrupt remapping.
   */
  assignDevice(device: DmaDevice, devId: number, guestRid: number): Result<void>;

  /**
   * Mandatory. Hot-unplug: the device at `guestRid` leaves the guest. Its vDEVICE (or virtual → physical
   * mapping) is destroyed, its attachments are dropped so its DMA is blocked, its MSIs are no longer routed,
   * and nothing cached for it survives. The guest RID is free for another device afterwards. ENOENT when no
   * device is assigned there.
   */
  unassignDevice(guestRid: number): Result<void>;

  /**
   * Mandatory. Re-addressing: the guest renumbered its bus (or the VMM moved the device), so the device at
   * `fromRid` is now seen at `toRid`. The virtual id changes everywhere the host keeps it (vDEVICE virt id,
   * vSID → pSID tables) and the device's translation is re-derived from the guest's tables at `toRid`; until
   * the guest programs an entry there its DMA is treated as the architecture treats an unconfigured
   * requester. ENOENT when nothing is at `fromRid`, EEXIST when `toRid` is taken.
   */
  renumberDevice(fromRid: number, toRid: number): Result<void>;

  /**
   * Mandatory. The guest-visible queues this device has, as programmed now (an empty list for a device
   * driven by hypercalls alone).
   */
  guestQueues(): GuestQueueView[];

  /**
   * Mandatory. The emulated-device path: translates a DMA of one of the VMM's own emulated devices by
   * walking the guest's tables, returning a GPA in `out.output`. The GPA may be no memory at all (a guest may
   * map a hole or another device's BAR, and a disabled IOMMU may pass any address through): the caller checks
   * before it moves bytes, and such an access fails at its target as a bus abort, with nothing for the IOMMU to
   * record.
   */
  translateEmulated(guestRid: number, pasid: number, iova: number, write: boolean, out: WalkResult): void;

  /** Mandatory. Remaps an MSI a device at `guestRid` wrote, per the guest's tables, and delivers or blocks it. */
  deliverMsi(guestRid: number, msi: MsiMessage): InterruptResult;

  /** Mandatory. The VMM's event loop, once: drains vEVENTQs / host fault reports into the guest's log. */
  poll(): void;

  /** Optional. ACPI tables describing this IOMMU. Absent for hypercall-discovered IOMMUs. */
  acpiTables?(): AcpiTableBlob[];

  /** Optional (capability `migration`). Versioned, checksummed state; taken with queues frozen. */
  save?(): Uint8Array;
  /** Optional, with `save`. Restores into a freshly created device of the same configuration. */
  restore?(blob: Uint8Array): Result<void>;

  /** Mandatory. Tears down its iommufd objects and MMIO mappings. */
  destroy(): void;
}
