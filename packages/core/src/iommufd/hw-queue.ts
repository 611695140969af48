import { err, ok, type Result } from "../errors/errno.js";
import type { HwQueueCore } from "../contract/viommu-ops.js";
import type { Ioas, IoasArea } from "./ioas.js";
import { drop, hold, IommufdObject } from "./object-table.js";
import { IommufdObjectType } from "./uapi.js";
import type { Viommu } from "./viommu.js";

/**
 * A HW queue: guest memory the hardware reads by physical address, so the core pins it and locks the IOAS
 * areas holding it (unmap answers EBUSY until the queue is destroyed).
 */
export class HwQueue extends IommufdObject implements HwQueueCore {
  readonly type = IommufdObjectType.HW_QUEUE;
  destroy?: () => void;
  private readonly dependsOn: HwQueue[] = [];

  constructor(
    readonly viommu: Viommu,
    readonly queueType: number,
    readonly index: number,
    readonly baseIova: number,
    readonly length: number,
    private readonly ioas: Ioas,
    private readonly lockedAreas: readonly IoasArea[],
  ) {
    super();
    hold(viommu);
    hold(ioas);
    for (const a of lockedAreas) a.locks++;
  }

  dependOn(other: HwQueueCore): Result<void> {
    if (!(other instanceof HwQueue) || other === this) return err("EINVAL", "a queue cannot depend on itself");
    if (other.queueType !== this.queueType) return err("EINVAL", "dependent queues must share a type");
    hold(other);
    this.dependsOn.push(other);
    return ok();
  }

  sibling(index: number): HwQueueCore | undefined {
    return this.viommu.hwQueues.get(this.queueType)?.get(index);
  }

  release(): void {
    this.destroy?.();
    for (const other of this.dependsOn) drop(other);
    this.dependsOn.length = 0;
    for (const a of this.lockedAreas) a.locks--;
    drop(this.ioas);
    const siblings = this.viommu.hwQueues.get(this.queueType);
    // A queue whose init failed never took its slot: it must not free a sibling's.
    if (siblings?.get(this.index) === this) siblings.delete(this.index);
    drop(this.viommu);
  }
}
