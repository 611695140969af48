/** The testbed lives in core; re-exported here for suites written against it. */
export { Testbed, type AssignedDevice, type TestbedDevice, type TestbedOptions, type TestbedVmOptions, type TestVm } from "@viommu/core";
export * from "./case.js";
export * from "./runner.js";
export { conformanceCases } from "./cases/index.js";
export * as caseSupport from "./cases/support.js";
export * from "./campaign/hostile-campaign.js";
