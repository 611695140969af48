/**
 * @viommu/smmuv3: ARM SMMUv3 for viommu. Rooms (shared/DESIGN.md), plus one:
 * - format/: every structure's layout and codec;
 * - translate/: the SMMU's architectural lookup (stream table → STE → CD → stage 1) and its checks and event
 *   records, over any memory reader; shared by hw/ (nested translation through stage 2), vmm/ (the emulated
 *   device path, shadowing) and the walk tool, so all three judge structures identically. Imports format/ and core;
 * - hw/: the physical unit and host driver, with its extension point for implementations (Smmuv3Extension,
 *   createSmmuv3Unit) that packages/tegra241-cmdqv plugs into;
 * - vmm/: the emulated SMMU (Smmuv3Device); guest/: the Linux-like driver; tools/: walk, acpi, bench;
 * - plugin.ts wires them (smmuv3Plugin, registerSmmuV3).
 */
export * from "./format/index.js";
export * from "./translate/smmu-features.js";
export * from "./translate/walk-info.js";
export * from "./translate/stream-table-lookup.js";
export * from "./translate/ste-config.js";
export * from "./translate/cd-config.js";
export * from "./translate/stage1-walk.js";
export * from "./translate/fault-record.js";
export * from "./translate/guest-memory-reader.js";
export * from "./translate/guest-translator.js";
export * from "./hw/smmuv3-hw-config.js";
export * from "./hw/stage2-domain.js";
export * from "./hw/smmuv3-extension.js";
export * from "./hw/smmuv3-nested-domain.js";
export * from "./hw/smmuv3-viommu.js";
export * from "./hw/smmuv3-unit.js";
export * from "./vmm/register-file.js";
export * from "./vmm/emulated-idr.js";
export * from "./vmm/emulated-event-queue.js";
export * from "./vmm/msi-writer.js";
export * from "./vmm/veventq-reader.js";
export * from "./vmm/nested-host.js";
export * from "./vmm/shadow-host.js";
export * from "./vmm/iort-builder.js";
export * from "./vmm/smmuv3-state.js";
export * from "./vmm/guest-queue-views.js";
export * from "./vmm/smmuv3-device.js";
export * from "./guest/smmuv3-driver.js";
export * from "./guest/impl-ops.js";
export * from "./guest/guest-process.js";
export * from "./guest/sync-command.js";
export * from "./tools/walk-tool.js";
export * from "./tools/acpi-tool.js";
export * from "./tools/bench.js";
export { nestedBench, dmaFillInvalidations, FLUSH_PAGES, BENCH_IOVA, BENCH_GPA, type NestedBench } from "./tools/bench-figures.js";
export * from "./plugin.js";
