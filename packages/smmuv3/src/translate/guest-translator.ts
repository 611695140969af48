import { PageWalker, type EntryReader, type PermBits, type WalkResult } from "@viommu/core";
import { EventClass, EventType } from "../format/event-record.js";
import { SteConfig } from "../format/stream-table-entry.js";
import { CD_BYPASS, decodeCdSettings, readCd, type CdSettings } from "./cd-config.js";
import type { SmmuFeatures } from "./smmu-features.js";
import { decodeSteSettings, type SteSettings } from "./ste-config.js";
import { walkStage1 } from "./stage1-walk.js";
import { readSte, type StreamTableConfig } from "./stream-table-lookup.js";
import { bypassChecked, configFault, resetSmmuWalkInfo, walkFaultEvent, type SmmuWalkInfo } from "./walk-info.js";
import { WalkFault } from "@viommu/core";

/**
 * The SMMU's lookup for tables a guest owns entirely (stream table → STE → CD → stage-1 tables, IHI0070 §3.3–3.4),
 * for an SMMU that implements stage 1 only: the emulated vSMMU translating the VMM's own emulated devices, and
 * `viommu walk` on a memory image. Every structure is read through `reader` (guest physical addresses). With
 * `cacheConfig`, decoded STEs and CDs are kept until `invalidate` (a walk over a static image); without it every
 * transaction re-reads them (an emulator that must see the guest's latest writes).
 */
export class GuestStage1Translator {
  private table: StreamTableConfig | undefined;
  private readonly steWords = new Uint32Array(16);
  private readonly cdWords = new Uint32Array(16);
  private readonly walker = new PageWalker();
  private readonly steCache = new Map<number, SteSettings | number>();
  private readonly cdCache = new Map<number, CdSettings | number>();

  constructor(
    private readonly reader: EntryReader,
    private readonly features: SmmuFeatures,
    private readonly cacheConfig = false,
  ) {
    if (features.stage2) throw new Error("GuestStage1Translator models a stage-1-only SMMU");
  }

  setStreamTable(table: StreamTableConfig | undefined): void {
    this.table = table;
    this.invalidate();
  }

  invalidate(): void {
    this.steCache.clear();
    this.cdCache.clear();
  }

  private ste(sid: number, info: SmmuWalkInfo): SteSettings | number {
    if (!Number.isInteger(sid)) return EventType.C_BAD_STREAMID;
    const cached = this.cacheConfig ? this.steCache.get(sid) : undefined;
    if (cached !== undefined) return cached;
    const table = this.table;
    let result: SteSettings | number;
    if (table === undefined) result = EventType.C_BAD_STREAMID;
    else {
      const read = readSte(table, sid, this.reader, this.steWords, info);
      result = read !== 0 ? read : decodeSteSettings(this.steWords, this.features);
    }
    if (this.cacheConfig && result !== EventType.F_STE_FETCH) this.steCache.set(sid, result);
    return result;
  }

  private cd(sid: number, ssid: number, ste: SteSettings, info: SmmuWalkInfo): CdSettings | number {
    const key = sid * 2 ** 21 + (ssid + 1);
    const cached = this.cacheConfig ? this.cdCache.get(key) : undefined;
    if (cached !== undefined) return cached;
    const read = readCd(ste.stage1!, ssid, this.reader, this.cdWords, info);
    const result = read !== 0 ? read : decodeCdSettings(this.cdWords, this.features, ste.stage1!.stallDisabled);
    if (this.cacheConfig && read !== EventType.F_CD_FETCH) this.cdCache.set(key, result);
    return result;
  }

  /**
   * Translates one transaction. `out` gets the vendor-neutral result (output = the GPA); `info` the event the
   * SMMU records when it fails (0 for an abort STE, which terminates silently) and the ASID used.
   */
  translate(sid: number, ssid: number, iova: number, access: PermBits, out: WalkResult, info: SmmuWalkInfo): void {
    resetSmmuWalkInfo(info);
    const ste = this.ste(sid, info);
    if (typeof ste === "number") return configFault(out, info, ste, iova);
    if (ste.config === SteConfig.Abort) return configFault(out, info, 0, iova);
    // Every stage bypassed: checked against the OAS; stage 1 alone bypassed: against the IAS (= OAS, AArch64 only).
    if (ste.stage1 === undefined) return bypassChecked(out, info, iova, this.features.oasBits);
    const cd = this.cd(sid, ssid, ste, info);
    if (cd === CD_BYPASS) return bypassChecked(out, info, iova, this.features.oasBits);
    if (typeof cd === "number") return configFault(out, info, cd, iova);
    info.asid = cd.asid;
    walkStage1(cd, iova, access, this.walker, this.reader, out);
    if (out.ok) return;
    info.event = walkFaultEvent(out.fault);
    info.record = cd.record;
    if (out.fault === WalkFault.External) {
      info.eventClass = EventClass.TT;
      info.fetchAddress = out.entryAddress;
    }
  }
}
