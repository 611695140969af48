export * from "./format/index.js";
export * from "./hw/mock-unit.js";
export * from "./hw/mock-viommu.js";
export * from "./hw/mock-nested-domain.js";
export * from "./hw/mock-vqueue.js";
export * from "./vmm/mock-device.js";
export * from "./guest/mock-driver.js";
export * from "./plugin.js";
