import { err, ok, type GuestMemory, type PageSource, type Result } from "@viommu/core";

/** DMA direction, as the DMA API names it. */
export type DmaDirection = "to-device" | "from-device" | "bidirectional";

/** A mapping into the bounce pool: where the device must DMA, and where the data really lives. */
export interface BounceMapping {
  /** The bounce slot's guest physical address (shared): the address the device is given. */
  readonly deviceAddress: number;
  readonly original: number;
  readonly length: number;
  readonly direction: DmaDirection;
}

const SLOT = 2048;

/**
 * SWIOTLB as an SEV-SNP guest uses it when its IOMMU does no DMA translation (identity domain): the device
 * can reach only shared pages, so every streaming DMA buffer (private) is bounced through a pool of shared
 * pages. Mapping a to-device buffer copies it into the pool; unmapping a from-device buffer copies the pool
 * back. `bytesCopied` counts every byte the CPU copied, the cost a DMA-translating vIOMMU with the device
 * confined to the buffer (and the buffer shared in place) would avoid. Slots are 2 KiB (IO_TLB_SIZE).
 */
export class SwiotlbPool {
  /** Bytes the CPU copied between buffers and bounce slots, and how many copies that took. */
  bytesCopied = 0;
  copies = 0;
  mappings = 0;
  private readonly used: boolean[];

  private constructor(
    private readonly memory: GuestMemory,
    readonly base: number,
    readonly bytes: number,
  ) {
    this.used = new Array<boolean>(bytes / SLOT).fill(false);
  }

  /** Allocates the pool and shares it with the host (set_memory_decrypted). */
  static create(memory: GuestMemory, pages: PageSource, bytes: number): Result<SwiotlbPool> {
    const count = Math.ceil(bytes / 4096);
    const at = pages.allocate(count);
    if (at === undefined) return err("ENOMEM", "no memory for the SWIOTLB pool");
    memory.setShared(at, count * 4096, true);
    return ok(new SwiotlbPool(memory, at, count * 4096));
  }

  /** dma_map_single: a run of free slots, filled from the buffer when the device will read it. */
  map(original: number, length: number, direction: DmaDirection): Result<BounceMapping> {
    if (length <= 0 || !this.memory.contains(original, length)) return err("EINVAL", "buffer outside guest RAM");
    const need = Math.ceil(length / SLOT);
    let start = -1;
    for (let i = 0, run = 0; i < this.used.length; i++) {
      run = this.used[i] ? 0 : run + 1;
      if (run === need) {
        start = i - need + 1;
        break;
      }
    }
    if (start < 0) return err("ENOMEM", "SWIOTLB pool exhausted");
    for (let i = start; i < start + need; i++) this.used[i] = true;
    const deviceAddress = this.base + start * SLOT;
    if (direction !== "from-device") this.copy(original, deviceAddress, length);
    this.mappings++;
    return ok({ deviceAddress, original, length, direction });
  }

  /** dma_unmap_single: data the device wrote is copied back into the private buffer; the slots are freed. */
  unmap(mapping: BounceMapping): void {
    if (mapping.direction !== "to-device") this.copy(mapping.deviceAddress, mapping.original, mapping.length);
    const first = (mapping.deviceAddress - this.base) / SLOT;
    for (let i = first; i < first + Math.ceil(mapping.length / SLOT); i++) this.used[i] = false;
  }

  private copy(from: number, to: number, length: number): void {
    this.memory.writeBytes(to, this.memory.readBytes(from, length));
    this.bytesCopied += length;
    this.copies++;
  }
}
