import type { GuestQueueView, QueuePointerRegister, RingPosition } from "@viommu/core";
import { registerByName } from "../format/register-map.js";
import { CMDQ_ENTRY_BYTES, EVTQ_ENTRY_BYTES, PRIQ_ENTRY_BYTES, queueBaseAddress } from "../format/queue-registers.js";

/** What a view reads of the device: a register's value, and whether the queue is enabled in CR0ACK. */
export interface SmmuQueueRegisters {
  get(name: string): bigint;
  /** The SMMU's largest LOG2SIZE for the queue (IDR1.CMDQS / EVENTQS / PRIQS). */
  readonly maxLog2: number;
}

const ADDR_MASK = 0x000f_ffff_ffff_ffe0n;

/**
 * A PROD/CONS register (IHI0070 §3.5, §6.3.27, §6.3.28, §6.3.95, §6.3.96): index in [LOG2SIZE − 1:0], wrap flag at bit LOG2SIZE, for
 * the queue's effective size read from its base register when used. Other bits (CMDQ_CONS.ERR, OVFLG, OVACKFLG)
 * are kept from `current`.
 */
function pointerRegister(address: number, log2: () => number): QueuePointerRegister {
  return {
    address,
    size: 4,
    encode(position: RingPosition, current: bigint): bigint {
      const n = log2();
      const mask = BigInt(2 ** (n + 1) - 1);
      const value = BigInt((position.index % 2 ** n) + (position.wrap ? 2 ** n : 0));
      return (current & 0xffff_ffffn & ~mask) | value;
    },
    decode(value: bigint): RingPosition {
      const n = log2();
      const v = Number(value & 0xffff_ffffn);
      return { index: v % 2 ** n, wrap: Math.floor(v / 2 ** n) % 2 === 1 };
    },
  };
}

function view(
  name: string,
  role: GuestQueueView["role"],
  regs: SmmuQueueRegisters,
  base: string,
  enableBit: number,
  entryBytes: number,
  producer: string,
  consumer: string,
  mmioBase: number,
): GuestQueueView {
  const log2 = (): number => Math.max(0, Math.min(Number(regs.get(base) & 0x1fn), regs.maxLog2));
  const enabled = (): boolean => (Number(regs.get("CR0ACK")) & enableBit) !== 0 && regs.maxLog2 >= 0;
  return {
    name,
    role,
    producedBy: role === "command" ? "guest" : "device",
    base: () => (enabled() ? queueBaseAddress(Number(regs.get(base) & ADDR_MASK), log2(), entryBytes) : undefined),
    entries: () => (enabled() ? 2 ** log2() : 0),
    entryBytes,
    producer: pointerRegister(mmioBase + registerByName(producer)!.offset, log2),
    consumer: pointerRegister(mmioBase + registerByName(consumer)!.offset, log2),
  };
}

const CR0_PRIQEN = 1 << 1;
const CR0_EVTQEN = 1 << 2;
const CR0_CMDQEN = 1 << 3;

/**
 * The emulated SMMU's guest queues as core's vendor-neutral views: the command queue (the guest writes 16-byte
 * commands and advances CMDQ_PROD, the SMMU moves CMDQ_CONS), the event queue (32-byte records the SMMU produces
 * at EVTQ_PROD on page 1) and the PRI queue (16-byte page requests; only with IDR0.PRI, which this SMMU does not
 * offer, so it stays unconfigured). Each is unconfigured while its CR0ACK enable bit is clear.
 */
export function smmuGuestQueues(mmioBase: number, regs: { get(name: string): bigint }, maxLog2: { cmdq: number; evtq: number; priq: number | undefined }): GuestQueueView[] {
  const q = (max: number | undefined): SmmuQueueRegisters => ({ get: (n) => regs.get(n), maxLog2: max ?? -1 });
  return [
    view("CMDQ", "command", q(maxLog2.cmdq), "CMDQ_BASE", CR0_CMDQEN, CMDQ_ENTRY_BYTES, "CMDQ_PROD", "CMDQ_CONS", mmioBase),
    view("EVTQ", "event", q(maxLog2.evtq), "EVTQ_BASE", CR0_EVTQEN, EVTQ_ENTRY_BYTES, "EVTQ_PROD", "EVTQ_CONS", mmioBase),
    view("PRIQ", "page-request", q(maxLog2.priq), "PRIQ_BASE", CR0_PRIQEN, PRIQ_ENTRY_BYTES, "PRIQ_PROD", "PRIQ_CONS", mmioBase),
  ];
}
