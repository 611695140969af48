import { err, ok, type Result, type StateValue } from "@viommu/core";
import { HV_DEVICE_DOMAIN_ID_DEFAULT, HV_DEVICE_DOMAIN_ID_NULL } from "../format/device-domain.js";
import { HvStatus } from "../format/hv-status.js";
import type { DomainConfig } from "./device-domains.js";
import type { HypervPartition } from "./hyperv-partition.js";
import type { InterruptTarget } from "./interrupt-table.js";

/** Version of the saved partition state. */
export const PARTITION_STATE_VERSION = 1;

interface SavedDomain {
  readonly id: number;
  readonly type: number;
  readonly config: DomainConfig;
  readonly runs: readonly [number, number, number, boolean][];
}

interface SavedState {
  readonly domains: readonly SavedDomain[];
  readonly devices: readonly [number, number, string | null][];
  readonly interrupts: readonly [number, number, InterruptTarget][];
}

/**
 * What the hypervisor migrates of a partition's pvIOMMU: its device domains (settings and stage-2 pages), where
 * each device is, and the interrupt remapping table. Guest memory (the stage-1 tables) travels with the VM.
 */
export function savePartition(p: HypervPartition): StateValue {
  const domains: StateValue[] = [];
  for (const d of p.domains?.all() ?? []) {
    const c = d.config;
    domains.push([d.id, d.type, c.kind, c.kind === "paging" ? c.root : 0, c.kind === "paging" ? c.levels : 0, d.s2?.runs() ?? []]);
  }
  const devices: StateValue[] = [];
  for (const dev of p.devices.all()) {
    if (dev.domain !== HV_DEVICE_DOMAIN_ID_DEFAULT || dev.direct !== undefined) devices.push([dev.rid, dev.domain, dev.direct === undefined ? null : dev.direct.toString()]);
  }
  const interrupts: StateValue[] = p.interrupts.list().map(([slot, rid, vector, vps, multicast, level]) => [slot, rid, vector, vps, multicast, level]);
  return { domains, devices, interrupts };
}

const isInt = (v: unknown, min: number, max: number): v is number => typeof v === "number" && Number.isInteger(v) && v >= min && v <= max;

function parseConfig(kind: unknown, root: unknown, levels: unknown): DomainConfig | undefined {
  if (kind === "unconfigured" || kind === "identity" || kind === "blocked") return { kind };
  if (kind === "paging" && isInt(root, 0, 2 ** 52) && (levels === 4 || levels === 5)) return { kind, root, levels };
  return undefined;
}

/** Checks the whole saved value before anything is applied: a malformed state is refused untouched. */
function parse(value: StateValue): SavedState | undefined {
  if (value === null || typeof value !== "object" || Array.isArray(value)) return undefined;
  const { domains, devices, interrupts } = value as Record<string, StateValue>;
  if (!Array.isArray(domains) || !Array.isArray(devices) || !Array.isArray(interrupts)) return undefined;
  const outDomains: SavedDomain[] = [];
  for (const d of domains) {
    if (!Array.isArray(d) || d.length !== 6 || !isInt(d[0], 0, 0xffffffff) || !isInt(d[1], 0, 15) || !Array.isArray(d[5])) return undefined;
    const config = parseConfig(d[2], d[3], d[4]);
    if (config === undefined) return undefined;
    const runs: [number, number, number, boolean][] = [];
    for (const r of d[5]) {
      if (!Array.isArray(r) || !isInt(r[0], 0, 2 ** 41) || !isInt(r[1], 0, 2 ** 41) || !isInt(r[2], 1, 2 ** 22) || typeof r[3] !== "boolean") return undefined;
      runs.push([r[0], r[1], r[2], r[3]]);
    }
    outDomains.push({ id: d[0], type: d[1], config, runs });
  }
  const outDevices: [number, number, string | null][] = [];
  for (const v of devices) {
    if (!Array.isArray(v) || !isInt(v[0], 0, 0xffff) || !isInt(v[1], 0, 0xffffffff) || !(v[2] === null || (typeof v[2] === "string" && /^\d+$/.test(v[2])))) return undefined;
    outDevices.push([v[0], v[1], v[2]]);
  }
  const outIrqs: [number, number, InterruptTarget][] = [];
  for (const e of interrupts) {
    if (!Array.isArray(e) || !isInt(e[0], 0, 2 ** 20) || !isInt(e[1], 0, 0xffff) || !isInt(e[2], 16, 255) || !Array.isArray(e[3]) || typeof e[4] !== "boolean" || typeof e[5] !== "boolean") return undefined;
    const vps = e[3];
    if (vps.length === 0 || !vps.every((vp) => isInt(vp, 0, 2 ** 20))) return undefined;
    outIrqs.push([e[0], e[1], { vector: e[2], vps: vps as number[], multicast: e[4], level: e[5] }]);
  }
  return { domains: outDomains, devices: outDevices, interrupts: outIrqs };
}

