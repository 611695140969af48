import { VendorPlugin, type DependencyContainer, type DmaRequest, type HostServices, type WalkResult } from "@viommu/core";
import { mockPlugin, MockUnit } from "@viommu/example-mock";

/** A unit that counts what the hardware does: the kind of instrumentation a backend author adds first. */
export class CountingUnit extends MockUnit {
  translations = 0;
  faults = 0;

  override translate(request: DmaRequest, out: WalkResult): void {
    this.translations++;
    super.translate(request, out);
  }

  override reportDmaFault(request: DmaRequest, result: WalkResult): void {
    this.faults++;
    super.reportDmaFault(request, result);
  }
}

/**
 * A backend built on the mock: its own id and display name, a counting unit, and a narrower set of
 * capabilities (no shadow mode, no guest-owned queues) declared with reasons, so the suite reports those
 * cases n/a instead of passing them silently.
 */
export const customPlugin: VendorPlugin = {
  ...mockPlugin,
  id: "custom",
  displayName: "Custom backend (mock formats, counting unit)",
  capabilities: {
    ...mockPlugin.capabilities,
    shadow: false,
    vqueue: false,
    reasons: { ...mockPlugin.capabilities.reasons, shadow: "this backend only does nested translation", vqueue: "this backend keeps every queue trapped" },
  },
  register(container: DependencyContainer): void {
    container.register(VendorPlugin, { useValue: customPlugin });
  },
  createUnit(host: HostServices, index: number): CountingUnit {
    return new CountingUnit(host, index);
  },
};

export default customPlugin;
