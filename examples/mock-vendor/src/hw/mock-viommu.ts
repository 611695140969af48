import {
  copyStructFromFullUserArray,
  copyStructFromUser,
  err,
  fail,
  HwptAllocFlag,
  newWalkResult,
  ok,
  Perm,
  toBytes,
  type HostMemory,
  type HwQueueCore,
  type InvalidateOutcome,
  type NestedDomain,
  type PhysicalDevice,
  type Result,
  type UserData,
  type UserDataArray,
  type VdeviceCore,
  type ViommuCore,
  type ViommuOps,
} from "@viommu/core";
import { MockOpcode, type MockCommand } from "../format/command.js";
import { encodeMockEvent, MockEventType } from "../format/event.js";
import {
  decodeMockInvalidate,
  decodeMockS1,
  MOCK_HW_QUEUE_MAX,
  MOCK_HW_QUEUE_TYPE,
  MOCK_HWPT_DATA_TYPE,
  MOCK_INVALIDATE_BYTES,
  MOCK_INVALIDATE_DATA_TYPE,
  MOCK_S1_BYTES,
  MOCK_S1_MIN_BYTES,
  MOCK_VEVENTQ_TYPE,
} from "../format/uapi.js";
import { applyMockInvalidate, checkMockInvalidate, MockNestedDomain, type MockTlb } from "./mock-nested-domain.js";
import { MOCK_VQUEUE_PAGE_BYTES } from "../format/registers.js";
import { MockVqueues } from "./mock-vqueue.js";

/** The mock's notional driver struct sizes (nonzero means "supported"; the core checks them against its own). */
export const MOCK_VIOMMU_SIZE = 256;
export const MOCK_HW_QUEUE_SIZE = 128;

/** Physical address the mock pretends its vQUEUE control page lives at (page-aligned, for the mmap table). */
const MOCK_VQUEUE_PAGE_PHYS = 0xfed0_0000;

/**
 * The mock vIOMMU: nested domains from `iommu_hwpt_mock_s1`, vIOMMU invalidation of raw
 * `iommu_mock_invalidate` entries, a vDEVICE table in "hardware", and up to two guest-owned command queues
 * the hardware consumes directly.
 */
export class MockViommu implements ViommuOps {
  readonly vqueues: MockVqueues;
  /** Virtual → physical requester ids, as programmed into hardware by vdeviceInit. */
  readonly ridMap = new Map<number, number>();
  readonly mmapOffset: number;
  readonly vdeviceSize = 64;
  private readonly walk = newWalkResult();

  private constructor(
    readonly core: ViommuCore,
    private readonly tlb: MockTlb,
    private readonly host: HostMemory,
    mmapOffset: number,
    vqueues: MockVqueues,
  ) {
    this.mmapOffset = mmapOffset;
    this.vqueues = vqueues;
  }

  static create(core: ViommuCore, tlb: MockTlb, host: HostMemory): Result<MockViommu> {
    let self: MockViommu | undefined;
    const vqueues = new MockVqueues(host, {
      execute: (op, cmd) => self!.executeGuestCommand(op, cmd),
      reportError: (index, cons) => self!.reportQueueError(index, cons),
    });
    const offset = core.allocMmap(MOCK_VQUEUE_PAGE_PHYS, MOCK_VQUEUE_PAGE_BYTES, vqueues);
    if (!offset.ok) return fail(offset);
    self = new MockViommu(core, tlb, host, offset.value, vqueues);
    return ok(self);
  }

  destroy(): void {
    this.core.destroyMmap(this.mmapOffset);
  }

  allocDomainNested(_device: PhysicalDevice, flags: number, data: UserData): Result<NestedDomain> {
    if ((flags & ~HwptAllocFlag.PASID) !== 0) return err("EOPNOTSUPP", "nested flags other than PASID");
    if (data.type !== MOCK_HWPT_DATA_TYPE) return err("EOPNOTSUPP", `HWPT data type 0x${data.type.toString(16)}`);
    const bytes = copyStructFromUser(data, MOCK_HWPT_DATA_TYPE, MOCK_S1_MIN_BYTES, MOCK_S1_BYTES);
    if (!bytes.ok) return fail(bytes);
    const s1 = decodeMockS1(bytes.value);
    if (!s1.ok) return fail(s1);
    return ok(new MockNestedDomain(this.core.unit, this.core.parent, s1.value.s1Root, s1.value.asid, this.tlb, this.core));
  }

