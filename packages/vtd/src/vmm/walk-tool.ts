import { err, fromWords64, NO_PASID, ok, type GuestMemory, type Result, type WalkAnswer, type WalkRequest, type WalkTool } from "@viommu/core";
import { decodeCap, encodeCap, sagawFor, SLLPS_1G, SLLPS_2M } from "../format/cap.js";
import { encodeEcap } from "../format/ecap.js";
import { faultReasonName } from "../format/fault-reasons.js";
import { GuestTranslation, GuestTranslator, translatorConfig } from "./guest-translator.js";

/**
 * Capabilities assumed when the command line gives no CAP/ECAP: QEMU's intel-iommu with aw-bits=48 (3- and
 * 4-level second-level tables, 2 MiB and 1 GiB pages, pass-through and device-TLB) that also offers scalable
 * mode with both first- and second-level tables, so any table a guest could have written walks.
 */
const DEFAULT_CAP = encodeCap({ ND: 6, SAGAW: sagawFor([3, 4]), MGAW: 47, SLLPS: SLLPS_2M | SLLPS_1G, PSI: 1, MAMV: 18, FL1GP: 1 });
const DEFAULT_ECAP = encodeEcap({ QI: 1, DT: 1, IR: 1, EIM: 1, PT: 1, IRO: 0xf, SMTS: 1, SLTS: 1, FLTS: 1 });

/** The table formats hold output addresses of 32 to 52 bits (core's x86-64 paging limits). */
const MIN_ADDRESS_WIDTH = 32;
const MAX_HOST_ADDRESS_WIDTH = 52;

function word(value: bigint): Uint32Array {
  return fromWords64([value & 0xffff_ffff_ffff_ffffn]);
}

/**
 * `viommu walk --vendor vtd`: translation from a guest-memory image from the root table at RTADDR (legacy or
 * scalable per RTADDR.TTM), exactly as the emulated unit translates; CAP and ECAP may override the unit's
 * capabilities (the host address width is taken as CAP.MGAW + 1, as QEMU's aw-bits sets both).
 */
export const vtdWalkTool: WalkTool = {
  registers: ["RTADDR", "CAP", "ECAP"],

  prepare(memory: GuestMemory, registers: Readonly<Record<string, bigint>>): Result<(request: WalkRequest) => WalkAnswer> {
    const rtaddr = registers.RTADDR;
    if (rtaddr === undefined) return err("EINVAL", "the VT-d walk needs RTADDR");
    const cap = registers.CAP !== undefined ? word(registers.CAP) : DEFAULT_CAP;
    const ecap = registers.ECAP !== undefined ? word(registers.ECAP) : DEFAULT_ECAP;
    // The host address width follows the guest width (QEMU's aw-bits sets both), at most x86's 52 physical bits.
    const width = decodeCap(cap).MGAW + 1;
    if (width < MIN_ADDRESS_WIDTH) return err("EINVAL", `CAP.MGAW ${width - 1} gives a ${width}-bit address width; VT-d tables need at least ${MIN_ADDRESS_WIDTH}`);
    const translator = new GuestTranslator(memory, translatorConfig(cap, ecap, Math.min(width, MAX_HOST_ADDRESS_WIDTH)));
    translator.setRootTable(rtaddr);
    const result = new GuestTranslation();
    return ok((request: WalkRequest): WalkAnswer => {
      translator.translate(request.rid, request.pasid ?? NO_PASID, request.iova, request.write, result);
      if (!result.ok) return { ok: false, fault: { code: result.reason, name: faultReasonName(result.reason) } };
      const w = result.walk;
      return { ok: true, output: w.output, pageSize: 2 ** w.pageShift, read: (w.perms & 1) !== 0, write: (w.perms & 2) !== 0, domain: result.did };
    });
  },
};
