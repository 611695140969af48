import { inRam, type ReplayTarget, type TargetResult, type TraceHeader, type TraceOp } from "@viommu/trace";
import { EduEngine } from "./machines/edu-engine.js";
import type { QemuMachine } from "./machines/qemu-machine.js";
import { QemuProcess, QemuStartError, findOnPath, qemuVersion } from "./qtest/qemu-process.js";

/** Guest RAM sizes QEMU is started with: at least what the trace uses, at most what keeps RAM below the PCI hole. */
const MAX_RAM_BYTES = 2 ** 31;

/** PCI command register bits: memory space and bus master. */
const PCI_COMMAND = 0x04;
const PCI_COMMAND_MEMORY_MASTER = 0x6n;
const PCI_BAR0 = 0x10;
const PCI_CAP_POINTER = 0x34;
const PCI_CAP_ID_MSI = 0x05;

export interface QemuTargetOptions {
  /** The system emulator (a path or a name on PATH); default the machine's on PATH. */
  readonly binary?: string;
  readonly startTimeoutMs?: number;
  /** More QEMU options (`-trace 'amdvi_*'` to watch the IOMMU's own trace points on stderr). */
  readonly extraArgs?: readonly string[];
  /** Open QMP too, so `reset` can run another trace on the same QEMU. */
  readonly reusable?: boolean;
}

export type QemuTargetResult = { readonly ok: true; readonly target: QemuTarget } | { readonly ok: false; readonly error: string };

const DONE: TargetResult = { status: "done" };

/**
 * QEMU as a replay target: the machine with its emulated IOMMU and an edu at each of the trace's requester ids,
 * driven over qtest. Guest memory, registers and PCI configuration go straight through; device DMA is edu's (see
 * EduEngine: its reads are not visible until a later write puts them in memory, so DMA answers are unobservable
 * and their effects are compared where the trace reads memory and registers); vCPU interrupts are not visible
 * over qtest. Operations are issued in trace order and pipelined; an edu transfer waits for what precedes it.
 */
export class QemuTarget implements ReplayTarget {
  readonly name: string;
  readonly iommuBases: readonly number[];
  private issued: Promise<unknown> = Promise.resolve();
  private dead: string | undefined;
  private engines: ReadonlyMap<number, EduEngine> = new Map();
  /** The trace being replayed now (its RAM and devices). */
  private header: TraceHeader;
  /** How long one operation may take (QEMU answers in well under a millisecond; edu's DMA in a few). */
  deadlineMs = 15_000;

  private constructor(
    readonly process: QemuProcess,
    readonly machine: QemuMachine,
    /** The machine QEMU was started as: every device any later trace may use. */
    private readonly started: TraceHeader,
    version: string,
  ) {
    this.name = `${version} ${machine.deviceName}`;
    this.iommuBases = started.machine.iommus.map(() => machine.iommuBase);
    this.header = started;
  }

  /** Firmware's part: each edu of `header` gets its BAR0 and memory space and bus mastering. */
  private async setUpDevices(header: TraceHeader): Promise<string | undefined> {
    const q = this.process.qtest;
    const engines = new Map<number, EduEngine>();
    for (const d of header.machine.devices) {
      const index = this.started.machine.devices.findIndex((x) => x.rid === d.rid);
      const id = await this.machine.pci.read(q, d.rid, 0, 4);
      if (index < 0 || id !== 0x11e8_1234n) return `no edu at 0x${d.rid.toString(16)} (PCI id 0x${id.toString(16)})`;
      const bar = this.machine.barAddress(index);
      await this.machine.pci.write(q, d.rid, PCI_BAR0, 4, BigInt(bar));
      await this.machine.pci.write(q, d.rid, PCI_COMMAND, 2, PCI_COMMAND_MEMORY_MASTER);
      engines.set(d.rid, new EduEngine(q, d.rid, bar));
    }
    this.engines = engines;
    this.header = header;
    return undefined;
  }

  /**
   * Makes QEMU ready for another trace without starting it again (needs `reusable`): a system reset (the IOMMU,
   * the edus and the CPU back to their reset state), guest RAM zeroed, the devices of `header` set up. `header`
   * must use the RAM and a subset of the devices QEMU was started with.
   */
  async reset(header: TraceHeader): Promise<string | undefined> {
    const qmp = this.process.qmp;
    if (qmp === undefined) return "QEMU was not started reusable";
    if (this.dead !== undefined) return this.dead;
    const ram = this.started.machine.ram[0]!;
    const same = header.machine.ram.length === 1 && header.machine.ram[0]!.base === ram.base && header.machine.ram[0]!.size <= ram.size;
    if (!same || header.machine.devices.some((d) => !this.started.machine.devices.some((x) => x.rid === d.rid))) return "the trace's machine is not the one QEMU was started as";
    try {
      await this.issued;
      const done = qmp.nextEvent("RESET");
      await qmp.execute("system_reset");
      await done;
      const chunk = 16 * 2 ** 20;
      const zeroes: Promise<void>[] = [];
      for (let at = 0; at < ram.size; at += chunk) zeroes.push(this.process.qtest.memset(ram.base + at, Math.min(chunk, ram.size - at), 0));
      await Promise.all(zeroes);
      for (const w of this.machine.completeReset ?? []) await this.process.qtest.writeq(this.machine.iommuBase + w.offset, w.value);
      return await this.setUpDevices(header);
    } catch (e) {
      return (await this.broken(e)).status === "failed" ? this.dead : undefined;
    }
  }

