import { Perm, type CapabilityName, type GuestDomainId, type GuestEvent, type GuestInitOptions, type PermBits, type Result } from "@viommu/core";
import type { DmaAnswer } from "../format/trace-op.js";
import type { RecordingSession } from "../record/recording-session.js";

/** A check a workload makes of the model failed: the model breaks the workload's rule (a model defect). */
export class WorkloadFailure extends Error {}

export function check(condition: unknown, message: string): asserts condition {
  if (!condition) throw new WorkloadFailure(message);
}

export function must<T>(r: Result<T>, what: string): T {
  if (!r.ok) throw new WorkloadFailure(`${what}: ${r.error.errno} (${r.error.message})`);
  return r.value;
}

/** What a workload runs with. */
export interface WorkloadContext {
  readonly session: RecordingSession;
  /** The devices' requester ids, as many as the workload asked for. */
  readonly rids: readonly number[];
  /** Guest RAM for data pages (16 MiB above the base, far from the driver's pool at the top). */
  readonly dataBase: number;
  readonly seed: number;
}

/**
 * A guest program the recorder runs: the reference driver through its vendor-neutral face, the CPU's own memory
 * accesses and the devices' DMA. Every DMA write it makes carries bytes the same device read just before (a copy),
 * so a target whose DMA engine is a copy engine (QEMU's edu) can replay it. `run` checks the rule on the model as
 * it goes and throws WorkloadFailure when the model breaks it.
 */
export interface Workload {
  readonly id: string;
  /** The rule it demonstrates, in one sentence. */
  readonly rule: string;
  /** Capabilities the vendor needs; without one the workload does not apply. */
  readonly requires: readonly CapabilityName[];
  /** How many devices it uses. */
  readonly devices: number;
  /** Guest options it needs (an event log size). */
  readonly guest?: Partial<GuestInitOptions>;
  run(context: WorkloadContext): void;
}

/** A deterministic byte pattern, never all zero (QEMU answers a blocked read with zeros). */
export function pattern(length: number, seed: number): Uint8Array {
  const out = new Uint8Array(length);
  let x = (seed * 2654435761) >>> 0 || 1;
  for (let i = 0; i < length; i++) {
    x ^= x << 13;
    x ^= x >>> 17;
    x ^= x << 5;
    out[i] = (x & 0xff) | 1;
  }
  return out;
}

function same(a: Uint8Array, b: Uint8Array): boolean {
  return a.length === b.length && a.every((x, i) => x === b[i]);
}

/** A domain with `rid` attached and the given mappings, through the driver. */
export function domainWith(c: WorkloadContext, rid: number, maps: readonly { iova: number; gpa: number; length: number; perms?: PermBits }[]): GuestDomainId {
  const driver = c.session.driver;
  const domain = must(driver.createDomain(), "createDomain");
  must(driver.attach(rid, domain), `attach 0x${rid.toString(16)}`);
  for (const m of maps) must(driver.map(domain, m.iova, m.gpa, m.length, m.perms ?? Perm.ReadWrite), `map 0x${m.iova.toString(16)}`);
  return domain;
}

/** The device reads `length` bytes at `iova`, which must succeed; the bytes it read. */
export function mustRead(c: WorkloadContext, rid: number, iova: number, length: number): Uint8Array {
  const r = c.session.dmaRead(rid, iova, length);
  check(r.ok && r.data !== undefined, `DMA read of 0x${iova.toString(16)} by 0x${rid.toString(16)} was blocked`);
  return r.data;
}

/** The device copies `length` bytes from `from` to `to` (a read, then a write of what it read). */
export function copy(c: WorkloadContext, rid: number, from: number, to: number, length: number): DmaAnswer {
  const data = mustRead(c, rid, from, length);
  return c.session.dmaWrite(rid, to, data);
}

/** The CPU writes `data` at `gpa`. */
export function cpuWrite(c: WorkloadContext, gpa: number, data: Uint8Array): void {
  c.session.memory.writeBytes(gpa, data);
}

/** The CPU reads `length` bytes at `gpa` and the workload checks them. */
export function cpuExpect(c: WorkloadContext, gpa: number, expected: Uint8Array, what: string): void {
  const got = c.session.memory.readBytes(gpa, expected.length);
  check(same(got, expected), `${what}: guest memory at 0x${gpa.toString(16)} does not hold the expected bytes`);
}

/** The guest reads its IOMMU's events (the DMA operations already let the VMM catch up). */
export function guestEvents(c: WorkloadContext): GuestEvent[] {
  return c.session.events();
}

export function expectFault(events: readonly GuestEvent[], rid: number, iova: number, what: string): GuestEvent {
  const page = Math.floor(iova / 4096) * 4096;
  const e = events.find((x) => x.kind === "dma-fault" && x.rid === rid && x.address !== undefined && Math.floor(x.address / 4096) * 4096 === page);
  check(e !== undefined, `${what}: no DMA fault for 0x${rid.toString(16)} at 0x${iova.toString(16)} (events: ${JSON.stringify(events.map((x) => [x.kind, x.name, x.rid, x.address]))})`);
  return e;
}
