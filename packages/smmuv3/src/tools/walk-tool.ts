import { err, newWalkResult, NO_PASID, ok, PageWalker, Perm, type GuestMemory, type Result, type WalkAnswer, type WalkRequest, type WalkResult, type WalkTool } from "@viommu/core";
import { eventName, EventType } from "../format/event-record.js";
import { SteConfig } from "../format/stream-table-entry.js";
import { CD_BYPASS, decodeCdSettings, readCd } from "../translate/cd-config.js";
import { GuestMemoryReader } from "../translate/guest-memory-reader.js";
import { GuestStage1Translator } from "../translate/guest-translator.js";
import { smmuFeatures, type SmmuFeatures } from "../translate/smmu-features.js";
import { walkStage1 } from "../translate/stage1-walk.js";
import { decodeSteSettings } from "../translate/ste-config.js";
import { readSte, streamTableConfig, type StreamTableConfig } from "../translate/stream-table-lookup.js";
import { newSmmuWalkInfo, resetSmmuWalkInfo, walkFaultEvent, type SmmuWalkInfo } from "../translate/walk-info.js";
import { emulatedIds } from "../vmm/emulated-idr.js";
import { RecordingReader } from "./recording-reader.js";
import { smmuv3Inspector } from "./table-inspector.js";
import { walkSteps } from "./walk-steps.js";

const U32 = 0xffff_ffffn;
const BIT55 = 1n << 55n;

/** The SMMU the tools judge a dump against, and the stream table its registers describe (EINVAL when malformed). */
export function dumpStreamTable(registers: Readonly<Record<string, bigint>>): Result<{ features: SmmuFeatures; table: StreamTableConfig }> {
  const base = registers.STRTAB_BASE;
  const cfg = registers.STRTAB_BASE_CFG;
  if (base === undefined || cfg === undefined) return err("EINVAL", "smmuv3 walk needs STRTAB_BASE and STRTAB_BASE_CFG");
  if (base < 0n || base > (1n << 64n) - 1n || cfg < 0n || cfg > U32) return err("EINVAL", "register value out of range");
  const ids = emulatedIds(undefined, "nested");
  const features = smmuFeatures([ids.IDR0!, ids.IDR1!, ids.IDR2!, ids.IDR3!, ids.IDR4!, ids.IDR5!]);
  const c = Number(cfg);
  return ok({ features, table: streamTableConfig(Number(base & 0x000f_ffff_ffff_ffc0n), c & 0x3f, (c >>> 6) & 0x1f, (c >>> 16) & 0x3, features) });
}

function faultAnswer(event: number): WalkAnswer {
  return { ok: false, fault: { code: event, name: event === 0 ? "ABORT" : (eventName(event) ?? "UNKNOWN") } };
}

/**
 * A 64-bit input address (IHI0070 §3.4, DDI0487 D8.2.1): bit 55 selects TTB0's or TTB1's half; with CD.TBI for that
 * half bits [63:56] are ignored; every bit from the top (63, or 55 with TBI) down to the half's input size must
 * equal bit 55, else the address is outside both ranges and the SMMU raises F_TRANSLATION (§7.3.12), as it does
 * for a half disabled by EPD0/EPD1. Stage 1 bypassed: an address this wide exceeds the IAS, F_ADDR_SIZE.
 * Reads go through `reader`, so the step table shows what was fetched.
 */
