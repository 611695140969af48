/**
 * The bench harness: a model workload and its baseline run interleaved (A B A B …) for several rounds in one
 * process, each round checked before anything is printed. A figure whose work is wrong is refused, never
 * printed. Wall-clock only: nothing here is ever asserted as a timing in a test.
 */

/**
 * Performs `n` operations over a fixed input set and returns a checksum of their outputs. A model and its
 * baseline are always given the same sequence of batch sizes, so both may walk their inputs with a cursor.
 */
export type Batch = (n: number) => number;

export interface Workload {
  readonly run: Batch;
  /** Checks the state the last batch left (bytes moved, entries removed); a string says what is wrong. */
  readonly verify?: () => string | undefined;
}

/** A figure ready to measure: its workloads, set up. */
export interface Prepared {
  readonly model: Workload;
  /** The same job done by the best plain code (or the same operation at the reference size). */
  readonly baseline?: Workload;
  /** Whether model and baseline must return equal checksums for equal n (they computed the same outputs). */
  readonly sameOutputs?: boolean;
  /** Extra figures the setup itself measured (setup time, bytes), already verified. */
  readonly extra?: Record<string, number>;
  readonly note?: string;
  /**
   * Makes the model's work wrong (unmaps a page, corrupts a byte, skips a removal), so a test can see the figure
   * refuse to print. Never called by `viommu bench`.
   */
  readonly sabotage?: () => void;
  dispose?(): void;
}

export interface FigureSpec {
  /** Stable name (`--json`, `--compare`, `--only`). Internal figures start with `internal-`. */
  readonly name: string;
  /** Unit of `value` (and of `baseline`). */
  readonly unit: string;
  /** How `value` is derived from a round's rate (operations per second). Default: millions of operations per second. */
  readonly scale?: "Mops" | "us-per-op" | "GB/s";
  /** Bytes one operation moves (for GB/s). */
  readonly bytesPerOp?: number;
  /** What ratio the project aims for (printed, never enforced). */
  readonly goal?: string;
  prepare(options: BenchOptions): Prepared | Promise<Prepared>;
}

export interface BenchOptions {
  /** CI smoke run: few iterations, still verifying every round. */
  readonly quick: boolean;
}

/** One printed figure (the `--json` shape). */
export interface FigureResult {
  readonly name: string;
  readonly value: number;
  readonly unit: string;
  readonly baseline?: number;
  /** Median over rounds of (model rate / baseline rate); >1 means the model is faster. */
  readonly ratio?: number;
  /** Lowest and highest per-round ratio (or value, without a baseline). */
  readonly spread?: readonly [number, number];
  /**
   * The model's best round over the baseline's best round: on a shared machine other processes only ever
   * slow a round down, so the best rounds are the nearest to each side's own speed.
   */
  readonly best?: number;
  readonly rounds?: number;
  readonly verified: true;
  readonly goal?: string;
  readonly note?: string;
}

/** A figure refused because its work did not check out. */
export class BenchRefused extends Error {
  constructor(
    readonly figure: string,
    detail: string,
  ) {
    super(`${figure}: refused: ${detail}`);
  }
}

export interface HarnessTiming {
  readonly rounds: number;
  /** Target wall time of one batch, in ms. */
  readonly batchMs: number;
}

export function timingFor(options: BenchOptions): HarnessTiming {
  return options.quick ? { rounds: 5, batchMs: 4 } : { rounds: 15, batchMs: 40 };
}

function checksumOk(x: number): boolean {
  return !Number.isNaN(x);
}

function timeBatch(run: Batch, n: number): { ms: number; sum: number } {
  const t0 = performance.now();
  const sum = run(n);
  return { ms: performance.now() - t0, sum };
}

/** Model time spent warming up before the size is fixed, in batches of the target time. */
const WARM_BATCHES = 5;

/**
 * A batch size whose model run takes about `ms`, found after the JIT has warmed up: batches grow until one takes
 * a quarter of `ms`, then run at that size until WARM_BATCHES × `ms` of model time is spent, the size taken from
 * the last (warm) batch. A slow operation's first batches run cold code and hit a collection or two; sizing from
 * them alone left such figures timing a few dozen operations a round, never optimised. The baseline runs the
 * same batches, so workloads that walk their inputs with a cursor stay in step.
 */
