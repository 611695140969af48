export * from "./pte.js";
export * from "./device-entry.js";
export * from "./command.js";
export * from "./event.js";
export * from "./irte.js";
export * from "./registers.js";
export * from "./uapi.js";
export * from "./structures.js";
