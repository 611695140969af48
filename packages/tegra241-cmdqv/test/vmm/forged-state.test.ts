import { afterAll, describe, expect, it } from "vitest";
import fc from "fast-check";
import { decodeState, encodeState, unwrap, type StateValue } from "@viommu/core";
import { SMMUV3_STATE_KIND, SMMUV3_STATE_VERSION } from "@viommu/smmuv3";
import type { Testbed } from "@viommu/conformance";
import { device, IOVA, mapped, tegraBed } from "../support.js";

const SEED = Number(process.env.VIOMMU_SEED ?? 20261207);
const KIND = "tegra241-cmdqv";

type Json = { [key: string]: StateValue } | StateValue[];

/** Every leaf of a JSON value with the container holding it, depth first; containers themselves too. */
function leaves(value: StateValue, out: [Json, string | number][] = []): [Json, string | number][] {
  if (Array.isArray(value)) value.forEach((v, i) => (out.push([value, i]), leaves(v, out)));
  else if (value !== null && typeof value === "object") for (const [k, v] of Object.entries(value)) out.push([value, k]), leaves(v, out);
  return out;
}

const odd: StateValue[] = [null, true, -1, 0.5, 2 ** 60, "0x1", "-5", "", [], {}, [0, 0, 0], "281474976710656"];
interface Forgery {
  readonly half: "smmu" | "cmdqv";
  readonly at: number;
  readonly op: "flip" | "set" | "retype" | "delete";
  readonly bit: number;
  readonly value: StateValue;
}
const forgery: fc.Arbitrary<Forgery> = fc.record({
  half: fc.constantFrom("smmu" as const, "cmdqv" as const),
  at: fc.nat(),
  op: fc.constantFrom("flip" as const, "flip" as const, "set" as const, "retype" as const, "delete" as const),
  bit: fc.integer({ min: 0, max: 63 }),
  value: fc.constantFrom(...odd),
});

function change(holder: Json, key: string | number, f: Forgery): void {
  const h = holder as Record<string | number, StateValue>;
  const old = h[key];
  if (f.op === "delete") {
    if (Array.isArray(holder)) holder.splice(key as number, 1);
    else delete h[key];
  } else if (f.op === "retype") h[key] = f.value;
  else if (typeof old === "number") h[key] = f.op === "flip" ? old ^ (1 << (f.bit % 32)) : f.bit * 0x0101_0101;
  else if (typeof old === "string" && /^(0x)?[0-9a-f]+$/.test(old)) {
    const v = BigInt(old.startsWith("0x") ? old : BigInt(old));
    const next = f.op === "flip" ? v ^ (1n << BigInt(f.bit)) : 1n << BigInt(f.bit);
    h[key] = old.startsWith("0x") ? `0x${next.toString(16)}` : next.toString();
  } else if (typeof old === "boolean") h[key] = !old;
  else h[key] = f.value;
}

/** The saved Tegra state with one field of one half changed, re-encoded (valid checksums throughout). */
function forge(saved: { smmu: string; cmdqv: StateValue }, smmuJson: StateValue, f: Forgery): Uint8Array {
  const smmu = JSON.parse(JSON.stringify(smmuJson)) as StateValue;
  const cmdqv = JSON.parse(JSON.stringify(saved.cmdqv)) as StateValue;
  const target = f.half === "smmu" ? smmu : cmdqv;
  const all = leaves(target);
  const [holder, key] = all[f.at % all.length]!;
  change(holder, key, f);
  const inner = encodeState(SMMUV3_STATE_KIND, SMMUV3_STATE_VERSION, smmu);
  return encodeState(KIND, 1, { smmu: Array.from(inner, (b) => b.toString(16).padStart(2, "0")).join(""), cmdqv });
}

let bed: Testbed | undefined;
afterAll(() => bed?.dispose());