  /**
   * Checks that `header` describes a machine QEMU can be, returning why not (one IOMMU of this vendor, RAM where
   * the machine has it, devices at free slots of bus 0, function 0).
   */
  static compatibility(machine: QemuMachine, header: TraceHeader): string | undefined {
    const m = header.machine;
    if (m.iommus.length !== 1 || m.iommus[0]!.vendor !== machine.vendor) return `QEMU's ${machine.deviceName} machine has one ${machine.vendor} IOMMU; the trace has ${m.iommus.map((b) => b.vendor).join(", ") || "none"}`;
    if (m.ram.length !== 1 || m.ram[0]!.base !== machine.ramBase) return `the trace's RAM must be one range at 0x${machine.ramBase.toString(16)} on this machine`;
    if (m.ram[0]!.size > MAX_RAM_BYTES) return `the trace's RAM (${m.ram[0]!.size} bytes) is larger than ${MAX_RAM_BYTES}`;
    for (const d of m.devices) {
      const slot = (d.rid >>> 3) & 0x1f;
      if (d.rid >>> 8 !== 0 || (d.rid & 7) !== 0) return `device 0x${d.rid.toString(16)}: edu devices sit on bus 0 at function 0`;
      if (machine.reservedSlots.includes(slot)) return `device 0x${d.rid.toString(16)}: slot ${slot} is taken on this machine`;
      if ((d.pasidBits ?? 0) > 0) return `device 0x${d.rid.toString(16)}: edu has no PASID support`;
    }
    return undefined;
  }

  /** Starts QEMU for `header` and sets the edu devices up as firmware would (BAR0, memory space, bus master). */
  static async start(machine: QemuMachine, header: TraceHeader, options: QemuTargetOptions = {}): Promise<QemuTargetResult> {
    const incompatible = QemuTarget.compatibility(machine, header);
    if (incompatible !== undefined) return { ok: false, error: incompatible };
    const binary = findOnPath(options.binary ?? machine.binary);
    if (binary === undefined) return { ok: false, error: `${options.binary ?? machine.binary} is not on PATH (Debian packages qemu-system-x86 and qemu-system-arm)` };
    const version = qemuVersion(binary) ?? binary;
    const ram = Math.max(header.machine.ram[0]!.size, 128 * 2 ** 20);
    const slots = header.machine.devices.map((d) => (d.rid >>> 3) & 0x1f);
    let process: QemuProcess;
    try {
      process = await QemuProcess.start({ binary, args: [...machine.args(ram, slots), ...(options.extraArgs ?? [])], firmware: machine.firmware(), startTimeoutMs: options.startTimeoutMs, qmp: options.reusable });
    } catch (e) {
      if (e instanceof QemuStartError) return { ok: false, error: e.message };
      throw e;
    }
    const target = new QemuTarget(process, machine, header, version);
    try {
      const why = await target.setUpDevices(header);
      if (why !== undefined) {
        await process.stop();
        return { ok: false, error: why };
      }
      return { ok: true, target };
    } catch (e) {
      await process.stop();
      return { ok: false, error: `setting up QEMU's devices failed: ${e instanceof Error ? e.message : String(e)}` };
    }
  }

  /** Chains `work` after everything issued before it; its own requests may then pipeline with what follows. */
  private after<T>(work: () => Promise<T>, barrier: boolean): Promise<T> {
    let started!: (v: unknown) => void;
    const sent = new Promise((r) => (started = r));
    const result = this.issued.then(async () => {
      if (!barrier) {
        const p = work();
        started(undefined);
        return p;
      }
      try {
        return await work();
      } finally {
        started(undefined);
      }
    });
    this.issued = sent;
    return result;
  }

  execute(op: TraceOp): Promise<TargetResult> {
    if (this.dead !== undefined) return Promise.resolve({ status: "failed", message: this.dead, fatal: true });
    const barrier = op.op === "dma" || op.op === "msi" || op.op === "advance" || op.op === "pci-read" || op.op === "pci-write";
    return this.after(() => this.withDeadline(this.run(op)), barrier).catch((e: unknown) => this.broken(e));
  }

  /**
   * QEMU must answer an operation within the deadline; one that does not (a device model looping on what the
   * guest programmed) is killed and the replay ends there: a hang is a finding, not a wait.
   */
  private async withDeadline<T>(work: Promise<T>): Promise<T> {
    let timer: NodeJS.Timeout | undefined;
    const deadline = new Promise<never>((_, reject) => {
      timer = setTimeout(() => {
        this.process.killNow();
        reject(new Error(`no answer within ${this.deadlineMs} ms: QEMU hung and was killed`));
      }, this.deadlineMs);
    });
    try {
      return await Promise.race([work, deadline]);
    } finally {
      clearTimeout(timer);
    }
  }

