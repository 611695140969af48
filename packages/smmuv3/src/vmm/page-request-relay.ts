import { Errno, ok, PageResponseCode, PGFAULT_BYTES, PgfaultFlag, PgfaultPerm, type IommufdContext, type RawBits, type Result, type ShadowReporter } from "@viommu/core";
import { PriResp, ResumeAction } from "../format/command.js";
import { EventClass, encodeEvent } from "../format/event-record.js";
import { encodePriEntry } from "../format/pri-entry.js";
import type { PriWrite } from "./emulated-pri-queue.js";
import type { EventWrite } from "./emulated-event-queue.js";

/** What the relay needs from the emulated SMMU. */
export interface PageRequestPorts {
  /** The guest StreamID (vSID) of an iommufd device, undefined when this vSMMU does not place it. */
  vsidOf(devId: number): number | undefined;
  /** Whether the guest configured the transaction's stage 1 to stall (STE.S1STALLD clear, CD.S set). */
  stalls(vsid: number, pasid: number | undefined): boolean;
  /** Writes a page request group's entries into the guest's PRI queue. */
  priq(entries: readonly RawBits[], last: boolean): PriWrite;
  /** Writes a stall event record into the guest's event queue. */
  event(record: RawBits): EventWrite;
  /**
   * Whether the STE of a StreamID is valid, for the automatic response to an overflowed request with a PASID
   * (IHI0070 §8.1, IDR3.PPS = 0: the SMMU checks STE.PPAR, and an STE it cannot read means Response Failure).
   */
  steValid(vsid: number): boolean;
  readonly reporter: ShadowReporter;
}

/** How many fault records one poll reads at most (a bound, so a flood cannot stall the VMM's loop). */
const READ_RECORDS = 64;
/** Stall events kept for an event queue that cannot take them now, before they are terminated. */
const WAITING_STALLS_MAX = 256;

interface Group {
  readonly cookie: number;
  readonly vsid: number;
  readonly pasid: number | undefined;
  readonly records: { readonly group: number; readonly perm: number; readonly address: bigint }[];
}

/**
 * The VMM's side of recoverable faults for passthrough devices (iommufd's fault queue, struct iommu_hwpt_pgfault and
 * iommu_hwpt_page_response). The nested HWPT of a stream whose guest can take page requests (PRI on with ATS, or a
 * stalling stage 1) is allocated with this queue; every group the host reports becomes, named by the guest
 * StreamID:
 * - with the guest's stage 1 set to stall: an F_TRANSLATION event with Stall = 1 and the host's STAG in the guest's
 *   event queue (kept and offered again while the queue cannot take it, as the SMMU retries a stall record, §3.12.2),
 *   answered by the guest's CMD_RESUME for that StreamID and STAG (retry: SUCCESS; terminate: INVALID) or its
 *   CMD_STALL_TERM;
 * - otherwise: one PRI queue entry per page (PRGIndex the device's group index, Last on the group's last), answered
 *   by the guest's CMD_PRI_RESP for that StreamID and PRGIndex (Success: SUCCESS; InvalidRequest or
 *   ResponseFailure: INVALID, the only failure iommufd takes). A group the queue cannot take is answered as the SMMU
 *   answers it automatically (§8.1, §8.2): Success when it overflowed (Response Failure for a PASID request whose STE
 *   the SMMU cannot check), Response Failure when the queue is disabled or in error.
 * A response naming nothing outstanding has no effect (§4.7.1; a PRG response the device does not expect is
 * dropped). Responses are matched by StreamID and group alone, as the SMMU does (it does not check the PASID, §8).
 */
export class PageRequestRelay {
  /** Outstanding PRI groups by (vSID, PRGIndex) and stalls by (vSID, STAG): the fault file's cookie. */
  private readonly pri = new Map<string, number>();
  private readonly stallsOut = new Map<string, number>();
  /** Stall events the guest's event queue has not taken yet. */
  private readonly waiting: { readonly cookie: number; readonly vsid: number; readonly stag: number; readonly record: RawBits }[] = [];
  private readonly response = new Uint8Array(8);

  private constructor(
    private readonly ctx: IommufdContext,
    readonly faultId: number,
    private readonly file: { read(count: number): Result<Uint8Array>; write(bytes: Uint8Array): Result<number>; close(): void },
    private readonly ports: PageRequestPorts,
  ) {}

