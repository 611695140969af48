import { err, ok, type Result } from "../errors/errno.js";
import { drop, hold, IommufdObject } from "./object-table.js";
import { IommufdObjectType, PAGE_RESPONSE_BYTES, PageResponseCode, PgfaultFlag, PGFAULT_BYTES } from "./uapi.js";

/** One recoverable page fault (a PCIe page request, a stalled transaction), as `struct iommu_hwpt_pgfault` carries it. */
export interface PageFault {
  readonly devId: number;
  readonly pasid: number | undefined;
  readonly groupId: number;
  /** PgfaultPerm bits. */
  readonly perm: number;
  readonly address: number;
  readonly length: number;
}

interface FaultGroup {
  readonly faults: readonly PageFault[];
  readonly respond: (code: number) => void;
  cookie: number;
}

/**
 * A fault queue (IOMMU_FAULT_QUEUE_ALLOC): recoverable faults delivered in whole groups, each group given a
 * cookie that the response names. Unlike a vEVENTQ it has no depth: groups wait.
 */
export class FaultQueue extends IommufdObject {
  readonly type = IommufdObjectType.FAULT;
  private readonly pending: FaultGroup[] = [];
  private readonly delivered = new Map<number, FaultGroup>();
  private nextCookie = 1;

  release(): void {
    for (const g of [...this.pending, ...this.delivered.values()]) g.respond(PageResponseCode.INVALID);
    this.pending.length = 0;
    this.delivered.clear();
  }

  /** A driver reports a group of faults; `respond` gets the user's response code. */
  report(faults: readonly PageFault[], respond: (code: number) => void): void {
    if (faults.length > 0) this.pending.push({ faults, respond, cookie: 0 });
  }

  get pendingGroups(): number {
    return this.pending.length;
  }

  read(count: number, position = 0): Result<Uint8Array> {
    if (position !== 0) return err("ESPIPE", "fault file is not seekable");
    if (count % PGFAULT_BYTES !== 0) return err("ESPIPE", `read count ${count} is not a multiple of ${PGFAULT_BYTES}`);
    // The 2026 read-count hardening: a read that cannot hold one record is refused, not answered with 0 bytes
    // (EINVAL; the exact errno of the backport is not public in the material read).
    if (count < PGFAULT_BYTES) return err("EINVAL", `read count ${count} below one fault record`);
    const records: Uint8Array[] = [];
    let used = 0;
    while (this.pending.length > 0) {
      const group = this.pending[0]!;
      const size = group.faults.length * PGFAULT_BYTES;
      if (used + size > count) break;
      this.pending.shift();
      group.cookie = this.nextCookie++;
      this.delivered.set(group.cookie, group);
      group.faults.forEach((f, i) => records.push(encodePgfault(f, group.cookie, i === group.faults.length - 1)));
      used += size;
    }
    const out = new Uint8Array(used);
    records.forEach((r, i) => out.set(r, i * PGFAULT_BYTES));
    return ok(out);
  }

  /** Writes `struct iommu_hwpt_page_response` records; returns the bytes consumed. */
  write(bytes: Uint8Array, position = 0): Result<number> {
    if (position !== 0) return err("ESPIPE", "fault file is not seekable");
    if (bytes.length % PAGE_RESPONSE_BYTES !== 0) return err("ESPIPE", `write of ${bytes.length} bytes is not a multiple of ${PAGE_RESPONSE_BYTES}`);
    const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
    let done = 0;
    for (; done < bytes.length; done += PAGE_RESPONSE_BYTES) {
      const cookie = view.getUint32(done, true);
      const code = view.getUint32(done + 4, true);
      const group = this.delivered.get(cookie);
      if (group === undefined) return done > 0 ? ok(done) : err("EINVAL", `unknown cookie ${cookie}`);
      if (code !== PageResponseCode.SUCCESS && code !== PageResponseCode.INVALID) return done > 0 ? ok(done) : err("EINVAL", `response code ${code}`);
      this.delivered.delete(cookie);
      group.respond(code);
    }
    return ok(done);
  }

