export * from "./errno.js";
