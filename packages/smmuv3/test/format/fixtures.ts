import { readFileSync } from "node:fs";
import { gunzipSync } from "node:zlib";
import { fileURLToPath } from "node:url";
import { fromWords64, type RawBits } from "@viommu/core";

/** Real Linux 6.1 guest data on QEMU 7.2 `-machine virt,iommu=smmuv3` (see the shared fixtures README). */
const dir = fileURLToPath(new URL("../fixtures/real-guest/smmuv3/", import.meta.url));

export function fixtureBytes(name: string): Uint8Array {
  const bytes = readFileSync(dir + name);
  return new Uint8Array(name.endsWith(".gz") ? gunzipSync(bytes) : bytes);
}

export function fixtureJson<T>(name: string): T {
  return JSON.parse(new TextDecoder().decode(fixtureBytes(name))) as T;
}

export function fixtureJsonLines<T>(name: string): T[] {
  return new TextDecoder()
    .decode(fixtureBytes(name))
    .split("\n")
    .filter((line) => line.trim() !== "")
    .map((line) => JSON.parse(line) as T);
}

/** Raw bits from 64-bit words given as hex text, lowest first. */
export function words(...hex: string[]): RawBits {
  return fromWords64(hex);
}

export interface WalkStep {
  readonly what: "l1_std" | "ste" | "cd" | "pte";
  readonly level?: number;
  readonly addr: string;
  readonly val: string | string[];
}

export interface FixtureTranslation {
  readonly sid: string;
  readonly iova: string;
  readonly translated: string;
  readonly read: boolean;
  readonly write: boolean;
  readonly at_dump: {
    readonly fault: string | null;
    readonly translated: string;
    readonly level: number;
    readonly page_size: number;
    readonly read: boolean;
    readonly write: boolean;
    readonly asid: number;
    readonly leaf_pte: string;
    readonly walk: readonly WalkStep[];
  };
}

export interface FixtureTranslations {
  readonly strtab_base: string;
  readonly strtab_base_cfg: string;
  readonly cmdq_base: string;
  readonly eventq_base: string;
  readonly translations: readonly FixtureTranslation[];
}
