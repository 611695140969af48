export * from "./clock.js";
export * from "./rng.js";
