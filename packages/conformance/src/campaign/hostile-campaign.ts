import {
  decodeState,
  encodeState,
  NO_PASID,
  peekState,
  newWalkResult,
  Perm,
  SeededRng,
  Testbed,
  type GuestQueueView,
  type Rng,
  type StateValue,
  type TestbedOptions,
  type TestVm,
  type TranslationMode,
  type VendorPlugin,
  type WalkResult,
} from "@viommu/core";

/**
 * A two-VM hostile campaign: VM A's guest does anything its hardware lets it do — register writes at valid
 * and random offsets (direct-mapped queue pages included), raw queue entries with the producer advanced,
 * writes aimed at its own driver's tables, DMA to any address, MSIs, hypercalls, emulated-device DMA, hot
 * unplug and renumbering, and saved states mutated on their way to a restore — while VM B holds mapped pages
 * and a pattern. After every step: no exception escaped, no step ran away, no access left its VM, VM B's
 * translations are unchanged and VM A's never reach a page it does not own; every few steps VM B's memory is
 * compared whole. A step is one case; a failure stops the run and names the seed and the step to replay.
 */

export interface CampaignOptions {
  readonly plugin: VendorPlugin;
  /** Other plugins the vendor needs (its parent, for an extension). */
  readonly plugins?: readonly VendorPlugin[];
  readonly seed: number;
  /** Hostile steps to run (each one a case). */
  readonly steps: number;
  readonly mode?: TranslationMode;
  /** Steps between fresh testbeds (a new pair of VMs), so that the run explores many starting states. */
  readonly epoch?: number;
  /** Steps between whole-memory comparisons of VM B. */
  readonly digestEvery?: number;
  /** A step slower than this (ms, wall clock) is reported as a hang. */
  readonly hangMs?: number;
  readonly onProgress?: (done: number) => void;
}

export interface CampaignFailure {
  readonly step: number;
  readonly kind: string;
  readonly what: string;
  readonly detail: string;
}

export interface CampaignReport {
  readonly vendor: string;
  readonly mode: TranslationMode;
  readonly seed: number;
  readonly steps: number;
  readonly byKind: Readonly<Record<string, number>>;
  /** Restores of a mutated stream that were refused / accepted (accepted ones must leave the device working). */
  readonly restoresRefused: number;
  readonly restoresAccepted: number;
  readonly epochs: number;
  readonly failure?: CampaignFailure;
  readonly ms: number;
}

const PAGE = 4096;
/** VM B's mapped pages, and where its pattern lives. */
const B_IOVA = 0x10_0000;
const B_GPA = 0x2000_0000;
const B_PAGES = 4;

class CampaignStop extends Error {
  constructor(
    readonly kind: string,
    readonly detail: string,
  ) {
    super(detail);
  }
}

/** One hostile step: what it does, described for the report. */
interface Step {
  readonly kind: string;
  readonly what: string;
  run(): void;
}

interface World {
  readonly bed: Testbed;
  readonly a: TestVm;
  readonly b: TestVm;
  /** VM B's translations of its probe IOVAs when the epoch began. */
  readonly bProbes: string[];
  bDigest: string;
  /** What VM B's device reads at its first IOVA. */
  readonly bPattern: Uint8Array;
  /** Domains VM A's driver created. */
  readonly domainsA: number[];
  /** A good save of VM A's first IOMMU, for restore mutations. */
  goodState: Uint8Array | undefined;
}

