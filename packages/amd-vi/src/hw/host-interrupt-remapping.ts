import { err, fail, HOST_OWNER, ok, type HostMemory, type InterruptResult, type MsiMessage, type OwnerId, type Result } from "@viommu/core";
import { EventCode, eventName } from "../format/event-log-entry.js";
import { GA_LOG_ENTRY_BYTES, GaLogType } from "../format/ga-log.js";
import { encodeIrte128Vapic, IRTE128_BYTES, linuxIrte128 } from "../format/irte128.js";
import { gaTagOwner, type VapicTarget } from "../format/vapic-posting.js";
import { IRTE32_BYTES, linuxIrte32 } from "../format/irte32.js";
import { classifyMsi, LINUX_INT_TAB_LEN, linuxMsiMessage, MsiAction, msiIrteIndex } from "../format/msi-remap.js";

interface HostIrt {
  readonly address: number;
  readonly used: boolean[];
}

const ENTRIES = 2 ** LINUX_INT_TAB_LEN;
/** The GA log: 512 entries of 8 bytes (Linux GA_LOG_SIZE, one 4 KiB page). */
const GA_LOG_ENTRIES = 512;
/** IRR of a vAPIC backing page: 8 registers of 32 bits, 16 bytes apart (the APIC register layout). */
const APIC_IRR = 0x200;

/**
 * The host driver's interrupt remapping for its own devices (the physical unit's IRTs, in host memory):
 * what Linux on the host programs for a passthrough device's MSIs (irq_remapping_alloc /
 * irte_ga_prepare), and what the IOMMU does with such an MSI. One 512-entry IRT per requester id;
 * 128-bit entries (Control.GAEn) with 32-bit x2APIC destinations (XTEn), or 32-bit legacy entries.
 */
export class HostInterruptRemapping {
  private readonly tables = new Map<number, HostIrt>();
  private readonly words = new Uint32Array(4);
  /** The GA log in host memory (allocated with the first vAPIC entry) and its tail, as the IOMMU writes it. */
  private gaLog: number | undefined;
  private gaTail = 0;
  private readonly gaNotifiers = new Map<OwnerId, (gaTag: number) => void>();
  /** GA log entries written, and those lost because no host notifier took them. */
  gaLogged = 0;
  gaUnhandled = 0;

  constructor(
    private readonly host: HostMemory,
    /** Control.GAEn and Control.XTEn of the physical unit. */
    private readonly ga: boolean,
    private readonly xt: boolean,
  ) {}

  private table(requesterId: number): Result<HostIrt> {
    const existing = this.tables.get(requesterId);
    if (existing !== undefined) return ok(existing);
    const bytes = ENTRIES * (this.ga ? IRTE128_BYTES : IRTE32_BYTES);
    const pages = Math.max(1, Math.ceil(bytes / 4096));
    const address = this.host.allocate(HOST_OWNER, pages);
    if (address === undefined) return err("ENOMEM", "no host memory for an interrupt table");
    this.host.zero(address, pages * 4096);
    const t: HostIrt = { address, used: new Array<boolean>(ENTRIES).fill(false) };
    this.tables.set(requesterId, t);
    return ok(t);
  }

  /** Allocates and programs an IRTE; returns the MSI the device must be given. */
  program(requesterId: number, vector: number, destination: number): Result<MsiMessage> {
    if (!Number.isInteger(vector) || vector < 0 || vector > 0xff) return err("EINVAL", `vector ${vector}`);
    if (!Number.isInteger(destination) || destination < 0 || destination > (this.ga && this.xt ? 0xffff_ffff : 0xff)) return err("EINVAL", `destination ${destination} needs x2APIC mode`);
    const t = this.table(requesterId);
    if (!t.ok) return fail(t);
    const index = t.value.used.indexOf(false);
    if (index < 0) return err("ENOSPC", "interrupt table full");
    t.value.used[index] = true;
    if (this.ga) {
      const e = linuxIrte128({ vector, destination });
      for (let i = 0; i < 4; i++) this.host.write32(t.value.address + index * IRTE128_BYTES + i * 4, e[i]!);
    } else this.host.write32(t.value.address + index * IRTE32_BYTES, linuxIrte32({ vector, destination }));
    const msi = linuxMsiMessage(index, false);
    return ok({ address: msi.addressLo, data: msi.data });
  }

