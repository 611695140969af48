import { readFileSync } from "node:fs";
import { describe, expect, it } from "vitest";
import { decodeState, encodeState, NO_PASID, peekState, unwrap, type StateValue } from "@viommu/core";
import { vtdPlugin } from "../../src/plugin.js";
import type { VtdDevice } from "../../src/vmm/vtd-device.js";
import { VTD_STATE_KIND, VTD_STATE_VERSION } from "../../src/vmm/vtd-state.js";
import { sceneBehaviour, stateScene, type SceneBehaviour } from "../fixtures/state/state-scene.js";
import { DATA_GPA, IOVA, mapped, vtdBed, type VtdBed } from "../support.js";

/**
 * State format versions. vtd-state-v1.bin is a stream of format version 1 written by the code before version 2
 * existed (commit 62b481d; generator: test/fixtures/state/write-state-fixture.test.ts over the scene of
 * state-scene.ts), with what the saving unit showed in vtd-state-v1.json. The scene is rebuilt here so the guest
 * memory the stream describes is there again.
 */
const fixture = (name: string): URL => new URL(`../fixtures/state/${name}`, import.meta.url);
const V1 = new Uint8Array(readFileSync(fixture("vtd-state-v1.bin")));
const V1_BEHAVIOUR = JSON.parse(readFileSync(fixture("vtd-state-v1.json"), "utf8")) as SceneBehaviour;

/** The scene's device destroyed and a fresh one (its options, with `properties`) serving the same VM and device. */
function freshDevice(b: VtdBed, properties?: Record<string, string>): VtdDevice {
  const v = b.bed.vms[0]!;
  b.device.destroy();
  const fresh = unwrap(vtdPlugin.createDevice({ ...b.device.options, ...(properties !== undefined ? { properties } : {}) })) as VtdDevice;
  unwrap(fresh.assignDevice(v.devices[0]!.device, v.devices[0]!.devId, 0x10));
  return fresh;
}

/** `blob`'s payload re-encoded as `version`, with `edit` applied to it. */
function reencoded(blob: Uint8Array, version: number, edit: (state: Record<string, StateValue>) => void = () => {}): Uint8Array {
  const state = structuredClone(unwrap(decodeState(blob, VTD_STATE_KIND, [1, 2, 3])).value) as Record<string, StateValue>;
  edit(state);
  return encodeState(VTD_STATE_KIND, version, state);
}

describe("VT-d state format version 1 (the fixture written before version 2)", () => {
  it("is a version-1 stream, and restores into a fresh unit that behaves as the saved one did: registers, DMA, MSI", () => {
    expect(peekState(V1)).toEqual({ kind: VTD_STATE_KIND, version: 1 });
    const { b, msi } = stateScene();
    const fresh = freshDevice(b);
    unwrap(fresh.restore(V1));
    expect(sceneBehaviour(b, fresh, msi)).toEqual(V1_BEHAVIOUR);
  });

  it("refuses every truncation and every single flipped byte of it, with EINVAL and the unit unchanged", () => {
    const { b } = stateScene();
    const before = b.device.save();
    const refused = (blob: Uint8Array): void => {
      expect(b.device.restore(blob)).toMatchObject({ ok: false, error: { errno: "EINVAL" } });
    };
    for (let length = 0; length < V1.length; length++) refused(V1.subarray(0, length));
    for (let at = 0; at < V1.length; at++) {
      for (const flip of [0x01, 0x80]) {
        const bad = V1.slice();
        bad[at]! ^= flip;
        refused(bad);
      }
    }
    expect(b.device.save()).toEqual(before);
  });

  it("refuses a stream of version 3 (or 0) naming the version, whatever it holds", () => {
    const { b } = stateScene();
    for (const version of [0, 3]) {
      const r = b.device.restore(reencoded(V1, version));
      expect(r).toMatchObject({ ok: false, error: { errno: "EINVAL", message: expect.stringContaining(`version ${version} not supported`) } });
    }
  });
});

describe("VT-d state format version 2: the CAP and ECAP the guest was given", () => {
  it("is what save writes; it restores into a unit of the same configuration, which then behaves as the saved one did", () => {
    const { b, msi } = stateScene();
    const blob = b.device.save();
    expect(peekState(blob)?.version).toBe(VTD_STATE_VERSION);
    expect(VTD_STATE_VERSION).toBe(2);
    const fresh = freshDevice(b);
    unwrap(fresh.restore(blob));
    expect(sceneBehaviour(b, fresh, msi)).toEqual(V1_BEHAVIOUR);
  });

  it("refuses to restore into a unit of another configuration, naming CAP or ECAP; version 1 could not tell, and the guest's unit changed under it", () => {
    for (const [properties, field] of [
      [{ "aw-bits": "39" }, "cap"],
      [{ intremap: "off" }, "ecap"],
    ] as const) {
      const { b, msi } = stateScene();
      const saved = b.device.save();
      const fresh = freshDevice(b, properties);
      expect(fresh.restore(saved)).toMatchObject({ ok: false, error: { errno: "EINVAL", message: expect.stringMatching(new RegExp(`^VT-d state: ${field} is 0x[0-9a-f]+, but this unit's ${field.toUpperCase()} is 0x[0-9a-f]+`)) } });
      // The version-1 fixture of the same unit is accepted there: the guest now reads another CAP/ECAP.
      unwrap(fresh.restore(V1));
      expect(sceneBehaviour(b, fresh, msi).registers.slice(0, 2)).not.toEqual(V1_BEHAVIOUR.registers.slice(0, 2));
    }
  });

  it("keeps a legacy guest's 4-level tables working: refused on a 39-bit unit in version 2, where version 1's stream restored and every DMA faulted", () => {
    const b = vtdBed("shadow", "legacy");
    mapped(b, 0x10, IOVA, DATA_GPA, 0x1000);
    const v = b.bed.vms[0]!;
    expect(v.devices[0]!.device.read(IOVA, 4, NO_PASID).ok).toBe(true);
    const saved = b.device.save();
    const fresh = freshDevice(b, { "aw-bits": "39" });
    expect(fresh.restore(saved)).toMatchObject({ ok: false, error: { errno: "EINVAL", message: expect.stringContaining("VT-d state: cap is 0x") } });
    // The same state without what version 2 added, as version 1 wrote it.
    const asVersion1 = reencoded(saved, 1, (s) => {
      delete s.cap;
      delete s.ecap;
    });
    unwrap(fresh.restore(asVersion1));
    expect(v.devices[0]!.device.read(IOVA, 4, NO_PASID).ok).toBe(false);
  });
});
