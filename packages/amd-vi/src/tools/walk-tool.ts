import { err, ok, newWalkResult, Perm, type GuestMemory, type Result, type WalkAnswer, type WalkRequest, type WalkTool } from "@viommu/core";
import { eventName } from "../format/event-log-entry.js";
import { decodeExclusionRange, newExclusionRange } from "../format/exclusion-registers.js";
import { GuestDteWalker, newDteWalkOutcome } from "../vmm/guest-dte-walker.js";

/**
 * `viommu walk --vendor amd-vi --reg DEV_TAB_BASE=V --devid N [--pasid N] --iova A`: translation from a
 * guest-memory image through the device table the guest programmed (the register value: base [51:12] and
 * Size [8:0]), exactly as the emulated IOMMU walks it. EXCL_BASE and EXCL_LIMIT (optional) are the Exclusion
 * Base and Range Limit registers: DMA inside an enabled range passes untranslated. Answers give the output address of the IOVA itself,
 * the permissions, the page size and the DTE's DomainID, or the event the IOMMU would log.
 */
export const amdViWalkTool: WalkTool = {
  registers: ["DEV_TAB_BASE", "EXCL_BASE", "EXCL_LIMIT"],
  prepare(memory: GuestMemory, registers: Readonly<Record<string, bigint>>): Result<(request: WalkRequest) => WalkAnswer> {
    const value = registers["DEV_TAB_BASE"];
    if (value === undefined) return err("EINVAL", "DEV_TAB_BASE is required");
    if (value < 0n || value > 0xffff_ffff_ffff_ffffn) return err("EINVAL", "DEV_TAB_BASE is not a 64-bit value");
    for (const name of ["EXCL_BASE", "EXCL_LIMIT"]) {
      const v = registers[name];
      if (v !== undefined && (v < 0n || v > 0xffff_ffff_ffff_ffffn)) return err("EINVAL", `${name} is not a 64-bit value`);
    }
    const exclusion = decodeExclusionRange(registers["EXCL_BASE"] ?? 0n, registers["EXCL_LIMIT"] ?? 0n, newExclusionRange());
    const table = { base: Number(value & 0x000f_ffff_ffff_f000n), entries: (Number(value & 0x1ffn) + 1) * 128, exclusion };
    const walker = new GuestDteWalker(memory);
    const out = newWalkResult();
    const outcome = newDteWalkOutcome();
    return ok((request: WalkRequest): WalkAnswer => {
      walker.translate(table, request.rid, request.pasid, request.iova, request.write ? Perm.Write : Perm.Read, out, outcome);
      if (!out.ok) return { ok: false, fault: { code: outcome.eventCode, name: eventName(outcome.eventCode) } };
      return {
        ok: true,
        output: out.output,
        pageSize: 2 ** out.pageShift,
        read: (out.perms & Perm.Read) !== 0,
        write: (out.perms & Perm.Write) !== 0,
        ...(outcome.translated ? { domain: outcome.domainId } : {}),
      };
    });
  },
};
