import { NO_PASID, Perm, type GuestEvent, type Testbed, type TestVm } from "@viommu/core";
import { check, must, type ConformanceCase } from "../case.js";
import { DATA_GPA, events, IOVA, pattern, sameBytes } from "./support.js";

const PAGE = 4096;
/** A device with a 20-bit PASID capability (the PCIe maximum) and PRI. */
const pasidDevice = { devices: [{ rid: 0x100, guestRid: 0x10, pasidBits: 20, pri: true }] };

/** A user-space address of a process (below the 47-bit canonical boundary, page aligned). */
const USER_VA = 0x7f12_3456_7000;

/** The guest reads its page-request queue (after the VMM's event loop ran). */
function pageRequests(bed: Testbed, v: TestVm): GuestEvent[] {
  return events(bed, v).filter((e) => e.kind === "page-request");
}

export const pasidCases: ConformanceCase[] = [
  {
    id: "pasid-attach-separates",
    rule: "Domains attached at two PASIDs of one device and at its requester id translate the same IOVA independently, and detaching one PASID blocks only that PASID's DMA.",
    requires: ["pasid"],
    run(c) {
      const bed = c.bed({ vms: [pasidDevice] });
      const v = bed.vms[0]!;
      const driver = v.drivers[0]!;
      const dev = v.devices[0]!.device;
      const gpas = [DATA_GPA, DATA_GPA + 0x10_0000, DATA_GPA + 0x20_0000];
      gpas.forEach((gpa, i) => v.vm.memory.writeBytes(gpa, pattern(64, 100 + i)));
      const domains = gpas.map((gpa) => {
        const domain = must(driver.createDomain(), "createDomain");
        must(driver.map(domain, IOVA, gpa, PAGE, Perm.ReadWrite), "map");
        return domain;
      });
      must(driver.attach(0x10, domains[0]!), "attach the requester id");
      must(driver.attachPasid!(0x10, 1, domains[1]!), "attach PASID 1");
      must(driver.attachPasid!(0x10, 0x8_0001, domains[2]!), "attach PASID 0x80001");
      const readAs = (pasid: number) => dev.read(IOVA, 64, pasid);
      const expect = (pasid: number, which: number, what: string): void => {
        const r = readAs(pasid);
        check(r.ok && sameBytes(r.data, pattern(64, 100 + which)), `${what}: ${r.ok ? "read another domain's page" : `faulted (${r.reason})`}`);
      };
      expect(NO_PASID, 0, "DMA without a PASID");
      expect(1, 1, "DMA with PASID 1");
      expect(0x8_0001, 2, "DMA with PASID 0x80001");
      check(!readAs(2).ok, "DMA with a PASID nothing is attached at succeeded");
      must(driver.detachPasid!(0x10, 1), "detach PASID 1");
      check(!readAs(1).ok, "DMA with PASID 1 succeeded after its detach");
      expect(NO_PASID, 0, "DMA without a PASID after detaching PASID 1");
      expect(0x8_0001, 2, "DMA with PASID 0x80001 after detaching PASID 1");
    },
  },
  {
    id: "sva-shares-process-addresses",
    rule: "A process bound to a device PASID shares its addresses with the device: DMA at a user address reaches the page the process maps there, an unmap the OS invalidates is gone for the device too, and unbinding ends the PASID's access.",
    requires: ["sva"],
    run(c) {
      const bed = c.bed({ vms: [pasidDevice] });
      const v = bed.vms[0]!;
      const driver = v.drivers[0]!;
      const dev = v.devices[0]!.device;
      const process = must(driver.createProcess!(), "createProcess");
      must(process.map(USER_VA, DATA_GPA, 2 * PAGE, Perm.ReadWrite), "the process maps two pages");
      v.vm.memory.writeBytes(DATA_GPA + PAGE, pattern(32, 7));
      must(driver.bindProcess!(0x10, 5, process), "bind the process at PASID 5");
      const w = dev.write(USER_VA + 0x10, pattern(32, 8), 5);
      check(w.ok, `DMA write at the process's address faulted (${w.ok ? "" : w.reason})`);
      check(sameBytes(v.vm.memory.readBytes(DATA_GPA + 0x10, 32), pattern(32, 8)), "the DMA write did not reach the process's page");
      const r = dev.read(USER_VA + PAGE, 32, 5);
      check(r.ok && sameBytes(r.data, pattern(32, 7)), "DMA read at the process's address does not see what the CPU wrote");
      check(!dev.read(USER_VA, 4).ok, "the process's address translated without its PASID");
      must(process.unmap(USER_VA + PAGE, PAGE), "the process unmaps a page");
      must(driver.invalidateProcess!(process, USER_VA + PAGE, PAGE), "the OS invalidates it");
      check(!dev.read(USER_VA + PAGE, 4, 5).ok, "the device still reaches a page the process unmapped");
      check(dev.read(USER_VA, 4, 5).ok, "the device lost the page the process kept");
      must(driver.unbindProcess!(0x10, 5), "unbind");
      check(!dev.read(USER_VA, 4, 5).ok, "the device still reaches the process after the unbind");
    },
  },
  {
    id: "page-request-resolved",
    rule: "A PRI-capable device's DMA to a page the guest has not mapped raises a page request the guest reads (requester, PASID, address, access, last in group); once the guest maps the page and answers success the device's retry completes, and a failure answer leaves it failed.",
    requires: ["pageRequests", "sva"],
    run(c) {
      const bed = c.bed({ vms: [pasidDevice] });
      const v = bed.vms[0]!;
      const driver = v.drivers[0]!;
      const dev = v.devices[0]!.device;
      const process = must(driver.createProcess!(), "createProcess");
      must(process.map(USER_VA, DATA_GPA, PAGE, Perm.ReadWrite), "the process maps one page");
      must(driver.enablePageRequests!(0x10), "enable page requests");
      must(driver.bindProcess!(0x10, 9, process), "bind the process at PASID 9");
      check(dev.read(USER_VA, 4, 9).ok, "DMA at a mapped address faulted");

      const missing = USER_VA + 4 * PAGE;
      const first = dev.write(missing + 0x40, pattern(16, 3), 9);
      check(!first.ok && first.pageRequest !== undefined, `a DMA to an unmapped address ${first.ok ? "succeeded" : `was a final fault (${first.reason})`}, not a page request`);
      const requests = pageRequests(bed, v);
      check(requests.length === 1, `the guest read ${requests.length} page requests, expected 1`);
      const pr = requests[0]!;
      check(pr.rid === 0x10 && pr.pasid === 9, `the page request names requester 0x${pr.rid?.toString(16)} PASID ${pr.pasid}`);
      check(pr.address !== undefined && pr.address - (pr.address % PAGE) === missing, `the page request names address 0x${pr.address?.toString(16)}`);
      check(pr.write === true && pr.last === true, `the page request's write ${pr.write} / last ${pr.last}`);
      check(dev.pageRequestStatus(first.pageRequest) === "waiting", "the device is not waiting for its response");
      must(process.map(missing, DATA_GPA + PAGE, PAGE, Perm.ReadWrite), "the guest's fault handler maps the page");
      must(driver.respondPageRequest!(pr, true), "respond success");
      bed.poll();
      check(dev.pageRequestStatus(first.pageRequest) === "success", `the device's group is ${dev.pageRequestStatus(first.pageRequest)}, not answered success`);
      const retry = dev.write(missing + 0x40, pattern(16, 3), 9);
      check(retry.ok, "the device's retry after the success answer faulted");
      check(sameBytes(v.vm.memory.readBytes(DATA_GPA + PAGE + 0x40, 16), pattern(16, 3)), "the retried write did not reach the page the guest mapped");

      const bad = USER_VA + 8 * PAGE;
      const second = dev.read(bad, 4, 9);
      check(!second.ok && second.pageRequest !== undefined, "a second unmapped access raised no page request");
      const again = pageRequests(bed, v);
      check(again.length === 1 && again[0]!.write === false, `the guest read ${JSON.stringify(again.map((e) => [e.address, e.write]))}`);
      must(driver.respondPageRequest!(again[0]!, false), "respond failure");
      bed.poll();
      const status = dev.pageRequestStatus(second.pageRequest);
      check(status !== undefined && status !== "waiting" && status !== "success", `after a failure answer the device's group is ${status}`);
      check(pageRequests(bed, v).length === 0, "page requests appeared that no DMA raised");
    },
  },
];
