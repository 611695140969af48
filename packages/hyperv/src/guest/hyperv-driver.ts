import {
  decodeLayout,
  err,
  fail,
  GuestTableStore,
  IdAllocator,
  ok,
  PageTableBuilder,
  Perm,
  token,
  type GuestContext,
  type GuestDomainId,
  type GuestEvent,
  type GuestIommuDriver,
  type GuestInitOptions,
  type MsiMessage,
  type PermBits,
  type Result,
  type WritableFormat,
} from "@viommu/core";
import { HV_DEVICE_DOMAIN_ID_FIRST, HV_DEVICE_DOMAIN_ID_LAST, HvDeviceDomainType } from "../format/device-domain.js";
import { logicalDeviceId, pciDeviceId } from "../format/device-id.js";
import type { ByteInit } from "../format/byte-layout.js";
import { HvGenericSetFormat, vpSetVariableHeader, type deviceInterruptTargetLayout } from "../format/device-interrupt-target.js";
import { HvStatus, hvStatusName } from "../format/hv-status.js";
import {
  HV_PARTITION_ID_SELF,
  hvAttachDevice,
  hvAttachDeviceDomain,
  hvConfigureDeviceDomain,
  hvCreateDeviceDomain,
  hvDeleteDeviceDomain,
  hvDetachDevice,
  hvDetachDeviceDomain,
  hvFlushDeviceDomain,
  hvFlushDeviceDomainList,
  hvGetIommuCapabilities,
  hvGetLogicalDeviceProperty,
  hvMapDeviceGpaPages,
  hvMapDeviceInterrupt,
  hvRetargetInterrupt,
  hvUnmapDeviceGpaPages,
  hvUnmapDeviceInterrupt,
} from "../format/hypercalls.js";
import { HvInterruptSource, msiAddressLayout, msiDataLayout, msiMessageOf, type HvInterruptEntryInit } from "../format/interrupt-entry.js";
import { HvInterruptTriggerMode, HvInterruptType, mapDeviceInterruptOutputLayouts } from "../format/interrupt-hypercalls.js";
import {
  getIommuCapabilitiesInputLayout,
  getIommuCapabilitiesOutputLayout,
  getLogicalDevicePropertyInputLayout,
  getLogicalDevicePropertyOutputLayout,
  HV_LOGICAL_DEVICE_PROPERTY_PVIOMMU,
} from "../format/iommu-discovery.js";
import { hypervPageTableEncoder, hypervPageTableFormat, hypervStage1Geometry } from "../format/x86-page-table.js";
import { fillIovaList } from "./flush-list.js";
import { HypercallClient, hypercallError, type HypercallAnswer } from "./hypercall-client.js";
import { ioapicAffinityProblem } from "./ioapic-affinity.js";

/** The x86 MSI window, reported as a reserved (IOMMU_RESV_MSI) region: never mapped for DMA. */
export const HV_MSI_WINDOW = { start: 0xfee00000, end: 0xfeefffff } as const;

/** GPA frame numbers one MAP_DEVICE_GPA_PAGES input page holds: (4096 − 40) / 8. */
export const HV_MAX_GPA_PAGES_PER_CALL = 507;
/** Reps one UNMAP_DEVICE_GPA_PAGES call may carry (the 12-bit rep count). */
const MAX_REP_COUNT = 4095;

/**
 * How the driver drives domains, by `GuestInitOptions.variant`:
 * - `stage1` (default): the guest pvIOMMU series (a): paging domains are x86-64 stage-1 tables the hypervisor
 *   nests; map and unmap write the table, unmap flushes by hypercall.
 * - `device-domain`: the root/L1VH series (b), device-domain mode: stage-2 domains the hypervisor maps page by
 *   page on HVCALL_MAP/UNMAP_DEVICE_GPA_PAGES.
 * - `direct-attach`: series (b), direct attach: HVCALL_ATTACH_DEVICE gives the device to the partition, which
 *   translates with its own GPA map; the driver's domain only records mappings.
 */
export type HypervVariant = "stage1" | "device-domain" | "direct-attach";
const variants: readonly string[] = ["stage1", "device-domain", "direct-attach"];

