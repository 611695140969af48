import { describe, expect, it } from "vitest";
import { GuestMemory, HostMemory, PrivatePageMap, type PrivateAssignment } from "@viommu/core";

/** Core's reverse map of confidential memory, as the AMD-Vi unit consults it on every DMA. */
describe("PrivatePageMap (the host's RMP view)", () => {
  const out: PrivateAssignment = { owner: 0, gpa: 0 };

  it("names a confidential guest's private pages by owner and GPA, follows its sharing, and ignores shared pages, other guests and host memory", () => {
    const host = new HostMemory();
    const map = PrivatePageMap.of(host);
    expect(PrivatePageMap.of(host)).toBe(map);
    const cc = new GuestMemory(host, 3, { sizeBytes: 2 ** 26, confidential: true });
    const plain = new GuestMemory(host, 4, { sizeBytes: 2 ** 26 });
    map.enroll(cc);
    map.enroll(plain);
    const hpa = cc.pin(0x30_1000)!;
    expect(map.privateOwner(hpa + 0x10, out)).toBe(true);
    expect(out).toEqual({ owner: 3, gpa: 0x30_1010 });
    cc.setShared(0x30_1000, 4096, true);
    expect(map.privateOwner(hpa, out)).toBe(false);
    cc.setShared(0x30_1000, 4096, false);
    expect(map.privateOwner(hpa, out)).toBe(true);
    // Backing allocated after the first look is found too (the index follows the guest's backing).
    const later = cc.pin(0x100_0000)!;
    expect(map.privateOwner(later, out)).toBe(true);
    expect(out.gpa).toBe(0x100_0000);
    expect(map.privateOwner(plain.pin(0x1000)!, out)).toBe(false);
    expect(map.privateOwner(host.allocate(0, 1)!, out)).toBe(false);
    expect(map.privateOwner(2 ** 45, out)).toBe(false);
  });

  it("keeps a guest while any holder has it enrolled", () => {
    const host = new HostMemory();
    const map = PrivatePageMap.of(host);
    const cc = new GuestMemory(host, 5, { sizeBytes: 2 ** 24, confidential: true });
    map.enroll(cc);
    map.enroll(cc);
    const hpa = cc.pin(0)!;
    map.withdraw(cc);
    expect(map.privateOwner(hpa, out)).toBe(true);
    map.withdraw(cc);
    expect(map.privateOwner(hpa, out)).toBe(false);
    expect(map.active).toBe(false);
  });
});
