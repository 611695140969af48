import type { GuestMemory } from "../memory/guest-memory.js";

/**
 * The VMM process's address space as the ioctl layer sees it: user pointers (`data_uptr`, `user_va`) resolve
 * to buffers the caller registered, or to guest RAM the VMM has mapped (as QEMU maps guest RAM into its own
 * address space). An unregistered pointer is EFAULT, as copy_from_user would answer.
 */
export class UserMemory {
  private readonly buffers: { address: number; bytes: Uint8Array }[] = [];
  private readonly guestMaps: { address: number; length: number; memory: GuestMemory; gpa: number }[] = [];
  private next = 0x7f00_0000_0000;
  private readonly files = new Map<number, { memory: GuestMemory; gpa: number; length: number }>();
  private nextFd = 100;

  /** Registers a buffer at a fresh user address and returns the address. */
  put(bytes: Uint8Array): number {
    const address = this.next;
    this.next += Math.ceil(Math.max(bytes.length, 1) / 4096) * 4096 + 4096;
    this.buffers.push({ address, bytes });
    return address;
  }

  /** Maps guest RAM [gpa, gpa + length) at a fresh user address (the VMM's mapping of guest memory). */
  mapGuest(memory: GuestMemory, gpa: number, length: number): number {
    const address = this.next;
    this.next += Math.ceil(length / 4096) * 4096 + 4096;
    this.guestMaps.push({ address, length, memory, gpa });
    return address;
  }

  /** The `length` bytes at `address`, as a live view, or undefined (EFAULT). */
  view(address: number, length: number): Uint8Array | undefined {
    for (const b of this.buffers) {
      if (address >= b.address && address + length <= b.address + b.bytes.length) return b.bytes.subarray(address - b.address, address - b.address + length);
    }
    return undefined;
  }

  /**
   * Registers a file holding guest RAM [gpa, gpa + length) (a memfd backing the VM, as QEMU's memory-backend-memfd)
   * and returns its fd, for IOMMU_IOAS_MAP_FILE.
   */
  addFile(memory: GuestMemory, gpa: number, length: number): number {
    const fd = this.nextFd++;
    this.files.set(fd, { memory, gpa, length });
    return fd;
  }

  /** Whether `fd` is an open file (EBADF otherwise). */
  hasFile(fd: number): boolean {
    return this.files.has(fd);
  }

  /** The guest memory at byte `start` of file `fd` for `length` bytes, or undefined beyond the file. */
  fileAt(fd: number, start: number, length: number): { memory: GuestMemory; gpa: number } | undefined {
    const f = this.files.get(fd);
    if (f === undefined || start < 0 || start + length > f.length) return undefined;
    return { memory: f.memory, gpa: f.gpa + start };
  }

  /** The guest memory a user VA range maps, or undefined. */
  guestAt(address: number, length: number): { memory: GuestMemory; gpa: number } | undefined {
    const m = this.guestMaps.find((g) => address >= g.address && address + length <= g.address + g.length);
    return m === undefined ? undefined : { memory: m.memory, gpa: m.gpa + (address - m.address) };
  }
}
