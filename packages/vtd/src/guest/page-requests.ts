import { err, ok, toHex64, type GuestEvent, type GuestMemory, type Result } from "@viommu/core";
import { encodeInvDesc, PageResponseCode } from "../format/inv-desc.js";
import { decodePageRequest, PAGE_REQUEST_BYTES, type PageRequestFields } from "../format/page-request.js";
import { Reg, type RegisterWindow } from "./mmio.js";

/** PRS.PPR (pending page request) and PRS.PRO (overflow), RW1C. */
const PRS_PPR = 1;
const PRS_PRO = 2;

/** Canonical 48-bit addresses (Linux `is_canonical_address` with 4-level paging): below 2^47, or from 2^64 − 2^47. */
const CANONICAL_LIMIT = 1n << 47n;
const CANONICAL_UPPER = (1n << 64n) - (1n << 47n);

/**
 * The guest's page request handling, as Linux's prq.c does it: `prq_event_thread` clears PPR, reads the queue
 * from PQH to PQT, answers requests it cannot report with INVALID_REQUEST (a non-canonical address, a request in
 * privileged mode, execute with read, both only when the request is the last of its group:
 * `handle_bad_prq_event`), drops stop markers (LPIG with neither read nor write), reports the rest as events,
 * advances PQH to PQT and clears PRO once the queue is empty. The reports wait for `respond` (the fault
 * handler's `iopf_group_response`), which answers the whole group with one page group response naming the
 * request's RID, PASID and PRG index, LPIG set as `intel_iommu_page_response` sets it for a group's last page.
 */
export class GuestPageRequests {
  /** Groups reported and not yet answered, by RID, PASID (or none) and PRG index. */
  private readonly outstanding = new Set<string>();

  constructor(
    private readonly regs: RegisterWindow,
    private readonly memory: GuestMemory,
    private readonly base: number,
    private readonly bytes: number,
  ) {}

  /** Reads the queue: the events to report, and the responses the driver sends itself. */
  drain(): { events: GuestEvent[]; responses: Uint32Array[] } {
    const events: GuestEvent[] = [];
    const responses: Uint32Array[] = [];
    this.regs.write32(Reg.PRS, PRS_PPR);
    const tail = Number(this.regs.read64(Reg.PQT)) % this.bytes;
    let head = Number(this.regs.read64(Reg.PQH)) % this.bytes;
    for (let budget = this.bytes / PAGE_REQUEST_BYTES; head !== tail && budget > 0; budget--) {
      const raw = this.memory.readWords(this.base + head, new Uint32Array(8));
      const req = decodePageRequest(raw);
      head = (head + PAGE_REQUEST_BYTES) % this.bytes;
      const bad = !(req.ADDR < CANONICAL_LIMIT || req.ADDR >= CANONICAL_UPPER) || (req.PM === 1 && (req.RR | req.WR) === 1) || (req.ER === 1 && req.RR === 1);
      if (bad) {
        if (req.LPIG) responses.push(response(req, PageResponseCode.INVALID_REQUEST));
        continue;
      }
      if (req.LPIG && !req.RR && !req.WR) continue;
      const pasid = req.PP ? req.PASID : undefined;
      if (req.LPIG) this.outstanding.add(key(req.RID, pasid, req.PRGI));
      events.push({
        kind: "page-request",
        code: req.PRGI,
        name: "PAGE_REQ",
        rid: req.RID,
        ...(pasid !== undefined ? { pasid } : {}),
        address: Number(req.ADDR),
        write: req.WR === 1,
        group: req.PRGI,
        last: req.LPIG === 1,
        raw: toHex64(raw),
      });
    }
    this.regs.write64(Reg.PQH, BigInt(tail));
    if (this.regs.read32(Reg.PRS) & PRS_PRO && Number(this.regs.read64(Reg.PQH)) === Number(this.regs.read64(Reg.PQT))) this.regs.write32(Reg.PRS, PRS_PRO);
    return { events, responses };
  }

  /** The page group response to a reported request's group: success, or INVALID_REQUEST (what SVA's fault handler answers). */
  respond(request: GuestEvent, success: boolean): Result<Uint32Array> {
    if (request.kind !== "page-request" || request.rid === undefined || request.group === undefined) return err("EINVAL", "not a page request");
    const k = key(request.rid, request.pasid, request.group);
    if (!this.outstanding.delete(k)) return err("ENOENT", `no outstanding page request group ${request.group} of 0x${request.rid.toString(16)}`);
    return ok(
      encodeInvDesc(
        "PG_RESP",
        {
          PP: request.pasid !== undefined ? 1 : 0,
          PASID: request.pasid ?? 0,
          RID: request.rid,
          RESPONSE_CODE: success ? PageResponseCode.SUCCESS : PageResponseCode.INVALID_REQUEST,
          LPIG: 1,
          PRGI: request.group,
        },
        256,
      ),
    );
  }
}

function key(rid: number, pasid: number | undefined, prgi: number): string {
  return `${rid}:${pasid ?? -1}:${prgi}`;
}

function response(req: PageRequestFields, code: number): Uint32Array {
  return encodeInvDesc("PG_RESP", { PP: req.PP, PASID: req.PASID, RID: req.RID, RESPONSE_CODE: code, LPIG: req.LPIG, PRGI: req.PRGI }, 256);
}
