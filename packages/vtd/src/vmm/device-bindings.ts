import {
  createShadowBackend,
  fail,
  NO_PASID,
  ok,
  U64_MAX,
  type DmaDevice,
  type IommufdContext,
  type Result,
  type VmmDeviceOptions,
  type VmmStats,
} from "@viommu/core";
import {
  encodeVtdS1,
  encodeVtdS1Invalidate,
  encodeVtdS1InvalidateAll,
  IOMMU_HWPT_DATA_VTD_S1,
  IOMMU_HWPT_INVALIDATE_DATA_VTD_S1,
  VTD_S1_ADDR_WIDTH_4LEVEL,
  VTD_S1_ADDR_WIDTH_5LEVEL,
  VTD_S1_INVALIDATE_BYTES,
  VtdInvalidateFlag,
  VtdS1Flag,
} from "../format/uapi.js";
import { ContextKind, DeviceContext, type GuestTranslator } from "./guest-translator.js";
import { ShadowSpace } from "./shadow-space.js";

/** How the host currently translates one passthrough device. */
type Binding =
  /** Detached: DMA blocked (the guest's entries do not translate). */
  | { readonly kind: "blocked" }
  /** Attached to the VM's stage-2 parent: DMA untranslated (IOVA = GPA). */
  | { readonly kind: "identity" }
  /** A HWPT_NESTED with the guest's first-level table over the shared parent. */
  | { readonly kind: "nested"; readonly hwptId: number }
  /** Attached to a shadow address space the VMM keeps equal to the guest's table. */
  | { readonly kind: "shadow"; readonly space: ShadowSpace };

export interface AssignedDevice {
  readonly device: DmaDevice;
  readonly devId: number;
  readonly guestRid: number;
  /** The guest configuration the binding was built from (what the VMM has "cached"). */
  readonly context: DeviceContext;
  binding: Binding;
}

const BLOCKED: Binding = { kind: "blocked" };
const IDENTITY: Binding = { kind: "identity" };

/**
 * The host side of the guest's device configuration: for each passthrough device, the iommufd objects that
 * make the host translate as the guest's root/context/PASID entries say, rebuilt when the guest invalidates
 * the caches holding those entries. A guest first-level table is nested (HWPT_NESTED with IOMMU_HWPT_DATA_VTD_S1
 * over the shared parent) in nested mode and shadowed otherwise; a guest second-level table (legacy mode)
 * is always shadowed, since hardware nests only first-level over second-level tables.
 */
export class DeviceBindings {
  readonly devices = new Map<number, AssignedDevice>();
  private readonly spaces = new Map<string, ShadowSpace>();
  translationEnabled = false;
  private readonly scratch = new DeviceContext();

  constructor(
    private readonly options: VmmDeviceOptions,
    private readonly translator: GuestTranslator,
    private readonly stats: VmmStats,
  ) {}

  private get ctx(): IommufdContext {
    return this.options.iommufd;
  }

  add(device: DmaDevice, devId: number, guestRid: number): Result<AssignedDevice> {
    const a: AssignedDevice = { device, devId, guestRid, context: new DeviceContext().fault(0), binding: BLOCKED };
    this.devices.set(guestRid, a);
    const r = this.rebind(a, true);
    return r.ok ? ok(a) : fail(r);
  }

  /** The assigned device with physical requester id `requesterId`, if it is one of this unit's. */
  byRequesterId(requesterId: number): AssignedDevice | undefined {
    for (const a of this.devices.values()) if (a.device.requesterId === requesterId && a.device.unit === this.options.unit) return a;
    return undefined;
  }

  /** Re-reads the guest configuration of the devices `which` selects and rebuilds what changed. */
  refresh(which: (a: AssignedDevice) => boolean): void {
    for (const a of this.devices.values()) if (which(a)) this.rebind(a, false);
  }

  private target(a: AssignedDevice, next: DeviceContext): "blocked" | "identity" | "nested" | "shadow" {
    if (this.options.mode === "ir-only" || !this.translationEnabled) {
      next.kind = ContextKind.PASS_THROUGH;
      next.did = 0;
      return "identity";
    }
    this.translator.resolve(a.guestRid, NO_PASID, next);
    switch (next.kind) {
      case ContextKind.FAULT:
        return "blocked";
      case ContextKind.PASS_THROUGH:
        return "identity";
      case ContextKind.FIRST_LEVEL:
        return this.options.mode === "nested" ? "nested" : "shadow";
      default:
        return "shadow";
    }
  }

  private rebind(a: AssignedDevice, force: boolean): Result<void> {
    const next = this.scratch;
    const kind = this.target(a, next);
    if (!force && kind === a.binding.kind && next.sameAs(a.context)) return ok();
    const previous = a.binding;
    let binding: Binding;
    switch (kind) {
      case "blocked":
        this.ctx.detach(a.devId);
        binding = BLOCKED;
        break;
      case "identity": {
        const r = this.ctx.attach(a.devId, this.options.parentHwptId);
        if (!r.ok) return fail(r);
        binding = IDENTITY;
        break;
      }
      case "nested":
        binding = this.bindNested(a, next);
        break;
      case "shadow":
        binding = this.bindShadow(a, next);
        break;
    }
    a.context.copyFrom(next);
    a.binding = binding;
    this.release(previous);
    return ok();
  }

