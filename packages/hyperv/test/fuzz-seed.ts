import fc from "fast-check";

/** The seed of a property test: VIOMMU_SEED when set, else a new one each run (printed when a run fails). */
export function fuzzSeed(): number {
  const n = Number(process.env.VIOMMU_SEED);
  return process.env.VIOMMU_SEED !== undefined && Number.isSafeInteger(n) ? n : Math.floor(Math.random() * 2 ** 31);
}

/** fc.assert with the environment's seed; a failure names the seed to re-run it with. */
export function assertProperty<Ts extends [unknown, ...unknown[]]>(property: fc.IPropertyWithHooks<Ts>, params: Omit<fc.Parameters<Ts>, "seed"> = {}): void {
  const seed = fuzzSeed();
  try {
    fc.assert(property, { ...params, seed });
  } catch (e) {
    if (e instanceof Error) e.message = `re-run with VIOMMU_SEED=${seed}\n${e.message}`;
    throw e;
  }
}