  /** QEMU stopped answering: every later operation fails with why (its exit and the end of its stderr, once it has gone). */
  private async broken(e: unknown): Promise<TargetResult> {
    if (this.dead === undefined) await Promise.race([this.process.exited, new Promise((r) => setTimeout(r, 2000))]);
    const exit = this.process.alive ? "" : " (QEMU exited)";
    const tail = this.process.stderr.trim().split("\n").slice(-3).join(" | ");
    this.dead ??= `QEMU stopped answering${exit}: ${e instanceof Error ? e.message : String(e)}${tail ? `; stderr: ${tail}` : ""}`;
    return { status: "failed", message: this.dead, fatal: true };
  }

  private inRam(addr: number, len: number): TargetResult | undefined {
    return inRam(this.header.machine, addr, len) ? undefined : { status: "failed", message: `[0x${addr.toString(16)}, +0x${len.toString(16)}) is outside the trace's RAM`, fatal: false };
  }

  private async run(op: TraceOp): Promise<TargetResult> {
    const q = this.process.qtest;
    switch (op.op) {
      case "mem-write":
        return this.inRam(op.addr, op.data.length) ?? (await q.write(op.addr, op.data), DONE);
      case "mem-fill":
        return this.inRam(op.addr, op.len) ?? (await q.memset(op.addr, op.len, op.byte), DONE);
      case "mem-read":
        return this.inRam(op.addr, op.len) ?? { status: "answered", answer: await q.read(op.addr, op.len) };
      case "mem-share":
        return { status: "unsupported", reason: "QEMU's machines here have no confidential-guest memory" };
      case "mmio-write":
        await q.writeSized(op.addr, op.size, op.value);
        return DONE;
      case "mmio-read":
        return { status: "answered", answer: await q.readSized(op.addr, op.size) };
      case "pci-write":
        await this.machine.pci.write(q, op.rid, op.offset, op.size, op.value);
        return DONE;
      case "pci-read":
        return { status: "answered", answer: await this.machine.pci.read(q, op.rid, op.offset, op.size) };
      case "dma": {
        const engine = this.engines.get(op.rid);
        if (engine === undefined) return { status: "failed", message: `no device at requester id 0x${op.rid.toString(16)}`, fatal: false };
        const r = await engine.run(op);
        if (r.status === "unsupported") return r;
        if (r.status === "failed") return { status: "failed", message: r.message, fatal: true };
        return { status: "unobservable", reason: "edu's DMA answers are seen only through memory and registers afterwards" };
      }
      case "msi":
        return this.msi(op.rid, op.address, op.data);
      case "interrupts":
        return { status: "unobservable", reason: "qtest cannot see which interrupts a vCPU's local APIC or GIC received" };
      case "advance":
        await new Promise((r) => setTimeout(r, Math.min(100, Math.ceil(op.ns / 1e6))));
        return DONE;
      case "hypercall":
        return { status: "unsupported", reason: "QEMU's IOMMUs here take no hypercalls" };
      case "mark":
        return DONE;
    }
  }

  /** The edu's MSI capability (edu registers one 64-bit MSI vector, msi_init in pci_edu_realize). */
  private async msiCapability(rid: number): Promise<number | undefined> {
    const q = this.process.qtest;
    let at = Number(await this.machine.pci.read(q, rid, PCI_CAP_POINTER, 1)) & 0xfc;
    for (let hops = 0; at !== 0 && hops < 48; hops++) {
      const header = Number(await this.machine.pci.read(q, rid, at, 2));
      if ((header & 0xff) === PCI_CAP_ID_MSI) return at;
      at = (header >>> 8) & 0xfc;
    }
    return undefined;
  }

  /**
   * The device signals an MSI: the edu's MSI capability gets the address and data and is enabled, then edu raises
   * and lowers its interrupt (registers 0x60 and 0x64), which with MSI enabled is one MSI write through the IOMMU.
   */
  private async msi(rid: number, address: number, data: number): Promise<TargetResult> {
    const engine = this.engines.get(rid);
    if (engine === undefined) return { status: "failed", message: `no device at requester id 0x${rid.toString(16)}`, fatal: false };
    if (data > 0xffff) return { status: "unsupported", reason: "a PCI MSI carries 16 bits of data" };
    const cap = await this.msiCapability(rid);
    if (cap === undefined) return { status: "failed", message: `edu at 0x${rid.toString(16)} has no MSI capability`, fatal: false };
    const q = this.process.qtest;
    const pci = this.machine.pci;
    await pci.write(q, rid, cap + 4, 4, BigInt(address >>> 0));
    await pci.write(q, rid, cap + 8, 4, BigInt(Math.floor(address / 2 ** 32)));
    await pci.write(q, rid, cap + 12, 2, BigInt(data));
    const control = await pci.read(q, rid, cap + 2, 2);
    await pci.write(q, rid, cap + 2, 2, control | 1n);
    await q.writel(engine.bar + 0x60, 1);
    await q.writel(engine.bar + 0x64, 1);
    return DONE;
  }

  async close(): Promise<void> {
    await this.process.stop();
  }
}
