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

function reg32(id: string, title: string, layout: Layout): StructureDecoder {
  return {
    id,
    title,
    words: [1],
    decode(raw: RawBits): DecodedStructure {
      return { name: title, code: 0, fields: decodeLayout(layout, raw.subarray(0, 1)) };
    },
  };
}

function reg64(id: string, title: string, layout: Layout): StructureDecoder {
  return {
    id,
    title,
    words: [1],
    decode(raw: RawBits): DecodedStructure {
      return { name: title, code: 0, fields: decodeLayout(layout, raw) };
    },
  };
}

export const tegra241Structures: readonly StructureDecoder[] = [
  reg32("config", "TEGRA241_CMDQV_CONFIG", cmdqvConfigLayout),
  reg32("param", "TEGRA241_CMDQV_PARAM", cmdqvParamLayout),
  reg32("status", "TEGRA241_CMDQV_STATUS", cmdqvStatusLayout),
  reg32("err-map", "TEGRA241_CMDQV_ERR_MAP_WORD", bitmapWordLayout),
  reg32("cmdq-alloc", "TEGRA241_CMDQV_CMDQ_ALLOC", cmdqAllocLayout),
  reg32("vintf-config", "TEGRA241_VINTF_CONFIG", vintfConfigLayout),
  reg32("vintf-status", "TEGRA241_VINTF_STATUS", vintfStatusLayout),
  reg32("sid-match", "TEGRA241_VINTF_SID_MATCH", vintfSidMatchLayout),
  reg32("sid-replace", "TEGRA241_VINTF_SID_REPLACE", vintfSidReplaceLayout),
  {
    id: "lvcmdq-err-map",
    title: "TEGRA241_VINTF_LVCMDQ_ERR_MAP",
    words: [2],
    decode(raw: RawBits): DecodedStructure {
      return { name: "TEGRA241_VINTF_LVCMDQ_ERR_MAP", code: 0, fields: decodeLayout(lvcmdqErrMapLayout, raw) };
    },
  },
  {
    id: "vcmdq-cons",
    title: "TEGRA241_VCMDQ_CONS",
    words: [1],
    decode(raw: RawBits): DecodedStructure {
      const fields = decodeLayout(vcmdqConsIndxLayout, raw.subarray(0, 1));
      return { name: vcmdqCerrorName(fields.ERR), code: fields.ERR, fields };
    },
  },
  reg32("vcmdq-prod", "TEGRA241_VCMDQ_PROD", vcmdqProdIndxLayout),
  reg32("vcmdq-config", "TEGRA241_VCMDQ_CONFIG", vcmdqConfigLayout),
  reg32("vcmdq-status", "TEGRA241_VCMDQ_STATUS", vcmdqStatusLayout),
  reg32("vcmdq-gerror", "TEGRA241_VCMDQ_GERROR", vcmdqGerrorLayout),
  reg64("vcmdq-base", "TEGRA241_VCMDQ_BASE", vcmdqBaseLayout),
  reg64("vcmdq-cons-indx-base", "TEGRA241_VCMDQ_CONS_INDX_BASE", vcmdqConsIndxBaseLayout),
  {
    id: "hw-info",
    title: "iommu_hw_info_tegra241_cmdqv",
    words: [1],
    decode(raw: RawBits): DecodedStructure {
      return { name: "iommu_hw_info_tegra241_cmdqv", code: 0, fields: { ...decodeHwInfoTegra241Cmdqv(toBytes(raw))! } };
    },
  },
  {
    id: "viommu-data",
    title: "iommu_viommu_tegra241_cmdqv",
    words: [2],
    decode(raw: RawBits): DecodedStructure {
      return { name: "iommu_viommu_tegra241_cmdqv", code: 0, fields: { ...decodeViommuTegra241Cmdqv(toBytes(raw))! } };
    },
  },
  {
    id: "vevent",
    title: "iommu_vevent_tegra241_cmdqv",
    words: [2],
    decode(raw: RawBits): DecodedStructure {
      const e = decodeVeventTegra241Cmdqv(toBytes(raw))!;
      return { name: "iommu_vevent_tegra241_cmdqv", code: 0, fields: { "lvcmdq_err_map[0]": e.lvcmdq_err_map[0], "lvcmdq_err_map[1]": e.lvcmdq_err_map[1] } };
    },
  },
];
