import { opsPerSecond } from "@viommu/core";

export { opsPerSecond };

/** One figure of `viommu bench`, in the shared JSON shape. */
export interface Figure {
  readonly name: string;
  readonly value: number;
  readonly unit: string;
  readonly baseline?: number;
  readonly ratio?: number;
  readonly note?: string;
}

export function round(value: number, digits = 3): number {
  const f = 10 ** digits;
  return Math.round(value * f) / f;
}
