export * from "./bits/index.js";
export * from "./acpi/index.js";
export * from "./translate/index.js";
export * from "./contract/structure-decoder.js";
