export * from "./testbed.js";
