import { NestedWalker, HOST_OWNER, type HostMemory, type OwnerId, type StageConfig, type TablePagingDomain, type WalkResult } from "@viommu/core";
import { CD_BYPASS, decodeCdSettings, readCd } from "../translate/cd-config.js";
import type { SmmuFeatures } from "../translate/smmu-features.js";
import type { SteStage1 } from "../translate/ste-config.js";
import { configFault, isInputAddress, newSmmuWalkInfo, resetSmmuWalkInfo } from "../translate/walk-info.js";
import { Stage2FetchReader } from "./stage2-fetch-reader.js";

/**
 * What a nested stream's guest structures say now, read past every cache: the CD for the SubstreamID fetched
 * through stage 2 and the nested walk it selects. The stale-translation audit compares this with what the unit's
 * CD cache and IOTLB gave. Its own reader, walker and scratch, so the unit's event bookkeeping for the
 * transaction is left as the cached path set it.
 */
export class FreshNestedWalk {
  /** The CD as read by the last `readCd` (16 halves), valid when it returned 0. */
  readonly words = new Uint32Array(16);
  private readonly reader: Stage2FetchReader;
  private readonly walker: NestedWalker;
  private readonly info = newSmmuWalkInfo();

  constructor(memory: HostMemory) {
    this.reader = new Stage2FetchReader(memory);
    this.walker = new NestedWalker(memory, HOST_OWNER);
  }

  /** Reads the CD now into `words`: 0, CD_BYPASS, or the event the fetch or lookup raises. */
  readCd(stage1: SteStage1, s2: TablePagingDomain, owner: OwnerId, pasid: number): number {
    this.reader.table = s2.table;
    this.reader.owner = owner;
    resetSmmuWalkInfo(this.info);
    return readCd(stage1, pasid, this.reader, this.words, this.info);
  }

  /**
   * The translation the tables give now, after `readCd` returned `cdCode`: stage 2 alone for a bypassed stage 1,
   * a fault for a CD that cannot be used or an address outside TTB0's range, else the nested walk.
   */
  translate(cdCode: number, stage1: SteStage1, features: SmmuFeatures, s2: TablePagingDomain, s2Stage: StageConfig, owner: OwnerId, iova: number, access: number, out: WalkResult): void {
    if (cdCode === CD_BYPASS) return s2.table.walk(iova, access, out);
    if (cdCode !== 0) return configFault(out, this.info, cdCode, iova);
    const settings = decodeCdSettings(this.words, features, stage1.stallDisabled);
    if (typeof settings === "number") return configFault(out, this.info, settings, iova);
    if (settings.epd0 || !isInputAddress(iova) || iova >= 2 ** settings.geometry.inputBits) return configFault(out, this.info, 0, iova);
    this.walker.translate({ format: settings.format, geometry: settings.geometry, root: settings.ttb0 }, s2Stage, owner, iova, access, out);
  }
}
