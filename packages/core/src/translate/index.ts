export * from "./access.js";
export * from "./page-table-format.js";
