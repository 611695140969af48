import { describe, expect, it } from "vitest";
import fc from "fast-check";
import { decodeState, encodeState, newWalkResult, NO_PASID, Perm, unwrap, type StateValue } from "@viommu/core";
import { encodeCommand } from "../../src/format/command.js";
import { SMMUV3_STATE_KIND, SMMUV3_STATE_VERSION } from "../../src/vmm/smmuv3-state.js";
import { smmuBed } from "../support.js";

const SEED = Number(process.env.VIOMMU_SEED ?? 20261206);
const IOVA = 0x10_0000;
const DATA = 0x2000_0000;

/** One change to a saved state's JSON: at a register, a top-level field, or the register object itself. */
type Forgery =
  | { readonly kind: "flip"; readonly at: number; readonly bit: number }
  | { readonly kind: "set"; readonly at: number; readonly value: bigint }
  | { readonly kind: "retype"; readonly at: number; readonly value: StateValue }
  | { readonly kind: "delete"; readonly at: number }
  | { readonly kind: "add"; readonly name: string; readonly value: string };

const oddValues: StateValue[] = [null, true, false, -1, 1.5, 2 ** 60, "0x", "0xg1", "12345678901234567890123", "", [], {}, [1], { a: 1 }];
const forgery: fc.Arbitrary<Forgery> = fc.oneof(
  { weight: 4, arbitrary: fc.record({ kind: fc.constant("flip" as const), at: fc.nat(), bit: fc.integer({ min: 0, max: 63 }) }) },
  { weight: 2, arbitrary: fc.record({ kind: fc.constant("set" as const), at: fc.nat(), value: fc.bigInt({ min: 0n, max: (1n << 64n) - 1n }) }) },
  { weight: 2, arbitrary: fc.record({ kind: fc.constant("retype" as const), at: fc.nat(), value: fc.constantFrom(...oddValues) }) },
  { weight: 1, arbitrary: fc.record({ kind: fc.constant("delete" as const), at: fc.nat() }) },
  { weight: 1, arbitrary: fc.record({ kind: fc.constant("add" as const), name: fc.constantFrom("IDR0", "IIDR", "STATUSR", "PRIQ_BASE", "AGBPA", "__proto__", "toString", "CR3"), value: fc.constantFrom("0x0", "0x1", "0xffffffff") }) },
);

/** The forged JSON: the saved one with `f` applied (leaves are the registers, then atcFailure and sevEvents, then regs itself). */
function forge(saved: { [key: string]: StateValue }, f: Forgery): StateValue {
  const copy = JSON.parse(JSON.stringify(saved)) as { [key: string]: StateValue };
  const regs = copy.regs as { [key: string]: StateValue };
  if (f.kind === "add") {
    Object.defineProperty(regs, f.name, { value: f.value, enumerable: true, writable: true, configurable: true });
    return copy;
  }
  const leaves: [{ [key: string]: StateValue }, string][] = [...Object.keys(regs).map((k): [{ [key: string]: StateValue }, string] => [regs, k]), [copy, "atcFailure"], [copy, "sevEvents"], [copy, "regs"]];
  const [holder, key] = leaves[f.at % leaves.length]!;
  const old = holder[key];
  if (f.kind === "delete") delete holder[key];
  else if (f.kind === "retype") holder[key] = f.value;
  else if (typeof old === "string") {
    const v = BigInt(old);
    holder[key] = `0x${(f.kind === "flip" ? v ^ (1n << BigInt(f.bit)) : f.value).toString(16)}`;
  } else if (typeof old === "number") holder[key] = f.kind === "flip" ? old ^ (1 << (f.bit % 31)) : Number(f.value & 0xffffn);
  else if (typeof old === "boolean") holder[key] = !old;
  else holder[key] = `0x${(f.kind === "set" ? f.value : 1n << BigInt(f.bit)).toString(16)}`;
  return copy;
}

