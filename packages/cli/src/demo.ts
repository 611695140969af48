import { Testbed } from "@viommu/conformance";
import { Perm, type GuestEvent, type VendorPlugin } from "@viommu/core";

/** What the demo found for one vendor. */
export interface DemoReport {
  readonly vendor: string;
  readonly name: string;
  readonly ok: boolean;
  readonly steps: readonly { readonly step: string; readonly ok: boolean; readonly detail: string }[];
  readonly dma: { readonly transfers: number; readonly bytes: number; readonly faults: number };
  readonly faultRecords: readonly { readonly name: string; readonly code: number }[];
  readonly interrupt?: { readonly vector: number; readonly destination: number };
  readonly vmmInterventions: number;
  readonly isolationViolations: number;
}

const IOVA = 0x10_0000;
const GPA = 0x2000_0000;
const BUFFER = 0x10_0000;

/**
 * The main job for one vendor: a VM with an NVMe-like device passed through, its guest driver mapping a
 * buffer, a DMA workload, an out-of-bounds DMA (blocked and reported), an invalidation, and a remapped
 * interrupt. Every step checks what it claims.
 */
export function runDemo(plugin: VendorPlugin, installed: readonly VendorPlugin[], seed = 1): DemoReport {
  const steps: { step: string; ok: boolean; detail: string }[] = [];
  const step = (name: string, ok: boolean, detail: string): boolean => {
    steps.push({ step: name, ok, detail });
    return ok;
  };
  const profile = plugin.demo ?? {};
  const created = Testbed.create({
    plugin,
    plugins: installed.filter((p) => p !== plugin),
    seed,
    vms: [{ devices: [{ rid: profile.rid ?? 0x100, guestRid: profile.guestRid ?? 0x10 }], vcpus: profile.vcpus ?? 8 }],
    guest: profile.guest,
  });
  const empty = { vendor: plugin.id, name: plugin.displayName, dma: { transfers: 0, bytes: 0, faults: 0 }, faultRecords: [], vmmInterventions: 0, isolationViolations: 0 };
  if (!created.ok) {
    step("boot", false, `${created.error.errno}: ${created.error.message}`);
    return { ...empty, ok: false, steps };
  }
  const bed = created.value;
  try {
    const v = bed.vms[0]!;
    const driver = v.drivers[0]!;
    const guestRid = v.devices[0]!.guestRid;
    const nvme = v.devices[0]!.device;
    step("boot", true, `guest driver up, ${plugin.capabilities.nested ? "nested" : "emulated"} translation`);
    const domain = driver.createDomain();
    const mapped = domain.ok && driver.attach(guestRid, domain.value).ok && driver.map(domain.value, IOVA, GPA, BUFFER, Perm.ReadWrite).ok;
    step("map", mapped, mapped ? `IOVA 0x${IOVA.toString(16)} → GPA 0x${GPA.toString(16)}, ${BUFFER / 1024} KiB` : "attach or map failed");
    let transfers = 0;
    let bytes = 0;
    let faults = 0;
    const block = new Uint8Array(4096);
    for (let round = 0; round < 4 && mapped; round++) {
      for (let off = 0; off < BUFFER; off += 4096) {
        block.fill((round + off / 4096) & 0xff);
        const w = nvme.write(IOVA + off, block);
        const r = nvme.read(IOVA + off, 4096);
        transfers += 2;
        bytes += 8192;
        if (!w.ok || !r.ok || r.data[4095] !== block[4095]) faults++;
      }
    }
    const landed = mapped && v.vm.memory.read8(GPA + BUFFER - 1) === ((3 + (BUFFER - 4096) / 4096) & 0xff);
    step("dma-workload", mapped && faults === 0 && landed, `${transfers} transfers, ${bytes / 1024} KiB, data verified in guest memory`);
    const oob = nvme.write(IOVA + BUFFER + 0x10_0000, block.subarray(0, 64));
    bed.poll();
    const records: GuestEvent[] = driver.readEvents();
    const reported = records.filter((e) => e.kind === "dma-fault");
    step(
      "out-of-bounds-dma",
      !oob.ok && (!plugin.capabilities.eventLog || reported.length > 0),
      `${oob.ok ? "NOT blocked" : `blocked (${oob.reason})`}; ${reported.length > 0 ? `guest log: ${reported.map((e) => `${e.name} (0x${e.code.toString(16)})`).join(", ")}` : "no guest log on this architecture"}`,
    );
    if (domain.ok) {
      const un = driver.unmap(domain.value, IOVA, 0x1000);
      const after = nvme.read(IOVA, 16);
      step("invalidate", un.ok && !after.ok, un.ok ? `unmapped one page; DMA there now ${after.ok ? "STILL WORKS" : "faults"}` : `${un.error.errno}`);
    }
    let interrupt: DemoReport["interrupt"];
    if (plugin.capabilities.interruptRemapping && driver.mapInterrupt !== undefined) {
      const dest = (profile.vcpus ?? 8) - 1;
      const msi = driver.mapInterrupt(guestRid, 0x61, dest);
      v.vm.interrupts.take();
      if (msi.ok) nvme.signalMsi(msi.value);
      const got = v.vm.interrupts.take().find((i) => i.vector === 0x61);
      interrupt = got === undefined ? undefined : { vector: got.vector, destination: got.destination };
      step("interrupt-remap", got !== undefined && got.destination === dest, got ? `vector 0x61 delivered to vCPU ${got.destination}` : "interrupt not delivered");
    }
    const violations = bed.platform.host.memory.violations.length;
    step("isolation", violations === 0, `${violations} isolation violations`);
    return {
      vendor: plugin.id,
      name: plugin.displayName,
      ok: steps.every((s) => s.ok),
      steps,
      dma: { transfers, bytes, faults },
      faultRecords: reported.map((e) => ({ name: e.name, code: e.code })),
      interrupt,
      vmmInterventions: v.vm.interventions,
      isolationViolations: violations,
    };
  } catch (e) {
    step("exception", false, e instanceof Error ? e.message : String(e));
    return { ...empty, ok: false, steps };
  } finally {
    bed.dispose();
  }
}
