import { Perm } from "@viommu/core";
import { smmuv3Plugin } from "@viommu/smmuv3/plugin";
import { vtdPlugin } from "@viommu/vtd/plugin";
import { expect, it } from "vitest";
import { RecordingSession } from "../src/index.js";


/** A legacy-mode VT-d session whose emulated device 0x20 is attached to a fresh domain. */
function legacyVtdWithDomain() {
  const s = RecordingSession.start({ plugin: vtdPlugin, ram: { base: 0, size: 2 ** 28 }, rids: [0x20], mode: "shadow", dma: "emulated", guest: { variant: "legacy" } });
  if (!s.ok) throw new Error(s.error.message);
  const session = s.value;
  const d = session.driver;
  const domain = d.createDomain();
  if (!domain.ok) throw new Error("domain");
  expect(d.attach(0x20, domain.value).ok).toBe(true);
  return { session, d, domain: domain.value };
}

it("an emulated device's transfer moves each page that translates and reports the one that does not (one PCIe request per 4 KiB page)", () => {
  const { session, d, domain } = legacyVtdWithDomain();
  // IOVA 0x201000 is mapped, 0x200000 is not: a 3 KiB write from 0x200800 crosses from one into the other.
  expect(d.map(domain, 0x20_1000, 0x100_1000, 0x1000, Perm.ReadWrite).ok).toBe(true);
  const data = Uint8Array.from({ length: 0xc00 }, (_, i) => (i * 7 + 1) & 0xff);
  expect(session.dmaWrite(0x20, 0x20_0800, data)).toEqual({ ok: false });
  expect(session.memory.readBytes(0x100_1000, 0x400)).toEqual(data.subarray(0x800));
  const events = session.events();
  expect(events.filter((e) => e.kind === "dma-fault").map((e) => [e.rid, e.address])).toEqual([[0x20, 0x20_0000]]);
  // A read across the same boundary: blocked, and the mapped page's bytes were still fetched.
  expect(session.dmaRead(0x20, 0x20_0800, 0xc00)).toEqual({ ok: false });
  session.finish();
});

it("an emulated device's transfer that translates to where no memory is fails as a bus abort would, and nothing escapes", () => {
  const { session, d, domain } = legacyVtdWithDomain();
  // A guest may map addresses that are not RAM (a peer device's BAR, a hole): the page translates, the access
  // finds nothing there. 0x3000_0000 lies past the 256 MiB of RAM.
  expect(d.map(domain, 0x30_0000, 0x3000_0000, 0x1000, Perm.ReadWrite).ok).toBe(true);
  expect(session.dmaRead(0x20, 0x30_0000, 64)).toEqual({ ok: false });
  expect(session.dmaWrite(0x20, 0x30_0000, new Uint8Array(64))).toEqual({ ok: false });
  session.finish();
});

it("a transfer an IOMMU lets through untranslated to where no memory is fails too (SMMUv3 disabled, GBPA bypass)", () => {
  const s = RecordingSession.start({ plugin: smmuv3Plugin, ram: { base: 0, size: 2 ** 28 }, rids: [0x20], mode: "shadow", dma: "emulated", noInit: true });
  if (!s.ok) throw new Error(s.error.message);
  const session = s.value;
  // Out of reset the SMMU is disabled and GBPA bypasses: the IOVA is the address, 0x3000_0000 is past RAM.
  expect(session.dmaRead(0x20, 0x3000_0000, 64)).toEqual({ ok: false });
  expect(session.dmaWrite(0x20, 0x3000_0000, new Uint8Array(64))).toEqual({ ok: false });
  expect(session.dmaRead(0x20, 0x100_0000, 64).ok).toBe(true);
  session.finish();
});