/**
 * What the registers of this SMMU can hold, from the architecture's field lists (IHI0070 §6.3; spec
 * arm-hyperv-virtio.md §1.1–§1.5, §1.10), independent of the model's tables: the defined fields of each, minus
 * the features the emulated SMMU lacks, with CR0ACK = CR0 and IRQ_CTRLACK = IRQ_CTRL. Nested over a host with PRI,
 * it has the PRI queue (IHI0070 §6.3.33–6.3.36: PRIQ_IRQ_CFG2.LO is bit 31).
 */
const FIELDS: Readonly<Record<string, bigint>> = {
  CR0: 0b1_1111n, // SMMUEN, PRIQEN, EVTQEN, CMDQEN, ATSCHK
  CR1: 0xfffn,
  CR2: 0b111n,
  GBPA: 0x1f_3f1fn, // MemAttr, MTCFG, ALLOCCFG, SHCFG, PRIVCFG, INSTCFG, ABORT (UPDATE reads 0 once done)
  IRQ_CTRL: 0b111n, // GERROR_IRQEN, PRIQ_IRQEN, EVTQ_IRQEN
  PRIQ_BASE: ((1n << 52n) - 1n) | (1n << 62n),
  PRIQ_IRQ_CFG0: ((1n << 52n) - 1n) & ~3n,
  PRIQ_IRQ_CFG1: 0xffff_ffffn,
  PRIQ_IRQ_CFG2: 0x8000_003fn,
  GERROR: 0x1fdn,
  GERRORN: 0x1fdn,
  GERROR_IRQ_CFG0: ((1n << 52n) - 1n) & ~3n,
  GERROR_IRQ_CFG1: 0xffff_ffffn,
  GERROR_IRQ_CFG2: 0x3fn,
  STRTAB_BASE: (((1n << 52n) - 1n) & ~0x3fn) | (1n << 62n),
  STRTAB_BASE_CFG: 0x3_07ffn,
  CMDQ_BASE: ((1n << 52n) - 1n) | (1n << 62n),
  EVTQ_BASE: ((1n << 52n) - 1n) | (1n << 62n),
  EVTQ_IRQ_CFG0: ((1n << 52n) - 1n) & ~3n,
  EVTQ_IRQ_CFG1: 0xffff_ffffn,
  EVTQ_IRQ_CFG2: 0x3fn,
};

function possible(regs: Record<string, string>): boolean {
  const v = (n: string): bigint => BigInt(regs[n] ?? "0x0");
  for (const [name, value] of Object.entries(regs)) {
    const fields = FIELDS[name];
    if (fields !== undefined && (BigInt(value) & ~fields) !== 0n) return false;
  }
  if (v("CR0ACK") !== v("CR0") || v("IRQ_CTRLACK") !== v("IRQ_CTRL")) return false;
  for (const [pointer, base, flags] of [["CMDQ_PROD", "CMDQ_BASE", 0n], ["CMDQ_CONS", "CMDQ_BASE", 0x7f00_0000n], ["EVTQ_PROD", "EVTQ_BASE", 0x8000_0000n], ["EVTQ_CONS", "EVTQ_BASE", 0x8000_0000n], ["PRIQ_PROD", "PRIQ_BASE", 0x8000_0000n], ["PRIQ_CONS", "PRIQ_BASE", 0x8000_0000n]] as const) {
    const size = BigInt(Math.min(Number(v(base) & 0x1fn), 19));
    if ((v(pointer) & ~(((1n << (size + 1n)) - 1n) | flags)) !== 0n) return false;
  }
  return ((v("CMDQ_CONS") >> 24n) & 0x7fn) <= 3n;
}

