import { DeviceScopeType, DmarFlags, DrhdFlags, encodeDmar, type DmarDeviceScope } from "../format/dmar.js";

/** The I/O APIC as QEMU's q35 describes it in the DMAR: id 0 on the pseudo bus 0xFF, path 00.0. */
const IOAPIC_SCOPE: DmarDeviceScope = { type: DeviceScopeType.IOAPIC, enumerationId: 0, startBus: 0xff, path: [{ device: 0, function: 0 }] };

export interface VtdDmarOptions {
  /** Host address width the unit supports, in bits. */
  readonly hostAddressWidth: number;
  readonly registerBase: number;
  /** The unit that covers every PCI device not listed under another (one per segment): the first unit. */
  readonly includePciAll: boolean;
  /** Requester ids of endpoints listed explicitly (units without INCLUDE_PCI_ALL). */
  readonly endpoints: readonly number[];
  readonly interruptRemapping: boolean;
}

/**
 * The DMAR a VMM publishes for one remapping unit (VT-d chapter 8; QEMU `build_dmar_q35` as the example):
 * INTR_REMAP when interrupt remapping is offered, x2APIC not opted out (guests above 255 vCPUs need it), one
 * DRHD: the first unit with INCLUDE_PCI_ALL and the I/O APIC scope, any other with one endpoint scope per device.
 */
export function buildVtdDmar(options: VtdDmarOptions): Uint8Array {
  const endpoints: DmarDeviceScope[] = options.endpoints.map((rid) => ({
    type: DeviceScopeType.PCI_ENDPOINT,
    enumerationId: 0,
    startBus: (rid >>> 8) & 0xff,
    path: [{ device: (rid >>> 3) & 0x1f, function: rid & 7 }],
  }));
  return encodeDmar({
    identity: { oemId: "VIOMMU", oemTableId: "VTD", oemRevision: 1, creatorId: "VIOM", creatorRevision: 1 },
    hostAddressWidth: options.hostAddressWidth,
    flags: options.interruptRemapping ? DmarFlags.INTR_REMAP : 0,
    structures: [
      {
        type: "DRHD",
        flags: options.includePciAll ? DrhdFlags.INCLUDE_PCI_ALL : 0,
        size: 0,
        segment: 0,
        registerBase: BigInt(options.registerBase),
        scopes: options.includePciAll ? [IOAPIC_SCOPE] : endpoints,
      },
    ],
  });
}