  private bindNested(a: AssignedDevice, next: DeviceContext): Binding {
    const flags = (next.sre ? VtdS1Flag.SRE : 0) | (next.wpe ? VtdS1Flag.WPE : 0) | (next.eafe ? VtdS1Flag.EAFE : 0);
    const data = encodeVtdS1({ flags, pgtblAddr: next.root, addrWidth: next.levels === 5 ? VTD_S1_ADDR_WIDTH_5LEVEL : VTD_S1_ADDR_WIDTH_4LEVEL });
    const hwpt = this.ctx.hwptAlloc({ flags: 0, devId: a.devId, ptId: this.options.parentHwptId, data: { type: IOMMU_HWPT_DATA_VTD_S1, bytes: data } });
    if (hwpt.ok && this.ctx.attach(a.devId, hwpt.value).ok) return { kind: "nested", hwptId: hwpt.value };
    // The host refused the configuration: the device is blocked, as hardware blocks an entry it cannot use.
    if (hwpt.ok) this.ctx.destroy(hwpt.value);
    this.ctx.detach(a.devId);
    return BLOCKED;
  }

  private bindShadow(a: AssignedDevice, next: DeviceContext): Binding {
    const key = `${next.kind}:${next.did}:${next.root}:${next.levels}`;
    let space = this.spaces.get(key);
    if (space === undefined) {
      const backend = createShadowBackend(this.options.shadowBackend ?? "iommufd", this.ctx, this.options.vm.memory, this.options.dmaEntryLimit);
      if (!backend.ok) {
        this.ctx.detach(a.devId);
        return BLOCKED;
      }
      const stage = this.translator.stageOf(next);
      space = new ShadowSpace(key, next.did, backend.value, stage.format, stage.geometry, next.root, this.translator.reader, this.options.vm.memory, next.kind === ContextKind.FIRST_LEVEL);
      this.spaces.set(key, space);
      space.resync(0, Infinity);
      this.countShadow();
    }
    if (!this.ctx.attach(a.devId, space.backend.ioasId).ok) {
      this.ctx.detach(a.devId);
      if (space.users === 0) this.dropSpace(space);
      return BLOCKED;
    }
    space.users++;
    return { kind: "shadow", space };
  }

  private release(binding: Binding): void {
    if (binding.kind === "nested") this.ctx.destroy(binding.hwptId);
    else if (binding.kind === "shadow" && --binding.space.users === 0) this.dropSpace(binding.space);
  }

  private dropSpace(space: ShadowSpace): void {
    space.clear();
    this.spaces.delete(space.key);
    this.ctx.ioasUnmap({ ioasId: space.backend.ioasId, iova: 0, length: U64_MAX });
    this.ctx.destroy(space.backend.ioasId);
    this.countShadow();
  }

  private countShadow(): void {
    let n = 0;
    for (const s of this.spaces.values()) n += s.maps.size;
    this.stats.shadowMappings = n;
  }

  /**
   * A translation-cache invalidation for domain `did` (every domain when undefined), PASID `pasid` (any when
   * undefined), over [address, address + length) (everything when length is Infinity). Nested devices get it
   * forwarded as IOMMU_HWPT_INVALIDATE with a VTD_S1 entry; shadow spaces are resynchronised over the range.
   */
  invalidate(did: number | undefined, pasid: number | undefined, address: number, length: number, leaf: boolean): void {
    const all = !Number.isFinite(length);
    const hwpts = new Set<number>();
    for (const a of this.devices.values()) {
      if (a.binding.kind !== "nested") continue;
      if (did !== undefined && a.context.did !== did) continue;
      if (pasid !== undefined && a.context.pasid !== pasid) continue;
      hwpts.add(a.binding.hwptId);
    }
    if (hwpts.size > 0) {
      const entry = all
        ? encodeVtdS1InvalidateAll()
        : encodeVtdS1Invalidate({ addr: BigInt(address), npages: BigInt(Math.max(1, Math.ceil(length / 4096))), flags: leaf ? VtdInvalidateFlag.LEAF : 0 });
      for (const hwptId of hwpts) {
        this.ctx.hwptInvalidate({ hwptId, dataType: IOMMU_HWPT_INVALIDATE_DATA_VTD_S1, entryLen: VTD_S1_INVALIDATE_BYTES, entryNum: 1, entries: entry });
        this.stats.forwarded++;
      }
    }
    let resynced = false;
    for (const space of this.spaces.values()) {
      if (did !== undefined && space.did !== did) continue;
      space.resync(address, length);
      resynced = true;
      this.stats.forwarded++;
    }
    if (resynced) this.countShadow();
  }

  /** Detaches everything and frees the host objects (the VMM is going away). */
  destroy(): void {
    for (const a of this.devices.values()) {
      this.ctx.detach(a.devId);
      this.release(a.binding);
      a.binding = BLOCKED;
    }
    this.devices.clear();
    for (const space of [...this.spaces.values()]) this.dropSpace(space);
  }
}

