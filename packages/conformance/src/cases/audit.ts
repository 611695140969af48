import { Perm, type StaleTranslationFinding } from "@viommu/core";
import { check, must, type ConformanceCase } from "../case.js";
import { DATA_GPA, IOVA, mapOne, oneDevice } from "./support.js";

/** The findings the audit publishes on a testbed's event bus. */
function collect(bed: { platform: { host: { events: { on(e: "staleTranslation", f: (x: StaleTranslationFinding) => void): unknown } } } }): StaleTranslationFinding[] {
  const found: StaleTranslationFinding[] = [];
  bed.platform.host.events.on("staleTranslation", (f) => found.push(f));
  return found;
}

export const auditCases: ConformanceCase[] = [
  {
    id: "stale-translation-audit",
    rule: "With the audit on, a reference driver that skips one class of invalidation (the IOTLB after an unmap, the context cache after a domain change, the interrupt entry cache after an IRTE change) is caught at the first use of the stale entry, naming the address; the correct driver doing the same work produces no finding.",
    requires: ["audit"],
    run(c) {
      const classes = c.plugin.capabilities.auditClasses ?? [];
      check(classes.length > 0, "the plugin declares the audit but no invalidation class it catches (capabilities.auditClasses)");
      const scenario = (skip: "iotlb" | "context" | "interrupt" | undefined): StaleTranslationFinding[] => {
        const bed = c.bed({ vms: [{ ...oneDevice(), vcpus: 8 }], audit: true, guest: skip === undefined ? {} : { skipInvalidation: skip } });
        const found = collect(bed);
        const v = bed.vms[0]!;
        const driver = v.drivers[0]!;
        const dev = v.devices[0]!.device;
        if (skip === undefined || skip === "iotlb") {
          const domain = mapOne(v, 0x10, IOVA, DATA_GPA, 0x2000);
          check(dev.read(IOVA, 8).ok, "DMA through a fresh mapping faulted");
          must(driver.unmap(domain, IOVA, 0x1000), "unmap");
          dev.read(IOVA, 8);
        }
        if (skip === undefined || skip === "context") {
          const a = must(driver.createDomain(), "createDomain");
          const b = must(driver.createDomain(), "createDomain");
          must(driver.map(a, IOVA + 0x10_0000, DATA_GPA, 0x1000, Perm.ReadWrite), "map in A");
          must(driver.map(b, IOVA + 0x20_0000, DATA_GPA + 0x1000, 0x1000, Perm.ReadWrite), "map in B");
          must(driver.attach(0x10, a), "attach A");
          check(dev.read(IOVA + 0x10_0000, 8).ok, "DMA through domain A faulted");
          must(driver.attach(0x10, b), "attach B");
          dev.read(IOVA + 0x10_0000, 8);
        }
        if ((skip === undefined || skip === "interrupt") && c.plugin.capabilities.interruptRemapping && driver.mapInterrupt !== undefined) {
          const msi = must(driver.mapInterrupt(0x10, 0x44, 2), "mapInterrupt");
          dev.signalMsi(msi);
          must(driver.unmapInterrupt!(0x10, msi), "unmapInterrupt");
          dev.signalMsi(msi);
        }
        bed.poll();
        return found;
      };
      const clean = scenario(undefined);
      check(clean.length === 0, `the correct driver produced findings: ${JSON.stringify(clean.slice(0, 3))}`);
      for (const skip of classes) {
        const found = scenario(skip);
        check(found.length > 0, `skipping the ${skip} invalidation went unnoticed by the audit`);
        if (skip === "iotlb") check(found.some((f) => f.iova === IOVA), `the ${skip} findings name ${found.map((f) => `0x${f.iova.toString(16)}`).join(", ")}, not the unmapped IOVA 0x${IOVA.toString(16)}`);
        if (skip === "context") check(found.some((f) => f.iova === IOVA + 0x10_0000), `the ${skip} findings do not name the IOVA used after the domain change`);
        c.metric(`findings-${skip}`, found.length);
      }
    },
  },
];
