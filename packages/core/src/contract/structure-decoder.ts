import type { RawBits } from "../bits/words.js";

/**
 * What `viommu decode` prints for one structure: `name` is the specification's mnemonic for the
 * descriptor type, command opcode or event type (`UNKNOWN` when the code names nothing), `code` its
 * numeric value, `fields` every field under the specification's own name.
 */
export interface DecodedStructure {
  readonly name: string;
  readonly code: number;
  readonly fields: Readonly<Record<string, number | bigint | boolean | string>>;
}

/**
 * One decodable hardware structure of a vendor, as the command line reaches it
 * (`viommu decode --vendor V --structure <id>`).
 */
export interface StructureDecoder {
  /** The command-line name, e.g. `inv-desc`, `ste`, `dte`. */
  readonly id: string;
  /** The specification's name of the structure. */
  readonly title: string;
  /** Accepted sizes in 64-bit words (e.g. [2, 4] for 128- and 256-bit descriptors). */
  readonly words: readonly number[];
  /**
   * Decodes hostile input: any bit pattern of an accepted size decodes (unknown types as `UNKNOWN`);
   * it never throws for bits of an accepted size.
   */
  decode(raw: RawBits): DecodedStructure;
}
