import {
  PAGE_RESPONSE_BYTES,
  PageResponseCode as IommufdResponseCode,
  PGFAULT_BYTES,
  PgfaultFlag,
  PgfaultPerm,
  type FaultQueueFile,
  type IommuError,
  type IommufdContext,
  type ShadowReporter,
} from "@viommu/core";
import { PageResponseCode } from "../format/inv-desc.js";
import type { AssignedDevice } from "./device-bindings.js";
import type { PageRequestQueue } from "./page-request-queue.js";

/** One record of the fault file (`struct iommu_hwpt_pgfault`), as read. */
interface PageFaultRecord {
  readonly flags: number;
  readonly devId: number;
  readonly pasid: number;
  readonly groupId: number;
  readonly perm: number;
  readonly address: number;
  readonly cookie: number;
}

/** A page group the guest was given and has not answered: the fault file's cookie for it. */
interface OutstandingGroup {
  readonly cookie: number;
  readonly devId: number;
}

/** A page group response the guest sent (PG_RESP), as the VMM decodes it. */
export interface PageResponse {
  readonly rid: number;
  readonly pasid: number | undefined;
  readonly prgi: number;
  readonly lastInGroup: boolean;
  readonly code: number;
}

/** Groups the VMM reads from the fault file per poll, so one poll is bounded. */
const GROUPS_PER_POLL = 64;

/**
 * The VMM's side of recoverable faults for passthrough devices: one fault queue (IOMMU_FAULT_QUEUE_ALLOC) that
 * every page-request-enabled nested HWPT reports to; its groups become page request descriptors in the guest's
 * page request queue (the RID the guest sees, the PASID, the page, the access, LPIG on the group's last), and
 * the guest's page group responses go back through the fault file with the group's cookie. A group the guest's
 * queue has no room for is never delivered in part: the overflow is the guest's (PRS.PRO, FSTS.PRO) and the
 * device is answered success, so it retries and asks again, as hardware answers a dropped last request of a
 * group (VT-d spec §7.5.1; not in ../shared/spec/, see the package report).
 */
export class PageRequestRelay {
  private queue: { readonly id: number; readonly file: FaultQueueFile } | undefined;
  private readonly outstanding = new Map<string, OutstandingGroup>();
  /** Groups read from the fault file, for the benchmarks and tests. */
  relayed = 0;

  constructor(
    private readonly iommufd: IommufdContext,
    private readonly prq: PageRequestQueue,
    private readonly devices: () => Iterable<AssignedDevice>,
    private readonly reporter: ShadowReporter,
  ) {}

  /** The fault queue's object id, allocated on first use; undefined (and a host-log entry) when the host refuses one. */
  faultQueueId(): number | undefined {
    if (this.queue !== undefined) return this.queue.id;
    const q = this.iommufd.faultQueueAlloc(0);
    if (!q.ok) {
      this.log("configuration-refused", q.error, `IOMMU_FAULT_QUEUE_ALLOC refused: ${q.error.errno} ${q.error.message}; page requests of passthrough devices are final faults`);
      return undefined;
    }
    this.queue = q.value;
    return q.value.id;
  }

  /** Reads whole groups from the fault file into the guest's page request queue. */
  poll(): void {
    const file = this.queue?.file;
    if (file === undefined) return;
    for (let n = 0; n < GROUPS_PER_POLL && file.poll().readable; n++) {
      // A read returns whole groups; one of up to 32 pages is read at once (the PCIe PRG has no more in flight).
      const bytes = file.read(32 * PGFAULT_BYTES);
      if (!bytes.ok) {
        this.log("other", bytes.error, `fault file read failed: ${bytes.error.message}`);
        return;
      }
      if (bytes.value.length === 0) return;
      const records = decodeRecords(bytes.value);
      let start = 0;
      records.forEach((r, i) => {
        if (r.flags & PgfaultFlag.LAST_PAGE || i === records.length - 1) {
          this.deliver(records.slice(start, i + 1));
          start = i + 1;
        }
      });
    }
  }

