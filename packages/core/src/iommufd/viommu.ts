import { err, ok, type Result } from "../errors/errno.js";
import type { PagingDomain, PhysicalDevice, PhysicalIommu } from "../contract/iommu-unit.js";
import type { MmioRegion, ViommuCore, ViommuOps } from "../contract/viommu-ops.js";
import type { HwptPaging } from "./hwpt.js";
import type { HwQueue } from "./hw-queue.js";
import type { MmapTable } from "./mmap.js";
import { drop, hold, IommufdObject } from "./object-table.js";
import { IommufdObjectType } from "./uapi.js";
import type { Vdevice } from "./vdevice.js";
import type { Veventq } from "./veventq.js";

/**
 * A vIOMMU: one slice of one physical IOMMU unit given to a VM, holding its nesting parent, its vDEVICEs
 * (virtual id → device), vEVENTQs (one per type), HW queues and mmap regions. The driver's part is `ops`.
 */
export class Viommu extends IommufdObject implements ViommuCore {
  readonly type = IommufdObjectType.VIOMMU;
  ops: ViommuOps = {};
  readonly vdevs = new Map<number, Vdevice>();
  readonly veventqs = new Map<number, Veventq>();
  readonly hwQueues = new Map<number, Map<number, HwQueue>>();
  private readonly mmapOffsets = new Set<number>();
  /** Reports dropped because no vEVENTQ of their type existed (the kernel logs them). */
  droppedEvents = 0;

  constructor(
    readonly viommuType: number,
    readonly unit: PhysicalIommu,
    readonly parentHwpt: HwptPaging,
    readonly owner: number,
    private readonly mmaps: MmapTable,
  ) {
    super();
    hold(parentHwpt);
  }

  get parent(): PagingDomain {
    return this.parentHwpt.domain;
  }

  findDevice(virtId: number): PhysicalDevice | undefined {
    return this.vdevs.get(virtId)?.device;
  }

  virtIdOf(device: PhysicalDevice): number | undefined {
    for (const v of this.vdevs.values()) if (v.device === device) return v.virtId;
    return undefined;
  }

  reportEvent(type: number, payload: Uint8Array): Result<void> {
    const q = this.veventqs.get(type);
    if (q === undefined) {
      this.droppedEvents++;
      return err("EOPNOTSUPP", `no vEVENTQ of type ${type}`);
    }
    q.report(payload);
    return ok();
  }

  allocMmap(physicalBase: number, length: number, region: MmioRegion): Result<number> {
    const r = this.mmaps.alloc(this, physicalBase, length, region);
    if (r.ok) this.mmapOffsets.add(r.value);
    return r;
  }

  destroyMmap(offset: number): void {
    if (this.mmapOffsets.delete(offset)) this.mmaps.destroy(offset);
  }

  release(): void {
    this.ops.destroy?.();
    for (const offset of this.mmapOffsets) this.mmaps.destroy(offset);
    this.mmapOffsets.clear();
    drop(this.parentHwpt);
  }
}
