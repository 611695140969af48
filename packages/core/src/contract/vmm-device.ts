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
  /** Event log / queue size the VMM advertises, where the architecture lets the VMM choose. */
  readonly x2apic?: boolean;
}

/** A guest-visible ACPI table the VMM publishes. */
export interface AcpiTableBlob {
  readonly signature: string;
  readonly bytes: Uint8Array;
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
   * Mandatory. Makes a passthrough device visible to the guest at `guestRid` (its virtual BDF / StreamID /
   * DeviceID): records the virtual → physical mapping (a vDEVICE where the host has vIOMMU objects) and
   * routes its MSIs through interrupt remapping.
   */
  assignDevice(device: DmaDevice, devId: number, guestRid: number): Result<void>;

  /**
   * Mandatory. The emulated-device path: translates a DMA of one of the VMM's own emulated devices by
   * walking the guest's tables, returning a GPA in `out.output`.
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
