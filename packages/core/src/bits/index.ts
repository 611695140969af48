export * from "./words.js";
export * from "./bit-ops.js";
export * from "./layout.js";
export * from "./json-value.js";