function wideTranslate(
  address: bigint,
  request: WalkRequest,
  table: StreamTableConfig,
  features: SmmuFeatures,
  reader: RecordingReader,
  info: SmmuWalkInfo,
  walker: PageWalker,
  out: WalkResult,
): { answer?: WalkAnswer; ttb: 0 | 1 } {
  resetSmmuWalkInfo(info);
  const steWords = new Uint32Array(16);
  const steRead = readSte(table, request.rid, reader, steWords, info);
  if (steRead !== 0) return { answer: faultAnswer(steRead), ttb: 0 };
  const ste = decodeSteSettings(steWords, features);
  if (typeof ste === "number") return { answer: faultAnswer(ste), ttb: 0 };
  if (ste.config === SteConfig.Abort) return { answer: faultAnswer(0), ttb: 0 };
  if (ste.stage1 === undefined) return { answer: faultAnswer(EventType.F_ADDR_SIZE), ttb: 0 };
  const cdWords = new Uint32Array(16);
  const cdRead = readCd(ste.stage1, request.pasid ?? NO_PASID, reader, cdWords, info);
  if (cdRead === CD_BYPASS) return { answer: faultAnswer(EventType.F_ADDR_SIZE), ttb: 0 };
  if (cdRead !== 0) return { answer: faultAnswer(cdRead), ttb: 0 };
  const cd = decodeCdSettings(cdWords, features, ste.stage1.stallDisabled);
  if (typeof cd === "number") return { answer: faultAnswer(cd), ttb: 0 };
  const ttb: 0 | 1 = (address & BIT55) !== 0n ? 1 : 0;
  const top = (cd.tbi & (ttb === 1 ? 2 : 1)) !== 0 ? 56n : 64n;
  const access = request.write ? Perm.Write : Perm.Read;
  if (ttb === 0) {
    const effective = address & ((1n << top) - 1n);
    // Still at or above 2^53 after the top byte is dropped: beyond any T0SZ (inputs are at most 52 bits).
    if (effective >= 1n << 53n) return { answer: faultAnswer(EventType.F_TRANSLATION), ttb };
    walkStage1(cd, Number(effective), access, walker, reader, out);
  } else {
    const half = cd.ttb1;
    if (half === undefined) return { answer: faultAnswer(EventType.F_TRANSLATION), ttb };
    const inputBits = BigInt(half.geometry.inputBits);
    const ones = ((1n << top) - 1n) ^ ((1n << inputBits) - 1n);
    if ((address & ones) !== ones) return { answer: faultAnswer(EventType.F_TRANSLATION), ttb };
    walker.walk(half.format, half.geometry, half.ttb1, Number(address & ((1n << inputBits) - 1n)), access, reader, out);
  }
  if (!out.ok) return { answer: faultAnswer(walkFaultEvent(out.fault)), ttb };
  return {
    answer: { ok: true, output: out.output, pageSize: 2 ** out.pageShift, read: (out.perms & Perm.Read) !== 0, write: (out.perms & Perm.Write) !== 0, asid: cd.asid },
    ttb,
  };
}

/**
 * `viommu walk --vendor smmuv3`: translates from a guest-memory image exactly as the SMMU would from the
 * stream table the guest programmed (STRTAB_BASE, STRTAB_BASE_CFG): STE, CD, stage-1 tables (a guest's own
 * tables are stage 1 only). The SMMU judged against is the one this project's VMM offers a guest (stage 1,
 * 16-bit StreamIDs, 20-bit SubstreamIDs, 48-bit OAS, every granule). Answers give the output address, page size,
 * permissions and ASID, or the event the SMMU records (code 0 "ABORT" for an abort STE, which records none), and
 * the entries read on the way (`walkSteps`). Inputs of 64 bits (`address`): TTB1's upper half, top-byte-ignored
 * and out-of-range addresses get the SMMU's answer. The answers come from a translator that caches decoded STEs
 * and CDs (an image does not change); the steps from a second, uncached pass that records its reads.
 */
export const smmuv3Walk: WalkTool = {
  registers: ["STRTAB_BASE", "STRTAB_BASE_CFG"],
  wideAddresses: true,

  prepare(memory: GuestMemory, registers: Readonly<Record<string, bigint>>): Result<(request: WalkRequest) => WalkAnswer> {
    const dump = dumpStreamTable(registers);
    if (!dump.ok) return dump;
    const { features, table } = dump.value;
    const translator = new GuestStage1Translator(new GuestMemoryReader(memory), features, true);
    translator.setStreamTable(table);
    const recorder = new RecordingReader(new GuestMemoryReader(memory));
    const tracer = new GuestStage1Translator(recorder, features, false);
    tracer.setStreamTable(table);
    const walker = new PageWalker();
    const out = newWalkResult();
    const traced = newWalkResult();
    const info = newSmmuWalkInfo();
    const traceInfo = newSmmuWalkInfo();
    return ok((request: WalkRequest): WalkAnswer => {
      recorder.clear();
      if (request.address !== undefined && request.address >= 1n << 53n) {
        const wide = wideTranslate(request.address, request, table, features, recorder, traceInfo, walker, traced);
        return { ...wide.answer!, steps: walkSteps(recorder.reads, table, features, wide.ttb) };
      }
      const access = request.write ? Perm.Write : Perm.Read;
      const pasid = request.pasid ?? NO_PASID;
      translator.translate(request.rid, pasid, request.iova, access, out, info);
      tracer.translate(request.rid, pasid, request.iova, access, traced, traceInfo);
      const steps = walkSteps(recorder.reads, table, features, 0);
      if (out.ok) {
        return {
          ok: true,
          output: out.output,
          pageSize: 2 ** out.pageShift,
          read: (out.perms & Perm.Read) !== 0,
          write: (out.perms & Perm.Write) !== 0,
          ...(info.asid >= 0 ? { asid: info.asid } : {}),
          steps,
        };
      }
      return { ...faultAnswer(info.event), steps };
    });
  },

  inspect(memory: GuestMemory, registers: Readonly<Record<string, bigint>>) {
    const dump = dumpStreamTable(registers);
    if (!dump.ok) return dump;
    return ok(smmuv3Inspector(memory, dump.value.table, dump.value.features));
  },
};
