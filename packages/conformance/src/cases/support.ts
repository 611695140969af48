import { Perm, type GuestEvent, type PermBits } from "@viommu/core";
import type { Testbed, TestVm } from "@viommu/core";
import { check, must } from "../case.js";

/** Guest addresses the cases use: data pages low in RAM, far from the driver's structures at the top. */
export const DATA_GPA = 0x2000_0000;
export const IOVA = 0x10_0000;

/** A one-VM, one-device testbed spec with the usual ids. */
export function oneDevice(rid = 0x100, guestRid = 0x10): { devices: { rid: number; guestRid: number }[] } {
  return { devices: [{ rid, guestRid }] };
}

/** Creates a domain, attaches `guestRid` and maps one region, through the guest driver. */
export function mapOne(v: TestVm, guestRid: number, iova: number, gpa: number, length: number, perms: PermBits = Perm.ReadWrite, instance = 0): number {
  const driver = v.drivers[instance]!;
  const domain = must(driver.createDomain(), "createDomain");
  must(driver.attach(guestRid, domain), "attach");
  must(driver.map(domain, iova, gpa, length, perms), "map");
  return domain;
}

/** The VMM event loops run, then the guest reads its log. */
export function events(bed: Testbed, v: TestVm, instance = 0): GuestEvent[] {
  bed.poll();
  return v.drivers[instance]!.readEvents();
}

export function pattern(length: number, seed: number): Uint8Array {
  const out = new Uint8Array(length);
  let x = seed >>> 0 || 1;
  for (let i = 0; i < length; i++) {
    x ^= x << 13;
    x ^= x >>> 17;
    x ^= x << 5;
    out[i] = x & 0xff;
  }
  return out;
}

export function sameBytes(a: Uint8Array, b: Uint8Array): boolean {
  return a.length === b.length && a.every((x, i) => x === b[i]);
}

/** A digest of every written page of a VM, to prove nothing changed. */
export function memoryDigest(v: TestVm): string {
  const mem = v.vm.memory;
  let h = 0x811c9dc5;
  for (const page of mem.writtenPages()) {
    const bytes = mem.readBytes(page, 4096);
    h = Math.imul(h ^ (page / 4096), 0x01000193) >>> 0;
    for (const b of bytes) h = Math.imul(h ^ b, 0x01000193) >>> 0;
  }
  return h.toString(16);
}

export function expectFault(evs: readonly GuestEvent[], guestRid: number, iova: number, what: string): GuestEvent {
  const e = evs.find((x) => x.kind === "dma-fault" && x.rid === guestRid && x.address === iova);
  check(e !== undefined, `${what}: no DMA fault for RID 0x${guestRid.toString(16)} at 0x${iova.toString(16)} in the guest log (got ${JSON.stringify(evs.map((x) => [x.kind, x.name, x.rid, x.address]))})`);
  return e;
}
