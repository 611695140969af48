import { ShadowMirror, type GuestMemory, type ShadowAdmit, type ShadowBackend, type ShadowReporter, type ShadowSource, type ShadowSyncReport } from "@viommu/core";

/**
 * One guest domain the VMM shadows (a second- or first-level table the guest's context or PASID entries name):
 * the guest table it mirrors, core's `ShadowMirror` keeping the host equal to it through a shadow back end, the
 * VT-d admission rules, and how many passthrough devices are attached to it.
 */
export class ShadowSpace {
  users = 0;
  readonly mirror: ShadowMirror;

  constructor(
    readonly key: string,
    readonly did: number,
    readonly backend: ShadowBackend,
    private readonly source: ShadowSource,
    memory: GuestMemory,
    reporter: ShadowReporter | undefined,
    private readonly admit: ShadowAdmit,
  ) {
    this.mirror = new ShadowMirror(backend, memory, reporter);
  }

  /** Makes the host equal to the guest's table over [start, start + length) (length Infinity: everything). */
  resync(start: number, length: number): ShadowSyncReport {
    return this.mirror.resync(this.source, start, length, this.admit);
  }

  get entries(): number {
    return this.mirror.entries;
  }

  /** Removes every mapping (the space is going away). */
  clear(): ShadowSyncReport {
    return this.mirror.clear();
  }
}
