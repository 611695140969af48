import type { TestVm } from "@viommu/conformance";
import { decodeEvent } from "../src/format/event-log-entry.js";
import { MmioOffset } from "../src/format/mmio-register-map.js";

/** Control bits used by hand-written guests. */
export const Ctl = { IommuEn: 1n, EventLogEn: 1n << 2n, EventIntEn: 1n << 3n, ComWaitIntEn: 1n << 4n, CmdBufEn: 1n << 12n, PPRLogEn: 1n << 13n, PPRIntEn: 1n << 14n, GAEn: 1n << 17n, XTEn: 1n << 50n, IntCapXTEn: 1n << 51n } as const;

/**
 * A guest written by hand against the register block (no driver): it places the structures, programs them
 * and pokes commands, so tests can reach states a well-behaved driver never creates.
 */
export class RawGuest {
  devtab = 0;
  cmd = 0;
  cmdBytes = 0;
  evt = 0;
  evtBytes = 0;
  tail = 0;
  evtHead = 0;
  control = 0n;

  constructor(
    readonly v: TestVm,
    readonly base: number,
  ) {}

  write(offset: number, value: bigint | number, size: 4 | 8 = 8): void {
    this.v.vm.mmioWrite(this.base + offset, size, BigInt(value));
  }

  read(offset: number, size: 4 | 8 = 8): bigint {
    return this.v.vm.mmioRead(this.base + offset, size);
  }

  alloc(pages: number): number {
    return this.v.pages.allocate(pages, pages)!;
  }

  setUp(options: { cmdCode?: number; evtCode?: number; control?: bigint } = {}): this {
    this.devtab = this.alloc(2);
    const cmdCode = options.cmdCode ?? 8;
    const evtCode = options.evtCode ?? 8;
    this.cmdBytes = 2 ** (cmdCode + 4);
    this.evtBytes = 2 ** (evtCode + 4);
    this.cmd = this.alloc(Math.max(1, this.cmdBytes / 4096));
    this.evt = this.alloc(Math.max(1, this.evtBytes / 4096));
    this.write(MmioOffset.DeviceTableBase, BigInt(this.devtab) | 1n);
    this.write(MmioOffset.CommandBufferBase, BigInt(this.cmd) | (BigInt(cmdCode) << 56n));
    this.write(MmioOffset.EventLogBase, BigInt(this.evt) | (BigInt(evtCode) << 56n));
    this.setControl(options.control ?? Ctl.IommuEn | Ctl.CmdBufEn | Ctl.EventLogEn);
    return this;
  }

  setControl(value: bigint): void {
    this.control = value;
    this.write(MmioOffset.Control, value);
  }

  /** Writes commands at the tail and rings the doorbell once. */
  submit(...commands: Uint32Array[]): void {
    for (const c of commands) {
      this.v.vm.memory.writeWords(this.cmd + this.tail, c);
      this.tail = (this.tail + 16) % this.cmdBytes;
    }
    this.write(MmioOffset.CommandBufferTail, this.tail, 4);
  }

  status(): number {
    return Number(this.read(MmioOffset.Status, 4));
  }

  /** Event log entries between the software head and the tail register, decoded; the head is written back. */
  events(): { name: string; code: number; fields: Record<string, unknown> }[] {
    const tail = Number(this.read(MmioOffset.EventLogTail, 4));
    const out: { name: string; code: number; fields: Record<string, unknown> }[] = [];
    for (let guard = 0; this.evtHead !== tail && guard < 1 << 16; guard++) {
      out.push(decodeEvent(this.v.vm.memory.readWords(this.evt + this.evtHead, new Uint32Array(4))) as never);
      this.evtHead = (this.evtHead + 16) % this.evtBytes;
    }
    this.write(MmioOffset.EventLogHead, this.evtHead, 4);
    return out;
  }

  dte(deviceId: number, words: number[]): void {
    this.v.vm.memory.writeWords(this.devtab + deviceId * 32, Uint32Array.from(words));
  }
}
