import type { GuestMemory } from "@viommu/core";

const ENTRY = 16;

/**
 * One of the guest's in-memory rings the emulated IOMMU writes (event log, PPR log): base and length from
 * the base register, head written by software, tail by the IOMMU, byte offsets as the registers hold them.
 * Full means one more entry would make tail equal head. Length codes below 8 are reserved in the spec; like
 * QEMU, the ring is then simply 2^len entries.
 */
export class GuestLogRing {
  base = 0;
  bytes = 0;
  head = 0;
  tail = 0;

  /** A base register write: a new ring, both pointers at 0 (QEMU resets them; Linux writes 0 to both anyway). */
  program(value: bigint): void {
    this.base = Number(value & 0x000f_ffff_ffff_f000n);
    this.bytes = 2 ** (Number((value >> 56n) & 0xfn) + 4);
    this.head = 0;
    this.tail = 0;
  }

  get entries(): number {
    return this.bytes / ENTRY;
  }

  get full(): boolean {
    return (this.tail + ENTRY) % this.bytes === this.head;
  }

  /** Whether the whole ring lies in memory the host may read and write (an SNP guest must have shared it). */
  reachable(memory: GuestMemory): boolean {
    return this.bytes > 0 && memory.hostReadable(this.base, this.bytes);
  }

  /** Writes a record at the tail; "full" and "unreachable" leave the ring untouched. */
  append(memory: GuestMemory, record: Uint32Array): "ok" | "full" | "unreachable" {
    if (this.full) return "full";
    const at = this.base + this.tail;
    if (!memory.hostReadable(at, ENTRY)) return "unreachable";
    memory.writeWords(at, record);
    this.tail = (this.tail + ENTRY) % this.bytes;
    return "ok";
  }
}