describe("Tegra241 restore is all or nothing", () => {
  it(`500+ forged streams over both halves: refused with EINVAL naming the field and nothing changed, or accepted and working (seed ${SEED})`, () => {
    bed = tegraBed();
    const v = bed.vms[0]!;
    const domain = mapped(v);
    unwrap(v.drivers[0]!.flush(domain, IOVA, 0x1000));
    const d = device(v);
    const original = d.save();
    const saved = unwrap(decodeState(original, KIND, [1])).value as { smmu: string; cmdqv: StateValue };
    const smmuJson = unwrap(decodeState(Uint8Array.from(saved.smmu.match(/../g)!, (h) => parseInt(h, 16)), SMMUV3_STATE_KIND, [SMMUV3_STATE_VERSION])).value;
    let refused = 0;
    let accepted = 0;
    fc.assert(
      fc.property(forgery, (f) => {
        const before = d.save();
        const r = d.restore(forge(saved, smmuJson, f));
        if (!r.ok) {
          refused++;
          expect(r.error.errno).toBe("EINVAL");
          expect(r.error.message).toMatch(/^(smmuv3|tegra241-cmdqv) state: [A-Za-z_]/);
          expect(d.save()).toEqual(before);
          return;
        }
        accepted++;
        d.poll();
        // A running VCMDQ's RD and WR lie within twice its size (index and wrap bit), as the guest could have set them.
        for (const q of d.guestQueues().filter((x) => x.name.startsWith("VCMDQ") && x.base() !== undefined)) {
          for (const reg of [q.producer, q.consumer]) expect(Number(v.vm.mmioRead(reg.address, 4)) & 0xf_ffff).toBeLessThan(2 * q.entries());
        }
        const again = d.save();
        const decoded = unwrap(decodeState(again, KIND, [1])).value as { smmu: string; cmdqv: StateValue };
        expect(d.smmu.parseState(Uint8Array.from(decoded.smmu.match(/../g)!, (h) => parseInt(h, 16))).ok).toBe(true);
        expect(d.cmdqv!.parseState(decoded.cmdqv).ok).toBe(true);
        unwrap(d.restore(original));
        expect(v.devices[0]!.device.read(IOVA, 4).ok).toBe(true);
      }),
      { seed: SEED, numRuns: 520 },
    );
    expect(refused + accepted).toBe(520);
    expect(refused).toBeGreaterThan(accepted);
  }, 120_000);

  it("a bad CMDQV half leaves the SMMUv3 half untouched (it used to be applied first)", () => {
    const b = tegraBed();
    try {
      const v = b.vms[0]!;
      mapped(v);
      const d = device(v);
      const saved = unwrap(decodeState(d.save(), KIND, [1])).value as { smmu: string; cmdqv: { [key: string]: StateValue } };
      // An SMMUv3 half with the SMMU disabled, a CMDQV half that sets VINTF HYP_OWN.
      const smmuJson = unwrap(decodeState(Uint8Array.from(saved.smmu.match(/../g)!, (h) => parseInt(h, 16)), SMMUV3_STATE_KIND, [SMMUV3_STATE_VERSION])).value as { regs: Record<string, string> };
      smmuJson.regs.CR0 = "0x0";
      smmuJson.regs.CR0ACK = "0x0";
      const inner = encodeState(SMMUV3_STATE_KIND, SMMUV3_STATE_VERSION, smmuJson);
      const cmdqv = { ...saved.cmdqv, vintfConfig: (saved.cmdqv.vintfConfig as number) | (1 << 17) };
      const forged = encodeState(KIND, 1, { smmu: Array.from(inner, (x) => x.toString(16).padStart(2, "0")).join(""), cmdqv });
      const cr0 = d.smmu.regs.get("CR0");
      expect(d.restore(forged)).toMatchObject({ ok: false, error: { errno: "EINVAL", message: expect.stringContaining("vintfConfig") } });
      expect(d.smmu.regs.get("CR0")).toBe(cr0);
      expect(v.devices[0]!.device.read(IOVA, 4).ok).toBe(true);
    } finally {
      b.dispose();
    }
  });
});
