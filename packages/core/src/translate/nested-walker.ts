import type { HostMemory, OwnerId } from "../memory/host-memory.js";
import { Perm, type PermBits } from "./access.js";
import { HostTableReader } from "./entry-readers.js";
import { WalkFault, type PageTableFormat, type TableGeometry } from "./page-table-format.js";
import { PageWalker, type EntryReader } from "./page-walker.js";
import { copyWalkResult, newWalkResult, type WalkResult } from "./walk-result.js";

/** One stage of a translation: a format, a geometry and a root. */
export interface StageConfig {
  readonly format: PageTableFormat;
  readonly geometry: TableGeometry;
  readonly root: number;
}

/**
 * Reads stage-1 table entries by GPA through stage 2: each fetch is itself a stage-2 translation, and the
 * host page it lands in must belong to the VM. A failed fetch leaves the stage-2 result in `s2`.
 */
class Stage2FetchReader implements EntryReader {
  stage2: StageConfig | undefined;
  /** The VM whose pages stage 2 must land in. */
  owner: OwnerId = -1;
  readonly s2 = newWalkResult();
  /** Stage-2 table fetches made for stage-1 fetches since the last reset. */
  fetches = 0;
  private readonly walker = new PageWalker();
  private readonly hostTables: HostTableReader;

  constructor(
    private readonly host: HostMemory,
    hostOwner: OwnerId,
  ) {
    this.hostTables = new HostTableReader(host, hostOwner);
  }

  readEntry(address: number, out: Uint32Array): boolean {
    const s2 = this.stage2!;
    this.walker.walk(s2.format, s2.geometry, s2.root, address, Perm.Read, this.hostTables, this.s2);
    this.fetches += this.s2.fetches;
    if (!this.s2.ok) return false;
    const hpa = this.s2.output;
    if ((hpa & 7) !== 0 || !this.host.readOwned64(this.owner, hpa, out)) {
      this.s2.ok = false;
      this.s2.fault = WalkFault.External; // stage 2 pointed outside the VM
      return false;
    }
    return true;
  }
}

/**
 * Two-stage translation: the guest's stage-1 tables, every fetch of which is translated through the host's
 * stage 2, then stage 1's output translated through stage 2. Permissions are the intersection of both stages
 * and the page size the smaller of the two. Allocates nothing per translation.
 */
export class NestedWalker {
  private readonly s1Walker = new PageWalker();
  private readonly s2Walker = new PageWalker();
  private readonly s2HostTables: HostTableReader;
  private readonly fetchReader: Stage2FetchReader;
  private readonly s1 = newWalkResult();

  constructor(host: HostMemory, hostOwner: OwnerId) {
    this.s2HostTables = new HostTableReader(host, hostOwner);
    this.fetchReader = new Stage2FetchReader(host, hostOwner);
  }

  /** Stage 2 alone (a device whose stage 1 is bypassed). */
  translateStage2(stage2: StageConfig, input: number, access: PermBits, out: WalkResult): void {
    this.s2Walker.walk(stage2.format, stage2.geometry, stage2.root, input, access, this.s2HostTables, out);
    if (!out.ok) out.stage = 2;
  }

  /** Stage 1 over stage 2, for a device of the VM whose pages are owned by `owner`. */
  translate(stage1: StageConfig, stage2: StageConfig, owner: OwnerId, input: number, access: PermBits, out: WalkResult): void {
    this.fetchReader.owner = owner;
    this.fetchReader.stage2 = stage2;
    this.fetchReader.fetches = 0;
    const s1 = this.s1;
    this.s1Walker.walk(stage1.format, stage1.geometry, stage1.root, input, access, this.fetchReader, s1);
    if (!s1.ok) {
      copyWalkResult(s1, out);
      if (s1.fault === WalkFault.External && this.fetchReader.s2.fault !== WalkFault.None) {
        // The stage-1 walk stopped because a table fetch faulted at stage 2.
        out.fault = this.fetchReader.s2.fault;
        out.stage = 2;
        out.tableFetch = true;
        out.faultInput = this.fetchReader.s2.faultInput;
        out.level = this.fetchReader.s2.level;
      }
      out.fetches = s1.fetches + this.fetchReader.fetches;
      return;
    }
    this.s2Walker.walk(stage2.format, stage2.geometry, stage2.root, s1.output, access, this.s2HostTables, out);
    out.fetches += s1.fetches + this.fetchReader.fetches;
    if (!out.ok) {
      out.stage = 2;
      return;
    }
    out.perms &= s1.perms;
    if (s1.pageShift < out.pageShift) out.pageShift = s1.pageShift;
  }
}
