import { UsageError } from "./errors.js";

const U64_MAX = (1n << 64n) - 1n;

/**
 * One number syntax everywhere: `0x…` hex or decimal (underscores allowed as separators); `hexOnly` fields
 * (register values, addresses printed as hex by the tools that produce them) also take plain hex digits.
 * Values are 64-bit: the result is a bigint, and callers narrow it where the architecture allows.
 */
export function parseU64(text: string, option: string, options: { hexOnly?: boolean } = {}): bigint {
  const t = text.trim().replace(/_/g, "").toLowerCase();
  let value: bigint | undefined;
  if (/^0x[0-9a-f]+$/.test(t)) value = BigInt(t);
  else if (options.hexOnly && /^[0-9a-f]+$/.test(t)) value = BigInt(`0x${t}`);
  else if (/^[0-9]+$/.test(t)) value = BigInt(t);
  if (value === undefined) throw new UsageError(`${option}: "${text}" is not a number (use 0x… hex or decimal)`);
  if (value > U64_MAX) throw new UsageError(`${option}: ${text} does not fit in 64 bits`);
  return value;
}

/** A count or small number (seed, steps): a non-negative safe integer. */
export function parseCount(text: string, option: string): number {
  const v = parseU64(text, option);
  if (v > BigInt(Number.MAX_SAFE_INTEGER)) throw new UsageError(`${option}: ${text} is too large`);
  return Number(v);
}

/**
 * A requester id: a number, or a PCI address as Linux prints it — `bus:dev.fn` or `segment:bus:dev.fn`, hex
 * fields (`02:00.0`, `0000:02:00.0`). The result is the 16-bit BDF (segment must be 0 for a 16-bit id unless
 * `allowSegment`, in which case it lands in bits 31:16).
 */
export function parseRequesterId(text: string, option: string): number {
  const t = text.trim().toLowerCase();
  const bdf = /^(?:([0-9a-f]{1,4}):)?([0-9a-f]{1,2}):([0-9a-f]{1,2})\.([0-7])$/.exec(t);
  if (bdf !== null) {
    const [, seg, bus, dev, fn] = bdf;
    const device = parseInt(dev!, 16);
    if (device > 31) throw new UsageError(`${option}: device ${device} in "${text}" is above 31`);
    const id = (parseInt(bus!, 16) << 8) | (device << 3) | parseInt(fn!, 10);
    const segment = seg === undefined ? 0 : parseInt(seg, 16);
    return segment * 0x10000 + id;
  }
  const v = parseU64(text, option);
  if (v > 0xffff_ffffn) throw new UsageError(`${option}: ${text} is not a requester id`);
  return Number(v);
}
