import "reflect-metadata";
import { container as globalContainer, type DependencyContainer } from "tsyringe";
import { resolveAllTokens } from "../di/token.js";
import { err, ok, type Result } from "../errors/errno.js";
import { DisposableStore, toDisposable, type Disposable } from "../events/disposable.js";
import { EventBus } from "../events/event-bus.js";
import { VmidSpace } from "../ids/vmid-space.js";
import { GuestMemory } from "../memory/guest-memory.js";
import { HostMemory } from "../memory/host-memory.js";
import { ManualClock } from "../sim/clock.js";
import type { ExitCost } from "../sim/exit-cost.js";
import { SeededRng } from "../sim/rng.js";
import type { PhysicalIommu } from "../contract/iommu-unit.js";
import { VendorPlugin } from "../contract/plugin.js";
import type { CoreEvents } from "./core-events.js";
import { DmaDevice } from "./dma-device.js";
import { HostLog } from "./host-log.js";
import { HostServices } from "./host-services.js";
import { CurrentVm, VirtualMachine } from "./vm.js";

export interface PlatformOptions {
  readonly plugins: readonly VendorPlugin[];
  /** Seed of every random choice the models make (default 1). */
  readonly seed?: number;
  readonly hostMemoryBytes?: number;
  /** VMID space shared by the host's units (default 16-bit, 1..65535). */
  readonly vmidBits?: number;
}

export interface VmOptions {
  readonly name?: string;
  /** Guest RAM size (a VM may claim far more than it touches). Default 4 GiB. */
  readonly memoryBytes?: number;
  readonly memoryBase?: number;
  readonly vcpus?: number;
  readonly confidential?: boolean;
  readonly backingPageShift?: number;
  /** What the VM's exits cost (default `KVM_EXIT_COST`; `NO_EXIT_COST` for the model's time alone). */
  readonly exitCost?: ExitCost;
}

/**
 * One host: the root container with the host-wide services, the installed plugins registered against the
 * `VendorPlugin` contribution point, and a child container per VM. Disposing it disposes every VM container
 * (tsyringe does not).
 */
export class Platform implements Disposable {
  readonly container: DependencyContainer;
  readonly host: HostServices;
  readonly vms: VirtualMachine[] = [];
  private readonly store = new DisposableStore();
  private nextVmId = 1;
  private readonly unitsCreated = new Map<string, number>();

  constructor(options: PlatformOptions) {
    this.container = globalContainer.createChildContainer();
    this.store.add(toDisposable(() => void this.container.dispose()));
    const seed = options.seed ?? 1;
    const vmidBits = options.vmidBits ?? 16;
    const clock = new ManualClock();
    const events = new EventBus<CoreEvents>();
    this.host = {
      memory: new HostMemory({ sizeBytes: options.hostMemoryBytes }),
      clock,
      rng: new SeededRng(seed),
      events,
      log: new HostLog(clock, events),
      vmids: new VmidSpace("VMID", 1, 2 ** vmidBits - 1),
      units: [],
    };
    this.container.register(HostServices, { useValue: this.host });
    for (const plugin of options.plugins) plugin.register(this.container);
  }

  /** Installed plugins, as registered in the container. */
  plugins(): VendorPlugin[] {
    return resolveAllTokens(this.container, VendorPlugin);
  }

  plugin(id: string): VendorPlugin | undefined {
    return this.plugins().find((p) => p.id === id);
  }

  /** A physical IOMMU unit of the named vendor. ENOENT when the vendor is not installed. */
  createUnit(vendor: string): Result<PhysicalIommu> {
    const plugin = this.plugin(vendor);
    if (plugin === undefined) return err("ENOENT", `vendor ${vendor} is not installed (installed: ${this.plugins().map((p) => p.id).join(", ") || "none"})`);
    // Indexed per plugin: an extension's units report their parent's vendor, but are numbered as its own.
    const index = this.unitsCreated.get(vendor) ?? 0;
    this.unitsCreated.set(vendor, index + 1);
    const unit = plugin.createUnit(this.host, index);
    this.host.units.push(unit);
    this.host.events.emit("lifecycle", { kind: "created", object: "unit", id: unit.name });
    return ok(unit);
  }

  /** A physical device with requester id `rid` behind `unit`; `pri`: it can issue page requests (PCIe PRI). */
  createDevice(unit: PhysicalIommu, rid: number, name = `dev-${rid.toString(16)}`, pasidBits = 0, pri = false): DmaDevice {
    return new DmaDevice(name, rid, unit, this.host.memory, this.host.events, pasidBits, pri);
  }

  /** A VM with its own child container, memory and interrupt controllers. */
  createVm(options: VmOptions = {}): VirtualMachine {
    const id = this.nextVmId++;
    const memory = new GuestMemory(this.host.memory, id, {
      sizeBytes: options.memoryBytes ?? 4 * 2 ** 30,
      base: options.memoryBase,
      confidential: options.confidential,
      backingPageShift: options.backingPageShift,
    });
    const child = this.container.createChildContainer();
    const vm = new VirtualMachine(id, options.name ?? `vm${id}`, memory, options.vcpus ?? 4, child, options.exitCost);
    child.register(CurrentVm, { useValue: vm });
    this.store.add(toDisposable(() => void child.dispose()));
    this.vms.push(vm);
    this.host.events.emit("lifecycle", { kind: "created", object: "vm", id, vm: id });
    return vm;
  }

  dispose(): void {
    this.store.dispose();
  }
}