type DomainKind = "identity" | "blocking" | "paging" | "s2" | "direct";

interface DriverDomain {
  readonly id: number;
  readonly kind: DomainKind;
  readonly table: PageTableBuilder | undefined;
  /** The series (b) attach count (num_attchd). */
  attached: number;
  /** Stage-2 and direct domains: what was mapped (iova page → gpa page), the driver's iova_to_phys tree. */
  readonly pages: Map<number, number> | undefined;
}

interface Endpoint {
  domain: DriverDomain | undefined;
}

/** One guest kernel per VM, so one pvIOMMU driver per VM: every instance's createDriver returns it. */
export const HypervDriverSlot = token<{ driver: HypervGuestDriver | undefined }>("HypervDriverSlot");

const stage1Format: WritableFormat = { ...hypervPageTableFormat, ...hypervPageTableEncoder };

/**
 * The reference guest driver: Linux's Hyper-V pvIOMMU driver (drivers/iommu/hyperv/iommu.c, series (a)) with the
 * root/L1VH series (b) domain modes, and the interrupt side of pci-hyperv and hyperv-iommu. It probes the
 * pvIOMMU with HVCALL_GET_IOMMU_CAPABILITIES and each device with HVCALL_GET_LOGICAL_DEVICE_PROPERTY, creates
 * its static identity and blocking domains, moves a device by detaching it from its old domain and flushing
 * that domain before attaching it (series (a) RFC), counts attachments as series (b) does (a failed DETACH
 * still drops the count; a domain with devices is never deleted), rolls back a map that stopped part way, and
 * flushes ranges as page-selective lists with a full flush when the list would not fit a page or fails.
 * Hyper-V has no guest-visible fault log: readEvents() is always empty.
 */
export class HypervGuestDriver implements GuestIommuDriver {
  readonly vendor = "hyperv";
  /** The driver's kernel log (pr_err / pr_warn), newest last, bounded. */
  readonly log: string[] = [];
  private client: HypercallClient | undefined;
  private initialized = false;
  private translation = false;
  /** GuestInitOptions.skipInvalidation (audit tests only): "iotlb" leaves out the flush after an unmap. */
  private skip: GuestInitOptions["skipInvalidation"];
  private variant: HypervVariant = "stage1";
  private readonly ids = new IdAllocator("hv-iommu domain id", HV_DEVICE_DOMAIN_ID_FIRST, HV_DEVICE_DOMAIN_ID_LAST);
  private readonly domains = new Map<GuestDomainId, DriverDomain>();
  private readonly endpoints = new Map<number, Endpoint>();
  private identity: DriverDomain | undefined;
  private blocking: DriverDomain | undefined;
  private readonly store: GuestTableStore;
  /** From HVCALL_GET_IOMMU_CAPABILITIES. */
  maxIovaWidth = 0;
  levels: 4 | 5 = 4;

  private constructor(private readonly context: GuestContext) {
    this.store = new GuestTableStore(context.memory, context.pages);
  }

  /** The VM's driver (the first instance creates it). */
  static forVm(context: GuestContext): HypervGuestDriver {
    const c = context.vm.container;
    if (!c.isRegistered(HypervDriverSlot)) c.register(HypervDriverSlot, { useValue: { driver: undefined } });
    const slot = c.resolve(HypervDriverSlot);
    slot.driver ??= new HypervGuestDriver(context);
    return slot.driver;
  }

  private pr(message: string): void {
    if (this.log.length >= 256) this.log.shift();
    this.log.push(message);
  }

  private get hv(): HypercallClient {
    return this.client!;
  }

  // ---- probe ----

  init(options: GuestInitOptions): Result<void> {
    if (this.initialized) return ok();
    this.skip = options.skipInvalidation;
    const variant = options.variant ?? "stage1";
    if (!variants.includes(variant)) return err("EINVAL", `unknown variant ${variant} (${variants.join(", ")})`);
    this.variant = variant as HypervVariant;
    const client = HypercallClient.create(this.context.vm, this.context.memory, this.context.pages);
    if (!client.ok) return fail(client);
    this.client = client.value;
    this.translation = options.translation;
    // Without DMA translation the driver only uses the interrupt hypercalls (the IR-only configuration).
    if (options.translation) {
      const up = this.detect();
      if (!up.ok) return up;
    }
    this.initialized = true;
    return ok();
  }