export function runHostileCampaign(options: CampaignOptions): CampaignReport {
  const started = Date.now();
  const mode = options.mode ?? "nested";
  const rng = new SeededRng(options.seed);
  const epoch = options.epoch ?? 500;
  const digestEvery = options.digestEvery ?? 50;
  const hangMs = options.hangMs ?? 2000;
  const byKind: Record<string, number> = {};
  let refused = 0;
  let accepted = 0;
  let epochs = 0;
  let world: World | undefined;
  let failure: CampaignFailure | undefined;
  let done = 0;
  const walk = newWalkResult();

  const fresh = (): World => {
    epochs++;
    const bedOptions: TestbedOptions = {
      plugin: options.plugin,
      plugins: options.plugins,
      seed: options.seed + epochs,
      mode,
      dmaEntryLimit: 256,
      vms: [
        { devices: [{ rid: 0x100, guestRid: 0x10 }, { rid: 0x101, guestRid: 0x11 }], memoryBytes: 2 ** 30, vcpus: 4 },
        { devices: [{ rid: 0x200, guestRid: 0x10 }], memoryBytes: 2 ** 30, vcpus: 4 },
      ],
    };
    const made = Testbed.create(bedOptions);
    if (!made.ok) throw new CampaignStop("setup", `testbed: ${made.error.errno} ${made.error.message}`);
    const bed = made.value;
    const [a, b] = [bed.vms[0]!, bed.vms[1]!];
    const translating = mode !== "ir-only";
    if (translating) {
      const db = must(b.drivers[0]!.createDomain(), "VM B createDomain");
      must(b.drivers[0]!.attach(0x10, db), "VM B attach");
      must(b.drivers[0]!.map(db, B_IOVA, B_GPA, B_PAGES * PAGE, Perm.ReadWrite), "VM B map");
    }
    b.vm.memory.writeBytes(B_GPA, pattern(B_PAGES * PAGE, options.seed));
    const domainsA: number[] = [];
    if (translating) {
      const da = must(a.drivers[0]!.createDomain(), "VM A createDomain");
      must(a.drivers[0]!.attach(0x10, da), "VM A attach");
      must(a.drivers[0]!.map(da, B_IOVA, B_GPA, B_PAGES * PAGE, Perm.ReadWrite), "VM A map");
      domainsA.push(da);
    }
    const w: World = { bed, a, b, bProbes: [], bDigest: "", bPattern: pattern(B_PAGES * PAGE, options.seed).subarray(0, PAGE), domainsA, goodState: undefined };
    w.bProbes.push(...probeB(w, walk));
    w.bDigest = digest(b);
    w.goodState = a.iommus[0]?.save?.();
    return w;
  };

  const finish = (w: World): void => {
    const left = w.bed.dispose();
    if (left.length > 0) throw new CampaignStop("teardown", `objects left after teardown: ${JSON.stringify(left)}`);
  };

  try {
    while (done < options.steps) {
      if (world === undefined || done % epoch === 0) {
        if (world !== undefined) finish(world);
        world = fresh();
      }
      const w = world;
      const step = nextStep(w, rng, mode, { onRestore: (ok) => (ok ? accepted++ : refused++) });
      byKind[step.kind] = (byKind[step.kind] ?? 0) + 1;
      const t0 = Date.now();
      try {
        step.run();
      } catch (e) {
        throw new CampaignStop(step.kind, `${step.what}: exception ${e instanceof Error ? `${e.message}\n${e.stack ?? ""}` : String(e)}`);
      }
      const ms = Date.now() - t0;
      if (ms > hangMs) throw new CampaignStop(step.kind, `${step.what}: took ${ms} ms`);
      check(w, step, walk, done % digestEvery === digestEvery - 1);
      done++;
      if (done % 1000 === 0) options.onProgress?.(done);
    }
    if (world !== undefined) finish(world);
  } catch (e) {
    if (!(e instanceof CampaignStop)) throw e;
    failure = { step: done, kind: e.kind, what: e.kind, detail: e.detail };
  }
  return { vendor: options.plugin.id, mode, seed: options.seed, steps: done, byKind, restoresRefused: refused, restoresAccepted: accepted, epochs, failure, ms: Date.now() - started };
}

function must<T>(r: { ok: true; value: T } | { ok: false; error: { errno: string; message: string } }, what: string): T {
  if (!r.ok) throw new CampaignStop("setup", `${what}: ${r.error.errno} ${r.error.message}`);
  return r.value;
}

