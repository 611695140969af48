import type { TableGeometry, WritableFormat } from "@viommu/core";
import { hypervPageTableEncoder, hypervPageTableFormat, hypervStage1Geometry } from "../format/x86-page-table.js";

/**
 * The hypervisor's own stage 2 (GPA → host physical), the table the guest's stage 1 is nested over. It is never
 * guest-visible, so its format is the hypervisor's choice: the model writes it in the x86-64 paging format the
 * host IOMMU walks (4 levels, 48-bit GPAs, 4K/2M/1G leaves). x86 paging cannot withhold read from a present
 * entry, so a write-only IOAS mapping reads as read-write here.
 */
export const hostStage2Format: WritableFormat = { ...hypervPageTableFormat, ...hypervPageTableEncoder, name: "hyperv-host-stage2" };

export const hostStage2Geometry: TableGeometry = hypervStage1Geometry(4, 48);
