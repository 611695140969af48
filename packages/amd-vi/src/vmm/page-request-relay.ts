import { err, Errno, ok, PageResponseCode, PGFAULT_BYTES, PgfaultFlag, PgfaultPerm, type Result, type ShadowReporter, type VmmDeviceOptions } from "@viommu/core";
import { buildPageServiceRequest, PprFlag, PPR_TAG_LAST } from "../format/ppr-log-entry.js";

/** What the relay needs from the emulated IOMMU. */
export interface PageRequestPorts {
  /** The guest DeviceID of an iommufd device, undefined when the VMM does not place it. */
  guestRidOf(devId: number): number | undefined;
  /** Logs a PPR entry where the guest reads its PPR log; false when the log did not take it. */
  log(record: Uint32Array): boolean;
  readonly reporter: ShadowReporter;
}

/** How many fault records one poll reads at most (a bound, so a flood cannot stall the VMM's loop). */
const READ_RECORDS = 64;

/**
 * The VMM's side of recoverable faults for passthrough devices: the nested HWPTs of devices whose guest DTE has
 * PPR set are allocated with this fault queue; each page request the host reports there (struct
 * iommu_hwpt_pgfault) becomes a PAGE_SERVICE_REQUEST in the guest's PPR log, named by the guest DeviceID, with
 * the group index as the tag and bit 9 on the group's last request; the guest's COMPLETE_PPR_REQUEST for that
 * DeviceID, PASID and tag is written back to the fault file as the group's response (struct
 * iommu_hwpt_page_response: SUCCESS for status 0, INVALID for anything else, the only two iommufd takes).
 *
 * A group the guest's log cannot take (full, overflowed, disabled) is answered INVALID at once, so the device
 * does not wait for a response that cannot come, and the host log says so.
 */
export class PageRequestRelay {
  /**
   * (guest DeviceID, group) → the group's PASID and the fault file's cookie. A device's group indices are its
   * own whatever the PASID (PCIe PRI), so a response without a PASID (GN clear: the device does not need one)
   * still names one group.
   */
  private readonly outstanding = new Map<string, { readonly pasid: number | undefined; readonly cookie: number }>();

  private constructor(
    private readonly ctx: VmmDeviceOptions["iommufd"],
    readonly faultId: number,
    private readonly file: { read(count: number): Result<Uint8Array>; write(bytes: Uint8Array): Result<number>; close(): void },
    private readonly ports: PageRequestPorts,
  ) {}

  static create(ctx: VmmDeviceOptions["iommufd"], ports: PageRequestPorts): Result<PageRequestRelay> {
    const q = ctx.faultQueueAlloc(0);
    if (!q.ok) return q;
    return ok(new PageRequestRelay(ctx, q.value.id, q.value.file, ports));
  }

  private static key(guestRid: number, group: number): string {
    return `${guestRid}:${group}`;
  }

  /** Reads what the host queued and logs it for the guest. */
  poll(): void {
    for (let guard = 0; guard < 1024; guard++) {
      const bytes = this.file.read(READ_RECORDS * PGFAULT_BYTES);
      if (!bytes.ok || bytes.value.length === 0) return;
      const v = new DataView(bytes.value.buffer, bytes.value.byteOffset, bytes.value.byteLength);
      for (let at = 0; at + PGFAULT_BYTES <= bytes.value.length; at += PGFAULT_BYTES) this.deliver(v, at);
    }
  }

  private deliver(v: DataView, at: number): void {
    const flags = v.getUint32(at, true);
    const devId = v.getUint32(at + 4, true);
    const pasid = flags & PgfaultFlag.PASID_VALID ? v.getUint32(at + 8, true) : undefined;
    const group = v.getUint32(at + 12, true) & 0x1ff;
    const perm = v.getUint32(at + 16, true);
    const address = v.getBigUint64(at + 24, true);
    const cookie = v.getUint32(at + 36, true);
    const last = (flags & PgfaultFlag.LAST_PAGE) !== 0;
    const guestRid = this.ports.guestRidOf(devId);
    if (guestRid === undefined) return this.refuse(cookie, `a page request of iommufd device ${devId}, which this vIOMMU does not place`);
    const ppr =
      (perm & PgfaultPerm.READ ? PprFlag.READ : 0) |
      (perm & PgfaultPerm.WRITE ? PprFlag.WRITE : 0) |
      (perm & PgfaultPerm.EXEC ? PprFlag.EXEC : 0) |
      (perm & PgfaultPerm.PRIV ? 0 : PprFlag.US) |
      (pasid !== undefined ? PprFlag.GN : 0);
    const record = buildPageServiceRequest({ deviceId: guestRid, pasid: pasid ?? 0, tag: group | (last ? PPR_TAG_LAST : 0), flags: ppr, address });
    const key = PageRequestRelay.key(guestRid, group);
    if (!this.ports.log(record)) return this.refuse(cookie, `the guest's PPR log did not take the page request of DeviceID 0x${guestRid.toString(16)} (full, overflowed or disabled)`);
    if (last) this.outstanding.set(key, { pasid, cookie });
  }

  /** Answers a group INVALID that the guest cannot be asked about, and tells the operator. */
  private refuse(cookie: number, why: string): void {
    const r = this.respond(cookie, PageResponseCode.INVALID);
    const { log, vm, source } = this.ports.reporter;
    log.record({ vm, source, kind: "other", error: r.ok ? { errno: "ENOSPC", code: Errno.ENOSPC, message: why } : r.error, message: `${why}: answered INVALID` });
  }

  private respond(cookie: number, code: number): Result<void> {
    const out = new Uint8Array(8);
    const v = new DataView(out.buffer);
    v.setUint32(0, cookie, true);
    v.setUint32(4, code, true);
    const w = this.file.write(out);
    return w.ok ? ok() : err(w.error.errno, w.error.message);
  }

  /**
   * The guest's COMPLETE_PPR_REQUEST: the response to the outstanding group it names. False when it names none
   * (the IOMMU forwards a response the device does not expect, which the device drops).
   */
  complete(guestRid: number, pasid: number | undefined, tag: number, status: number): boolean {
    const key = PageRequestRelay.key(guestRid, tag & 0x1ff);
    const group = this.outstanding.get(key);
    if (group === undefined || !samePasid(pasid, group.pasid)) return false;
    this.outstanding.delete(key);
    const r = this.respond(group.cookie, status === 0 ? PageResponseCode.SUCCESS : PageResponseCode.INVALID);
    if (!r.ok) {
      const { log, vm, source } = this.ports.reporter;
      log.record({ vm, source, kind: "other", error: r.error, message: `page response for DeviceID 0x${guestRid.toString(16)} not delivered: ${r.error.errno} ${r.error.message}` });
    }
    return true;
  }

  /** Closes the fault file and destroys the queue (outstanding groups are answered INVALID by the host). */
  destroy(): void {
    this.file.close();
    this.ctx.destroy(this.faultId);
    this.outstanding.clear();
  }
}

/**
 * Whether a response's PASID names a request's: a response without one (GN clear) names the group by its index
 * alone, and a request without one takes any (PCIe: the PRG response carries a PASID only when the device asks).
 */
export function samePasid(response: number | undefined, request: number | undefined): boolean {
  return response === undefined || request === undefined || response === request;
}