function pattern(length: number, seed: number): Uint8Array {
  const out = new Uint8Array(length);
  let x = (seed >>> 0) || 1;
  for (let i = 0; i < length; i++) {
    x ^= x << 13;
    x ^= x >>> 17;
    x ^= x << 5;
    out[i] = x & 0xff;
  }
  return out;
}

function digest(v: TestVm): string {
  const mem = v.vm.memory;
  let h = 0x811c9dc5;
  for (const page of mem.writtenPages()) {
    const bytes = mem.readBytes(page, PAGE);
    h = Math.imul(h ^ (page / PAGE), 0x01000193) >>> 0;
    for (let i = 0; i < bytes.length; i += 4) h = Math.imul(h ^ (bytes[i]! | (bytes[i + 1]! << 8) | (bytes[i + 2]! << 16) | (bytes[i + 3]! << 24)), 0x01000193) >>> 0;
  }
  return h.toString(16);
}

function probeB(w: World, out: WalkResult): string[] {
  const dev = w.b.devices[0]!.device;
  return [B_IOVA, B_IOVA + PAGE + 0x10, B_IOVA + B_PAGES * PAGE, 0x4000_0000].map((iova) => {
    const r = dev.translate(iova, false, NO_PASID, out);
    return r.ok ? `${r.output}/${r.perms}` : `fault`;
  });
}

/** The invariants after a step. */
function check(w: World, step: Step, walk: WalkResult, whole: boolean): void {
  const host = w.bed.platform.host.memory;
  if (host.violations.length > 0) throw new CampaignStop(step.kind, `${step.what}: isolation violation ${JSON.stringify(host.violations[0])}`);
  const probes = probeB(w, walk);
  if (probes.join() !== w.bProbes.join()) throw new CampaignStop(step.kind, `${step.what}: VM B's translations changed: ${w.bProbes.join()} → ${probes.join()}`);
  // VM A's devices never translate to a page VM A does not own.
  for (const d of w.a.devices) {
    for (const iova of [B_IOVA, 0, 0x4000_0000]) {
      const r = d.device.translate(iova, false, NO_PASID, walk);
      if (r.ok && host.ownerOf(r.output) !== w.a.vm.id) throw new CampaignStop(step.kind, `${step.what}: VM A's device translates 0x${iova.toString(16)} to 0x${r.output.toString(16)}, owned by ${String(host.ownerOf(r.output))}`);
    }
  }
  if (whole) {
    const now = digest(w.b);
    if (now !== w.bDigest) throw new CampaignStop(step.kind, `${step.what}: VM B's memory changed`);
    if (w.b.devices[0]!.device.translate(B_IOVA, false, NO_PASID, walk).ok) {
      const r = w.b.devices[0]!.device.read(B_IOVA, PAGE);
      if (!r.ok || !equal(r.data, w.bPattern)) throw new CampaignStop(step.kind, `${step.what}: VM B's own DMA no longer reads its data`);
    }
  }
}

function equal(a: Uint8Array, b: Uint8Array): boolean {
  return a.length === b.length && a.every((x, i) => x === b[i]);
}

// ---- the steps ----

interface StepHooks {
  onRestore(accepted: boolean): void;
}

const KINDS: readonly [string, number][] = [
  ["mmio-write", 20],
  ["mmio-read", 4],
  ["queue-raw", 14],
  ["table-write", 14],
  ["dma", 14],
  ["driver", 12],
  ["msi", 4],
  ["emulated", 4],
  ["hypercall", 6],
  ["poll", 4],
  ["restore", 1],
  ["hotplug", 1],
];
const TOTAL_WEIGHT = KINDS.reduce((n, [, w]) => n + w, 0);

function pick(rng: Rng): string {
  let x = rng.nextInt(TOTAL_WEIGHT);
  for (const [kind, weight] of KINDS) {
    if (x < weight) return kind;
    x -= weight;
  }
  return "poll";
}

