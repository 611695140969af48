export * from "./disposable.js";
export * from "./event-bus.js";
