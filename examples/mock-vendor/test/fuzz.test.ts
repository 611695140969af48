import { describe, expect, it } from "vitest";
import fc from "fast-check";
import { Perm, unwrap } from "@viommu/core";
import { Testbed } from "@viommu/conformance";
import { MockReg, MOCK_VQUEUE_PAGE_OFFSET } from "../src/format/registers.js";
import { mockPlugin } from "../src/plugin.js";

function bed(): Testbed {
  return unwrap(Testbed.create({ plugin: mockPlugin, vms: [{ devices: [{ rid: 0x100, guestRid: 0x10 }], memoryBytes: 2 ** 28 }] }));
}

const word = fc.integer({ min: 0, max: 0xffffffff });

describe("hostile guest input to the mock", () => {
  it("random commands in the queue end as command errors or effects, never exceptions or escapes", () => {
    fc.assert(
      fc.property(fc.array(fc.tuple(word, word, word, word), { minLength: 1, maxLength: 40 }), (commands) => {
        const b = bed();
        try {
          const v = b.vms[0]!;
          const base = Number(v.vm.mmioRead(v.iommus[0]!.mmioBase + MockReg.CMDQ_BASE, 8) & ~0xfffn);
          const tail = Number(v.vm.mmioRead(v.iommus[0]!.mmioBase + MockReg.CMDQ_TAIL, 8));
          commands.forEach((c, i) => v.vm.memory.writeWords(base + ((tail + i) % 256) * 16, Uint32Array.from(c)));
          v.vm.mmioWrite(v.iommus[0]!.mmioBase + MockReg.CMDQ_TAIL, 8, (tail + commands.length) % 256);
          for (let i = 0; i < commands.length; i++) v.vm.mmioWrite(v.iommus[0]!.mmioBase + MockReg.STATUS_ACK, 8, 0xffff);
          b.poll();
          v.drivers[0]!.readEvents();
          v.devices[0]!.device.read(0x1000, 64);
          expect(b.platform.host.memory.violations).toEqual([]);
        } finally {
          b.dispose();
        }
      }),
      { numRuns: 60, seed: 7 },
    );
  });

  it("random register writes (including the direct queue page) never throw or escape", () => {
    fc.assert(
      fc.property(fc.array(fc.tuple(fc.nat(0x1fff), fc.bigInt({ min: 0n, max: (1n << 64n) - 1n })), { maxLength: 40 }), (writes) => {
        const b = bed();
        try {
          const v = b.vms[0]!;
          const driver = v.drivers[0]!;
          const dom = unwrap(driver.createDomain());
          driver.attach(0x10, dom);
          driver.map(dom, 0x1000, 0x100_0000, 0x1000, Perm.ReadWrite);
          for (const [offset, value] of writes) v.vm.mmioWrite(v.iommus[0]!.mmioBase + (offset & ~7), 8, value);
          v.vm.mmioWrite(v.iommus[0]!.mmioBase + MOCK_VQUEUE_PAGE_OFFSET, 4, 3);
          b.poll();
          v.devices[0]!.device.write(0x1000, Uint8Array.of(1, 2, 3));
          expect(b.platform.host.memory.violations).toEqual([]);
        } finally {
          b.dispose();
        }
      }),
      { numRuns: 60, seed: 11 },
    );
  });
});