  static create(ctx: IommufdContext, ports: PageRequestPorts): Result<PageRequestRelay> {
    const q = ctx.faultQueueAlloc(0);
    if (!q.ok) return q;
    return ok(new PageRequestRelay(ctx, q.value.id, q.value.file, ports));
  }

  private static key(vsid: number, tag: number): string {
    return `${vsid}:${tag}`;
  }

  /** Groups answered by the guest yet (for tests and the state's bookkeeping). */
  get outstanding(): number {
    return this.pri.size + this.stallsOut.size + this.waiting.length;
  }

  /** Offers waiting stall events again, then reads what the host queued and hands it to the guest. */
  poll(): void {
    this.retryStalls();
    let group: Group | undefined;
    for (let guard = 0; guard < 1024; guard++) {
      const bytes = this.file.read(READ_RECORDS * PGFAULT_BYTES);
      if (!bytes.ok || bytes.value.length === 0) return;
      const v = new DataView(bytes.value.buffer, bytes.value.byteOffset, bytes.value.byteLength);
      for (let at = 0; at + PGFAULT_BYTES <= bytes.value.length; at += PGFAULT_BYTES) {
        const flags = v.getUint32(at, true);
        const devId = v.getUint32(at + 4, true);
        const pasid = flags & PgfaultFlag.PASID_VALID ? v.getUint32(at + 8, true) : undefined;
        const cookie = v.getUint32(at + 36, true);
        if (group === undefined || group.cookie !== cookie) {
          const vsid = this.ports.vsidOf(devId);
          if (vsid === undefined) {
            this.answer(cookie, PageResponseCode.INVALID, `a page request of iommufd device ${devId}, which this vSMMU does not place`);
            continue;
          }
          group = { cookie, vsid, pasid, records: [] };
        }
        group.records.push({ group: v.getUint32(at + 12, true), perm: v.getUint32(at + 16, true), address: v.getBigUint64(at + 24, true) });
        if ((flags & PgfaultFlag.LAST_PAGE) !== 0) {
          this.deliver(group);
          group = undefined;
        }
      }
    }
  }

  private deliver(g: Group): void {
    if (this.ports.stalls(g.vsid, g.pasid)) {
      for (const r of g.records) this.offerStall(g.cookie, g.vsid, g.pasid, r.group & 0xffff, r.perm, r.address);
      return;
    }
    const prgi = g.records[g.records.length - 1]!.group & 0x1ff;
    const entries = g.records.map((r, i) =>
      encodePriEntry({
        StreamID: g.vsid >>> 0,
        SSV: g.pasid !== undefined ? 1 : 0,
        SubstreamID: (g.pasid ?? 0) & 0xfffff,
        // Exec and Priv only travel with a PASID (IHI0070 §8: both 0 when SSV is 0).
        Priv: g.pasid !== undefined && (r.perm & PgfaultPerm.PRIV) !== 0 ? 1 : 0,
        Exec: g.pasid !== undefined && (r.perm & PgfaultPerm.EXEC) !== 0 ? 1 : 0,
        Read: r.perm & PgfaultPerm.READ ? 1 : 0,
        Write: r.perm & PgfaultPerm.WRITE ? 1 : 0,
        Last: i === g.records.length - 1 ? 1 : 0,
        PRGIndex: prgi,
        PageAddress: r.address & ~0xfffn,
      }),
    );
    const outcome = this.ports.priq(entries, true);
    if (outcome === "written") {
      const key = PageRequestRelay.key(g.vsid, prgi);
      // A PRGIndex still outstanding is the device's to reuse only after its response; a second one replaces it.
      const previous = this.pri.get(key);
      if (previous !== undefined) this.answer(previous, PageResponseCode.INVALID, `StreamID 0x${g.vsid.toString(16)} reused PRGIndex ${prgi} before its response`);
      this.pri.set(key, g.cookie);
      return;
    }
    if (outcome === "overflow") {
      const success = g.pasid === undefined || this.ports.steValid(g.vsid);
      this.answer(g.cookie, success ? PageResponseCode.SUCCESS : PageResponseCode.INVALID, success ? undefined : `the PRI queue overflowed on a PASID request of StreamID 0x${g.vsid.toString(16)} with an invalid STE: Response Failure`);
      return;
    }
    this.answer(g.cookie, PageResponseCode.INVALID, `the guest's PRI queue ${outcome === "abort" ? "is outside its RAM (PRIQ_ABT_ERR)" : "is disabled or in error"}: page request of StreamID 0x${g.vsid.toString(16)} answered Response Failure`);
  }

