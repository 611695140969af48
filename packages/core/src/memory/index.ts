export * from "./page.js";
export * from "./host-memory.js";
export * from "./guest-memory.js";
export * from "./rmp.js";