  /** hv_iommu_init(): capabilities, then the static identity and blocking domains. */
  private detect(): Result<void> {
    const outputAt = this.hv.inputPage + getIommuCapabilitiesInputLayout.size;
    const a = this.hv.call(hvGetIommuCapabilities, { input: { partition_id: HV_PARTITION_ID_SELF } }, outputAt);
    if (a.status === HvStatus.HV_STATUS_INVALID_HYPERCALL_CODE) return err("ENODEV", "no pvIOMMU (HVCALL_GET_IOMMU_CAPABILITIES unknown)");
    if (a.status !== HvStatus.HV_STATUS_SUCCESS) return hypercallError("HVCALL_GET_IOMMU_CAPABILITIES", a);
    const caps = this.hv.read(getIommuCapabilitiesOutputLayout, outputAt);
    if (!caps.iommu_cap.PRESENT) return err("ENODEV", "pvIOMMU not present");
    if (!caps.iommu_cap.S1) return err("ENODEV", "stage-1 translation not supported");
    if ((caps.pgsize_bitmap & 4096n) === 0n) return err("ENODEV", `unsupported page sizes 0x${caps.pgsize_bitmap.toString(16)}`);
    this.maxIovaWidth = caps.max_iova_width;
    if (!caps.iommu_cap.S1_5LVL && this.maxIovaWidth > 48) {
      this.pr("5-level paging not supported, limiting iova width to 48.");
      this.maxIovaWidth = 48;
    }
    this.levels = this.maxIovaWidth > 48 ? 5 : 4;
    if (this.variant === "device-domain" && !caps.iommu_cap.S2) return err("ENODEV", "no stage-2 device domains");
    const identity = this.createConfigure("identity", undefined, { translation_enabled: 0 });
    if (!identity.ok) return fail(identity);
    const blocking = this.createConfigure("blocking", undefined, { translation_enabled: 1, blocked: 1 });
    if (!blocking.ok) {
      this.deleteDomain(identity.value);
      return fail(blocking);
    }
    this.identity = identity.value;
    this.blocking = blocking.value;
    return ok();
  }

  /** hv_iommu_probe_device(): the device must be behind the pvIOMMU. */
  private endpoint(rid: number): Result<Endpoint> {
    const known = this.endpoints.get(rid);
    if (known !== undefined) return ok(known);
    const outputAt = this.hv.inputPage + getLogicalDevicePropertyInputLayout.size;
    const a = this.hv.call(
      hvGetLogicalDeviceProperty,
      { input: { partition_id: HV_PARTITION_ID_SELF, logical_device_id: logicalDeviceId(rid), code: HV_LOGICAL_DEVICE_PROPERTY_PVIOMMU } },
      outputAt,
    );
    if (a.status !== HvStatus.HV_STATUS_SUCCESS) {
      this.pr(`HVCALL_GET_LOGICAL_DEVICE_PROPERTY failed for 0x${rid.toString(16)}, status ${a.status}`);
      return err("ENODEV", `device 0x${rid.toString(16)}: HVCALL_GET_LOGICAL_DEVICE_PROPERTY answered ${hvStatusName(a.status)}`);
    }
    if (!this.hv.read(getLogicalDevicePropertyOutputLayout, outputAt).device_iommu.HV_DEVICE_IOMMU_ENABLED) return err("ENODEV", `device 0x${rid.toString(16)} is not behind the pvIOMMU`);
    const e: Endpoint = { domain: undefined };
    this.endpoints.set(rid, e);
    return ok(e);
  }

  /** The MSI window, which map() refuses. */
  reservedRegions(): { start: number; end: number; kind: "msi" }[] {
    return [{ start: HV_MSI_WINDOW.start, end: HV_MSI_WINDOW.end, kind: "msi" }];
  }

  // ---- domains ----