function u64(rng: Rng): bigint {
  return (BigInt(rng.nextU32()) << 32n) | BigInt(rng.nextU32());
}

/** A 64-bit value a hostile guest would try: random, all ones, a plausible pointer into its RAM, one just outside. */
function hostileValue(rng: Rng, v: TestVm, current: bigint): bigint {
  const mem = v.vm.memory;
  switch (rng.nextInt(7)) {
    case 0:
      return u64(rng);
    case 1:
      return (1n << 64n) - 1n;
    case 2:
      return BigInt(mem.base + rng.nextInt(mem.sizeBytes / PAGE) * PAGE) | BigInt(rng.nextInt(0x1000));
    case 3:
      return BigInt(mem.end + rng.nextInt(64) * PAGE) | 1n;
    case 4:
      return current ^ (1n << BigInt(rng.nextInt(64)));
    case 5:
      return current ^ BigInt(rng.nextU32());
    default:
      return BigInt(rng.nextInt(256));
  }
}

function nextStep(w: World, rng: Rng, mode: TranslationMode, hooks: StepHooks): Step {
  const a = w.a;
  const kind = pick(rng);
  switch (kind) {
    case "mmio-write": {
      const regions = a.vm.mmioRegions();
      if (regions.length === 0) return pollStep(w);
      const region = regions[rng.nextInt(regions.length)]!;
      const size: 4 | 8 = rng.nextInt(2) === 0 ? 4 : 8;
      const aligned = rng.nextInt(4) !== 0;
      const offset = aligned ? rng.nextInt(Math.max(1, Math.floor(region.size / size))) * size : rng.nextInt(region.size + 64);
      const address = region.base + offset;
      const current = a.vm.mmioRead(address, size);
      const value = hostileValue(rng, a, current) & (size === 4 ? 0xffff_ffffn : (1n << 64n) - 1n);
      return { kind, what: `MMIO write ${region.name}+0x${offset.toString(16)}/${size} = 0x${value.toString(16)}`, run: () => a.vm.mmioWrite(address, size, value) };
    }
    case "mmio-read": {
      const regions = a.vm.mmioRegions();
      if (regions.length === 0) return pollStep(w);
      const region = regions[rng.nextInt(regions.length)]!;
      const offset = rng.nextInt(region.size + 64);
      const size: 4 | 8 = rng.nextInt(2) === 0 ? 4 : 8;
      return { kind, what: `MMIO read ${region.name}+0x${offset.toString(16)}/${size}`, run: () => void a.vm.mmioRead(region.base + offset, size) };
    }
    case "queue-raw": {
      const queues = a.iommus.flatMap((i) => i.guestQueues()).filter((q) => q.producedBy === "guest" && q.base() !== undefined && q.entries() > 0);
      if (queues.length === 0) return tableStep(w, rng, "queue-raw");
      const q = queues[rng.nextInt(queues.length)]!;
      const count = 1 + rng.nextInt(4);
      const seeds = Array.from({ length: count }, () => rng.nextU32());
      const mutate = rng.nextInt(2) === 0;
      return { kind, what: `${count} raw ${q.name} entries (${mutate ? "mutated" : "random"}, seeds ${seeds.join(",")})`, run: () => pushRaw(a, q, seeds, mutate) };
    }
    case "table-write":
      return tableStep(w, rng, kind);
    case "dma": {
      const dev = a.devices[rng.nextInt(a.devices.length)]!.device;
      const iova = hostileIova(rng);
      const length = [1, 4, 64, PAGE, 3 * PAGE][rng.nextInt(5)]!;
      const write = rng.nextInt(2) === 0;
      const pasid = rng.nextInt(8) === 0 ? rng.nextInt(1 << 20) : NO_PASID;
      return { kind, what: `DMA ${write ? "write" : "read"} 0x${iova.toString(16)}+${length} pasid ${pasid}`, run: () => void (write ? dev.write(iova, new Uint8Array(length).fill(0xa5), pasid) : dev.read(iova, length, pasid)) };
    }
    case "driver": {
      if (mode === "ir-only") return pollStep(w);
      const d = a.drivers[0]!;
      const domain = w.domainsA.length > 0 && rng.nextInt(6) !== 0 ? w.domainsA[rng.nextInt(w.domainsA.length)]! : rng.nextInt(64);
      const iova = rng.nextInt(2 ** 20) * PAGE;
      const gpa = rng.nextInt(a.vm.memory.sizeBytes / PAGE) * PAGE;
      const pages = 1 + rng.nextInt(8);
      const op = rng.nextInt(6);
      const perms = 1 + rng.nextInt(3);
      const rid = [0x10, 0x11, 0x0, 0xffff][rng.nextInt(4)]!;
      const what = ["map", "unmap", "flush", "attach", "detach", "createDomain"][op]!;
      return {
        kind,
        what: `driver ${what} domain ${domain} iova 0x${iova.toString(16)} gpa 0x${gpa.toString(16)} pages ${pages} rid 0x${rid.toString(16)}`,
        run: () => {
          if (op === 0) d.map(domain, iova, gpa, pages * PAGE, perms);
          else if (op === 1) d.unmap(domain, iova, pages * PAGE);
          else if (op === 2) d.flush(domain, rng.nextInt(2) === 0 ? undefined : iova, pages * PAGE);
          else if (op === 3) d.attach(rid, domain);
          else if (op === 4) d.detach(rid);
          else {
            const r = d.createDomain();
            if (r.ok && w.domainsA.length < 16) w.domainsA.push(r.value);
          }
        },
      };
    }
    case "msi": {
      const dev = a.devices[rng.nextInt(a.devices.length)]!.device;
      const msi = { address: [0xfee0_0000 + rng.nextInt(0x10_0000), rng.nextU32(), 0x0800_0040 + rng.nextInt(0x1000)][rng.nextInt(3)]!, data: rng.nextU32() };
      return { kind, what: `MSI 0x${msi.address.toString(16)}/0x${msi.data.toString(16)}`, run: () => void dev.signalMsi(msi) };
    }
    case "emulated": {
      const iommu = a.iommus[rng.nextInt(a.iommus.length)]!;
      const rid = rng.nextInt(0x10000);
      const iova = hostileIova(rng);
      const out = newWalkResult();
      return { kind, what: `emulated DMA rid 0x${rid.toString(16)} iova 0x${iova.toString(16)}`, run: () => iommu.translateEmulated(rid, rng.nextInt(4) === 0 ? rng.nextInt(1 << 20) : NO_PASID, iova, rng.nextInt(2) === 0, out) };
    }
    case "hypercall": {
      const mem = a.vm.memory;
      const input = mem.base + rng.nextInt(mem.sizeBytes / PAGE) * PAGE;
      const output = rng.nextInt(8) === 0 ? mem.end + PAGE : mem.base + rng.nextInt(mem.sizeBytes / PAGE) * PAGE;
      const code = [u64(rng), BigInt(rng.nextInt(0x100)) | (BigInt(rng.nextInt(0x1000)) << 32n), BigInt(0x90 + rng.nextInt(0x20)) | (BigInt(rng.nextInt(4)) << 32n)][rng.nextInt(3)]!;
      const words = Array.from({ length: 64 }, () => rng.nextU32());
      return {
        kind,
        what: `hypercall 0x${code.toString(16)} in 0x${input.toString(16)} out 0x${output.toString(16)}`,
        run: () => {
          if (mem.contains(input, 256)) mem.writeWords(input, Uint32Array.from(words));
          a.vm.hypercall(code, input, output);
        },
      };
    }
    case "restore":
      return restoreStep(w, rng, hooks);
    case "hotplug":
      return hotplugStep(w, rng);
    default:
      return pollStep(w);
  }
}