  private offerStall(cookie: number, vsid: number, pasid: number | undefined, stag: number, perm: number, address: bigint): void {
    const record = encodeEvent("F_TRANSLATION", {
      StreamID: vsid >>> 0,
      SSV: pasid !== undefined ? 1 : 0,
      SubstreamID: (pasid ?? 0) & 0xfffff,
      STAG: stag,
      Stall: 1,
      PnU: perm & PgfaultPerm.PRIV ? 1 : 0,
      InD: perm & PgfaultPerm.EXEC ? 1 : 0,
      RnW: perm & PgfaultPerm.WRITE ? 0 : 1,
      CLASS: EventClass.IN,
      InputAddr: address,
    });
    if (this.ports.event(record) === "written") this.stallsOut.set(PageRequestRelay.key(vsid, stag), cookie);
    else if (this.waiting.length < WAITING_STALLS_MAX) this.waiting.push({ cookie, vsid, stag, record });
    else this.answer(cookie, PageResponseCode.INVALID, `the guest's event queue has not taken ${WAITING_STALLS_MAX} stall events: StreamID 0x${vsid.toString(16)} STAG ${stag} terminated`);
  }

  private retryStalls(): void {
    const pending = this.waiting.splice(0);
    for (const w of pending) {
      if (this.ports.event(w.record) === "written") this.stallsOut.set(PageRequestRelay.key(w.vsid, w.stag), w.cookie);
      else this.waiting.push(w);
    }
  }

  /** The guest's CMD_PRI_RESP. Returns whether it named an outstanding group. */
  priResponse(vsid: number, prgi: number, resp: number): boolean {
    const key = PageRequestRelay.key(vsid, prgi & 0x1ff);
    const cookie = this.pri.get(key);
    if (cookie === undefined) return false;
    this.pri.delete(key);
    this.answer(cookie, resp === PriResp.Success ? PageResponseCode.SUCCESS : PageResponseCode.INVALID, undefined);
    return true;
  }

  /** The guest's CMD_RESUME. Returns whether it named an outstanding stall. */
  resume(vsid: number, stag: number, action: number): boolean {
    const key = PageRequestRelay.key(vsid, stag & 0xffff);
    const cookie = this.stallsOut.get(key);
    if (cookie === undefined) return false;
    this.stallsOut.delete(key);
    // Ac (bit 0 of Action) set: retry, the abort parameter ignored; clear: terminate.
    this.answer(cookie, (action & ResumeAction.Retry) !== 0 ? PageResponseCode.SUCCESS : PageResponseCode.INVALID, undefined);
    return true;
  }

  /** The guest's CMD_STALL_TERM: every stall of the StreamID terminated (recorded or still waiting for the queue). */
  stallTerm(vsid: number): void {
    for (const [key, cookie] of this.stallsOut) {
      if (!key.startsWith(`${vsid}:`)) continue;
      this.stallsOut.delete(key);
      this.answer(cookie, PageResponseCode.INVALID, undefined);
    }
    for (let i = this.waiting.length - 1; i >= 0; i--) {
      if (this.waiting[i]!.vsid !== vsid) continue;
      this.answer(this.waiting.splice(i, 1)[0]!.cookie, PageResponseCode.INVALID, undefined);
    }
  }

  /** Forgets what the guest can no longer answer (a restore, the SMMU disabled): the host answered or will answer them. */
  forget(): void {
    this.pri.clear();
    this.stallsOut.clear();
    this.waiting.length = 0;
  }

  /** Writes a group's response to the fault file; `why` (when the VMM answers on its own) goes to the host log. */
  private answer(cookie: number, code: number, why: string | undefined): void {
    const v = new DataView(this.response.buffer);
    v.setUint32(0, cookie, true);
    v.setUint32(4, code, true);
    const w = this.file.write(this.response);
    if (w.ok && why === undefined) return;
    const { log, vm, source } = this.ports.reporter;
    const error = w.ok ? { errno: "EIO" as const, code: Errno.EIO, message: why! } : w.error;
    log.record({ vm, source, kind: "other", error, message: w.ok ? `${why}: answered ${code === PageResponseCode.SUCCESS ? "SUCCESS" : "INVALID"}` : `page response not delivered (${w.error.errno} ${w.error.message})` });
  }

  /** Closes the fault file and destroys the queue (the host answers what is outstanding INVALID). */
  destroy(): void {
    this.forget();
    this.file.close();
    this.ctx.destroy(this.faultId);
  }
}