  /**
   * Invalidation through the vIOMMU: the whole array is copied at once (shorter entries zero-extended, longer
   * ones only with a zero tail), except that zero entries of the right type is the documented probe (0).
   */
  cacheInvalidate(array: UserDataArray): InvalidateOutcome {
    if (array.type !== MOCK_INVALIDATE_DATA_TYPE) return { handled: 0, result: err("EINVAL", `invalidation data type ${array.type}`) };
    if (array.entryNum === 0) return { handled: 0, result: ok() };
    const entries = copyStructFromFullUserArray(array, MOCK_INVALIDATE_DATA_TYPE, MOCK_INVALIDATE_BYTES);
    if (!entries.ok) return { handled: 0, result: fail(entries) };
    for (let i = 0; i < entries.value.length; i++) {
      const entry = decodeMockInvalidate(entries.value[i]!);
      const bad = checkMockInvalidate(entry);
      if (bad) return { handled: i, result: bad };
      applyMockInvalidate(this.tlb, this.core.parent.vmid, entry);
    }
    return { handled: entries.value.length, result: ok() };
  }

  vdeviceInit(vdevice: VdeviceCore): Result<void> {
    if (vdevice.virtId > 0xffff) return err("EINVAL", `virtual requester id ${vdevice.virtId} wider than 16 bits`);
    this.ridMap.set(vdevice.virtId, vdevice.device.requesterId);
    vdevice.destroy = () => this.ridMap.delete(vdevice.virtId);
    return ok();
  }

  getHwQueueSize(type: number): number {
    return type === MOCK_HW_QUEUE_TYPE ? MOCK_HW_QUEUE_SIZE : 0;
  }

  hwQueueInitPhys(queue: HwQueueCore, index: number, basePa: number): Result<void> {
    if (index >= MOCK_HW_QUEUE_MAX) return err("EINVAL", `queue index ${index} ≥ ${MOCK_HW_QUEUE_MAX}`);
    if (queue.sibling(index) !== undefined) return err("EEXIST", `queue ${index} already allocated`);
    const previous = index > 0 ? queue.sibling(index - 1) : undefined;
    if (index > 0 && previous === undefined) return err("EIO", `queue ${index - 1} must be allocated first`);
    // The core pinned the memory; the mock checks it agrees by translating the IOVA through stage 2 itself.
    this.core.parent.table.walk(queue.baseIova, Perm.Read, this.walk);
    if (!this.walk.ok || this.walk.output !== basePa) return err("EFAULT", "queue base does not match the stage-2 translation");
    if (queue.length < 16 || (queue.length & (queue.length - 1)) !== 0) return err("EINVAL", "queue length must be a power of two of at least one command");
    if (previous !== undefined) {
      const dep = queue.dependOn(previous);
      if (!dep.ok) return dep;
    }
    this.vqueues.add(index, basePa, queue.length);
    queue.destroy = () => this.vqueues.remove(index);
    return ok();
  }

  /**
   * Commands a guest may issue on its own queue: TLB invalidations (forced into its own VMID) and SYNC.
   * Configuration invalidations (device, interrupt entries) must go through the trapped queue, where the VMM
   * sees them; here they are a queue error.
   */
  private executeGuestCommand(op: number, cmd: MockCommand): boolean {
    const vmid = this.core.parent.vmid;
    switch (op) {
      case MockOpcode.INV_ALL:
        this.tlb.invalidateAsid(vmid, cmd.ASID);
        return true;
      case MockOpcode.INV_ASID:
        this.tlb.invalidateAsid(vmid, cmd.ASID);
        return true;
      case MockOpcode.INV_RANGE:
        this.tlb.invalidateRange(vmid, cmd.ASID, cmd.ADDR, (cmd.NPAGES + 1) * 4096);
        return true;
      case MockOpcode.SYNC: {
        if (cmd.ADDR === 0) return true;
        // The status write goes through stage 2: the guest names a GPA.
        this.core.parent.table.walk(cmd.ADDR, Perm.Write, this.walk);
        if (!this.walk.ok) return false;
        const status = new Uint8Array(4);
        new DataView(status.buffer).setUint32(0, cmd.DATA, true);
        return this.host.dmaWrite(this.core.owner, this.walk.output, status);
      }
      default:
        return false;
    }
  }

  private reportQueueError(queueIndex: number, consumer: number): void {
    const record = encodeMockEvent({ TYPE: MockEventType.CMD_ERROR, REASON: 1, INDEX: consumer, STAGE: 0, RID: queueIndex });
    this.core.reportEvent(MOCK_VEVENTQ_TYPE, toBytes(record));
  }
}
