/**
 * The configuration space of one PCI function: 4 KiB of registers read and written in naturally aligned 1, 2
 * or 4 bytes (the first 256 are conventional space). Offsets beyond what the function implements read zero.
 */
export interface PciConfigHandler {
  read(offset: number, size: 1 | 2 | 4): number;
  write(offset: number, size: 1 | 2 | 4, value: number): void;
}

/** A function's address: PCI segment and requester id (bus << 8 | device << 3 | function). */
export interface PciAddress {
  readonly segment: number;
  readonly bdf: number;
}

/** What an absent function answers: all ones, as a master abort does. */
export function pciAbsent(size: 1 | 2 | 4): number {
  return size === 4 ? 0xffff_ffff : size === 2 ? 0xffff : 0xff;
}

/** Whether an access is one the configuration mechanism can issue (naturally aligned, inside 4 KiB). */
export function pciAccessValid(offset: number, size: 1 | 2 | 4): boolean {
  return Number.isInteger(offset) && offset >= 0 && offset + size <= 4096 && offset % size === 0;
}

/** `bus:dev.fn` (with the segment when not 0), as Linux prints a PCI address. */
export function formatBdf(address: PciAddress): string {
  const bus = (address.bdf >> 8) & 0xff;
  const dev = (address.bdf >> 3) & 0x1f;
  const fn = address.bdf & 7;
  const text = `${bus.toString(16).padStart(2, "0")}:${dev.toString(16).padStart(2, "0")}.${fn}`;
  return address.segment === 0 ? text : `${address.segment.toString(16).padStart(4, "0")}:${text}`;
}
