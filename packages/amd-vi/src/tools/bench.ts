import { buildInvalidateIommuPages, COMMAND_BYTES } from "../format/command.js";
import { MmioOffset } from "../format/mmio-register-map.js";
import { newWalkResult, NO_PASID, Perm, unwrap, type BenchFigure, type VendorPlugin } from "@viommu/core";
import { SwiotlbPool } from "../guest/swiotlb.js";
import { benchSystem } from "./bench-system.js";

const DATA_GPA = 0x2000_0000;
const IOVA = 0x10_0000;

/** Device translations per second on the nested path (guest v2 over host v1, IOTLB warm). */
function translationsPerSecond(plugin: VendorPlugin): { value: number; note: string } {
  const s = benchSystem(plugin, { mode: "nested" });
  const domain = unwrap(s.driver.createDomain());
  unwrap(s.driver.attach(0x10, domain));
  const pages = 512;
  unwrap(s.driver.map(domain, IOVA, DATA_GPA, pages * 4096, Perm.ReadWrite));
  const out = newWalkResult();
  const count = 400_000;
  const start = performance.now();
  for (let i = 0; i < count; i++) s.device.translate(IOVA + (i % pages) * 4096 + (i & 0xff), (i & 1) === 1, NO_PASID, out);
  const ms = performance.now() - start;
  const { hits, misses } = s.unit.iotlb;
  return { value: Math.round(count / (ms / 1000)), note: `${pages} pages, IOTLB ${hits} hits / ${misses} misses` };
}

/** Commands per second through the trapped command buffer: INVALIDATE_IOMMU_PAGES batches, one doorbell each. */
function commandsPerSecond(plugin: VendorPlugin): { value: number; note: string } {
  const s = benchSystem(plugin, { mode: "nested", commandBuffer: "trapped" });
  const domain = unwrap(s.driver.createDomain());
  unwrap(s.driver.attach(0x10, domain));
  const base = s.driver.structures.commandBuffer;
  const ring = 8192;
  let tail = Number(s.vm.mmioRead(s.iommu.mmioBase + MmioOffset.CommandBufferTail, 4));
  const batch = 255;
  const rounds = 200;
  const start = performance.now();
  for (let r = 0; r < rounds; r++) {
    for (let i = 0; i < batch; i++) {
      s.vm.memory.writeWords(base + tail, buildInvalidateIommuPages({ domainId: domain, address: BigInt(IOVA + i * 4096), size: 4096n, pasid: 0 }));
      tail = (tail + COMMAND_BYTES) % ring;
    }
    s.vm.mmioWrite(s.iommu.mmioBase + MmioOffset.CommandBufferTail, 4, tail);
  }
  const ms = performance.now() - start;
  return { value: Math.round((batch * rounds) / (ms / 1000)), note: `${batch}-command batches, each forwarded to IOMMU_HWPT_INVALIDATE` };
}

/** VMM interventions (exits, injections, hypervisor-handled commands) per 1,000 guest unmap+invalidations. */
function interventionsPer1000(plugin: VendorPlugin, commandBuffer: "trapped" | "hw-vqueue"): number {
  const s = benchSystem(plugin, { mode: "nested", commandBuffer });
  const domain = unwrap(s.driver.createDomain());
  unwrap(s.driver.attach(0x10, domain));
  unwrap(s.driver.map(domain, IOVA, DATA_GPA, 1000 * 4096, Perm.ReadWrite));
  const before = s.vm.interventions + s.iommu.interceptsHandled;
  for (let i = 0; i < 1000; i++) unwrap(s.driver.unmap(domain, IOVA + i * 4096, 4096));
  return s.vm.interventions + s.iommu.interceptsHandled - before;
}

/** Bytes an SEV-SNP guest's SWIOTLB copies for 1 MiB of DMA each way, against the DMA-translating vIOMMU path (none). */
function swiotlbBytes(plugin: VendorPlugin): { value: number; baseline: number; note: string } {
  const s = benchSystem(plugin, { mode: "ir-only", confidential: true });
  const pool = unwrap(SwiotlbPool.create(s.vm.memory, s.pages, 256 * 1024));
  const chunk = 64 * 1024;
  for (let i = 0; i < 16; i++) {
    const out = unwrap(pool.map(DATA_GPA + i * chunk, chunk, "to-device"));
    s.device.read(out.deviceAddress, chunk);
    pool.unmap(out);
    const back = unwrap(pool.map(DATA_GPA + 0x100_0000 + i * chunk, chunk, "from-device"));
    s.device.write(back.deviceAddress, new Uint8Array(chunk));
    pool.unmap(back);
  }
  return { value: pool.bytesCopied, baseline: 0, note: "1 MiB to the device and 1 MiB from it; the vIOMMU path maps the buffers and copies nothing" };
}

/** The AMD-Vi figures for `viommu bench`, measured on systems built with `plugin` (measured in run(), never asserted). */
export function createAmdViBenchFigures(plugin: () => VendorPlugin): readonly BenchFigure[] {
  return [
    { name: "amd-vi-translations-per-s", unit: "translations/s", run: () => translationsPerSecond(plugin()) },
    { name: "amd-vi-commands-per-s", unit: "commands/s", run: () => commandsPerSecond(plugin()) },
    {
      name: "amd-vi-interventions-per-1000-invalidations-trapped",
      unit: "interventions",
      run: () => {
        const trapped = interventionsPer1000(plugin(), "trapped");
        const hw = interventionsPer1000(plugin(), "hw-vqueue");
        return { value: trapped, baseline: hw, note: "guest unmap + INVALIDATE_IOMMU_PAGES + COMPLETION_WAIT, one doorbell each; baseline: the hardware vIOMMU, same workload" };
      },
    },
    {
      name: "amd-vi-interventions-per-1000-invalidations-hw-vqueue",
      unit: "interventions",
      run: () => {
        const hw = interventionsPer1000(plugin(), "hw-vqueue");
        const trapped = interventionsPer1000(plugin(), "trapped");
        return { value: hw, baseline: trapped, note: "tail writes go to the VF-MMIO page, the IOMMU reads commands through stage 2; baseline: trapped, same workload" };
      },
    },
    { name: "amd-vi-swiotlb-bytes-copied", unit: "bytes", run: () => swiotlbBytes(plugin()) },
  ];
}