  private ready(): Result<void> {
    if (!this.initialized || !this.translation) return err("ENODEV", "the pvIOMMU is not in use (init with translation first)");
    return ok();
  }

  private deviceDomain(id: number, type: number): { partition_id: bigint; domain_id: { type: number; id: number } } {
    return { partition_id: HV_PARTITION_ID_SELF, domain_id: { type, id } };
  }

  private typeOf(d: DriverDomain): number {
    return d.kind === "s2" ? HvDeviceDomainType.HV_DEVICE_DOMAIN_TYPE_S2 : HvDeviceDomainType.HV_DEVICE_DOMAIN_TYPE_S1;
  }

  /** hv_create_configure_device_domain(): an id from the ida, CREATE, then CONFIGURE (DELETE if that fails). */
  private createConfigure(
    kind: DomainKind,
    table: PageTableBuilder | undefined,
    flags: { translation_enabled: number; blocked?: number; first_stage_paging_mode?: number },
  ): Result<DriverDomain> {
    const id = this.ids.allocate();
    if (!id.ok) return fail(id);
    const d: DriverDomain = { id: id.value, kind, table, attached: 0, pages: undefined };
    const created = this.hv.call(hvCreateDeviceDomain, {
      input: { device_domain: this.deviceDomain(d.id, HvDeviceDomainType.HV_DEVICE_DOMAIN_TYPE_S1), create_device_domain_flags: { forward_progress_required: 1 } },
    });
    if (created.status !== HvStatus.HV_STATUS_SUCCESS) {
      this.pr(`HVCALL_CREATE_DEVICE_DOMAIN failed, status ${created.status}`);
      this.ids.release(d.id);
      return hypercallError("HVCALL_CREATE_DEVICE_DOMAIN", created);
    }
    const configured = this.hv.call(hvConfigureDeviceDomain, {
      input: { device_domain: this.deviceDomain(d.id, HvDeviceDomainType.HV_DEVICE_DOMAIN_TYPE_S1), settings: { flags, page_table_root: BigInt(table?.root ?? 0) } },
    });
    if (configured.status !== HvStatus.HV_STATUS_SUCCESS) {
      this.pr(`HVCALL_CONFIGURE_DEVICE_DOMAIN failed, status ${configured.status}`);
      this.deleteDomain(d);
      return hypercallError("HVCALL_CONFIGURE_DEVICE_DOMAIN", configured);
    }
    this.domains.set(d.id, d);
    return ok(d);
  }

  /** hv_delete_device_domain(): DELETE (a failure is only logged) and the id back to the ida. */
  private deleteDomain(d: DriverDomain): void {
    if (d.kind !== "direct") {
      const a = this.hv.call(hvDeleteDeviceDomain, { input: { device_domain: this.deviceDomain(d.id, this.typeOf(d)) } });
      if (a.status !== HvStatus.HV_STATUS_SUCCESS) this.pr(`HVCALL_DELETE_DEVICE_DOMAIN failed, status ${a.status}`);
    }
    this.ids.release(d.id);
    this.domains.delete(d.id);
  }

  createDomain(): Result<GuestDomainId> {
    const up = this.ready();
    if (!up.ok) return fail(up);
    if (this.variant === "stage1") {
      const table = PageTableBuilder.create(stage1Format, hypervStage1Geometry(this.levels, this.maxIovaWidth), this.store);
      if (table === undefined) return err("ENOMEM", "no memory for a page table");
      const d = this.createConfigure("paging", table, { translation_enabled: 1, first_stage_paging_mode: this.levels === 5 ? 1 : 0 });
      if (!d.ok) {
        table.destroy();
        return fail(d);
      }
      return ok(d.value.id);
    }
    const id = this.ids.allocate();
    if (!id.ok) return fail(id);
    const d: DriverDomain = { id: id.value, kind: this.variant === "direct-attach" ? "direct" : "s2", table: undefined, attached: 0, pages: new Map() };
    if (d.kind === "s2") {
      const a = this.hv.call(hvCreateDeviceDomain, {
        input: { device_domain: this.deviceDomain(d.id, HvDeviceDomainType.HV_DEVICE_DOMAIN_TYPE_S2), create_device_domain_flags: { forward_progress_required: 1 } },
      });
      if (a.status !== HvStatus.HV_STATUS_SUCCESS) {
        this.ids.release(d.id);
        return hypercallError("HVCALL_CREATE_DEVICE_DOMAIN", a);
      }
    }
    this.domains.set(d.id, d);
    return ok(d.id);
  }

