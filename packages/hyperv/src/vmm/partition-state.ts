import { err, ok, StateReader, type Result, type StateValue } from "@viommu/core";
import { HV_DEVICE_DOMAIN_ID_DEFAULT, HV_DEVICE_DOMAIN_ID_NULL, HvDeviceDomainType } from "../format/device-domain.js";
import { MAX_DEVICE_DOMAINS, MAX_S2_PAGES, type DomainConfig } from "./device-domains.js";
import type { HypervPartition } from "./hyperv-partition.js";
import { INTERRUPT_SLOTS, MAX_INTERRUPT_ENTRIES, type InterruptTarget } from "./interrupt-table.js";
import { MAX_EMULATED_DEVICES, MAX_LOGICAL_DEVICE_ID } from "./partition-devices.js";

/** Version of the saved partition state (2: named fields; version 1's positional arrays are not read). */
export const PARTITION_STATE_VERSION = 2;

const PAGE = 4096;
/** IOVA and GPA frame numbers the model holds exactly (addresses below 2^53). */
const FRAME_LIMIT = 2 ** 41;
const configKinds = ["unconfigured", "identity", "blocked", "paging"] as const;

/** One stage-2 run: `pages` IOVA pages from `iovaPage` to GPA pages from `gpaPage`. */
export interface SavedRun {
  readonly iovaPage: number;
  readonly gpaPage: number;
  readonly pages: number;
  readonly writable: boolean;
}

export interface SavedDomain {
  readonly id: number;
  readonly type: number;
  readonly config: DomainConfig;
  readonly runs: readonly SavedRun[];
}

export interface SavedDevice {
  readonly rid: number;
  readonly domain: number;
  /** The logical id of an HVCALL_ATTACH_DEVICE, when the device is given to the partition. */
  readonly direct: bigint | undefined;
}

export interface SavedInterrupt {
  readonly slot: number;
  readonly rid: number;
  readonly target: InterruptTarget;
}

/** A saved partition, every field checked against the destination partition's limits. */
export interface SavedPartition {
  readonly domains: readonly SavedDomain[];
  readonly devices: readonly SavedDevice[];
  readonly interrupts: readonly SavedInterrupt[];
}

/**
 * What the hypervisor migrates of a partition's pvIOMMU: its device domains (settings and stage-2 pages), where
 * each device is, and the interrupt remapping table. Guest memory (the stage-1 tables) travels with the VM.
 */
export function savePartition(p: HypervPartition): StateValue {
  const domains: StateValue[] = [];
  for (const d of p.domains?.all() ?? []) {
    const c = d.config;
    const runs = (d.s2?.runs() ?? []).map(([iovaPage, gpaPage, pages, writable]) => ({ iovaPage, gpaPage, pages, writable }));
    domains.push({ id: d.id, type: d.type, config: c.kind, ...(c.kind === "paging" ? { root: c.root, levels: c.levels } : {}), runs });
  }
  const devices: StateValue[] = [];
  for (const dev of p.devices.all()) {
    if (dev.domain === HV_DEVICE_DOMAIN_ID_DEFAULT && dev.direct === undefined) continue;
    devices.push({ rid: dev.rid, domain: dev.domain, ...(dev.direct !== undefined ? { direct: `0x${dev.direct.toString(16)}` } : {}) });
  }
  const interrupts: StateValue[] = p.interrupts.list().map(({ slot, rid, target }) => ({
    slot,
    rid,
    vector: target.vector,
    vps: [...target.vps],
    multicast: target.multicast,
    level: target.level,
  }));
  return { domains, devices, interrupts };
}

/**
 * Checks a saved partition field by field against what the destination partition can hold: domain ids and
 * types, settings (a stage-1 root inside guest RAM, 5-level only where the units walk it), stage-2 runs inside
 * guest RAM, not overlapping and within the partition's page limit, devices in domains that exist, interrupt
 * slots and targets the partition has. EINVAL naming the first bad field.
 */