function calibrate(run: Batch, ms: number, baseline: Batch | undefined): number {
  let n = 16;
  let spent = 0;
  for (;;) {
    const { ms: took } = timeBatch(run, n);
    baseline?.(n);
    spent += took;
    const sized = Math.max(1, Math.round((n * ms) / Math.max(took, 0.001)));
    if (n >= 2 ** 30) return sized;
    if (took < ms / 4) n *= 4;
    else if (spent >= WARM_BATCHES * ms) return sized;
    else n = sized;
  }
}

export function median(values: readonly number[]): number {
  const s = [...values].sort((a, b) => a - b);
  const mid = s.length >> 1;
  return s.length % 2 === 1 ? s[mid]! : (s[mid - 1]! + s[mid]!) / 2;
}

export function round3(value: number, digits = 3): number {
  if (!Number.isFinite(value)) return value;
  const magnitude = Math.abs(value) >= 100 ? 1 : digits;
  const f = 10 ** magnitude;
  return Math.round(value * f) / f;
}

function valueOf(spec: FigureSpec, opsPerSecond: number): number {
  switch (spec.scale ?? "Mops") {
    case "Mops":
      return opsPerSecond / 1e6;
    case "us-per-op":
      return 1e6 / opsPerSecond;
    case "GB/s":
      return (opsPerSecond * (spec.bytesPerOp ?? 1)) / 1e9;
  }
}

function check(name: string, label: string, w: Workload, sum: number): void {
  if (!checksumOk(sum)) throw new BenchRefused(name, `${label} reported a failed operation`);
  const problem = w.verify?.();
  if (problem !== undefined) throw new BenchRefused(name, `${label}: ${problem}`);
}

/**
 * Measures one figure: calibrates each side, then runs model and baseline alternately for `rounds` rounds,
 * verifying every batch. Throws `BenchRefused` when any check fails.
 */
export async function measure(spec: FigureSpec, options: BenchOptions): Promise<FigureResult> {
  const prepared = await spec.prepare(options);
  try {
    return measurePrepared(spec, prepared, timingFor(options));
  } finally {
    prepared.dispose?.();
  }
}

export function measurePrepared(spec: FigureSpec, prepared: Prepared, timing: HarnessTiming): FigureResult {
  const { model, baseline } = prepared;
  // A first verified pass of each side before any timing: a figure never times broken work.
  check(spec.name, "model", model, model.run(1));
  if (baseline !== undefined) check(spec.name, "baseline", baseline, baseline.run(1));
  const n = calibrate(model.run, timing.batchMs, baseline?.run);
  const modelRates: number[] = [];
  const baseRates: number[] = [];
  const ratios: number[] = [];
  for (let r = 0; r < timing.rounds; r++) {
    const a = timeBatch(model.run, n);
    check(spec.name, "model", model, a.sum);
    modelRates.push((n / a.ms) * 1000);
    if (baseline !== undefined) {
      const b = timeBatch(baseline.run, n);
      check(spec.name, "baseline", baseline, b.sum);
      if (prepared.sameOutputs && a.sum !== b.sum) throw new BenchRefused(spec.name, `model and baseline computed different outputs (checksums ${a.sum} and ${b.sum})`);
      baseRates.push((n / b.ms) * 1000);
      ratios.push(modelRates[r]! / baseRates[r]!);
    }
  }
  const values = modelRates.map((rate) => valueOf(spec, rate));
  const result: FigureResult = {
    name: spec.name,
    value: round3(median(values)),
    unit: spec.unit,
    ...(baseline !== undefined
      ? {
          baseline: round3(valueOf(spec, median(baseRates))),
          ratio: round3(median(ratios)),
          spread: [round3(Math.min(...ratios)), round3(Math.max(...ratios))] as const,
          best: round3(Math.max(...modelRates) / Math.max(...baseRates)),
        }
      : { spread: [round3(Math.min(...values)), round3(Math.max(...values))] as const }),
    rounds: timing.rounds,
    verified: true,
    ...(spec.goal !== undefined ? { goal: spec.goal } : {}),
    ...(prepared.note !== undefined ? { note: prepared.note } : {}),
  };
  return result;
}

/** A figure measured once rather than as a rate (setup time, resident memory, collections per million). */
export interface OneShotSpec {
  readonly name: string;
  /** The names of the figures it yields (for `--only`). */
  readonly yields: readonly string[];
  oneShot(options: BenchOptions): Promise<FigureResult[]>;
}

export type AnyFigureSpec = FigureSpec | OneShotSpec;

export function isOneShot(spec: AnyFigureSpec): spec is OneShotSpec {
  return "oneShot" in spec;
}
