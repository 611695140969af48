/** The harness lives in core (`@viommu/core`'s bench/interleaved.ts) so vendor figures can use it too. */
export {
  BenchRefused,
  isOneShot,
  measure,
  measurePrepared,
  median,
  round3,
  timingFor,
  type AnyFigureSpec,
  type Batch,
  type BenchOptions,
  type FigureResult,
  type FigureSpec,
  type HarnessTiming,
  type OneShotSpec,
  type Prepared,
  type Workload,
} from "@viommu/core";
