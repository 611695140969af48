import { PerformanceObserver } from "node:perf_hooks";

const tick = (): Promise<void> => new Promise((resolve) => setTimeout(resolve, 0));

/** Garbage collections that ran during `work` (the observer's entries arrive asynchronously, hence the ticks). */
export async function countCollections(work: () => void): Promise<number> {
  let count = 0;
  const observer = new PerformanceObserver((list) => {
    count += list.getEntries().length;
  });
  observer.observe({ entryTypes: ["gc"] });
  // A full collection first (with --expose-gc), so no marking cycle begun by earlier work finishes inside `work`.
  (globalThis as { gc?: () => void }).gc?.();
  await tick();
  count = 0;
  work();
  await tick();
  await tick();
  observer.disconnect();
  return count;
}
