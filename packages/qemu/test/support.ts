import { afterEach, describe, expect } from "vitest";
import { externalTool, type ExternalTool } from "../../../test-support/external-tools.js";
import { liveQemuCount, stopAllQemu } from "../src/index.js";

export const qemuX86: ExternalTool = externalTool("qemu-system-x86_64", ["--version"], "qemu-system-x86");
export const qemuArm: ExternalTool = externalTool("qemu-system-aarch64", ["--version"], "qemu-system-arm");

export const SEED = Number(process.env.VIOMMU_SEED ?? 1);

/**
 * A describe block that needs `tool`: skipped with the printed reason when it is missing (CI requires it), and
 * after every test no QEMU it started is left running, whether the test passed or not.
 */
export function describeWith(tool: ExternalTool, name: string, body: () => void): void {
  if (tool.skipReason !== undefined) console.warn(`skipping "${name}": ${tool.skipReason}`);
  describe.skipIf(tool.skipReason !== undefined)(`${name} (${tool.version})`, () => {
    afterEach(async () => {
      const left = liveQemuCount();
      await stopAllQemu();
      expect(left, "a test left QEMU running").toBe(0);
    });
    body();
  });
}
