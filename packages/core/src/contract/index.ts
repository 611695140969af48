export * from "./structure-decoder.js";
export * from "./user-data.js";
export * from "./capabilities.js";
export * from "./iommu-unit.js";
export * from "./viommu-ops.js";
export * from "./vmm-device.js";
export * from "./guest-driver.js";
export * from "./plugin.js";
