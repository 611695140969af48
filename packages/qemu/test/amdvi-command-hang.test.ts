import { TRACE_FORMAT, TRACE_VERSION, type Trace, type TraceOp } from "@viommu/trace";
import { describe, expect, it } from "vitest";
import { amdViCommandHangAt, predictedFailure, qemuFailures } from "../src/index.js";

const AMD = 0xfed8_0000;
const write = (offset: number, value: bigint, size: 4 | 8 = 8): TraceOp => ({ op: "mmio-write", addr: AMD + offset, size, value });
const trace = (ops: TraceOp[]): Trace => ({ header: { format: TRACE_FORMAT, version: TRACE_VERSION, machine: { ram: [{ base: 0, size: 2 ** 26 }], iommus: [{ vendor: "amd-vi", base: AMD, size: 0x4000 }], devices: [{ rid: 0x20 }] } }, ops });

/** A 256-entry command buffer (ComLen 8) at 0x100000. */
const base = write(0x08, 0x0800_0000_0010_0000n);
const enable = write(0x18, 0x1001n);

describe("QEMU 7.2 amd-iommu command-processor hang prediction", () => {
  it("names the tail write beyond the buffer while command processing runs", () => {
    expect(amdViCommandHangAt(trace([base, enable, write(0x2008, 0x20n), write(0x2008, 0x1000n)]))).toBe(3);
    // The last slot is 0xff0; the tail wraps to 0 at 0x1000.
    expect(amdViCommandHangAt(trace([base, enable, write(0x2008, 0xff0n), write(0x2008, 0n)]))).toBeUndefined();
  });

  it("needs IommuEn and CmdBufEn: the hang comes with the Control write that starts processing", () => {
    const ops = [base, write(0x18, 0x1000n), write(0x2008, 0x4080n), write(0x18, 0x1001n)];
    expect(amdViCommandHangAt(trace(ops))).toBe(3);
    expect(amdViCommandHangAt(trace(ops.slice(0, 3)))).toBeUndefined();
  });

  it("takes the length from an 8-byte base write or one to its upper dword, which also resets head and tail", () => {
    // A 4-byte write of the lower dword leaves the length QEMU had (none yet: every tail is beyond it).
    expect(amdViCommandHangAt(trace([write(0x08, 0x0010_0000n, 4), enable, write(0x2008, 0x10n)]))).toBe(2);
    expect(amdViCommandHangAt(trace([write(0x08, 0x0010_0000n, 4), write(0x0c, 0x0800_0000n, 4), enable, write(0x2008, 0x10n)]))).toBeUndefined();
    // A tail beyond a 16-entry buffer hangs, and after a larger base (head and tail reset) the same tail does not.
    expect(amdViCommandHangAt(trace([write(0x08, 0x0400_0000_0010_0000n), enable, write(0x2008, 0x100n)]))).toBe(2);
    expect(amdViCommandHangAt(trace([write(0x08, 0x0400_0000_0010_0000n), write(0x2008, 0x100n), base, enable, write(0x2008, 0x100n)]))).toBeUndefined();
  });

  it("sees a head write restart processing towards a tail written while it was off", () => {
    const ops = [base, write(0x2008, 0x2000n), enable];
    // Enabling with head 0 and the tail beyond the buffer hangs at the Control write.
    expect(amdViCommandHangAt(trace(ops))).toBe(2);
    // Head equal to the tail: nothing to run, until the head moves.
    expect(amdViCommandHangAt(trace([base, write(0x2008, 0x2000n), write(0x2000, 0x2000n), enable]))).toBeUndefined();
    expect(amdViCommandHangAt(trace([base, write(0x2008, 0x2000n), write(0x2000, 0x2000n), enable, write(0x2000, 0x10n)]))).toBe(4);
  });

  it("is the catalogued failure's prediction, and explains a hang only at that operation", () => {
    const t = trace([base, enable, write(0x2008, 0x1000n)]);
    const p = predictedFailure("amd-vi", t);
    expect(p?.failure.id).toBe("amdvi-cmd-tail-beyond-buffer-hangs");
    expect(p?.index).toBe(2);
    const f = qemuFailures.find((x) => x.id === "amdvi-cmd-tail-beyond-buffer-hangs")!;
    expect(f.matches(t, "no answer within 5000 ms: QEMU hung and was killed", 2)).toBe(true);
    expect(f.matches(t, "no answer within 5000 ms: QEMU hung and was killed", 1)).toBe(false);
    expect(f.matches(t, "QEMU exited", 2)).toBe(false);
    expect(predictedFailure("vtd", t)).toBeUndefined();
  });
});
