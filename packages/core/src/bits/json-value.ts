/**
 * The command line's JSON convention for field values: numbers below 2^53 as JSON numbers, anything wider
 * as "0x…" text, so no value is ever silently rounded.
 */
export type JsonFieldValue = number | string | boolean;

export function jsonFieldValue(value: number | bigint | boolean | string): JsonFieldValue {
  if (typeof value === "bigint") {
    return value <= BigInt(Number.MAX_SAFE_INTEGER) ? Number(value) : `0x${value.toString(16)}`;
  }
  if (typeof value === "number" && !Number.isSafeInteger(value)) return `0x${BigInt(value).toString(16)}`;
  return value;
}

export function jsonFields(fields: Readonly<Record<string, number | bigint | boolean | string>>): Record<string, JsonFieldValue> {
  const out: Record<string, JsonFieldValue> = {};
  for (const [k, v] of Object.entries(fields)) out[k] = jsonFieldValue(v);
  return out;
}