  private deliver(group: readonly PageFaultRecord[]): void {
    const first = group[0]!;
    this.relayed++;
    const device = [...this.devices()].find((a) => a.devId === first.devId);
    if (device === undefined) {
      // The device left the guest meanwhile: its request has no one to answer it.
      this.respond(first.cookie, IommufdResponseCode.INVALID);
      return;
    }
    const pasid = first.flags & PgfaultFlag.PASID_VALID ? first.pasid : undefined;
    const prgi = first.groupId & 0x1ff;
    const key = groupKey(device.guestRid, pasid, prgi);
    if (!this.prq.canTake(group.length)) {
      this.prq.refuse();
      this.respond(first.cookie, IommufdResponseCode.SUCCESS);
      return;
    }
    const stale = this.outstanding.get(key);
    if (stale !== undefined) this.respond(stale.cookie, IommufdResponseCode.INVALID);
    group.forEach((r, i) => {
      this.prq.submit({
        TYPE: 1,
        PP: pasid !== undefined ? 1 : 0,
        RID: device.guestRid & 0xffff,
        PASID: pasid ?? 0,
        ER: r.perm & PgfaultPerm.EXEC ? 1 : 0,
        PM: r.perm & PgfaultPerm.PRIV ? 1 : 0,
        RR: r.perm & PgfaultPerm.READ ? 1 : 0,
        WR: r.perm & PgfaultPerm.WRITE ? 1 : 0,
        LPIG: i === group.length - 1 ? 1 : 0,
        PRGI: prgi,
        ADDR: BigInt(r.address - (r.address % 4096)),
      });
    });
    this.outstanding.set(key, { cookie: first.cookie, devId: first.devId });
  }

  /**
   * A page group response from the guest. One for a group the VMM gave it goes back through the fault file
   * (success stays success; invalid request and response failure are iommufd's INVALID, the only other answer
   * it has); returns false for one that matches no outstanding group (wrong RID, PASID or index), which a device
   * would drop as an unexpected PRG index.
   */
  respondToGuest(response: PageResponse): boolean {
    const key = groupKey(response.rid, response.pasid, response.prgi);
    const group = this.outstanding.get(key);
    if (group === undefined) return false;
    this.outstanding.delete(key);
    this.respond(group.cookie, response.code === PageResponseCode.SUCCESS ? IommufdResponseCode.SUCCESS : IommufdResponseCode.INVALID);
    return true;
  }

  /** Forgets the device's outstanding groups (it left: iommufd answered them INVALID when it was detached). */
  forget(devId: number): void {
    for (const [key, g] of this.outstanding) if (g.devId === devId) this.outstanding.delete(key);
  }

  /** Groups the guest holds unanswered. */
  get pending(): number {
    return this.outstanding.size;
  }

  private respond(cookie: number, code: number): void {
    const file = this.queue?.file;
    if (file === undefined) return;
    const bytes = new Uint8Array(PAGE_RESPONSE_BYTES);
    const v = new DataView(bytes.buffer);
    v.setUint32(0, cookie, true);
    v.setUint32(4, code, true);
    const r = file.write(bytes);
    if (!r.ok) this.log("other", r.error, `page response for fault cookie ${cookie} refused: ${r.error.errno} ${r.error.message}`);
  }

  /** Closes the fault file and destroys the queue (outstanding groups are answered INVALID by iommufd). */
  destroy(): void {
    if (this.queue === undefined) return;
    this.queue.file.close();
    const r = this.iommufd.destroy(this.queue.id);
    if (!r.ok) this.log("other", r.error, `fault queue ${this.queue.id} could not be destroyed: ${r.error.message}`);
    this.queue = undefined;
    this.outstanding.clear();
  }

  private log(kind: "configuration-refused" | "other", error: IommuError, message: string): void {
    this.reporter.log.record({ vm: this.reporter.vm, source: this.reporter.source, kind, error, message });
  }
}

function groupKey(rid: number, pasid: number | undefined, prgi: number): string {
  return `${rid}:${pasid ?? -1}:${prgi}`;
}

/** `struct iommu_hwpt_pgfault` records (include/uapi/linux/iommufd.h), 40 bytes each. */
function decodeRecords(bytes: Uint8Array): PageFaultRecord[] {
  const v = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  const out: PageFaultRecord[] = [];
  for (let at = 0; at + PGFAULT_BYTES <= bytes.length; at += PGFAULT_BYTES) {
    out.push({
      flags: v.getUint32(at, true),
      devId: v.getUint32(at + 4, true),
      pasid: v.getUint32(at + 8, true),
      groupId: v.getUint32(at + 12, true),
      perm: v.getUint32(at + 16, true),
      address: Number(v.getBigUint64(at + 24, true) & 0x000f_ffff_ffff_f000n),
      cookie: v.getUint32(at + 36, true),
    });
  }
  return out;
}
