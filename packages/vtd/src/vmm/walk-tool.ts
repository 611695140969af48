import { err, fromWords64, NO_PASID, ok, type GuestMemory, type Result, type TableInspector, type WalkAnswer, type WalkRequest, type WalkTool } from "@viommu/core";
import { decodeCap, encodeCap, sagawFor, SLLPS_1G, SLLPS_2M } from "../format/cap.js";
import { encodeEcap } from "../format/ecap.js";
import { faultReasonName } from "../format/fault-reasons.js";
import { DeviceContext, GuestTranslation, GuestTranslator, translatorConfig } from "./guest-translator.js";
import { VtdTableInspector } from "./table-inspector.js";
import { WalkSteps } from "./walk-steps.js";

/**
 * Capabilities assumed when the command line gives no CAP/ECAP: QEMU's intel-iommu with aw-bits=48 (3- and
 * 4-level second-level tables, 2 MiB and 1 GiB pages, pass-through and device-TLB) that also offers scalable
 * mode with both first- and second-level tables (4- and 5-level first level), so any table a guest could have
 * written walks.
 */
const DEFAULT_CAP = encodeCap({ ND: 6, SAGAW: sagawFor([3, 4]), MGAW: 47, SLLPS: SLLPS_2M | SLLPS_1G, PSI: 1, MAMV: 18, FL1GP: 1, FL5LP: 1 });
const DEFAULT_ECAP = encodeEcap({ QI: 1, DT: 1, IR: 1, EIM: 1, PT: 1, IRO: 0xf, SMTS: 1, SLTS: 1, FLTS: 1 });

/** The table formats hold output addresses of 32 to 52 bits (core's x86-64 paging limits). */
const MIN_ADDRESS_WIDTH = 32;
const MAX_HOST_ADDRESS_WIDTH = 52;

function word(value: bigint): Uint32Array {
  return fromWords64([value & 0xffff_ffff_ffff_ffffn]);
}

/** A translator over `memory` latched at RTADDR with the given (or default) CAP and ECAP. */
function translatorFor(memory: GuestMemory, registers: Readonly<Record<string, bigint>>): Result<GuestTranslator> {
  const rtaddr = registers.RTADDR;
  if (rtaddr === undefined) return err("EINVAL", "the VT-d walk needs RTADDR");
  const cap = registers.CAP !== undefined ? word(registers.CAP) : DEFAULT_CAP;
  const ecap = registers.ECAP !== undefined ? word(registers.ECAP) : DEFAULT_ECAP;
  // The host address width follows the guest width (QEMU's aw-bits sets both), at most x86's 52 physical bits.
  const width = decodeCap(cap).MGAW + 1;
  if (width < MIN_ADDRESS_WIDTH) return err("EINVAL", `CAP.MGAW ${width - 1} gives a ${width}-bit address width; VT-d tables need at least ${MIN_ADDRESS_WIDTH}`);
  const translator = new GuestTranslator(memory, translatorConfig(cap, ecap, Math.min(width, MAX_HOST_ADDRESS_WIDTH)));
  translator.setRootTable(rtaddr);
  return ok(translator);
}

/**
 * `viommu walk --vendor vtd`: translation from a guest-memory image from the root table at RTADDR (legacy or
 * scalable per RTADDR.TTM), exactly as the emulated unit translates, with every entry read as a step (the
 * specification's structure names and fields); CAP and ECAP may override the unit's capabilities (the host
 * address width is taken as CAP.MGAW + 1, as QEMU's aw-bits sets both). Addresses at or above 2^53 come whole
 * in `address`: the walk takes their page (exact as a double at any 64-bit value) and adds the offset back, so
 * 5-level (57-bit) inputs and canonical upper-half first-level addresses translate, and an address beyond the
 * configured width gets the width's fault (0x4 legacy, 0x80 non-canonical first level, …).
 */
export const vtdWalkTool: WalkTool = {
  registers: ["RTADDR", "CAP", "ECAP"],
  wideAddresses: true,

  prepare(memory: GuestMemory, registers: Readonly<Record<string, bigint>>): Result<(request: WalkRequest) => WalkAnswer> {
    const made = translatorFor(memory, registers);
    if (!made.ok) return made;
    const translator = made.value;
    const result = new GuestTranslation();
    const ctx = new DeviceContext();
    return ok((request: WalkRequest): WalkAnswer => {
      const steps = new WalkSteps(translator.scalable);
      translator.setTrace(steps.entry);
      let input = request.iova;
      let offset = 0;
      if (request.address !== undefined && request.address >= 1n << 53n) {
        input = Number(request.address & ~0xfffn);
        offset = Number(request.address & 0xfffn);
      }
      try {
        translator.resolve(request.rid, request.pasid ?? NO_PASID, ctx);
        steps.startPaging(ctx.levels);
        translator.translateWith(ctx, input, request.write, result);
      } finally {
        translator.setTrace(undefined);
      }
      if (!result.ok) return { ok: false, fault: { code: result.reason, name: faultReasonName(result.reason) }, steps: steps.steps };
      const w = result.walk;
      const pageSize = 2 ** w.pageShift;
      if (w.mapped) steps.leaf(pageSize);
      return { ok: true, output: w.output + offset, pageSize, read: (w.perms & 1) !== 0, write: (w.perms & 2) !== 0, domain: result.did, steps: steps.steps };
    });
  },

  inspect(memory: GuestMemory, registers: Readonly<Record<string, bigint>>): Result<TableInspector> {
    const made = translatorFor(memory, registers);
    return made.ok ? ok(new VtdTableInspector(made.value)) : made;
  },
};
