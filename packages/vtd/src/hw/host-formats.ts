import type { TableGeometry } from "@viommu/core";
import { SLLPS_1G, SLLPS_2M } from "../format/cap.js";
import { FlPteFormat } from "../format/fl-pte.js";
import { SlPteFormat } from "../format/sl-pte.js";
import { vtdTableGeometry } from "../format/table-geometry.js";
import { HOST_HAW, HOST_SL_LEVELS } from "./host-capabilities.js";

/** The host's second-level format (scalable mode: SNP allowed in leaves). */
export const hostSlFormat = new SlPteFormat({ haw: HOST_HAW, sllps: SLLPS_2M | SLLPS_1G, snoop: true });

/** The host's stage-2 geometry: 4 levels, 48-bit input (guest physical addresses). */
export const hostSlGeometry: TableGeometry = vtdTableGeometry(HOST_SL_LEVELS);

/** The first-level format the host walks in a guest's nested stage 1 (1 GiB pages: CAP.FL1GP). */
export const hostFlFormat = new FlPteFormat({ haw: HOST_HAW, fl1gp: true });

/**
 * First-level geometries. An IOVA must be canonical for the paging mode; the DMA addresses of this model are
 * non-negative, so the lower canonical half is the whole input range: 47 bits with 4 levels, 56 with 5. Above
 * it, the request faults non-canonical (0x80).
 */
export const FL_GEOMETRY_4: TableGeometry = vtdTableGeometry(4, 47);
export const FL_GEOMETRY_5: TableGeometry = vtdTableGeometry(5, 56);
