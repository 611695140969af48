import { type CapabilityName, type Result, type VendorPlugin } from "@viommu/core";
import { Testbed, type TestbedOptions } from "@viommu/core";

export type CaseStatus = "pass" | "fail" | "n/a";

export interface CaseResult {
  readonly id: string;
  readonly rule: string;
  readonly status: CaseStatus;
  /** Why it failed, or why it does not apply. */
  readonly detail?: string;
  /** Numbers the case measured (VMM interventions, events read …). */
  readonly metrics?: Readonly<Record<string, number>>;
}

/** What a case gets: the vendor under test and a way to build testbeds for it. */
export interface CaseContext {
  readonly plugin: VendorPlugin;
  /** Other installed plugins the vendor may need (its parent, for an extension). */
  readonly plugins: readonly VendorPlugin[];
  readonly seed: number;
  /** Builds a testbed for the vendor (disposed by the runner after the case). */
  bed(options: Omit<TestbedOptions, "plugin">): Testbed;
  /** Records a measured number in the case's result. */
  metric(name: string, value: number): void;
}

export interface ConformanceCase {
  readonly id: string;
  /** The rule the case checks, in one sentence. */
  readonly rule: string;
  /** Capabilities the case needs; when the vendor lacks one, the case is n/a with the vendor's reason. */
  readonly requires: readonly CapabilityName[];
  run(context: CaseContext): void;
}

/** A failed check inside a case. */
export class CaseFailure extends Error {}

export function check(condition: unknown, message: string): asserts condition {
  if (!condition) throw new CaseFailure(message);
}

/** The value of a result a case needs; a failed result fails the case with its errno. */
export function must<T>(r: Result<T>, what: string): T {
  if (!r.ok) throw new CaseFailure(`${what}: ${r.error.errno} (${r.error.message})`);
  return r.value;
}

/** Builds a testbed or fails the case with the reason. */
export function buildBed(plugin: VendorPlugin, plugins: readonly VendorPlugin[], options: Omit<TestbedOptions, "plugin">): Testbed {
  const r = Testbed.create({ ...options, plugin, plugins: [...plugins.filter((p) => p !== plugin), ...(options.plugins ?? [])] });
  return must(r, "testbed");
}
