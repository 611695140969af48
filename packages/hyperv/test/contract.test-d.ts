import { expectTypeOf } from "vitest";
import type { EmulatedIommu, GuestIommuDriver, PhysicalIommu, VendorPlugin, ViommuOps } from "@viommu/core";
import { HypervDevice, HypervGuestDriver, HypervUnit, HypervViommu, hypervPlugin } from "../src/index.js";

// Type-level checks (run by `tsc -p tsconfig.tests.json`): every half satisfies the contract.
expectTypeOf(hypervPlugin).toExtend<VendorPlugin>();
expectTypeOf<HypervUnit>().toExtend<PhysicalIommu>();
expectTypeOf<HypervViommu>().toExtend<ViommuOps>();
expectTypeOf<HypervDevice>().toExtend<EmulatedIommu>();
expectTypeOf<HypervGuestDriver>().toExtend<GuestIommuDriver>();