function hostileIova(rng: Rng): number {
  switch (rng.nextInt(6)) {
    case 0:
      return B_IOVA + rng.nextInt(B_PAGES * PAGE);
    case 1:
      return rng.nextInt(2 ** 20) * PAGE + rng.nextInt(PAGE);
    case 2:
      return 2 ** 48 - PAGE + rng.nextInt(PAGE);
    case 3:
      return 2 ** 53 + rng.nextInt(2 ** 20) * PAGE;
    case 4:
      return rng.nextInt(2 ** 32);
    default:
      return 2 ** (39 + rng.nextInt(25));
  }
}

function pollStep(w: World): Step {
  return {
    kind: "poll",
    what: "VMM event loop and guest event reads",
    run: () => {
      w.bed.poll();
      for (const d of w.a.drivers) d.readEvents();
      for (const d of w.a.drivers) d.takeOverflow?.();
    },
  };
}

/** A 64-bit write into one of VM A's driver structures (tables, device tables, queues, logs). */
function tableStep(w: World, rng: Rng, kind: string): Step {
  const a = w.a;
  const runs = a.pages.allocations();
  if (runs.length === 0) return pollStep(w);
  const run = runs[rng.nextInt(runs.length)]!;
  const address = run.start + rng.nextInt((run.pages * PAGE) / 8) * 8;
  const current = a.vm.memory.read64(address);
  const value = hostileValue(rng, a, current);
  return { kind, what: `write 0x${value.toString(16)} at driver page 0x${address.toString(16)}`, run: () => a.vm.memory.write64(address, value) };
}

