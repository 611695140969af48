import { check, must, type ConformanceCase } from "../case.js";
import { DATA_GPA, events, oneDevice } from "./support.js";

export const interruptCases: ConformanceCase[] = [
  {
    id: "interrupt-remapping-delivers",
    rule: "A device MSI through a programmed remapping entry reaches the programmed vector and destination.",
    requires: ["interruptRemapping"],
    run(c) {
      const bed = c.bed({ vms: [{ ...oneDevice(), vcpus: 8 }] });
      const v = bed.vms[0]!;
      const msi = must(v.drivers[0]!.mapInterrupt!(0x10, 0x41, 5), "mapInterrupt");
      v.vm.interrupts.take();
      check(v.devices[0]!.device.signalMsi(msi), "device has no MSI route");
      const got = v.vm.interrupts.take().filter((i) => i.source.startsWith("msi"));
      check(got.length === 1 && got[0]!.vector === 0x41 && got[0]!.destination === 5, `delivered ${JSON.stringify(got)}`);
    },
  },
  {
    id: "device-interrupt-posted",
    rule: "With posting, a passed-through device's remapped MSIs reach the running vCPU with no VMM intervention, where remapping through the host costs one intervention each; both deliver the programmed vector to the programmed vCPU.",
    requires: ["interruptRemapping", "postedInterrupts"],
    run(c) {
      for (const mode of ["remapped", "posted"] as const) {
        const bed = c.bed({ vms: [{ ...oneDevice(), vcpus: 8 }], deviceInterrupts: mode });
        const v = bed.vms[0]!;
        const msi = must(v.drivers[0]!.mapInterrupt!(0x10, 0x45, 3), "mapInterrupt");
        v.vm.interrupts.take();
        const before = v.vm.interventions;
        for (let i = 0; i < 1000; i++) check(v.devices[0]!.device.signalMsi(msi), `${mode}: device has no MSI route`);
        const cost = v.vm.interventions - before;
        const got = v.vm.interrupts.take().filter((i) => i.source.startsWith("msi"));
        check(got.length === 1000 && got.every((i) => i.vector === 0x45 && i.destination === 3), `${mode}: delivered ${got.length} MSIs, ${got.filter((i) => i.vector !== 0x45 || i.destination !== 3).length} to the wrong vector or vCPU`);
        c.metric(`interventions-per-1000-${mode}`, cost);
        if (mode === "posted") {
          check(cost === 0 && got.every((i) => i.path === "direct"), `posted MSIs cost ${cost} VMM interventions`);
        } else {
          check(cost >= 1000 && got.every((i) => i.path === "vmm"), `remapped MSIs cost ${cost} VMM interventions for 1000 (each is an injection)`);
        }
      }
    },
  },
  {
    id: "interrupt-remapping-blocks-invalid",
    rule: "An MSI through a cleared remapping entry is blocked and reported as an interrupt-remapping fault.",
    requires: ["interruptRemapping"],
    run(c) {
      const bed = c.bed({ vms: [oneDevice()] });
      const v = bed.vms[0]!;
      const driver = v.drivers[0]!;
      const msi = must(driver.mapInterrupt!(0x10, 0x42, 1), "mapInterrupt");
      must(driver.unmapInterrupt!(0x10, msi), "unmapInterrupt");
      v.vm.interrupts.take();
      v.devices[0]!.device.signalMsi(msi);
      check(v.vm.interrupts.take().filter((i) => i.source.startsWith("msi")).length === 0, "MSI through a cleared entry was delivered");
    },
  },
  {
    id: "interrupt-remapping-fault-reported",
    rule: "An MSI blocked by a cleared remapping entry is reported to the guest as an interrupt-remapping fault.",
    requires: ["interruptRemapping", "eventLog"],
    run(c) {
      const bed = c.bed({ vms: [oneDevice()] });
      const v = bed.vms[0]!;
      const driver = v.drivers[0]!;
      const msi = must(driver.mapInterrupt!(0x10, 0x42, 1), "mapInterrupt");
      must(driver.unmapInterrupt!(0x10, msi), "unmapInterrupt");
      v.devices[0]!.device.signalMsi(msi);
      const evs = events(bed, v);
      check(evs.some((e) => e.kind === "interrupt-fault"), `no interrupt-remapping fault reported: ${JSON.stringify(evs.map((e) => e.name))}`);
    },
  },
  {
    id: "shadow-interrupt-remap-keeps-translation",
    rule: "In shadow mode, programming interrupt remapping for a device (a device-entry rewrite that keeps its page table) leaves its DMA translation intact and delivers its MSI.",
    requires: ["shadow", "interruptRemapping"],
    run(c) {
      const bed = c.bed({ mode: "shadow", vms: [{ ...oneDevice(), vcpus: 8 }, oneDevice(0x200, 0x10)] });
      const [v, other] = [bed.vms[0]!, bed.vms[1]!];
      v.vm.memory.writeBytes(DATA_GPA, Uint8Array.of(1, 2, 3, 4));
      const domain = must(v.drivers[0]!.createDomain(), "createDomain");
      must(v.drivers[0]!.attach(0x10, domain), "attach");
      must(v.drivers[0]!.map(domain, 0x10_0000, DATA_GPA, 0x1000, 3), "map");
      const msi = must(v.drivers[0]!.mapInterrupt!(0x10, 0x43, 3), "mapInterrupt");
      // Another VM's domains come and go meanwhile.
      const d = must(other.drivers[0]!.createDomain(), "other createDomain");
      must(other.drivers[0]!.attach(0x10, d), "other attach");
      must(other.drivers[0]!.map(d, 0x10_0000, DATA_GPA, 0x1000, 3), "other map");
      const r = v.devices[0]!.device.read(0x10_0000, 4);
      check(r.ok && r.data.join() === "1,2,3,4", "DMA through the shadow broke after the interrupt-remapping rewrite");
      v.vm.interrupts.take();
      check(v.devices[0]!.device.signalMsi(msi), "device has no MSI route");
      const got = v.vm.interrupts.take().filter((i) => i.source.startsWith("msi"));
      check(got.length === 1 && got[0]!.vector === 0x43 && got[0]!.destination === 3, `delivered ${JSON.stringify(got)}`);
      check(bed.platform.host.memory.violations.length === 0, "isolation violation recorded");
    },
  },
  {
    id: "ir-only-mode",
    rule: "With DMA translation off and interrupt remapping on, DMA reaches guest memory untranslated (IOVA = GPA) and interrupts are still remapped.",
    requires: ["irOnly"],
    run(c) {
      const bed = c.bed({ vms: [{ ...oneDevice(), vcpus: 300 }], mode: "ir-only", guest: { translation: false, interruptRemapping: true, x2apic: true } });
      const v = bed.vms[0]!;
      const dev = v.devices[0]!.device;
      check(dev.write(DATA_GPA + 8, Uint8Array.of(0xaa)).ok, "untranslated DMA to guest RAM failed");
      check(v.vm.memory.read8(DATA_GPA + 8) === 0xaa, "untranslated DMA did not land at its GPA");
      check(!dev.read(v.vm.memory.end + 0x1000, 4).ok, "DMA beyond guest RAM was not blocked");
      const msi = must(v.drivers[0]!.mapInterrupt!(0x10, 0x51, 299), "mapInterrupt");
      v.vm.interrupts.take();
      dev.signalMsi(msi);
      const got = v.vm.interrupts.take().filter((i) => i.source.startsWith("msi"));
      check(got.length === 1 && got[0]!.vector === 0x51 && got[0]!.destination === 299, `x2APIC destination 299 not reached: ${JSON.stringify(got)}`);
    },
  },
];