  /**
   * hv_iommu_domain_free(): a domain with devices is not freed (the error is logged, the domain kept: EBUSY);
   * otherwise DELETE. The static identity and blocking domains are never freed.
   */
  destroyDomain(domainId: GuestDomainId): Result<void> {
    const d = this.domains.get(domainId);
    if (d === undefined) return err("ENOENT", `no domain ${domainId}`);
    if (d === this.identity || d === this.blocking) return err("EINVAL", "the static identity and blocking domains are never freed");
    if (d.attached !== 0) {
      this.pr(`can't free busy iommu domain ${d.id}`);
      return err("EBUSY", `domain ${d.id} still has ${d.attached} device(s) attached`);
    }
    this.deleteDomain(d);
    d.table?.destroy();
    return ok();
  }

  /** The domain a device is in, as the driver believes. */
  domainOf(rid: number): GuestDomainId | undefined {
    return this.endpoints.get(rid)?.domain?.id;
  }

  /** The series (b) attach count of a domain. */
  attachCount(domainId: GuestDomainId): number | undefined {
    return this.domains.get(domainId)?.attached;
  }

  /** The static domains' ids (identity, blocking). */
  staticDomains(): { identity: number | undefined; blocking: number | undefined } {
    return { identity: this.identity?.id, blocking: this.blocking?.id };
  }

  // ---- attach / detach ----

  private attachCall(d: DriverDomain, rid: number): HypercallAnswer {
    if (d.kind === "direct") {
      return this.hv.call(hvAttachDevice, {
        input: {
          partition_id: HV_PARTITION_ID_SELF,
          device_id: pciDeviceId({ bus: rid >>> 8, device: (rid >>> 3) & 0x1f, function: rid & 7 }),
          attdev_flags: { logical_id: 1 },
          logical_devid: logicalDeviceId(rid),
        },
      });
    }
    return this.hv.call(hvAttachDeviceDomain, { input: { device_domain: this.deviceDomain(d.id, this.typeOf(d)), device_id: logicalDeviceId(rid) } });
  }

  /**
   * Detaches from the old domain: the count drops whatever the hypercall answered (series (b): a failed DETACH
   * is logged, and the domain stays freeable), then the old domain is flushed (series (a) RFC).
   */
  private detachFrom(rid: number, old: DriverDomain): void {
    if (old.attached === 0) this.pr(`Hyper-V: num_attchd is zero (0x${rid.toString(16)})`);
    const a =
      old.kind === "direct"
        ? this.hv.call(hvDetachDevice, { input: { partition_id: HV_PARTITION_ID_SELF, logical_devid: logicalDeviceId(rid) } })
        : this.hv.call(hvDetachDeviceDomain, { input: { partition_id: HV_PARTITION_ID_SELF, device_id: logicalDeviceId(rid) } });
    if (a.status !== HvStatus.HV_STATUS_SUCCESS) this.pr(`detach of 0x${rid.toString(16)} from domain ${old.id} failed, status ${a.status}`);
    old.attached = Math.max(0, old.attached - 1);
    if (old.kind !== "direct" && old.kind !== "s2") this.flushAll(old);
  }