/** Writes raw entries at the producer of a guest queue and advances it, knowing only the queue's view. */
function pushRaw(v: TestVm, q: GuestQueueView, seeds: number[], mutate: boolean): void {
  const base = q.base();
  const entries = q.entries();
  if (base === undefined || entries === 0) return;
  const current = v.vm.mmioRead(q.producer.address, q.producer.size);
  let position = q.producer.decode(current);
  const words = q.entryBytes / 4;
  for (const seed of seeds) {
    const local = new SeededRng(seed);
    const at = base + (position.index % entries) * q.entryBytes;
    if (!v.vm.memory.contains(at, q.entryBytes)) return;
    const entry = new Uint32Array(words);
    if (mutate) {
      // A copy of an entry already in the ring (a well-formed command) with a few bits flipped.
      const from = base + local.nextInt(entries) * q.entryBytes;
      v.vm.memory.readWords(from, entry);
      for (let i = 0; i < 1 + local.nextInt(3); i++) entry[local.nextInt(words)]! ^= 1 << local.nextInt(32);
    } else for (let i = 0; i < words; i++) entry[i] = local.nextU32();
    v.vm.memory.writeWords(at, entry);
    const next = (position.index + 1) % entries;
    position = { index: next, wrap: next === 0 ? !position.wrap : position.wrap };
  }
  v.vm.mmioWrite(q.producer.address, q.producer.size, q.producer.encode(position, v.vm.mmioRead(q.producer.address, q.producer.size)));
}

