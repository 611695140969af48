import { token } from "../di/token.js";
import type { PhysicalIommu } from "../contract/iommu-unit.js";
import type { EventBus } from "../events/event-bus.js";
import type { VmidSpace } from "../ids/vmid-space.js";
import type { HostMemory } from "../memory/host-memory.js";
import type { Clock } from "../sim/clock.js";
import type { Rng } from "../sim/rng.js";
import type { CoreEvents } from "./core-events.js";
import type { HostLog } from "./host-log.js";

/**
 * The host-wide singletons every plugin's host half needs, held by the root container: host memory, the
 * injected clock and seeded randomness, the event bus, the VMID space, and the physical IOMMU units.
 */
export const HostServices = token<HostServices>("HostServices");
export interface HostServices {
  readonly memory: HostMemory;
  readonly clock: Clock;
  readonly rng: Rng;
  readonly events: EventBus<CoreEvents>;
  /**
   * VMIDs / cache tags, host-wide so that several vIOMMUs of one VM can share a stage 2; an id is reused only
   * when no domain, attachment or cached entry carries it.
   */
  readonly vmids: VmidSpace;
  readonly units: PhysicalIommu[];
  /** Refusals the host made on a VM's behalf (invalidations, shadow mappings, restores). */
  readonly log: HostLog;
}
