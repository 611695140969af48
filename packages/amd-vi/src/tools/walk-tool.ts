import { err, ok, newWalkResult, Perm, type GuestMemory, type Result, type WalkAnswer, type WalkRequest, type WalkTool } from "@viommu/core";
import { eventName } from "../format/event-log-entry.js";
import { decodeExclusionRange, newExclusionRange } from "../format/exclusion-registers.js";
import { GuestDteWalker, newDteWalkOutcome, type DeviceTableLocation } from "../vmm/guest-dte-walker.js";
import { amdViTableInspector } from "./table-inspector.js";
import { WalkExplainer } from "./walk-explainer.js";

function deviceTable(registers: Readonly<Record<string, bigint>>): Result<DeviceTableLocation> {
  const value = registers["DEV_TAB_BASE"];
  if (value === undefined) return err("EINVAL", "DEV_TAB_BASE is required");
  if (value < 0n || value > 0xffff_ffff_ffff_ffffn) return err("EINVAL", "DEV_TAB_BASE is not a 64-bit value");
  for (const name of ["EXCL_BASE", "EXCL_LIMIT"]) {
    const v = registers[name];
    if (v !== undefined && (v < 0n || v > 0xffff_ffff_ffff_ffffn)) return err("EINVAL", `${name} is not a 64-bit value`);
  }
  const exclusion = decodeExclusionRange(registers["EXCL_BASE"] ?? 0n, registers["EXCL_LIMIT"] ?? 0n, newExclusionRange());
  return ok({ base: Number(value & 0x000f_ffff_ffff_f000n), entries: (Number(value & 0x1ffn) + 1) * 128, exclusion });
}

/**
 * `viommu walk --vendor amd-vi --reg DEV_TAB_BASE=V --devid N [--pasid N] --iova A`: translation from a
 * guest-memory image through the device table the guest programmed (the register value: base [51:12] and
 * Size [8:0]), exactly as the emulated IOMMU walks it. EXCL_BASE and EXCL_LIMIT (optional) are the Exclusion
 * Base and Range Limit registers: DMA inside an enabled range passes untranslated. Answers give the output
 * address of the IOVA itself, the permissions, the page size and the DTE's DomainID, or the event the IOMMU
 * would log, with every entry read (DTE, GCR3 table entries, PDE/PTE of the v1 table, PML5E..PTE of the v2
 * table) by the specification's field names. Inputs take all 64 bits (`wideAddresses`): a Mode 6 table
 * translates any of them, a narrower one faults beyond 2^(12 + 9·Mode) as the IOMMU does.
 */
export const amdViWalkTool: WalkTool = {
  registers: ["DEV_TAB_BASE", "EXCL_BASE", "EXCL_LIMIT"],
  wideAddresses: true,
  prepare(memory: GuestMemory, registers: Readonly<Record<string, bigint>>): Result<(request: WalkRequest) => WalkAnswer> {
    const t = deviceTable(registers);
    if (!t.ok) return t;
    const table = t.value;
    const walker = new GuestDteWalker(memory);
    const explainer = new WalkExplainer(memory);
    const out = newWalkResult();
    const outcome = newDteWalkOutcome();
    return ok((request: WalkRequest): WalkAnswer => {
      const wide = request.address !== undefined && request.address > BigInt(Number.MAX_SAFE_INTEGER);
      // A request's address is an integer: anything else is no address at all (the explainer faults a negative one).
      const input = wide ? request.address! : Number.isInteger(request.iova) ? BigInt(request.iova) : -1n;
      const explained = explainer.explain(table, request.rid, request.pasid, input, request.write);
      const steps = explained.steps.length > 0 ? { steps: explained.steps } : {};
      if (wide) {
        if (!explained.ok) return { ok: false, fault: { code: explained.eventCode, name: explained.note ?? eventName(explained.eventCode) }, ...steps };
        return {
          ok: true,
          output: explained.output,
          pageSize: 2 ** explained.pageShift,
          read: (explained.perms & Perm.Read) !== 0,
          write: (explained.perms & Perm.Write) !== 0,
          ...(explained.domainId !== undefined ? { domain: explained.domainId } : {}),
          ...steps,
        };
      }
      // Below 2^53 the answer is the emulated IOMMU's own walk; the explainer (held to it by a test) gives the steps.
      walker.translate(table, request.rid, request.pasid, request.iova, request.write ? Perm.Write : Perm.Read, out, outcome);
      if (!out.ok) return { ok: false, fault: { code: outcome.eventCode, name: eventName(outcome.eventCode) }, ...steps };
      return {
        ok: true,
        output: out.output,
        pageSize: 2 ** out.pageShift,
        read: (out.perms & Perm.Read) !== 0,
        write: (out.perms & Perm.Write) !== 0,
        ...(outcome.translated ? { domain: outcome.domainId } : {}),
        ...steps,
      };
    });
  },
  inspect(memory: GuestMemory, registers: Readonly<Record<string, bigint>>) {
    const t = deviceTable(registers);
    return t.ok ? ok(amdViTableInspector(memory, t.value)) : t;
  },
};