export function parsePartition(p: HypervPartition, value: StateValue): Result<SavedPartition> {
  return StateReader.read(value, "hyperv-pviommu", (r) => {
    const hasDomains = p.domains !== undefined;
    const domainRs = r.array("domains", { max: hasDomains ? MAX_DEVICE_DOMAINS : 0 });
    const domains: SavedDomain[] = [];
    const ids = new Set<number>();
    let s2Pages = 0;
    for (const dr of domainRs) {
      const id = dr.int("id", HV_DEVICE_DOMAIN_ID_DEFAULT + 1, HV_DEVICE_DOMAIN_ID_NULL - 1);
      dr.check(!ids.has(id), "id", `is ${id}, a domain saved twice`);
      ids.add(id);
      const type = dr.int("type", 0, 15);
      const s1 = type === HvDeviceDomainType.HV_DEVICE_DOMAIN_TYPE_S1;
      dr.check(s1 || type === HvDeviceDomainType.HV_DEVICE_DOMAIN_TYPE_S2, "type", `is ${type}, neither S1 (1) nor S2 (0)`);
      const kind = dr.string("config", configKinds) as DomainConfig["kind"];
      dr.check(s1 || kind === "unconfigured", "config", `is "${kind}": a stage-2 domain is never configured`);
      let config: DomainConfig;
      if (kind === "paging") {
        const root = dr.int("root", 0, 2 ** 52 - PAGE);
        dr.check(root % PAGE === 0 && p.memory.contains(root, PAGE), "root", `is 0x${root.toString(16)}, not a 4 KiB page of guest RAM`);
        const levels = dr.int("levels", 4, 5) as 4 | 5;
        dr.check(levels === 4 || p.fiveLevel, "levels", "is 5, and the host units walk 4-level tables only");
        config = { kind, root, levels };
      } else config = { kind };
      const runRs = dr.array("runs", { max: s1 ? 0 : MAX_S2_PAGES });
      const runs: SavedRun[] = [];
      for (const rr of runRs) {
        const iovaPage = rr.int("iovaPage", 0, FRAME_LIMIT - 1);
        const pages = rr.int("pages", 1, MAX_S2_PAGES);
        rr.check(iovaPage + pages <= FRAME_LIMIT, "pages", `is ${pages}: the run ends beyond IOVA 2^53`);
        const gpaPage = rr.int("gpaPage", 0, FRAME_LIMIT - 1);
        rr.check(p.memory.contains(gpaPage * PAGE, pages * PAGE), "gpaPage", `is 0x${gpaPage.toString(16)}: ${pages} pages from it are not all guest RAM`);
        runs.push({ iovaPage, gpaPage, pages, writable: rr.bool("writable") });
        s2Pages += pages;
        rr.check(s2Pages <= MAX_S2_PAGES, "pages", `brings the partition's stage-2 pages to ${s2Pages}, above ${MAX_S2_PAGES}`);
      }
      const sorted = runs.map((run, i) => ({ run, i })).sort((a, b) => a.run.iovaPage - b.run.iovaPage);
      for (let k = 1; k < sorted.length; k++) {
        const prev = sorted[k - 1]!.run;
        const at = sorted[k]!;
        runRs[at.i]!.check(at.run.iovaPage >= prev.iovaPage + prev.pages, "iovaPage", `is 0x${at.run.iovaPage.toString(16)}, inside another run of the domain`);
      }
      domains.push({ id, type, config, runs });
    }
    const deviceRs = r.array("devices", { max: hasDomains ? MAX_LOGICAL_DEVICE_ID + 1 : 0 });
    const devices: SavedDevice[] = [];
    const rids = new Set<number>();
    const directIds = new Set<bigint>();
    let emulated = 0;
    for (const vr of deviceRs) {
      const rid = vr.int("rid", 0, MAX_LOGICAL_DEVICE_ID);
      vr.check(!rids.has(rid), "rid", `is 0x${rid.toString(16)}, a device saved twice`);
      rids.add(rid);
      const domain = vr.int("domain", 0, HV_DEVICE_DOMAIN_ID_NULL);
      vr.check(domain === HV_DEVICE_DOMAIN_ID_DEFAULT || domain === HV_DEVICE_DOMAIN_ID_NULL || ids.has(domain), "domain", `is ${domain}, a domain the state does not have`);
      let direct: bigint | undefined;
      if (vr.has("direct")) {
        direct = vr.u64("direct");
        vr.check(!directIds.has(direct), "direct", `is 0x${direct.toString(16)}, a logical id given to two devices`);
        vr.check(domain === HV_DEVICE_DOMAIN_ID_NULL, "domain", `is ${domain}: a device given to the partition is in no device domain (${HV_DEVICE_DOMAIN_ID_NULL})`);
        directIds.add(direct);
      }
      if (p.devices.get(rid)?.passthrough === undefined) {
        emulated++;
        vr.check(emulated <= MAX_EMULATED_DEVICES, "rid", `is 0x${rid.toString(16)}, emulated device ${emulated} of at most ${MAX_EMULATED_DEVICES}`);
      }
      devices.push({ rid, domain, direct });
    }
    const irqRs = r.array("interrupts", { max: MAX_INTERRUPT_ENTRIES });
    const interrupts: SavedInterrupt[] = [];
    const slots = new Set<number>();
    for (const ir of irqRs) {
      const slot = ir.index("slot", INTERRUPT_SLOTS);
      ir.check(!slots.has(slot), "slot", `is ${slot}, an entry saved twice`);
      slots.add(slot);
      const rid = ir.int("rid", 0, MAX_LOGICAL_DEVICE_ID);
      const vector = ir.int("vector", 0x10, 0xff);
      const vps = ir.ints("vps", 0, p.vm.vcpus - 1, { max: p.vm.vcpus });
      ir.check(vps.length > 0, "vps", "is empty");
      ir.check(vps.every((vp, i) => i === 0 || vp > vps[i - 1]!), "vps", "is not strictly ascending");
      interrupts.push({ slot, rid, target: { vector, vps, multicast: ir.bool("multicast"), level: ir.bool("level") } });
    }
    return { domains, devices, interrupts };
  });
}

/**
 * Restores a saved partition into a fresh one (no domains, no interrupt entries, its passthrough devices in the
 * default domain). The whole state is checked first (EINVAL naming the field, nothing touched); then domains,
 * their pages and settings, device placements and interrupt entries are applied. The only refusals left are the
 * host's (out of memory or ids), after which the partition is returned to the fresh state it was in. EBUSY
 * when not fresh.
 */
export function restorePartition(p: HypervPartition, value: StateValue): Result<void> {
  if (!p.isFresh()) return err("EBUSY", "restore needs a fresh partition");
  const parsed = parsePartition(p, value);
  if (!parsed.ok) return parsed;
  const failure = p.applySaved(parsed.value);
  return failure === undefined ? ok() : err(failure.errno, `the host refused the restored state: ${failure.message}`);
}