  /**
   * A vAPIC-form IRTE (Linux amd_iommu_activate_guest_mode): RemapEn, GuestMode, IsRun, GALogIntr, the host
   * APIC as Destination, the GA tag, the guest vector and the backing page as GA root pointer.
   */
  programPosted(requesterId: number, target: VapicTarget): Result<MsiMessage> {
    if (!this.ga) return err("EOPNOTSUPP", "vAPIC posting needs 128-bit IRTEs (GAEn)");
    if (!Number.isInteger(target.guestVector) || target.guestVector < 0 || target.guestVector > 0xff) return err("EINVAL", `vector ${target.guestVector}`);
    if (!Number.isSafeInteger(target.backingPage) || target.backingPage % 4096 !== 0 || !this.host.isAllocated(target.backingPage)) return err("EINVAL", "no vAPIC backing page there");
    if (this.gaLog === undefined) {
      const page = this.host.allocate(HOST_OWNER, 1);
      if (page === undefined) return err("ENOMEM", "no host memory for the GA log");
      this.host.zero(page, 4096);
      this.gaLog = page;
    }
    const t = this.table(requesterId);
    if (!t.ok) return fail(t);
    const index = t.value.used.indexOf(false);
    if (index < 0) return err("ENOSPC", "interrupt table full");
    t.value.used[index] = true;
    this.writeVapic(t.value.address + index * IRTE128_BYTES, target);
    const msi = linuxMsiMessage(index, false);
    return ok({ address: msi.addressLo, data: msi.data });
  }

  private writeVapic(at: number, target: VapicTarget): void {
    const e = encodeIrte128Vapic({
      RemapEn: 1,
      GALogIntr: target.gaLogIntr ? 1 : 0,
      IsRun: target.running ? 1 : 0,
      Destination_23_0: target.hostApicId & 0xffffff,
      Destination_31_24: Math.floor(target.hostApicId / 2 ** 24) & 0xff,
      GATag: target.gaTag,
      Vector: target.guestVector,
      GARootPtr: target.backingPage,
    });
    for (let i = 0; i < 4; i++) this.host.write32(at + i * 4, e[i]!);
  }

  /** amd_iommu_update_ga: IsRun and Destination of every vAPIC entry posting to `backingPage`. */
  updateVcpu(backingPage: number, running: boolean, hostApicId: number): void {
    for (const t of this.tables.values()) {
      for (let index = 0; index < ENTRIES; index++) {
        if (!t.used[index]) continue;
        const at = t.address + index * IRTE128_BYTES;
        for (let i = 0; i < 4; i++) this.words[i] = this.host.read32(at + i * 4);
        if ((this.words[0]! & 0x81) !== 0x81 || this.gaRoot() !== backingPage) continue;
        const lo = ((this.words[0]! & 0xbf) | (running ? 0x40 : 0) | ((hostApicId & 0xffffff) << 8)) >>> 0;
        this.host.write32(at, lo);
        this.host.write32(at + 12, ((this.words[3]! & 0x00ffffff) | ((Math.floor(hostApicId / 2 ** 24) & 0xff) << 24)) >>> 0);
      }
    }
  }

  setGaLogNotifier(owner: OwnerId, notify: ((gaTag: number) => void) | undefined): void {
    if (notify === undefined) this.gaNotifiers.delete(owner);
    else this.gaNotifiers.set(owner, notify);
  }

  /** The GA root pointer ([115:76]) of the entry in `words`. */
  private gaRoot(): number {
    return ((this.words[2]! >>> 12) + (this.words[3]! & 0xfffff) * 2 ** 20) * 4096;
  }

  /**
   * An interrupt through a vAPIC-form IRTE: the guest vector's bit is set in the backing page's IRR; a running
   * vCPU gets the doorbell (the interrupt is posted), one that does not run gets a GA log entry (GUEST_NR, its GA
   * tag and DeviceID) when GALogIntr asks, which the host's notifier turns into a wake-up.
   */
  private posted(requesterId: number): InterruptResult {
    const w = this.words;
    const vector = w[2]! & 0xff;
    const page = this.gaRoot();
    const irr = page + APIC_IRR + (vector >>> 5) * 0x10;
    if (this.host.isAllocated(irr)) this.host.write32(irr, (this.host.read32(irr) | (1 << (vector & 31))) >>> 0);
    const running = (w[0]! & 0x40) !== 0;
    if (!running && (w[0]! & 0x4) !== 0) this.logGuestNotRunning(w[1]!, requesterId);
    const destination = (w[3]! >>> 24) * 2 ** 24 + (w[0]! >>> 8);
    return { ok: true, irq: { vector, destination, destinationMode: "physical", deliveryMode: 0, trigger: "edge", posted: { descriptor: page, urgent: running } } };
  }

