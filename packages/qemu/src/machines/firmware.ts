/**
 * Firmware images that keep the CPU idle while qtest drives the machine: built here at run time (never a file
 * in the repository). The CPU must not touch memory or devices, so nothing it does can race the trace.
 */

/** x86 BIOS image size: QEMU maps a PC BIOS ending at 4 GiB and wants a multiple of 64 KiB. */
const X86_BIOS_BYTES = 64 * 1024;

/**
 * A 64 KiB x86 BIOS whose reset vector (the image's last 16 bytes, at 0xFFFFFFF0) is `cli; hlt; jmp back to
 * hlt`: interrupts off, halted, and halted again if anything wakes it (an NMI or SMI).
 */
export function x86HaltingBios(): Uint8Array {
  const image = new Uint8Array(X86_BIOS_BYTES);
  // FA: cli. F4: hlt. EB FD: jmp -3 (back to the hlt).
  image.set([0xfa, 0xf4, 0xeb, 0xfd], X86_BIOS_BYTES - 16);
  return image;
}

/**
 * An AArch64 image for the virt machine's flash at address 0, where the CPU starts: `wfi` then a branch back to
 * it. Little-endian A64 encodings: WFI is 0xD503207F; B with imm26 = -1 (back one instruction) is 0x17FFFFFF.
 */
export function aarch64IdleFirmware(): Uint8Array {
  const image = new Uint8Array(4096);
  const view = new DataView(image.buffer);
  view.setUint32(0, 0xd503207f, true);
  view.setUint32(4, 0x17ffffff, true);
  return image;
}
