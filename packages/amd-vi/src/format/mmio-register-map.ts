/**
 * The AMD-Vi MMIO register map (spec x86.md B1). Offsets are from the IOMMU's MMIO base; `bytes` is the
 * register width. `source` says where an offset was checked: Linux `amd_iommu_types.h` MMIO_* for the
 * registers Linux drives, and the AMD specification's map (rev 3.05 as VirtualBox's DevIommuAmd.cpp lays it
 * out, rev 3.11 as the OSDev wiki tabulates it) for the rest.
 */
export interface MmioRegister {
  readonly name: string;
  readonly offset: number;
  readonly bytes: 4 | 8;
  readonly source: "linux" | "amd-spec";
}

function reg(name: string, offset: number, bytes: 4 | 8, source: "linux" | "amd-spec" = "linux"): MmioRegister {
  return { name, offset, bytes, source };
}

/** The MMIO window is 16 KiB; 512 KiB when performance counters (EFR.PCSup) are implemented (Linux MMIO_REG_END_OFFSET). */
export const AMDVI_MMIO_SIZE = 0x4000;
export const AMDVI_MMIO_SIZE_WITH_COUNTERS = 0x80000;

export const MmioOffset = {
  DeviceTableBase: 0x0000,
  CommandBufferBase: 0x0008,
  EventLogBase: 0x0010,
  Control: 0x0018,
  ExclusionBase: 0x0020,
  ExclusionLimit: 0x0028,
  ExtendedFeature: 0x0030,
  PprLogBase: 0x0038,
  HardwareEventUpper: 0x0040,
  HardwareEventLower: 0x0048,
  HardwareEventStatus: 0x0050,
  GaLogBase: 0x00e0,
  GaLogTailAddress: 0x00e8,
  PprLogBBase: 0x00f0,
  EventLogBBase: 0x00f8,
  DeviceTableSegment1Base: 0x0100,
  MsiAddressLow: 0x015c,
  MsiAddressHigh: 0x0160,
  MsiData: 0x0164,
  XtGeneralInterruptControl: 0x0170,
  XtPprInterruptControl: 0x0178,
  XtGaLogInterruptControl: 0x0180,
  VIommuStatus: 0x0190,
  ExtendedFeature2: 0x01a0,
  CommandBufferHead: 0x2000,
  CommandBufferTail: 0x2008,
  EventLogHead: 0x2010,
  EventLogTail: 0x2018,
  Status: 0x2020,
  PprLogHead: 0x2030,
  PprLogTail: 0x2038,
  GaLogHead: 0x2040,
  GaLogTail: 0x2048,
  PerformanceCounterConfig: 0x4000,
  PerformanceCounters: 0x40000,
} as const;

export const amdViMmioRegisters: readonly MmioRegister[] = [
  reg("DeviceTableBase", MmioOffset.DeviceTableBase, 8),
  reg("CommandBufferBase", MmioOffset.CommandBufferBase, 8),
  reg("EventLogBase", MmioOffset.EventLogBase, 8),
  reg("Control", MmioOffset.Control, 8),
  reg("ExclusionBase", MmioOffset.ExclusionBase, 8),
  reg("ExclusionLimit", MmioOffset.ExclusionLimit, 8),
  reg("ExtendedFeature", MmioOffset.ExtendedFeature, 8),
  reg("PprLogBase", MmioOffset.PprLogBase, 8),
  reg("HardwareEventUpper", MmioOffset.HardwareEventUpper, 8, "amd-spec"),
  reg("HardwareEventLower", MmioOffset.HardwareEventLower, 8, "amd-spec"),
  reg("HardwareEventStatus", MmioOffset.HardwareEventStatus, 8, "amd-spec"),
  ...Array.from({ length: 16 }, (_, i) => reg(`SmiFilter${i}`, 0x0060 + 8 * i, 8, "amd-spec")),
  reg("GaLogBase", MmioOffset.GaLogBase, 8),
  reg("GaLogTailAddress", MmioOffset.GaLogTailAddress, 8),
  reg("PprLogBBase", MmioOffset.PprLogBBase, 8, "amd-spec"),
  reg("EventLogBBase", MmioOffset.EventLogBBase, 8, "amd-spec"),
  ...Array.from({ length: 7 }, (_, i) => reg(`DeviceTableSegment${i + 1}Base`, 0x0100 + 8 * i, 8, "amd-spec")),
  reg("DeviceSpecificFeatureExtension", 0x0138, 8, "amd-spec"),
  reg("DeviceSpecificControlExtension", 0x0140, 8, "amd-spec"),
  reg("DeviceSpecificStatusExtension", 0x0148, 8, "amd-spec"),
  reg("MsiVector0", 0x0150, 4, "amd-spec"),
  reg("MsiVector1", 0x0154, 4, "amd-spec"),
  reg("MsiCapabilityHeader", 0x0158, 4, "amd-spec"),
  reg("MsiAddressLow", MmioOffset.MsiAddressLow, 4),
  reg("MsiAddressHigh", MmioOffset.MsiAddressHigh, 4),
  reg("MsiData", MmioOffset.MsiData, 4),
  reg("MsiMappingCapabilityHeader", 0x0168, 4, "amd-spec"),
  reg("PerformanceOptimizationControl", 0x016c, 4, "amd-spec"),
  reg("XtGeneralInterruptControl", MmioOffset.XtGeneralInterruptControl, 8),
  reg("XtPprInterruptControl", MmioOffset.XtPprInterruptControl, 8),
  reg("XtGaLogInterruptControl", MmioOffset.XtGaLogInterruptControl, 8),
  reg("VIommuStatus", MmioOffset.VIommuStatus, 8, "amd-spec"),
  reg("ExtendedFeature2", MmioOffset.ExtendedFeature2, 8),
  reg("CommandBufferHead", MmioOffset.CommandBufferHead, 8),
  reg("CommandBufferTail", MmioOffset.CommandBufferTail, 8),
  reg("EventLogHead", MmioOffset.EventLogHead, 8),
  reg("EventLogTail", MmioOffset.EventLogTail, 8),
  reg("Status", MmioOffset.Status, 8),
  reg("PprLogHead", MmioOffset.PprLogHead, 8),
  reg("PprLogTail", MmioOffset.PprLogTail, 8),
  reg("GaLogHead", MmioOffset.GaLogHead, 8),
  reg("GaLogTail", MmioOffset.GaLogTail, 8),
  reg("PerformanceCounterConfig", MmioOffset.PerformanceCounterConfig, 4),
];

const byOffset = new Map(amdViMmioRegisters.map((r) => [r.offset, r]));

/** The register that starts at `offset`, or undefined (reserved space or the middle of a register). */
export function mmioRegisterAt(offset: number): MmioRegister | undefined {
  return byOffset.get(offset);
}
