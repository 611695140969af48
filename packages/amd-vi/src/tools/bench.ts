import { newWalkResult, NO_PASID, opsPerSecond, Perm, Testbed, unwrap, type BenchFigure, type DmaDevice, type GuestPageAllocator, type TranslationMode, type VendorPlugin, type VirtualMachine } from "@viommu/core";
import { buildInvalidateIommuPages, COMMAND_BYTES } from "../format/command.js";
import { MmioOffset } from "../format/mmio-register-map.js";
import type { AmdViGuestDriver } from "../guest/amd-vi-driver.js";
import { SwiotlbPool } from "../guest/swiotlb.js";
import type { AmdViUnit } from "../hw/amd-vi-unit.js";
import type { AmdViDevice, AmdViDeviceOptions } from "../vmm/amd-vi-device.js";

const DATA_GPA = 0x2000_0000;
const IOVA = 0x10_0000;

/** Who runs a nested guest's command buffer. */
type CommandBuffer = NonNullable<AmdViDeviceOptions["commandBuffer"]>;

/** One VM with one passthrough device behind an emulated AMD IOMMU, the reference driver brought up. */
interface BenchSystem {
  readonly bed: Testbed;
  readonly vm: VirtualMachine;
  readonly unit: AmdViUnit;
  readonly device: DmaDevice;
  readonly iommu: AmdViDevice;
  readonly driver: AmdViGuestDriver;
  readonly pages: GuestPageAllocator;
}

/** Runs `measure` on a system built by core's Testbed from `plugin`, and disposes of the system after. */
function withSystem<T>(plugin: VendorPlugin, options: { mode: TranslationMode; confidential?: boolean }, measure: (s: BenchSystem) => T): T {
  const bed = unwrap(Testbed.create({ plugin, mode: options.mode, vms: [{ devices: [{ rid: 0x100, guestRid: 0x10 }], vcpus: 8, confidential: options.confidential }] }));
  const v = bed.vms[0]!;
  try {
    return measure({ bed, vm: v.vm, unit: bed.units[0] as AmdViUnit, device: v.devices[0]!.device, iommu: v.iommus[0] as AmdViDevice, driver: v.drivers[0] as AmdViGuestDriver, pages: v.pages });
  } finally {
    bed.dispose();
  }
}

/** Device translations per second on the nested path (guest v2 over host v1, IOTLB warm). */
function translationsPerSecond(plugin: VendorPlugin): { value: number; note: string } {
  return withSystem(plugin, { mode: "nested" }, (s) => {
    const domain = unwrap(s.driver.createDomain());
    unwrap(s.driver.attach(0x10, domain));
    const pages = 512;
    unwrap(s.driver.map(domain, IOVA, DATA_GPA, pages * 4096, Perm.ReadWrite));
    const out = newWalkResult();
    let i = 0;
    const value = opsPerSecond((n) => {
      for (const end = i + n; i < end; i++) s.device.translate(IOVA + (i % pages) * 4096 + (i & 0xff), (i & 1) === 1, NO_PASID, out);
    });
    const { hits, misses } = s.unit.iotlb;
    return { value: Math.round(value), note: `${pages} pages, IOTLB ${hits} hits / ${misses} misses` };
  });
}

/** Commands per second through the trapped command buffer: INVALIDATE_IOMMU_PAGES batches, one doorbell each. */
function commandsPerSecond(plugin: VendorPlugin): { value: number; note: string } {
  return withSystem(plugin, { mode: "nested" }, (s) => {
    const domain = unwrap(s.driver.createDomain());
    unwrap(s.driver.attach(0x10, domain));
    const base = s.driver.structures.commandBuffer;
    const ring = 8192;
    const batch = 255;
    let tail = Number(s.vm.mmioRead(s.iommu.mmioBase + MmioOffset.CommandBufferTail, 4));
    let inBatch = 0;
    // The doorbell rings after every batch and at the end of each timed run.
    const value = opsPerSecond((n) => {
      for (let i = 0; i < n; i++) {
        s.vm.memory.writeWords(base + tail, buildInvalidateIommuPages({ domainId: domain, address: BigInt(IOVA + inBatch * 4096), size: 4096n, pasid: 0 }));
        tail = (tail + COMMAND_BYTES) % ring;
        inBatch = (inBatch + 1) % batch;
        if (inBatch === 0 || i === n - 1) s.vm.mmioWrite(s.iommu.mmioBase + MmioOffset.CommandBufferTail, 4, tail);
      }
    });
    return { value: Math.round(value), note: `${batch}-command batches, each forwarded to IOMMU_HWPT_INVALIDATE` };
  });
}

/** VMM interventions (exits, injections, hypervisor-handled commands) per 1,000 guest unmap+invalidations. */
function interventionsPer1000(plugin: VendorPlugin): number {
  return withSystem(plugin, { mode: "nested" }, (s) => {
    const domain = unwrap(s.driver.createDomain());
    unwrap(s.driver.attach(0x10, domain));
    unwrap(s.driver.map(domain, IOVA, DATA_GPA, 1000 * 4096, Perm.ReadWrite));
    const before = s.vm.interventions + s.iommu.interceptsHandled;
    for (let i = 0; i < 1000; i++) unwrap(s.driver.unmap(domain, IOVA + i * 4096, 4096));
    return s.vm.interventions + s.iommu.interceptsHandled - before;
  });
}

/** Bytes an SEV-SNP guest's SWIOTLB copies for 1 MiB of DMA each way, against the DMA-translating vIOMMU path (none). */
function swiotlbBytes(plugin: VendorPlugin): { value: number; baseline: number; note: string } {
  return withSystem(plugin, { mode: "ir-only", confidential: true }, (s) => {
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
  });
}

/**
 * The AMD-Vi figures for `viommu bench` (measured in run(), never asserted), each on a system built from the
 * plugin `plugin` returns for the command-buffer configuration it measures.
 */
export function createAmdViBenchFigures(plugin: (commandBuffer: CommandBuffer) => VendorPlugin): readonly BenchFigure[] {
  return [
    { name: "amd-vi-translations-per-s", unit: "translations/s", run: () => translationsPerSecond(plugin("hw-vqueue")) },
    { name: "amd-vi-commands-per-s", unit: "commands/s", run: () => commandsPerSecond(plugin("trapped")) },
    {
      name: "amd-vi-interventions-per-1000-invalidations-trapped",
      unit: "interventions",
      run: () => {
        const trapped = interventionsPer1000(plugin("trapped"));
        const hw = interventionsPer1000(plugin("hw-vqueue"));
        return { value: trapped, baseline: hw, note: "guest unmap + INVALIDATE_IOMMU_PAGES + COMPLETION_WAIT, one doorbell each; baseline: the hardware vIOMMU, same workload" };
      },
    },
    {
      name: "amd-vi-interventions-per-1000-invalidations-hw-vqueue",
      unit: "interventions",
      run: () => {
        const hw = interventionsPer1000(plugin("hw-vqueue"));
        const trapped = interventionsPer1000(plugin("trapped"));
        return { value: hw, baseline: trapped, note: "tail writes go to the VF-MMIO page, the IOMMU reads commands through stage 2; baseline: trapped, same workload" };
      },
    },
    { name: "amd-vi-swiotlb-bytes-copied", unit: "bytes", run: () => swiotlbBytes(plugin("hw-vqueue")) },
  ];
}
