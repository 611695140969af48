import { err, fail, HOST_OWNER, ok, type HostMemory, type InterruptResult, type MsiMessage, type Result } from "@viommu/core";
import { EventCode, eventName } from "../format/event-log-entry.js";
import { IRTE128_BYTES, linuxIrte128 } from "../format/irte128.js";
import { IRTE32_BYTES, linuxIrte32 } from "../format/irte32.js";
import { classifyMsi, LINUX_INT_TAB_LEN, linuxMsiMessage, MsiAction, msiIrteIndex } from "../format/msi-remap.js";

interface HostIrt {
  readonly address: number;
  readonly used: boolean[];
}

const ENTRIES = 2 ** LINUX_INT_TAB_LEN;

/**
 * The host driver's interrupt remapping for its own devices (the physical unit's IRTs, in host memory):
 * what Linux on the host programs for a passthrough device's MSIs (irq_remapping_alloc /
 * irte_ga_prepare), and what the IOMMU does with such an MSI. One 512-entry IRT per requester id;
 * 128-bit entries (Control.GAEn) with 32-bit x2APIC destinations (XTEn), or 32-bit legacy entries.
 */
export class HostInterruptRemapping {
  private readonly tables = new Map<number, HostIrt>();
  private readonly words = new Uint32Array(4);

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
    if ((lo & 1) === 0 || (lo & 0x80) !== 0) return refuse(EventCode.IO_PAGE_FAULT, index);
    const vector = this.ga ? this.words[2]! & 0xff : (lo >>> 16) & 0xff;
    const destination = this.ga ? (this.xt ? (this.words[3]! >>> 24) * 2 ** 24 + (lo >>> 8) : (lo >>> 8) & 0xff) : (lo >>> 8) & 0xff;
    return { ok: true, irq: { vector, destination, destinationMode: lo & 0x40 ? "logical" : "physical", deliveryMode: (lo >>> 2) & 7, trigger: "edge" } };
  }
}
