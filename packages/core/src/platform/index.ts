export * from "./core-events.js";
export * from "./host-services.js";
export * from "./mmio.js";
export * from "./vm.js";
export * from "./dma-device.js";
export * from "./platform.js";
export * from "./guest-pages.js";
export * from "./testbed.js";
