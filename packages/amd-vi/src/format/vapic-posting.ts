import type { MsiMessage, OwnerId, PhysicalDevice, Result } from "@viommu/core";

/**
 * Where the IOMMU posts one device interrupt in guest virtual APIC mode (the vAPIC form of the 128-bit IRTE,
 * spec x86.md B5.3): the guest vector into the vCPU's vAPIC backing page, a doorbell to the physical CPU it runs
 * on when IsRun, a GA log entry tagged `gaTag` when it does not run and `gaLogIntr` asks for one.
 */
export interface VapicTarget {
  /** Host physical address of the vCPU's vAPIC backing page (the IRTE's GA root pointer). */
  readonly backingPage: number;
  readonly guestVector: number;
  /** The physical APIC id of the CPU the vCPU runs on (the IRTE's Destination while IsRun). */
  readonly hostApicId: number;
  readonly running: boolean;
  /** KVM's AVIC_GATAG(vm, vcpu): what the GA log names. */
  readonly gaTag: number;
  readonly gaLogIntr: boolean;
}

/**
 * The host kernel's interface to vAPIC posting (model's shape of what KVM's irq bypass reaches through
 * irq_set_vcpu_affinity: Linux amd_ir_set_vcpu_affinity → amd_iommu_activate_guest_mode, amd_iommu_update_ga
 * when the vCPU is scheduled in or out, and the GA log notifier KVM registers, avic_ga_log_notifier). Not part
 * of iommufd: a VMM reaches it as KVM does, next to the device it passed through.
 */
export interface AmdVapicPosting {
  /** Allocates a vAPIC-form IRTE for the device's interrupt; returns the MSI the physical device is given. */
  postInterrupt(device: PhysicalDevice, target: VapicTarget): Result<MsiMessage>;
  /** The vCPU behind `backingPage` was scheduled in (running, on `hostApicId`) or out: every IRTE posting to it. */
  updateVcpu(backingPage: number, running: boolean, hostApicId: number): void;
  /** Frees the IRTE behind `msi` (an MSI through it is then blocked). */
  unpostInterrupt(device: PhysicalDevice, msi: MsiMessage): void;
  /** Where GA log entries for `owner`'s vCPUs go (undefined: removes the notifier). */
  setGaLogNotifier(owner: OwnerId, notify: ((gaTag: number) => void) | undefined): void;
}

/** Whether a physical unit offers vAPIC posting (EFR.GAMSup vAPIC with GAEn). */
export function isAmdVapicPosting(unit: unknown): unit is AmdVapicPosting {
  const u = unit as Partial<AmdVapicPosting> | undefined;
  return u !== undefined && u !== null && typeof u.postInterrupt === "function" && typeof u.updateVcpu === "function";
}

/** KVM's GA tag: the VM in bits 31:9, the vCPU in 8:0 (AVIC_GATAG with 9 vCPU-id bits). */
export function gaTag(owner: OwnerId, vcpu: number): number {
  return ((owner << 9) | (vcpu & 0x1ff)) >>> 0;
}

export function gaTagOwner(tag: number): OwnerId {
  return tag >>> 9;
}

export function gaTagVcpu(tag: number): number {
  return tag & 0x1ff;
}