/** A saved state of VM A's first IOMMU, mutated (fields or raw bytes) and restored into a fresh device. */
function restoreStep(w: World, rng: Rng, hooks: StepHooks): Step {
  const a = w.a;
  const iommu = a.iommus[0];
  if (iommu?.save === undefined || iommu.restore === undefined || w.goodState === undefined) return pollStep(w);
  const good = w.goodState;
  const how = rng.nextInt(3);
  const seed = rng.nextU32();
  return {
    kind: "restore",
    what: `restore of a ${["field-mutated", "byte-mutated", "truncated"][how]} state (seed ${seed})`,
    run: () => {
      const local = new SeededRng(seed);
      let blob: Uint8Array;
      if (how === 0) {
        const header = peekState(good);
        const value = header === undefined ? undefined : decodeState(good, header.kind, [header.version]);
        if (header === undefined || value === undefined || !value.ok) return;
        blob = encodeState(header.kind, header.version, mutateState(value.value.value, local));
      } else if (how === 1) {
        blob = good.slice();
        for (let i = 0; i < 1 + local.nextInt(4); i++) blob[local.nextInt(blob.length)]! ^= 1 << local.nextInt(8);
      } else blob = good.subarray(0, local.nextInt(good.length));
      // The device goes; a fresh one from the same options takes the stream (a migration destination).
      iommu.destroy();
      const made = w.bed.plugin.createDevice(iommu.options);
      if (!made.ok) throw new Error(`re-creating the device failed: ${made.error.errno} ${made.error.message}`);
      const device = made.value;
      a.iommus[0] = device;
      for (const d of a.devices.filter((x) => x.instance === 0)) {
        const r = device.assignDevice(d.device, d.devId, d.guestRid);
        if (!r.ok) throw new Error(`re-assigning 0x${d.guestRid.toString(16)} failed: ${r.error.errno} ${r.error.message}`);
      }
      const r = device.restore!(blob);
      hooks.onRestore(r.ok);
      // A stream whose bytes were damaged (not re-encoded) fails its checksum or length: it is never accepted.
      const damaged = how !== 0 && !(blob.length === good.length && blob.every((b, i) => b === good[i]));
      if (r.ok && damaged) throw new Error(`a ${how === 1 ? "byte-mutated" : "truncated"} state stream was accepted`);
      if (!r.ok) {
        const back = device.restore!(good);
        if (!back.ok) throw new Error(`the good state no longer restores: ${back.error.message}`);
      }
      a.drivers[0]!.readEvents();
    },
  };
}

function mutateState(value: StateValue, rng: Rng): StateValue {
  const copy = JSON.parse(JSON.stringify(value)) as StateValue;
  const leaves: { parent: StateValue[] | Record<string, StateValue>; key: string | number }[] = [];
  const visit = (v: StateValue): void => {
    if (Array.isArray(v)) v.forEach((x, i) => (typeof x === "object" && x !== null ? visit(x) : leaves.push({ parent: v, key: i })));
    else if (typeof v === "object" && v !== null) for (const [k, x] of Object.entries(v)) typeof x === "object" && x !== null ? visit(x) : leaves.push({ parent: v, key: k });
  };
  visit(copy);
  if (leaves.length === 0) return copy;
  const target = leaves[rng.nextInt(leaves.length)]!;
  const hostile: StateValue[] = [-1, 2 ** 53, 2 ** 32, 0xffff_ffff, 1.5, "0xffffffffffffffff", "x", null, true, [], {}, rng.nextU32()];
  (target.parent as Record<string | number, StateValue>)[target.key] = hostile[rng.nextInt(hostile.length)]!;
  return copy;
}

/** Hot-unplug and re-plug, or renumbering, of one of VM A's devices. */
function hotplugStep(w: World, rng: Rng): Step {
  const a = w.a;
  const iommu = a.iommus[0]!;
  const d = a.devices[rng.nextInt(a.devices.length)]!;
  if (rng.nextInt(2) === 0) {
    return {
      kind: "hotplug",
      what: `unplug and re-plug guest RID 0x${d.guestRid.toString(16)}`,
      run: () => {
        const off = iommu.unassignDevice(d.guestRid);
        if (!off.ok) return;
        const on = iommu.assignDevice(d.device, d.devId, d.guestRid);
        if (!on.ok) throw new Error(`re-plug failed: ${on.error.errno} ${on.error.message}`);
      },
    };
  }
  const to = 0x40 + rng.nextInt(0x40);
  return {
    kind: "hotplug",
    what: `renumber 0x${d.guestRid.toString(16)} → 0x${to.toString(16)} and back`,
    run: () => {
      const moved = iommu.renumberDevice(d.guestRid, to);
      if (!moved.ok) return;
      const back = iommu.renumberDevice(to, d.guestRid);
      if (!back.ok) throw new Error(`renumbering back failed: ${back.error.errno} ${back.error.message}`);
    },
  };
}
