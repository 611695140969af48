/**
 * The mock register block (4 KiB of MMIO). Bases carry log2 of the entry count in bits 4:0; addresses are
 * 4 KiB aligned. CMDQ_TAIL is the doorbell; EVTQ_HEAD is written by the guest as it consumes events.
 */
export const MockReg = {
  ID: 0x00,
  CONTROL: 0x08,
  STATUS: 0x10,
  DEVTAB_BASE: 0x18,
  CMDQ_BASE: 0x20,
  CMDQ_HEAD: 0x28,
  CMDQ_TAIL: 0x30,
  EVTQ_BASE: 0x38,
  EVTQ_HEAD: 0x40,
  EVTQ_TAIL: 0x48,
  IRT_BASE: 0x50,
  EVT_MSI_ADDR: 0x58,
  EVT_MSI_DATA: 0x60,
  /** Write-1-to-clear of STATUS error bits. */
  STATUS_ACK: 0x68,
} as const;

export const MOCK_MMIO_BYTES = 0x1000;
export const MOCK_ID_VALUE = 0x4d4f_434b_0001n; // "MOCK", version 1

export const MockControl = {
  TRANSLATE_EN: 1 << 0,
  IR_EN: 1 << 1,
  CMDQ_EN: 1 << 2,
  EVTQ_EN: 1 << 3,
  EVT_INT_EN: 1 << 4,
} as const;

/** STATUS mirrors CONTROL's enables in bits 4:0, plus the sticky error bits below. */
export const MockStatus = {
  CMD_ERROR: 1 << 8,
  EVT_OVERFLOW: 1 << 9,
  GLOBAL_ERROR: 1 << 10,
} as const;

/** Splits a base register value into its 4 KiB-aligned address and log2 size (bits 4:0). */
export function decodeBase(value: bigint): { address: number; log2: number } {
  const address = Number(value & 0x000f_ffff_ffff_f000n);
  return { address, log2: Number(value & 0x1fn) };
}

export function encodeBase(address: number, log2: number): bigint {
  return BigInt(address) | BigInt(log2 & 0x1f);
}

/** ID register bit: the device offers guest-owned command queues (the vQUEUE). */
export const MOCK_ID_VQUEUE = 1n << 63n;
/** VQ_BASE(i): trapped registers where the guest programs its own command queues (base | log2 entries). */
export const MOCK_VQ_BASE = (index: number): number => 0x80 + index * 8;
/** The guest-owned queues' control page sits right after the register block, mapped without exits. */
export const MOCK_VQUEUE_PAGE_OFFSET = MOCK_MMIO_BYTES;
export const MOCK_VQUEUE_PAGE_BYTES = 4096;
/** Per-queue registers in that page, 16 bytes a queue. */
export const MockVqueueReg = { PROD: 0x0, CONS: 0x4, ERR: 0x8 } as const;
export const MOCK_VQUEUE_STRIDE = 16;
/** ERR codes: the queue stops at the bad command until the guest writes CONS past it. */
export const MockVqueueError = { NONE: 0, ILLEGAL: 1, FETCH: 2 } as const;
