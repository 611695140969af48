import type { GuestQueueView, QueuePointerRegister, RingPosition } from "@viommu/core";
import { CMDQ_ENTRY_BYTES } from "@viommu/smmuv3";
import { lvcmdqPage0, VcmdqPage0Reg } from "../format/aperture.js";

/** RD / WR are 20 bits: index plus wrap flag for up to 2^19 entries (spec arm-hyperv-virtio.md §4.4). */
const MAX_LOG2SIZE = 19;
const INDEX_FIELD = 0xf_ffff;

/** What a VCMDQ view reads of the VMM: the BASE the guest programmed, and whether the queue runs. */
export interface VcmdqProgramming {
  /** BASE as the guest wrote it (ADDR [47:5], LOG2SIZE [4:0]). */
  base(q: number): bigint;
  /** The queue has a HW queue and the guest enabled it (CONFIG.CMDQ_EN, read through the mapped page 0). */
  running(q: number): boolean;
}

/**
 * CONS_INDX / PROD_INDX of a VCMDQ (spec §4.4): RD / WR [19:0] in the SMMU's format, index in [LOG2SIZE − 1:0]
 * and wrap flag at bit LOG2SIZE; CONS_INDX.ERR [30:24] and any other bit are kept from `current`.
 */
function pointerRegister(address: number, log2: () => number): QueuePointerRegister {
  return {
    address,
    size: 4,
    encode(position: RingPosition, current: bigint): bigint {
      const n = log2();
      const value = (position.index % 2 ** n) + (position.wrap ? 2 ** n : 0);
      return (current & 0xffff_ffffn & ~BigInt(2 ** (n + 1) - 1)) | BigInt(value);
    },
    decode(value: bigint): RingPosition {
      const n = log2();
      const v = Number(value & BigInt(INDEX_FIELD));
      return { index: v % 2 ** n, wrap: Math.floor(v / 2 ** n) % 2 === 1 };
    },
  };
}

/**
 * The guest's VCMDQs as vendor-neutral views: guest-produced command queues of 16-byte SMMU commands. Their
 * PROD_INDX and CONS_INDX are in the VINTF page 0 the VMM maps straight into the guest (at the aperture base +
 * TEGRA241_VINTF0_LVCMDQ_PAGE0(q)), so a harness writing them reaches the hardware queue without an exit. A
 * queue is unconfigured until its HW queue exists and the guest enabled it.
 */
export function vcmdqGuestQueues(apertureBase: number, queues: number, p: VcmdqProgramming): GuestQueueView[] {
  return Array.from({ length: queues }, (_, q): GuestQueueView => {
    const log2 = (): number => Math.min(Number(p.base(q) & 0x1fn), MAX_LOG2SIZE);
    const page0 = apertureBase + lvcmdqPage0(0, q);
    return {
      name: `VCMDQ${q}`,
      role: "command",
      producedBy: "guest",
      base: () => {
        if (!p.running(q)) return undefined;
        const bytes = 2 ** log2() * CMDQ_ENTRY_BYTES;
        const address = Number(p.base(q) & 0xffff_ffff_ffe0n);
        return address - (address % bytes);
      },
      entries: () => (p.running(q) ? 2 ** log2() : 0),
      entryBytes: CMDQ_ENTRY_BYTES,
      producer: pointerRegister(page0 + VcmdqPage0Reg.PROD_INDX, log2),
      consumer: pointerRegister(page0 + VcmdqPage0Reg.CONS_INDX, log2),
    };
  });
}
