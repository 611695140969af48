import type { ConformanceCase } from "../case.js";
import { auditCases } from "./audit.js";
import { dmaCases } from "./dma.js";
import { eventCases } from "./events.js";
import { interruptCases } from "./interrupts.js";
import { isolationCases } from "./isolation.js";
import { lifecycleCases } from "./lifecycle.js";
import { migrationCases } from "./migration.js";
import { pasidCases } from "./pasid.js";

/** Every vendor-neutral case, in the order the matrix shows them. */
export const conformanceCases: readonly ConformanceCase[] = [...dmaCases, ...isolationCases, ...eventCases, ...interruptCases, ...pasidCases, ...lifecycleCases, ...migrationCases, ...auditCases];
