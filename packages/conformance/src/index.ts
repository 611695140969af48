export * from "./testbed.js";
export * from "./case.js";
export * from "./runner.js";
export { conformanceCases } from "./cases/index.js";
export * as caseSupport from "./cases/support.js";