  private logGuestNotRunning(tag: number, requesterId: number): void {
    if (this.gaLog === undefined) return;
    const at = this.gaLog + this.gaTail * GA_LOG_ENTRY_BYTES;
    this.host.write32(at, tag >>> 0);
    this.host.write32(at + 4, ((requesterId & 0xffff) | (GaLogType.GUEST_NR << 28)) >>> 0);
    this.gaTail = (this.gaTail + 1) % GA_LOG_ENTRIES;
    this.gaLogged++;
    const notify = this.gaNotifiers.get(gaTagOwner(tag));
    if (notify === undefined) this.gaUnhandled++;
    else notify(tag);
  }

  /** The IRTE behind `msi` as the IOMMU reads it (tools and tests), or undefined when none is allocated there. */
  entry(requesterId: number, msi: MsiMessage): Uint32Array | undefined {
    const t = this.tables.get(requesterId);
    const index = msiIrteIndex(msi.data);
    if (t === undefined || index >= ENTRIES || !t.used[index]) return undefined;
    const bytes = this.ga ? IRTE128_BYTES : IRTE32_BYTES;
    const out = new Uint32Array(bytes / 4);
    for (let i = 0; i < out.length; i++) out[i] = this.host.read32(t.address + index * bytes + i * 4);
    return out;
  }

  /** The GA log's entries as the IOMMU wrote them, oldest first (tools and tests). */
  gaLogEntries(): Uint32Array[] {
    if (this.gaLog === undefined) return [];
    const out: Uint32Array[] = [];
    for (let i = 0; i < Math.min(this.gaLogged, GA_LOG_ENTRIES); i++) {
      const slot = (this.gaTail - Math.min(this.gaLogged, GA_LOG_ENTRIES) + i + GA_LOG_ENTRIES) % GA_LOG_ENTRIES;
      out.push(Uint32Array.of(this.host.read32(this.gaLog + slot * 8), this.host.read32(this.gaLog + slot * 8 + 4)));
    }
    return out;
  }

  /** Clears the IRTE behind `msi` (irte_clear_allocated): the MSI is blocked afterwards. */
  free(requesterId: number, msi: MsiMessage): void {
    const t = this.tables.get(requesterId);
    const index = msiIrteIndex(msi.data);
    if (t === undefined || index >= ENTRIES || !t.used[index]) return;
    t.used[index] = false;
    const at = t.address + index * (this.ga ? IRTE128_BYTES : IRTE32_BYTES);
    for (let i = 0; i < (this.ga ? 4 : 1); i++) this.host.write32(at + i * 4, 0);
  }

  remap(requesterId: number, msi: MsiMessage): InterruptResult {
    const refuse = (code: number, index?: number): InterruptResult => ({ ok: false, fault: { code, name: eventName(code), index } });
    const action = classifyMsi(msi.address >>> 0, Math.floor(msi.address / 2 ** 32), msi.data, false);
    if (action !== MsiAction.Remap) return refuse(EventCode.IO_PAGE_FAULT);
    const t = this.tables.get(requesterId);
    const index = msiIrteIndex(msi.data);
    if (t === undefined || index >= ENTRIES) return refuse(EventCode.IO_PAGE_FAULT, index);
    const at = t.address + index * (this.ga ? IRTE128_BYTES : IRTE32_BYTES);
    for (let i = 0; i < (this.ga ? 4 : 1); i++) this.words[i] = this.host.read32(at + i * 4);
    const lo = this.words[0]!;
    if ((lo & 1) === 0) return refuse(EventCode.IO_PAGE_FAULT, index);
    if ((lo & 0x80) !== 0) return this.ga ? this.posted(requesterId) : refuse(EventCode.IO_PAGE_FAULT, index);
    const vector = this.ga ? this.words[2]! & 0xff : (lo >>> 16) & 0xff;
    const destination = this.ga ? (this.xt ? (this.words[3]! >>> 24) * 2 ** 24 + (lo >>> 8) : (lo >>> 8) & 0xff) : (lo >>> 8) & 0xff;
    return { ok: true, irq: { vector, destination, destinationMode: lo & 0x40 ? "logical" : "physical", deliveryMode: (lo >>> 2) & 7, trigger: "edge" } };
  }
}
