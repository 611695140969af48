import { decodeLayout, type DecodedStructure, type Layout, type RawBits, type StructureDecoder } from "@viommu/core";

/** Every field of `layout` read from `raw`, as the plain record a `DecodedStructure` carries. */
export function layoutFields(layout: Layout, raw: RawBits): Record<string, number | bigint> {
  return decodeLayout(layout, raw) as Record<string, number | bigint>;
}

/**
 * A `StructureDecoder` for a structure with one fixed layout and no type code (table entries, registers).
 * `name` is the structure's own mnemonic, reported with code 0. Accepts exactly the layout's width, and
 * never throws for it: every bit pattern decodes.
 */
export function layoutDecoder(id: string, title: string, name: string, layout: Layout): StructureDecoder {
  const words = layout.bits / 64;
  return {
    id,
    title,
    words: [words],
    decode(raw: RawBits): DecodedStructure {
      return { name, code: 0, fields: layoutFields(layout, raw) };
    },
  };
}

/** The 64-bit word `index` of raw bits as bigint (edges only). */
export function word64(raw: RawBits, index: number): bigint {
  return (BigInt(raw[2 * index + 1] ?? 0) << 32n) | BigInt(raw[2 * index] ?? 0);
}
