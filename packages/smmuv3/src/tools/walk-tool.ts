import { err, newWalkResult, NO_PASID, ok, Perm, type GuestMemory, type Result, type WalkAnswer, type WalkRequest, type WalkTool } from "@viommu/core";
import { eventName } from "../format/event-record.js";
import { GuestMemoryReader } from "../translate/guest-memory-reader.js";
import { GuestStage1Translator } from "../translate/guest-translator.js";
import { smmuFeatures } from "../translate/smmu-features.js";
import { streamTableConfig } from "../translate/stream-table-lookup.js";
import { newSmmuWalkInfo } from "../translate/walk-info.js";
import { emulatedIds } from "../vmm/emulated-idr.js";

const U32 = 0xffff_ffffn;

/**
 * `viommu walk --vendor smmuv3`: translates from a guest-memory image exactly as the SMMU would from the
 * stream table the guest programmed (STRTAB_BASE, STRTAB_BASE_CFG): STE, CD, stage-1 tables (a guest's own
 * tables are stage 1 only). The SMMU judged against is the one this project's VMM offers a guest (stage 1,
 * 16-bit StreamIDs, 20-bit SubstreamIDs, 48-bit OAS, every granule). Answers give the output address, page size,
 * permissions and ASID, or the event the SMMU records (code 0 "ABORT" for an abort STE, which records none).
 * Decoded STEs and CDs are cached: an image does not change.
 */
export const smmuv3Walk: WalkTool = {
  registers: ["STRTAB_BASE", "STRTAB_BASE_CFG"],

  prepare(memory: GuestMemory, registers: Readonly<Record<string, bigint>>): Result<(request: WalkRequest) => WalkAnswer> {
    const base = registers.STRTAB_BASE;
    const cfg = registers.STRTAB_BASE_CFG;
    if (base === undefined || cfg === undefined) return err("EINVAL", "smmuv3 walk needs STRTAB_BASE and STRTAB_BASE_CFG");
    if (base < 0n || base > (1n << 64n) - 1n || cfg < 0n || cfg > U32) return err("EINVAL", "register value out of range");
    const ids = emulatedIds(undefined, "nested");
    const features = smmuFeatures([ids.IDR0!, ids.IDR1!, ids.IDR2!, ids.IDR3!, ids.IDR4!, ids.IDR5!]);
    const c = Number(cfg);
    const table = streamTableConfig(Number(base & 0x000f_ffff_ffff_ffc0n), c & 0x3f, (c >>> 6) & 0x1f, (c >>> 16) & 0x3, features);
    const translator = new GuestStage1Translator(new GuestMemoryReader(memory), features, true);
    translator.setStreamTable(table);
    const out = newWalkResult();
    const info = newSmmuWalkInfo();
    return ok((request: WalkRequest): WalkAnswer => {
      translator.translate(request.rid, request.pasid ?? NO_PASID, request.iova, request.write ? Perm.Write : Perm.Read, out, info);
      if (out.ok) {
        return {
          ok: true,
          output: out.output,
          pageSize: 2 ** out.pageShift,
          read: (out.perms & Perm.Read) !== 0,
          write: (out.perms & Perm.Write) !== 0,
          ...(info.asid >= 0 ? { asid: info.asid } : {}),
        };
      }
      return { ok: false, fault: { code: info.event, name: info.event === 0 ? "ABORT" : (eventName(info.event) ?? "UNKNOWN") } };
    });
  },
};