describe("restore refuses a forged state whole, or takes it and works", () => {
  it(`500+ forged streams (valid checksum, malformed fields): EINVAL naming the field and nothing changed, or accepted and working (seed ${SEED})`, () => {
    const s = smmuBed();
    const domain = unwrap(s.driver.createDomain());
    unwrap(s.driver.attach(0x10, domain));
    unwrap(s.driver.map(domain, IOVA, DATA, 0x1000, Perm.ReadWrite));
    unwrap(s.driver.submitCommands([encodeCommand("CMD_TLBI_NH_ASID", { ASID: 1 })]));
    // An event in the queue, so EVTQ_PROD is not zero.
    expect(s.device.read(IOVA + 0x10_0000, 4).ok).toBe(false);
    s.bed.poll();
    const original = s.iommu.save();
    const saved = unwrap(decodeState(original, SMMUV3_STATE_KIND, [SMMUV3_STATE_VERSION])).value as { [key: string]: StateValue };
    const out = newWalkResult();
    let refused = 0;
    let accepted = 0;
    fc.assert(
      fc.property(forgery, (f) => {
        const blob = encodeState(SMMUV3_STATE_KIND, SMMUV3_STATE_VERSION, forge(saved, f));
        const before = s.iommu.save();
        const r = s.iommu.restore(blob);
        if (!r.ok) {
          refused++;
          expect(r.error.errno).toBe("EINVAL");
          expect(r.error.message).toMatch(/^smmuv3 state: (regs\.[A-Za-z0-9_]+|regs|atcFailure|sevEvents) /);
          expect(s.iommu.save()).toEqual(before);
          return;
        }
        accepted++;
        const taken = unwrap(decodeState(s.iommu.save(), SMMUV3_STATE_KIND, [SMMUV3_STATE_VERSION])).value as { regs: Record<string, string> };
        expect(possible(taken.regs)).toBe(true);
        // Working: the guest-visible registers hold what a real SMMU could, the device runs, and it saves a state
        // it would take back; the guest's own state then restores and translates again.
        s.iommu.poll();
        s.iommu.translateEmulated(0x10, NO_PASID, IOVA, false, out);
        s.vm.mmioRead(s.iommu.mmioBase + 0x9c, 4);
        expect(s.iommu.parseState(s.iommu.save()).ok).toBe(true);
        unwrap(s.iommu.restore(original));
        expect(s.device.read(IOVA, 4).ok).toBe(true);
      }),
      { seed: SEED, numRuns: 520 },
    );
    // Most forgeries break a field; some (a flipped flag bit, a deleted register that reads as zero) are legal states.
    expect(refused + accepted).toBe(520);
    expect(refused).toBeGreaterThan(accepted);
  }, 60_000);

  it("names the field: a CONS beyond its queue, an ACK that differs from its control register, a reserved CR0 bit, an unknown register", () => {
    const s = smmuBed();
    const saved = unwrap(decodeState(s.iommu.save(), SMMUV3_STATE_KIND, [SMMUV3_STATE_VERSION])).value as { [key: string]: StateValue };
    const withReg = (name: string, value: string): Uint8Array => encodeState(SMMUV3_STATE_KIND, SMMUV3_STATE_VERSION, { ...saved, regs: { ...(saved.regs as object), [name]: value } });
    const log2 = Number(BigInt((saved.regs as Record<string, string>).CMDQ_BASE!) & 0x1fn);
    expect(s.iommu.restore(withReg("CMDQ_CONS", `0x${(2 ** (log2 + 1)).toString(16)}`))).toMatchObject({ ok: false, error: { errno: "EINVAL", message: expect.stringContaining("regs.CMDQ_CONS") } });
    expect(s.iommu.restore(withReg("CR0ACK", "0x0"))).toMatchObject({ ok: false, error: { message: expect.stringContaining("regs.CR0ACK") } });
    expect(s.iommu.restore(withReg("CR0", "0x20"))).toMatchObject({ ok: false, error: { message: expect.stringContaining("regs.CR0") } });
    expect(s.iommu.restore(withReg("IDR0", "0x0"))).toMatchObject({ ok: false, error: { message: expect.stringContaining("regs.IDR0") } });
    expect(s.iommu.restore(withReg("CMDQ_CONS", "0x5000000"))).toMatchObject({ ok: false, error: { message: expect.stringContaining("regs.CMDQ_CONS") } });
  });
});
