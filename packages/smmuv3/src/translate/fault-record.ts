import { NO_PASID, Perm, type PermBits, type RawBits } from "@viommu/core";
import { encodeEvent, EventType } from "../format/event-record.js";
import type { SmmuWalkInfo } from "./walk-info.js";

/** The transaction an event record describes. */
export interface FaultingAccess {
  readonly sid: number;
  readonly ssid: number;
  readonly iova: number;
  readonly access: PermBits;
  /** The PASID prefix's Privileged bit (only with a PASID); absent: privileged unless the access has Perm.User. */
  readonly privileged?: boolean;
}

const PAGE_BYTES = 4096;
const ADDRESS_FIELD_LIMIT = 2 ** 52;

/** An address as a record field holds it: aligned down, and 0 for anything the field cannot hold. */
function addressField(address: number, align: number): number {
  if (!(address >= 0 && address < ADDRESS_FIELD_LIMIT)) return 0;
  return address - (address % align);
}

/**
 * The 32-byte event record the SMMU writes for `info.event` (IHI0070 §7.3; spec §1.11), with the fields that
 * event defines: StreamID, SubstreamID when valid, the access (RnW, and InD/PnU from the PASID prefix: 0 without a
 * PASID), InputAddr, S2/CLASS and the IPA of a stage-2 fault, FetchAddr of a failed fetch. Events this model
 * never raises (and 0, no record) give undefined.
 */
export function faultRecord(info: SmmuWalkInfo, t: FaultingAccess): RawBits | undefined {
  const ssv = t.ssid !== NO_PASID ? 1 : 0;
  const common = { StreamID: t.sid >>> 0, SSV: ssv, SubstreamID: ssv ? t.ssid & 0xfffff : 0 };
  const rnw = (t.access & Perm.Write) === 0 ? 1 : 0;
  // IHI0070 §3.9: a PCIe transaction without a PASID is Data, unprivileged; the PASID prefix carries Execute and
  // Privileged (STE.INSTCFG/PRIVCFG could override these; Linux leaves them "use incoming", the model does too).
  const ind = ssv === 1 && (t.access & Perm.Exec) !== 0 ? 1 : 0;
  const pnu = ssv === 1 && (t.privileged ?? (t.access & Perm.User) === 0) ? 1 : 0;
  // InputAddr is 64 bits: a value no 64-bit address can be (NaN, an infinity, a negative) is recorded as 0.
  const input = Number.isFinite(t.iova) && t.iova >= 0 && t.iova < 2 ** 64 ? BigInt(Math.trunc(t.iova)) : 0n;
  const fetch = addressField(info.fetchAddress, 8);
  const ipa = addressField(info.ipa, PAGE_BYTES);
  switch (info.event) {
    case 0:
      return undefined;
    case EventType.C_BAD_STREAMID:
      return encodeEvent("C_BAD_STREAMID", common);
    case EventType.C_BAD_STE:
      return encodeEvent("C_BAD_STE", common);
    case EventType.C_BAD_CD:
      return encodeEvent("C_BAD_CD", common);
    case EventType.F_STREAM_DISABLED:
      return encodeEvent("F_STREAM_DISABLED", { StreamID: common.StreamID });
    case EventType.C_BAD_SUBSTREAMID:
      return encodeEvent("C_BAD_SUBSTREAMID", { StreamID: common.StreamID, SubstreamID: common.SubstreamID });
    case EventType.F_STE_FETCH:
      return encodeEvent("F_STE_FETCH", { ...common, FetchAddr: fetch });
    case EventType.F_CD_FETCH:
      return encodeEvent("F_CD_FETCH", { ...common, FetchAddr: fetch });
    case EventType.F_WALK_EABT:
      return encodeEvent("F_WALK_EABT", {
        ...common,
        PnU: pnu,
        InD: ind,
        RnW: rnw,
        S2: info.stage2 ? 1 : 0,
        CLASS: info.eventClass,
        InputAddr: input,
        FetchAddr: fetch,
      });
    case EventType.F_TRANSLATION:
    case EventType.F_ADDR_SIZE:
    case EventType.F_ACCESS:
    case EventType.F_PERMISSION: {
      const name = info.event === EventType.F_TRANSLATION ? "F_TRANSLATION" : info.event === EventType.F_ADDR_SIZE ? "F_ADDR_SIZE" : info.event === EventType.F_ACCESS ? "F_ACCESS" : "F_PERMISSION";
      return encodeEvent(name, {
        ...common,
        PnU: pnu,
        InD: ind,
        RnW: rnw,
        S2: info.stage2 ? 1 : 0,
        CLASS: info.eventClass,
        InputAddr: input,
        IPA: info.stage2 ? ipa : 0,
      });
    }
    default:
      return undefined;
  }
}