  attach(rid: number, domainId: GuestDomainId): Result<void> {
    const up = this.ready();
    if (!up.ok) return up;
    const d = this.domains.get(domainId);
    if (d === undefined) return err("ENOENT", `no domain ${domainId}`);
    const e = this.endpoint(rid);
    if (!e.ok) return fail(e);
    const old = e.value.domain;
    if (old === d) return ok();
    if (old !== undefined) this.detachFrom(rid, old);
    e.value.domain = undefined;
    const a = this.attachCall(d, rid);
    if (a.status === HvStatus.HV_STATUS_SUCCESS || a.status === HvStatus.HV_STATUS_DEVICE_ALREADY_IN_DOMAIN) {
      e.value.domain = d;
      d.attached++;
      return ok();
    }
    this.pr(`attach of 0x${rid.toString(16)} to domain ${d.id} failed, status ${a.status}`);
    if (d === this.blocking) this.pr("WARNING: attaching to the blocking domain failed");
    // Series (b): try to restore the previous attachment.
    if (old !== undefined) {
      const back = this.attachCall(old, rid);
      if (back.status === HvStatus.HV_STATUS_SUCCESS || back.status === HvStatus.HV_STATUS_DEVICE_ALREADY_IN_DOMAIN) {
        e.value.domain = old;
        old.attached++;
      } else this.pr(`iommu could not restore orig device state for 0x${rid.toString(16)}`);
    }
    return hypercallError("HVCALL_ATTACH_DEVICE_DOMAIN", a);
  }

  /** The IOMMU core's blocked domain: the device moves to the static blocking domain. */
  detach(rid: number): Result<void> {
    const up = this.ready();
    if (!up.ok) return up;
    return this.attach(rid, this.blocking!.id);
  }

  /** The IOMMU core's identity domain: DMA addresses are GPAs. */
  attachIdentity(rid: number): Result<void> {
    const up = this.ready();
    if (!up.ok) return up;
    return this.attach(rid, this.identity!.id);
  }

  // ---- map / unmap ----

  map(domainId: GuestDomainId, iova: number, gpa: number, length: number, perms: PermBits): Result<void> {
    const d = this.domains.get(domainId);
    if (d === undefined) return err("ENOENT", `no domain ${domainId}`);
    if (length <= 0 || iova % 4096 !== 0 || gpa % 4096 !== 0 || length % 4096 !== 0) return err("EINVAL", "map: whole 4 KiB pages only");
    if (iova <= HV_MSI_WINDOW.end && iova + length - 1 >= HV_MSI_WINDOW.start) return err("EINVAL", "map: the MSI window 0xfee00000-0xfeefffff is reserved");
    if (d.kind === "paging") return d.table!.map(iova, gpa, length, perms);
    if (d.kind === "s2") return this.mapPages(d, iova, gpa, length, perms);
    if (d.kind === "direct") {
      for (let p = 0; p < length / 4096; p++) d.pages!.set(iova / 4096 + p, gpa / 4096 + p);
      return ok();
    }
    return err("EINVAL", "the identity and blocking domains have no mappings");
  }

  /**
   * hv_iommu_map_pages(): MAP_DEVICE_GPA_PAGES one input page of frames at a time (READABLE always, WRITABLE for
   * write access). If a call stops part way, the pages mapped so far are unmapped again before the error
   * returns: a failed map leaves nothing behind.
   */
  private mapPages(d: DriverDomain, iova: number, gpa: number, length: number, perms: PermBits): Result<void> {
    const total = length / 4096;
    const flags = { READABLE: 1, WRITABLE: perms & Perm.Write ? 1 : 0 };
    let done = 0;
    while (done < total) {
      const n = Math.min(HV_MAX_GPA_PAGES_PER_CALL, total - done);
      const reps = Array.from({ length: n }, (_, i) => ({ gpa_page_number: BigInt(gpa / 4096 + done + i) }));
      const a = this.hv.repCall(hvMapDeviceGpaPages, {
        input: { device_domain: this.deviceDomain(d.id, HvDeviceDomainType.HV_DEVICE_DOMAIN_TYPE_S2), map_flags: flags, target_device_va_base: BigInt(iova + done * 4096) },
        reps,
      });
      const completed = Math.min(a.repsCompleted, n);
      for (let i = 0; i < completed; i++) d.pages!.set(iova / 4096 + done + i, gpa / 4096 + done + i);
      done += completed;
      if (a.status !== HvStatus.HV_STATUS_SUCCESS) {
        this.pr(`map of ${total} pages at 0x${iova.toString(16)} stopped after ${done}, status ${a.status}`);
        if (done > 0) this.unmapPages(d, iova, done * 4096);
        return hypercallError("HVCALL_MAP_DEVICE_GPA_PAGES", a);
      }
    }
    return ok();
  }

