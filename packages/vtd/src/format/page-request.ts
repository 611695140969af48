import { decodeLayout, defineLayout, encodeLayout, type Fields, type RawBits } from "@viommu/core";

/**
 * Page request descriptor (page_req_dsc): a 256-bit entry of the page request queue at PQA. Intel VT-d spec
 * §7.5.1; ../shared/spec/x86.md A8 (Linux `struct page_req_dsc` in drivers/iommu/intel/prq.c and
 * `decode_prq_descriptor`). PDP (bit 9) is in older Linux structs and still tested by `decode_prq_descriptor`;
 * the newest struct marks [15:9] reserved. The Type value hardware writes is not in the sources (the spec file
 * guesses 0x01, unverified); it is decoded as a field, not checked. QW2 and QW3 carry private data.
 */
export const pageRequestLayout = defineLayout("page_req_dsc", 256, [
  { name: "TYPE", bit: 0, width: 8 },
  /** PASID present. */
  { name: "PP", bit: 8, width: 1 },
  /** Private data present. */
  { name: "PDP", bit: 9, width: 1 },
  /** Requester id. */
  { name: "RID", bit: 16, width: 16 },
  { name: "PASID", bit: 32, width: 20 },
  /** Execute requested. */
  { name: "ER", bit: 52, width: 1 },
  /** Privileged-mode requested. */
  { name: "PM", bit: 53, width: 1 },
  /** Read requested. */
  { name: "RR", bit: 64, width: 1 },
  /** Write requested. */
  { name: "WR", bit: 65, width: 1 },
  /** Last page in group: the reply (PG_RESP) is due after this one. */
  { name: "LPIG", bit: 66, width: 1 },
  /** Page request group index. */
  { name: "PRGI", bit: 67, width: 9 },
  { name: "ADDR", bit: 76, width: 52, shift: 12, big: true },
  { name: "PRIVATE_DATA0", bit: 128, width: 64, big: true },
  { name: "PRIVATE_DATA1", bit: 192, width: 64, big: true },
] as const);

export type PageRequestFields = Fields<typeof pageRequestLayout>;

/** Bytes per page request descriptor (PQH/PQT advance by this much). */
export const PAGE_REQUEST_BYTES = 32;

export function decodePageRequest(raw: RawBits): PageRequestFields {
  return decodeLayout(pageRequestLayout, raw);
}

export function encodePageRequest(fields: Partial<PageRequestFields>): RawBits {
  return encodeLayout(pageRequestLayout, fields);
}

/** Number of descriptors in a page request queue of PQA.PQS. */
export function pageRequestQueueEntries(pqs: number): number {
  return (4096 * 2 ** pqs) / PAGE_REQUEST_BYTES;
}