  /** On detach or replace, outstanding faults of the device are answered INVALID. */
  autoRespond(devId: number): void {
    for (let i = this.pending.length - 1; i >= 0; i--) {
      if (this.pending[i]!.faults[0]!.devId === devId) this.pending.splice(i, 1)[0]!.respond(PageResponseCode.INVALID);
    }
    for (const [cookie, g] of this.delivered) {
      if (g.faults[0]!.devId === devId) {
        this.delivered.delete(cookie);
        g.respond(PageResponseCode.INVALID);
      }
    }
  }
}

export function encodePgfault(f: PageFault, cookie: number, last: boolean): Uint8Array {
  const out = new Uint8Array(PGFAULT_BYTES);
  const v = new DataView(out.buffer);
  v.setUint32(0, (f.pasid !== undefined ? PgfaultFlag.PASID_VALID : 0) | (last ? PgfaultFlag.LAST_PAGE : 0), true);
  v.setUint32(4, f.devId, true);
  v.setUint32(8, f.pasid ?? 0, true);
  v.setUint32(12, f.groupId, true);
  v.setUint32(16, f.perm, true);
  v.setUint32(20, 0, true);
  v.setBigUint64(24, BigInt(f.address), true);
  v.setUint32(32, f.length, true);
  v.setUint32(36, cookie, true);
  return out;
}

/** A struct iommu_hwpt_pgfault record as a VMM reads it from the fault file: the fault, its cookie, LAST_PAGE. */
export interface PgfaultRecord extends PageFault {
  readonly cookie: number;
  readonly last: boolean;
}

/** Decodes the record at byte `at` of what the fault file returned (include/uapi/linux/iommufd.h layout). */
export function decodePgfault(bytes: Uint8Array, at = 0): PgfaultRecord {
  const v = new DataView(bytes.buffer, bytes.byteOffset + at, PGFAULT_BYTES);
  const flags = v.getUint32(0, true);
  return {
    devId: v.getUint32(4, true),
    pasid: flags & PgfaultFlag.PASID_VALID ? v.getUint32(8, true) : undefined,
    groupId: v.getUint32(12, true),
    perm: v.getUint32(16, true),
    address: Number(v.getBigUint64(24, true)),
    length: v.getUint32(32, true),
    cookie: v.getUint32(36, true),
    last: (flags & PgfaultFlag.LAST_PAGE) !== 0,
  };
}

/** Every record of a fault-file read. */
export function decodePgfaults(bytes: Uint8Array): PgfaultRecord[] {
  const out: PgfaultRecord[] = [];
  for (let at = 0; at + PGFAULT_BYTES <= bytes.length; at += PGFAULT_BYTES) out.push(decodePgfault(bytes, at));
  return out;
}

/** struct iommu_hwpt_page_response { __u32 cookie; __u32 code; }, as a VMM writes it to the fault file. */
export function encodePageResponse(cookie: number, code: number): Uint8Array {
  const out = new Uint8Array(PAGE_RESPONSE_BYTES);
  const v = new DataView(out.buffer);
  v.setUint32(0, cookie >>> 0, true);
  v.setUint32(4, code >>> 0, true);
  return out;
}

/** The file of a fault queue: holds a reference (DESTROY answers EBUSY until closed). */
export class FaultQueueFile {
  private open = true;

  constructor(readonly queue: FaultQueue) {
    hold(queue);
  }

  read(count: number, position = 0): Result<Uint8Array> {
    return this.open ? this.queue.read(count, position) : err("EINVAL", "file closed");
  }

  write(bytes: Uint8Array, position = 0): Result<number> {
    return this.open ? this.queue.write(bytes, position) : err("EINVAL", "file closed");
  }

  /** EPOLLIN when groups are pending; EPOLLOUT always. */
  poll(): { readable: boolean; writable: boolean } {
    return { readable: this.open && this.queue.pendingGroups > 0, writable: this.open };
  }

  close(): void {
    if (!this.open) return;
    this.open = false;
    drop(this.queue);
  }
}