  private unmapPages(d: DriverDomain, iova: number, length: number): Result<void> {
    const total = length / 4096;
    let failure: HypercallAnswer | undefined;
    for (let done = 0; done < total; ) {
      const n = Math.min(MAX_REP_COUNT, total - done);
      const a = this.hv.repCall(hvUnmapDeviceGpaPages, {
        input: { device_domain: this.deviceDomain(d.id, HvDeviceDomainType.HV_DEVICE_DOMAIN_TYPE_S2), target_device_va_base: BigInt(iova + done * 4096) },
        repCount: n,
      });
      if (a.status !== HvStatus.HV_STATUS_SUCCESS) {
        this.pr(`unmap at 0x${(iova + done * 4096).toString(16)} failed, status ${a.status}`);
        failure ??= a;
      }
      done += n;
    }
    for (let p = 0; p < total; p++) d.pages!.delete(iova / 4096 + p);
    return failure === undefined ? ok() : hypercallError("HVCALL_UNMAP_DEVICE_GPA_PAGES", failure);
  }

  unmap(domainId: GuestDomainId, iova: number, length: number): Result<void> {
    const d = this.domains.get(domainId);
    if (d === undefined) return err("ENOENT", `no domain ${domainId}`);
    if (length <= 0 || iova % 4096 !== 0 || length % 4096 !== 0) return err("EINVAL", "unmap: whole 4 KiB pages only");
    if (d.kind === "paging") {
      d.table!.unmap(iova, length);
      // The pvIOMMU's one guest-issued invalidation; "context" and "interrupt" have none to skip (hypercalls apply at once).
      if (this.skip === "iotlb") return ok();
      return this.flush(domainId, iova, length);
    }
    if (d.kind === "s2") return this.unmapPages(d, iova, length);
    if (d.kind === "direct") {
      for (let p = 0; p < length / 4096; p++) d.pages!.delete(iova / 4096 + p);
      return ok();
    }
    return err("EINVAL", "the identity and blocking domains have no mappings");
  }

  // ---- flushes ----

  private flushAll(d: DriverDomain): Result<void> {
    const a = this.hv.call(hvFlushDeviceDomain, { input: { device_domain: this.deviceDomain(d.id, this.typeOf(d)) } });
    if (a.status === HvStatus.HV_STATUS_SUCCESS) return ok();
    this.pr(`HVCALL_FLUSH_DEVICE_DOMAIN failed, status ${a.status}`);
    return hypercallError("HVCALL_FLUSH_DEVICE_DOMAIN", a);
  }

  /**
   * hv_iommu_iotlb_sync(): a range goes as a page-selective list (hv_iommu_fill_iova_list); when it would not fit
   * one input page, or the list flush fails, the whole domain is flushed. Stage-2 and direct domains have nothing
   * to flush: the hypervisor's unmap is synchronous.
   */
  flush(domainId: GuestDomainId, iova?: number, length?: number): Result<void> {
    const d = this.domains.get(domainId);
    if (d === undefined) return err("ENOENT", `no domain ${domainId}`);
    if (d.kind === "s2" || d.kind === "direct") return ok();
    if (iova === undefined || length === undefined || length <= 0) return this.flushAll(d);
    const list = fillIovaList(iova, iova + length - 1);
    if (list !== undefined) {
      const a = this.hv.repCall(hvFlushDeviceDomainList, {
        input: { device_domain: this.deviceDomain(d.id, this.typeOf(d)), flags: { iommu_format: 1 } },
        reps: list.map((iovaEntry) => ({ iova: iovaEntry })),
      });
      if (a.status === HvStatus.HV_STATUS_SUCCESS) return ok();
      this.pr(`HVCALL_FLUSH_DEVICE_DOMAIN_LIST failed, status ${a.status}; flushing the whole domain`);
    }
    return this.flushAll(d);
  }

  // ---- interrupts ----

