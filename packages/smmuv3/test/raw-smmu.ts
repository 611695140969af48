import type { RawBits } from "@viommu/core";
import { registerByName } from "../src/format/register-map.js";
import type { Smmuv3DeviceExtras } from "../src/vmm/smmuv3-device.js";
import { Smmuv3Device } from "../src/vmm/smmuv3-device.js";
import type { Smmuv3HwConfig } from "../src/hw/smmuv3-hw-config.js";
import { smmuBed } from "./support.js";

/** An emulated SMMU programmed by hand (no guest driver): a 16-entry CMDQ and an 8-entry EVTQ, both enabled. */
export function rawSmmu(extras: Smmuv3DeviceExtras = {}, cmdqLog2 = 4, evtqLog2 = 3, config?: Smmuv3HwConfig) {
  const s = smmuBed({ vms: [{ devices: [{ rid: 0x100, guestRid: 0x10 }] }], noInit: true }, config);
  let iommu = s.iommu;
  if (extras.msi !== undefined) {
    // Rebuild the device with the extras (the plugin's createDevice takes none).
    iommu.destroy();
    iommu = unwrapDevice(Smmuv3Device.create({ vm: s.vm, iommufd: s.v.iommufd, unit: s.unit, ioasId: s.v.ioasId, parentHwptId: s.v.parentHwptId, anchorDevId: s.v.devices[0]!.devId, mode: "nested" }, extras));
    iommu.assignDevice(s.device, s.v.devices[0]!.devId, 0x10);
    s.v.iommus[0] = iommu;
  }
  const at = (name: string): number => iommu.mmioBase + registerByName(name)!.offset;
  const r32 = (name: string): number => Number(s.vm.mmioRead(at(name), 4));
  const w32 = (name: string, v: number): void => s.vm.mmioWrite(at(name), 4, v >>> 0);
  const w64 = (name: string, v: bigint | number): void => s.vm.mmioWrite(at(name), 8, BigInt(v));
  const cmdq = s.v.pages.allocate(1)!;
  const evtq = s.v.pages.allocate(1)!;
  w64("CMDQ_BASE", BigInt(cmdq) | BigInt(cmdqLog2));
  w64("EVTQ_BASE", BigInt(evtq) | BigInt(evtqLog2));
  w32("CR0", (1 << 3) | (1 << 2));
  let prod = 0;
  return {
    ...s,
    iommu,
    cmdq,
    evtq,
    r32,
    w32,
    w64,
    /** Writes commands at PROD and rings the doorbell. */
    submit(...commands: RawBits[]): void {
      for (const c of commands) {
        s.vm.memory.writeWords(cmdq + (prod % 2 ** cmdqLog2) * 16, c);
        prod = (prod + 1) % 2 ** (cmdqLog2 + 1);
      }
      w32("CMDQ_PROD", prod);
    },
    /** Overwrites the command at a queue index (what Linux does to skip an illegal one). */
    patch(index: number, c: RawBits): void {
      s.vm.memory.writeWords(cmdq + index * 16, c);
    },
    cons(): number {
      return r32("CMDQ_CONS") & 0xfffff;
    },
    consErr(): number {
      return (r32("CMDQ_CONS") >>> 24) & 0x7f;
    },
    cmdqError(): boolean {
      return ((r32("GERROR") ^ r32("GERRORN")) & 1) === 1;
    },
    ack(): void {
      w32("GERRORN", r32("GERROR"));
    },
  };
}

function unwrapDevice(r: ReturnType<typeof Smmuv3Device.create>): Smmuv3Device {
  if (!r.ok) throw new Error(r.error.message);
  return r.value;
}
