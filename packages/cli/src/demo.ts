import { conformanceCases, runCase, Testbed } from "@viommu/conformance";
import { Perm, type GuestEvent, type VendorPlugin } from "@viommu/core";

/** One step of the demo: passed, failed, or not applicable to this vendor (with the hardware's reason). */
export interface DemoStep {
  readonly step: string;
  readonly ok: boolean;
  readonly detail: string;
  readonly notApplicable?: boolean;
}

export interface DemoOptions {
  readonly seed?: number;
  /** Emulated-device properties by QEMU's names. */
  readonly properties?: Readonly<Record<string, string>>;
}

/**
 * The features the demo shows through the conformance case that checks each (the case verifies its work; the
 * demo prints what it measured).
 */
const FEATURE_STEPS: readonly { step: string; caseId: string; describe(metrics: Readonly<Record<string, number>>): string }[] = [
  {
    step: "live-migration",
    caseId: "live-migration-precopy",
    describe: (m) => {
      const rounds = Object.keys(m).filter((k) => k.startsWith("pages-copied-round-")).sort((a, b) => Number(a.slice(19)) - Number(b.slice(19)));
      return `pre-copy pages per round ${rounds.map((k) => m[k]).join(", ")}; stop-and-copy ${m["pages-copied-stop"]}; every DMA-written page arrived on the second host`;
    },
  },
  { step: "migrate-new-host", caseId: "migrate-to-new-host", describe: () => "state saved, restored onto a second host; translations and pending events identical, source torn down clean" },
  { step: "pasid", caseId: "pasid-attach-separates", describe: () => "two PASIDs and the requester id translate one IOVA to three pages" },
  { step: "shared-addressing", caseId: "sva-shares-process-addresses", describe: () => "a process bound at a PASID: the device reads and writes at its user addresses, loses an unmapped page" },
  { step: "page-request", caseId: "page-request-resolved", describe: () => "a DMA to an unmapped page waited for the guest to map it, then completed" },
  {
    step: "posted-interrupts",
    caseId: "device-interrupt-posted",
    describe: (m) => `VMM interventions per 1000 MSIs: remapped ${m["interventions-per-1000-remapped"]}, posted ${m["interventions-per-1000-posted"]}`,
  },
];
export interface DemoReport {
  readonly vendor: string;
  readonly name: string;
  readonly ok: boolean;
  readonly steps: readonly DemoStep[];
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
export function runDemo(plugin: VendorPlugin, installed: readonly VendorPlugin[], options: DemoOptions = {}): DemoReport {
  const seed = options.seed ?? 1;
  const steps: DemoStep[] = [];
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
    properties: options.properties,
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
    for (const feature of FEATURE_STEPS) {
      const kase = conformanceCases.find((c) => c.id === feature.caseId);
      if (kase === undefined) continue;
      const result = runCase(plugin, kase, seed, installed.filter((p) => p !== plugin));
      if (result.status === "n/a") steps.push({ step: feature.step, ok: true, notApplicable: true, detail: result.detail ?? "" });
      else step(feature.step, result.status === "pass", result.status === "pass" ? feature.describe(result.metrics ?? {}) : (result.detail ?? "failed"));
    }
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