  private target(vector: number, destination: number): Result<{ target: ByteInit<typeof deviceInterruptTargetLayout>; varHeader: bigint[] }> {
    if (!Number.isInteger(vector) || vector < 0x10 || vector > 0xff) return err("EINVAL", `vector ${vector}`);
    if (!Number.isInteger(destination) || destination < 0 || destination >= Math.min(this.context.vm.vcpus, 4096)) return err("EINVAL", `no vCPU ${destination}`);
    // pci-hyperv (vPCI protocol 1.2+): always a VP set, so any of more than 64 VPs can be named.
    return ok({
      target: { vector, flags: { processor_set: 1 }, vp_set: { format: BigInt(HvGenericSetFormat.HV_GENERIC_SET_SPARSE_4K) } },
      varHeader: vpSetVariableHeader([destination]),
    });
  }

  /** Maps a device MSI to `vector` on vCPU `destination`; returns the message the device must write. */
  mapInterrupt(rid: number, vector: number, destination: number): Result<MsiMessage> {
    if (!this.initialized) return err("ENODEV", "driver not initialised");
    const t = this.target(vector, destination);
    if (!t.ok) return fail(t);
    const a = this.hv.call(hvMapDeviceInterrupt, {
      input: {
        partition_id: HV_PARTITION_ID_SELF,
        device_id: logicalDeviceId(rid),
        interrupt_descriptor: {
          interrupt_type: HvInterruptType.HV_X64_INTERRUPT_TYPE_FIXED,
          trigger_mode: HvInterruptTriggerMode.HV_INTERRUPT_TRIGGER_MODE_EDGE,
          vector_count: 1,
          target: t.value.target,
        },
      },
      varHeader: t.value.varHeader,
    });
    if (a.status !== HvStatus.HV_STATUS_SUCCESS) return hypercallError("HVCALL_MAP_DEVICE_INTERRUPT", a);
    const msg = msiMessageOf(this.hv.readBytes(mapDeviceInterruptOutputLayouts.x64.size));
    return ok({ address: msg.address_lo, data: msg.data });
  }

  private entryOf(msi: MsiMessage): HvInterruptEntryInit<"x64"> {
    return {
      source: HvInterruptSource.HV_INTERRUPT_SOURCE_MSI,
      msi_entry: { address: decodeLayout(msiAddressLayout, Uint32Array.of(msi.address >>> 0)), data: decodeLayout(msiDataLayout, Uint32Array.of(msi.data >>> 0)) },
    };
  }

  unmapInterrupt(rid: number, msi: MsiMessage): Result<void> {
    if (!this.initialized) return err("ENODEV", "driver not initialised");
    const a = this.hv.call(hvUnmapDeviceInterrupt, { input: { partition_id: HV_PARTITION_ID_SELF, device_id: logicalDeviceId(rid), interrupt_entry: this.entryOf(msi) } });
    return a.status === HvStatus.HV_STATUS_SUCCESS ? ok() : hypercallError("HVCALL_UNMAP_DEVICE_INTERRUPT", a);
  }

  /** hv_arch_irq_unmask(): moves a mapped MSI to another vector and vCPU (the device keeps its message). */
  retargetInterrupt(rid: number, msi: MsiMessage, vector: number, destination: number): Result<void> {
    if (!this.initialized) return err("ENODEV", "driver not initialised");
    const t = this.target(vector, destination);
    if (!t.ok) return fail(t);
    const a = this.hv.call(hvRetargetInterrupt, {
      input: { partition_id: HV_PARTITION_ID_SELF, device_id: logicalDeviceId(rid), int_entry: this.entryOf(msi), int_target: t.value.target },
      varHeader: t.value.varHeader,
    });
    return a.status === HvStatus.HV_STATUS_SUCCESS ? ok() : hypercallError("HVCALL_RETARGET_INTERRUPT", a);
  }

  /** hyperv_ir_set_affinity(): an IO-APIC interrupt may only target a vCPU whose APIC id is below 256. */
  setIoapicAffinity(destination: number): Result<void> {
    const problem = ioapicAffinityProblem(destination, this.context.vm.vcpus);
    return problem === undefined ? ok() : err("EINVAL", problem);
  }

  /** Hyper-V gives the guest no fault log: DMA faults stay with the hypervisor. */
  readEvents(): GuestEvent[] {
    return [];
  }
}
