import { decodeLayout, toBytes, type DecodedStructure, type Layout, type RawBits, type StructureDecoder } from "@viommu/core";
import { bitmapWordLayout, cmdqAllocLayout, cmdqvConfigLayout, cmdqvParamLayout, cmdqvStatusLayout } from "./global-registers.js";
import { decodeHwInfoTegra241Cmdqv, decodeVeventTegra241Cmdqv, decodeViommuTegra241Cmdqv } from "./iommufd-uapi.js";
import {
  vcmdqBaseLayout,
  vcmdqCerrorName,
  vcmdqConfigLayout,
  vcmdqConsIndxBaseLayout,
  vcmdqConsIndxLayout,
  vcmdqGerrorLayout,
  vcmdqProdIndxLayout,
  vcmdqStatusLayout,
} from "./vcmdq-registers.js";
import { lvcmdqErrMapLayout, vintfConfigLayout, vintfSidMatchLayout, vintfSidReplaceLayout, vintfStatusLayout } from "./vintf-registers.js";

/**
 * The structures `viommu decode --vendor tegra241-cmdqv --structure <id>` understands. A 32-bit register is given
 * as one 64-bit word whose low half is the register (the high half is ignored); BASE and CONS_INDX_BASE take the
 * whole word; the 128-bit LVCMDQ_ERR_MAP and the uAPI structures take their size in words. name = the register or
 * structure mnemonic, code 0 — except `vcmdq-cons`, whose name and code are its CONS_INDX.ERR error (CERROR_*).
 */

/** A register (or register pair) whose fields are its layout's: `words` 64-bit words; a 32-bit layout reads the first word's low half. */
function register(id: string, title: string, layout: Layout, words = 1): StructureDecoder {
  return {
    id,
    title,
    words: [words],
    decode(raw: RawBits): DecodedStructure {
      return { name: title, code: 0, fields: decodeLayout(layout, layout.bits === 32 ? raw.subarray(0, 1) : raw) };
    },
  };
}

/** An iommufd uAPI structure of `words` 64-bit words, its fields as the struct's decoder names them (code 0). */
function uapiStruct(id: string, title: string, words: number, fields: (bytes: Uint8Array) => DecodedStructure["fields"]): StructureDecoder {
  return {
    id,
    title,
    words: [words],
    decode(raw: RawBits): DecodedStructure {
      return { name: title, code: 0, fields: fields(toBytes(raw)) };
    },
  };
}

export const tegra241Structures: readonly StructureDecoder[] = [
  register("config", "TEGRA241_CMDQV_CONFIG", cmdqvConfigLayout),
  register("param", "TEGRA241_CMDQV_PARAM", cmdqvParamLayout),
  register("status", "TEGRA241_CMDQV_STATUS", cmdqvStatusLayout),
  register("err-map", "TEGRA241_CMDQV_ERR_MAP_WORD", bitmapWordLayout),
  register("cmdq-alloc", "TEGRA241_CMDQV_CMDQ_ALLOC", cmdqAllocLayout),
  register("vintf-config", "TEGRA241_VINTF_CONFIG", vintfConfigLayout),
  register("vintf-status", "TEGRA241_VINTF_STATUS", vintfStatusLayout),
  register("sid-match", "TEGRA241_VINTF_SID_MATCH", vintfSidMatchLayout),
  register("sid-replace", "TEGRA241_VINTF_SID_REPLACE", vintfSidReplaceLayout),
  register("lvcmdq-err-map", "TEGRA241_VINTF_LVCMDQ_ERR_MAP", lvcmdqErrMapLayout, 2),
  {
    id: "vcmdq-cons",
    title: "TEGRA241_VCMDQ_CONS",
    words: [1],
    decode(raw: RawBits): DecodedStructure {
      const fields = decodeLayout(vcmdqConsIndxLayout, raw.subarray(0, 1));
      return { name: vcmdqCerrorName(fields.ERR), code: fields.ERR, fields };
    },
  },
  register("vcmdq-prod", "TEGRA241_VCMDQ_PROD", vcmdqProdIndxLayout),
  register("vcmdq-config", "TEGRA241_VCMDQ_CONFIG", vcmdqConfigLayout),
  register("vcmdq-status", "TEGRA241_VCMDQ_STATUS", vcmdqStatusLayout),
  register("vcmdq-gerror", "TEGRA241_VCMDQ_GERROR", vcmdqGerrorLayout),
  register("vcmdq-base", "TEGRA241_VCMDQ_BASE", vcmdqBaseLayout),
  register("vcmdq-cons-indx-base", "TEGRA241_VCMDQ_CONS_INDX_BASE", vcmdqConsIndxBaseLayout),
  uapiStruct("hw-info", "iommu_hw_info_tegra241_cmdqv", 1, (bytes) => ({ ...decodeHwInfoTegra241Cmdqv(bytes)! })),
  uapiStruct("viommu-data", "iommu_viommu_tegra241_cmdqv", 2, (bytes) => ({ ...decodeViommuTegra241Cmdqv(bytes)! })),
  uapiStruct("vevent", "iommu_vevent_tegra241_cmdqv", 2, (bytes) => {
    const e = decodeVeventTegra241Cmdqv(bytes)!;
    return { "lvcmdq_err_map[0]": e.lvcmdq_err_map[0], "lvcmdq_err_map[1]": e.lvcmdq_err_map[1] };
  }),
];
