export * from "./byte-writer.js";
export * from "./acpi-table.js";
