import { RingIndex, type HostMemory, type MmioRegion } from "@viommu/core";
import { decodeMockCommand, decodeMockCommandInto, MOCK_CMD_BYTES } from "../format/command.js";
import { MOCK_VQUEUE_STRIDE, MockVqueueError, MockVqueueReg } from "../format/registers.js";


/** What the hardware does with commands it accepts from a guest-owned queue. */
export interface VqueueExecutor {
  /** Executes an accepted command; false when the hardware refuses it (a queue error). */
  execute(opcode: number, command: ReturnType<typeof decodeMockCommand>): boolean;
  /** Reports a queue error to the host (a vEVENT to the VMM). */
  reportError(queueIndex: number, consumer: number): void;
}

interface QueueState {
  basePa: number;
  ring: RingIndex;
  prod: number;
  cons: number;
  err: number;
}

/**
 * Guest-owned command queues the hardware consumes straight from guest memory, without a VM exit: the
 * guest writes PROD in the mapped control page, the hardware reads commands at the queue's physical base,
 * executes the ones a guest may issue, and stops with an error in CONS/ERR at any other.
 */
export class MockVqueues implements MmioRegion {
  private readonly queues = new Map<number, QueueState>();
  private readonly words = new Uint32Array(MOCK_CMD_BYTES / 4);
  private readonly command = decodeMockCommand(new Uint32Array(MOCK_CMD_BYTES / 4));
  consumed = 0;

  constructor(
    private readonly host: HostMemory,
    private readonly executor: VqueueExecutor,
  ) {}

  add(index: number, basePa: number, length: number): void {
    const log2 = Math.log2(length / MOCK_CMD_BYTES);
    this.queues.set(index, { basePa, ring: new RingIndex(Math.max(0, Math.floor(log2)), "wrap-bit"), prod: 0, cons: 0, err: 0 });
  }

  remove(index: number): void {
    this.queues.delete(index);
  }

  read(offset: number): bigint {
    const q = this.queues.get(Math.floor(offset / MOCK_VQUEUE_STRIDE));
    if (q === undefined) return 0n;
    switch (offset % MOCK_VQUEUE_STRIDE) {
      case MockVqueueReg.PROD:
        return BigInt(q.prod);
      case MockVqueueReg.CONS:
        return BigInt(q.cons);
      case MockVqueueReg.ERR:
        return BigInt(q.err);
      default:
        return 0n;
    }
  }

  write(offset: number, _size: 4 | 8, value: bigint): void {
    const index = Math.floor(offset / MOCK_VQUEUE_STRIDE);
    const q = this.queues.get(index);
    if (q === undefined) return;
    const v = Number(value & 0xffff_ffffn);
    switch (offset % MOCK_VQUEUE_STRIDE) {
      case MockVqueueReg.PROD:
        if (q.ring.valid(v)) q.prod = v;
        this.consume(index, q);
        break;
      case MockVqueueReg.CONS:
        // The guest acknowledges an error by moving CONS past the bad command; then the queue runs again.
        if (q.err !== MockVqueueError.NONE && q.ring.valid(v)) {
          q.cons = v;
          q.err = MockVqueueError.NONE;
          this.consume(index, q);
        }
        break;
      default:
        break;
    }
  }

  private consume(index: number, q: QueueState): void {
    // At most one pass over the ring per doorbell: a hostile PROD cannot make this loop forever.
    for (let budget = q.ring.entries; budget > 0 && q.err === MockVqueueError.NONE && !q.ring.isEmpty(q.prod, q.cons); budget--) {
      const at = q.basePa + q.ring.index(q.cons) * MOCK_CMD_BYTES;
      for (let i = 0; i < this.words.length; i++) this.words[i] = this.host.read32(at + i * 4);
      const command = decodeMockCommandInto(this.words, this.command);
      if (!this.executor.execute(command.OP, command)) {
        q.err = MockVqueueError.ILLEGAL;
        this.executor.reportError(index, q.cons);
        return;
      }
      q.cons = q.ring.next(q.cons);
      this.consumed++;
    }
  }
}

