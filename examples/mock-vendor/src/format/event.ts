import { decodeLayout, defineLayout, encodeLayout, type Fields, type RawBits } from "@viommu/core";

/** Mock event types (128-bit records, type in bits 7:0). */
export const MockEventType = {
  DMA_FAULT: 0x01,
  /** Non-affiliated: names a queue position, no device. */
  CMD_ERROR: 0x02,
  IR_FAULT: 0x03,
  /** Non-affiliated: a global error (bad table base, queue base outside RAM…). */
  GLOBAL_ERROR: 0x04,
} as const;

export const mockEventNames: Readonly<Record<number, string>> = Object.fromEntries(Object.entries(MockEventType).map(([k, v]) => [v, k]));

/** CMD_ERROR reasons: why the queue stopped at the command it names. */
export const MockCommandError = {
  /** Not a command the device knows, or a field it cannot take. */
  ILLEGAL: 1,
  /** The command could not be read from guest memory. */
  FETCH: 2,
  /**
   * The host refused what the command asked for (an invalidation iommufd rejected, a configuration or shadow
   * mapping it would not install). Commands before it took effect; the VMM logged the refusal.
   */
  HOST_REFUSED: 3,
} as const;

/** DMA fault reasons (the REASON field of DMA_FAULT) and global error codes. */
export const MockFaultReason = {
  NOT_PRESENT: 1,
  PERMISSION: 2,
  RESERVED: 3,
  ADDRESS_SIZE: 4,
  BAD_DEVICE_ENTRY: 5,
  STAGE2: 6,
  DEVICE_BLOCKED: 7,
  /** IR_FAULT reasons */
  IRTE_NOT_PRESENT: 0x10,
  IRTE_SID_MISMATCH: 0x11,
  IRTE_INDEX_RANGE: 0x12,
  /** GLOBAL_ERROR codes */
  TABLE_OUTSIDE_RAM: 0x20,
} as const;

export const mockEventLayout = defineLayout("MOCK_EVENT", 128, [
  { name: "TYPE", bit: 0, width: 8 },
  { name: "REASON", bit: 8, width: 8 },
  { name: "RID", bit: 16, width: 16 },
  { name: "WRITE", bit: 32, width: 1 },
  { name: "STAGE", bit: 33, width: 2 },
  /** IR_FAULT: table index; CMD_ERROR: queue index of the bad command. */
  { name: "INDEX", bit: 40, width: 24 },
  /** The faulting address, all 64 bits (as a device issued it). */
  { name: "ADDR", bit: 64, width: 64, big: true },
] as const);

export type MockEvent = Fields<typeof mockEventLayout>;
export const MOCK_EVENT_BYTES = 16;

export function decodeMockEvent(raw: RawBits): MockEvent {
  return decodeLayout(mockEventLayout, raw);
}

export function encodeMockEvent(event: Partial<MockEvent>): RawBits {
  return encodeLayout(mockEventLayout, event);
}