/**
 * Restores a saved partition into a fresh one (no domains, no interrupt entries; its passthrough devices already
 * assigned): domains, their pages and settings, device placements, then interrupt entries. EINVAL for a state
 * that does not parse or does not apply (the partition is then left as fresh as it was), EBUSY when not fresh.
 */
export function restorePartition(p: HypervPartition, value: StateValue): Result<void> {
  const saved = parse(value);
  if (saved === undefined) return err("EINVAL", "malformed pvIOMMU state");
  const domains = p.domains;
  if ((domains?.count ?? 0) > 0 || p.interrupts.size > 0) return err("EBUSY", "restore needs a fresh partition");
  if (domains === undefined && (saved.domains.length > 0 || saved.devices.length > 0)) return err("EINVAL", "device domains saved from a partition with a pvIOMMU");
  const undo = (why: string): Result<void> => {
    for (const dev of [...p.devices.all()]) {
      dev.direct = undefined;
      if (dev.passthrough === undefined) p.devices.remove(dev.rid);
      else domains?.move(dev, HV_DEVICE_DOMAIN_ID_DEFAULT);
    }
    domains?.dispose();
    p.interrupts.clear();
    return err("EINVAL", why);
  };
  if (domains !== undefined) {
    for (const d of saved.domains) {
      if (domains.create(d.id, d.type) !== HvStatus.HV_STATUS_SUCCESS) return undo(`domain ${d.id} cannot be recreated`);
      for (const [iovaPage, gpaPage, count, writable] of d.runs) {
        if (domains.mapPages(d.id, d.type, iovaPage, writable, Array.from({ length: count }, (_, i) => gpaPage + i), 0, count).status !== HvStatus.HV_STATUS_SUCCESS) {
          return undo(`pages of domain ${d.id} cannot be mapped again`);
        }
      }
      if (d.config.kind !== "unconfigured" && domains.configure(d.id, d.type, d.config) !== HvStatus.HV_STATUS_SUCCESS) return undo(`domain ${d.id} cannot be configured`);
    }
    for (const [rid, domain, direct] of saved.devices) {
      if (domain !== HV_DEVICE_DOMAIN_ID_DEFAULT && domain !== HV_DEVICE_DOMAIN_ID_NULL && domains.get(domain) === undefined) return undo(`device 0x${rid.toString(16)} is in no saved domain`);
      const dev = p.devices.getOrCreate(rid);
      if (dev === undefined) return undo(`device 0x${rid.toString(16)} cannot be tracked`);
      const s = direct !== null ? domains.directAttach(dev, BigInt(direct)) : domains.move(dev, domain);
      if (s !== HvStatus.HV_STATUS_SUCCESS) return undo(`device 0x${rid.toString(16)} cannot be placed in domain ${domain}`);
    }
  }
  for (const [slot, rid, target] of saved.interrupts) if (!p.interrupts.restore(slot, rid, target)) return undo(`interrupt entry ${slot} cannot be restored`);
  return ok();
}
