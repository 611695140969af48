import { decodeLayout, decodeLayoutInto, defineLayout, encodeLayout, type Fields, type RawBits } from "@viommu/core";

/** Mock command opcodes (128-bit commands, opcode in bits 7:0). */
export const MockOpcode = {
  INV_DEVICE: 0x01,
  INV_ASID: 0x02,
  INV_RANGE: 0x03,
  INV_IRTE: 0x04,
  SYNC: 0x05,
  INV_ALL: 0x06,
} as const;

export const mockOpcodeNames: Readonly<Record<number, string>> = Object.fromEntries(Object.entries(MockOpcode).map(([k, v]) => [v, k]));

export const mockCommandLayout = defineLayout("MOCK_CMD", 128, [
  { name: "OP", bit: 0, width: 8 },
  /** SYNC: raise the completion interrupt. */
  { name: "IRQ", bit: 8, width: 1 },
  /** INV_RANGE: invalidate leaf entries only (a hint). */
  { name: "LEAF", bit: 9, width: 1 },
  /** INV_DEVICE: requester id; INV_IRTE: table index. */
  { name: "RID", bit: 16, width: 16 },
  { name: "ASID", bit: 32, width: 16 },
  /** INV_RANGE: pages (4 KiB) to invalidate, minus one. */
  { name: "NPAGES", bit: 48, width: 16 },
  /** INV_RANGE: start address; SYNC: status write address (both 4-byte aligned, low bits reserved). */
  { name: "ADDR", bit: 66, width: 50, shift: 2 },
  /** SYNC: the 12-bit status value written to ADDR. */
  { name: "DATA", bit: 116, width: 12 },
] as const);

export type MockCommand = Fields<typeof mockCommandLayout>;
export const MOCK_CMD_BYTES = 16;

export function decodeMockCommand(raw: RawBits): MockCommand {
  return decodeLayout(mockCommandLayout, raw);
}

export function encodeMockCommand(command: Partial<MockCommand>): RawBits {
  return encodeLayout(mockCommandLayout, command);
}

/** Decodes into `out` (a command record the caller reuses): queue consumers allocate nothing per command. */
export function decodeMockCommandInto(raw: RawBits, out: MockCommand): MockCommand {
  return decodeLayoutInto(mockCommandLayout, raw, out);
}
