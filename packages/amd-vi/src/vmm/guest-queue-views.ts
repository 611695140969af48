import type { GuestQueueView, QueuePointerRegister, RingPosition } from "@viommu/core";
import { MmioOffset } from "../format/mmio-register-map.js";
import { RING_POINTER_MASK_16 } from "../format/ring-pointer-registers.js";

/** The AMD-Vi rings' entries are 16 bytes: commands, events and PPR entries alike (spec x86.md B6–B8). */
const ENTRY_BYTES = 16;
const POINTER_MASK = BigInt(RING_POINTER_MASK_16);

/** What a view needs from the device: the base register as programmed and whether its enable bit is set. */
export interface RingProgramming {
  baseRegister(): bigint;
  enabled(): boolean;
}

/**
 * A head or tail register (spec x86.md B1: byte offset in [18:4], other bits reserved): the ring position is
 * the entry index, so the register holds index × 16. AMD rings have no wrap bit.
 */
function pointerRegister(address: number): QueuePointerRegister {
  return {
    address,
    size: 8,
    encode(position: RingPosition, current: bigint): bigint {
      // An index that is no slot number (negative, fractional, not finite) is slot 0, never an exception.
      const index = Number.isSafeInteger(position.index) && position.index >= 0 ? position.index : 0;
      return (current & ~POINTER_MASK) | ((BigInt(index) * BigInt(ENTRY_BYTES)) & POINTER_MASK);
    },
    decode(value: bigint): RingPosition {
      return { index: Number((value & POINTER_MASK) / BigInt(ENTRY_BYTES)), wrap: false };
    },
  };
}

function view(name: string, role: GuestQueueView["role"], ring: RingProgramming, mmioBase: number, producer: number, consumer: number): GuestQueueView {
  return {
    name,
    role,
    producedBy: role === "command" ? "guest" : "device",
    base: () => (ring.enabled() ? Number(ring.baseRegister() & 0x000f_ffff_ffff_f000n) : undefined),
    // Length code [59:56]: 2^len entries (spec x86.md B1 ComLen / EventLen / PPRLen).
    entries: () => (ring.enabled() ? 2 ** Number((ring.baseRegister() >> 56n) & 0xfn) : 0),
    entryBytes: ENTRY_BYTES,
    producer: pointerRegister(mmioBase + producer),
    consumer: pointerRegister(mmioBase + consumer),
  };
}

/**
 * The guest-visible rings of one emulated AMD IOMMU as core's vendor-neutral views: the command buffer (the
 * guest produces at Command Buffer Tail, the IOMMU consumes at Head), the event log and the PPR log (the IOMMU
 * produces at their Tail registers, the guest consumes at Head). Each is unconfigured while its enable bit
 * (CmdBufEn, EventLogEn, PPRLogEn) is clear; GPA 0 is a legal base. The register addresses are the
 * same whether the VMM traps them or the hardware vIOMMU's VF-MMIO page serves them.
 */
export function amdViGuestQueues(mmioBase: number, rings: { command: RingProgramming; event: RingProgramming; ppr: RingProgramming }): GuestQueueView[] {
  return [
    view("command buffer", "command", rings.command, mmioBase, MmioOffset.CommandBufferTail, MmioOffset.CommandBufferHead),
    view("event log", "event", rings.event, mmioBase, MmioOffset.EventLogTail, MmioOffset.EventLogHead),
    view("PPR log", "page-request", rings.ppr, mmioBase, MmioOffset.PprLogTail, MmioOffset.PprLogHead),
  ];
}
