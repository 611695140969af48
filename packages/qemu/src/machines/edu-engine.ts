import type { DmaOp } from "@viommu/trace";
import type { QtestClient } from "../qtest/qtest-client.js";

/**
 * QEMU's `edu` device as a DMA engine (hw/misc/edu.c): registers in BAR0 — DMA source 0x80, destination 0x88,
 * count 0x90, command 0x98 (bit 0 runs, bit 1 set = from its buffer to the bus, clear = from the bus to its
 * buffer); the buffer is 4 KiB at edu address 0x40000 and is reachable only by DMA. Every transfer goes through the
 * IOMMU with the edu's requester id. In QEMU 7.2 a count outside the buffer aborts QEMU (hw_error in
 * edu_check_range), so transfers here are 1 to 4095 bytes (EDU_MAX_TRANSFER), always inside it.
 */
export const EDU_BUFFER = 0x40000;
export const EDU_BUFFER_BYTES = 4096;
/**
 * The longest transfer QEMU 7.2's edu survives: its range check (edu_check_range) takes the end of a transfer as
 * inside the buffer only when it is strictly below the buffer's end, so a full 4096-byte transfer aborts QEMU
 * (hw_error). Later QEMU fixed the check; 4095 bytes work on both.
 */
export const EDU_MAX_TRANSFER = EDU_BUFFER_BYTES - 1;

const REG_SRC = 0x80;
const REG_DST = 0x88;
const REG_COUNT = 0x90;
const REG_CMD = 0x98;
const CMD_RUN = 1n;
const CMD_TO_BUS = 2n;

/** How long a transfer may take before the replay gives up (QEMU stuck): polls of the command register. */
const MAX_POLLS = 20_000;

export type EduOutcome = { readonly status: "done" } | { readonly status: "unsupported"; readonly reason: string } | { readonly status: "failed"; readonly message: string };

/**
 * One edu and what its buffer holds, as far as the trace's expectations say. edu can only copy between the bus
 * and its buffer, so a DMA write of given bytes is possible only when the buffer holds them: after a read the
 * trace expects to have returned them. A read the trace expects to be blocked leaves the buffer unknown (QEMU
 * fills it with what an unassigned access reads).
 */
export class EduEngine {
  private readonly buffer = new Uint8Array(EDU_BUFFER_BYTES);
  private readonly known = new Uint8Array(EDU_BUFFER_BYTES);

  constructor(
    private readonly qtest: QtestClient,
    readonly rid: number,
    readonly bar: number,
  ) {}

  /** Whether `op` can run on edu as it stands, and if not, why. */
  check(op: DmaOp): string | undefined {
    if (op.pasid !== undefined) return "edu issues requests without PASID";
    const len = op.dir === "read" ? op.len : op.data.length;
    if (len > EDU_MAX_TRANSFER) return `edu moves at most ${EDU_MAX_TRANSFER} bytes per transfer, not ${len}`;
    if (op.dir === "write" && this.sourceOffset(op.data) === undefined) return "edu can write only bytes its buffer holds from an earlier read, and it holds none that match";
    return undefined;
  }

  private sourceOffset(data: Uint8Array): number | undefined {
    outer: for (let off = 0; off + data.length <= EDU_BUFFER_BYTES; off++) {
      for (let i = 0; i < data.length; i++) if (this.known[off + i] !== 1 || this.buffer[off + i] !== data[i]) continue outer;
      return off;
    }
    return undefined;
  }

  /** Runs the transfer and waits for it to finish. */
  async run(op: DmaOp): Promise<EduOutcome> {
    const why = this.check(op);
    if (why !== undefined) return { status: "unsupported", reason: why };
    const q = this.qtest;
    let cmd: bigint;
    if (op.dir === "read") {
      await Promise.all([q.writeq(this.bar + REG_SRC, op.iova), q.writeq(this.bar + REG_DST, EDU_BUFFER), q.writeq(this.bar + REG_COUNT, op.len)]);
      cmd = CMD_RUN;
      const expected = op.expect?.ok === true ? op.expect.data : undefined;
      if (expected !== undefined) {
        this.buffer.set(expected, 0);
        this.known.fill(1, 0, op.len);
      } else this.known.fill(0, 0, op.len);
    } else {
      const off = this.sourceOffset(op.data)!;
      await Promise.all([q.writeq(this.bar + REG_SRC, EDU_BUFFER + off), q.writeq(this.bar + REG_DST, op.iova), q.writeq(this.bar + REG_COUNT, op.data.length)]);
      cmd = CMD_RUN | CMD_TO_BUS;
    }
    await q.writeq(this.bar + REG_CMD, cmd);
    for (let i = 0; i < MAX_POLLS; i++) {
      if (((await q.readq(this.bar + REG_CMD)) & CMD_RUN) === 0n) return { status: "done" };
      if (i > 100) await new Promise((r) => setTimeout(r, 1));
    }
    return { status: "failed", message: `edu at 0x${this.rid.toString(16)} did not finish a transfer` };
  }
}
