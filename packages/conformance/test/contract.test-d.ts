import { expectTypeOf } from "vitest";
import type { EmulatedIommu, GuestIommuDriver, PhysicalIommu, VendorPlugin } from "@viommu/core";
import { mockPlugin } from "@viommu/example-mock/plugin";
import { MockDevice, MockGuestDriver, MockUnit } from "@viommu/example-mock";

// Type-level checks (run by `tsc -p tsconfig.tests.json`): each backend satisfies the contract.
expectTypeOf(mockPlugin).toExtend<VendorPlugin>();
expectTypeOf<MockUnit>().toExtend<PhysicalIommu>();
expectTypeOf<MockDevice>().toExtend<EmulatedIommu>();
expectTypeOf<MockGuestDriver>().toExtend<GuestIommuDriver>();
