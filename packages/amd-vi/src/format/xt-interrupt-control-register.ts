import { defineLayout, encodeLayout, type Fields, type RawBits } from "@viommu/core";
import { fieldRecord, type FieldRecord } from "./layout-tools.js";

/**
 * XT interrupt control registers (MMIO 0x0170 general/event, 0x0178 PPR, 0x0180 GA log; spec x86.md
 * B2.4), used instead of the MSI capability when Control.IntCapXTEn is set. Linux union intcapxt:
 * [2] destination mode, [31:8] destination[23:0], [39:32] vector, [63:56] destination[31:24]. Bit 40 is
 * the delivery mode in VirtualBox (AMD spec 3.05) and "int_type" in Xen; Linux leaves it 0.
 * Writing 0 masks the interrupt (Linux).
 */
export const xtInterruptControlLayout = defineLayout("XtInterruptControl", 64, [
  { name: "DestMode", bit: 2, width: 1 },
  { name: "Destination_23_0", bit: 8, width: 24 },
  { name: "Vector", bit: 32, width: 8 },
  { name: "DeliveryMode", bit: 40, width: 1 },
  { name: "Destination_31_24", bit: 56, width: 8 },
] as const);

export type XtInterruptControlFields = Fields<typeof xtInterruptControlLayout>;

export interface XtInterrupt {
  readonly destination: number;
  readonly vector: number;
  readonly logical: boolean;
}

export function decodeXtInterruptControl(raw: RawBits): FieldRecord {
  const f = fieldRecord(xtInterruptControlLayout, raw);
  f["Destination"] = (Number(f["Destination_31_24"]) * 2 ** 24 + Number(f["Destination_23_0"]));
  return f;
}

/** The register value Linux writes for an x2APIC destination and vector. */
export function encodeXtInterruptControl(interrupt: XtInterrupt): RawBits {
  return encodeLayout(xtInterruptControlLayout, {
    DestMode: interrupt.logical ? 1 : 0,
    Destination_23_0: interrupt.destination & 0xffffff,
    Vector: interrupt.vector,
    Destination_31_24: Math.floor(interrupt.destination / 2 ** 24) & 0xff,
  });
}
