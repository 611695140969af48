import { describe, expect, it } from "vitest";
import fc from "fast-check";
import { decodeState, encodeState, Perm, unwrap, type GuestQueueView, type StateValue, type TestVm } from "@viommu/core";
import { Testbed } from "@viommu/conformance";
import { encodeMockCommand, MOCK_CMD_BYTES, MockOpcode } from "../src/format/command.js";
import { MockCommandError } from "../src/format/event.js";
import { MockReg, MockStatus } from "../src/format/registers.js";
import { mockPlugin } from "../src/plugin.js";

const SEED = Number(process.env.VIOMMU_SEED ?? 20261206);

function bed(mode: "nested" | "shadow" = "nested"): Testbed {
  return unwrap(Testbed.create({ plugin: mockPlugin, mode, vms: [{ devices: [{ rid: 0x100, guestRid: 0x10 }], memoryBytes: 2 ** 28 }] }));
}

/** Writes raw commands into a guest-produced queue and advances its producer, knowing only the view. */
function pushRaw(v: TestVm, q: GuestQueueView, commands: Uint32Array[]): void {
  const base = q.base();
  expect(base).toBeDefined();
  let position = q.producer.decode(v.vm.mmioRead(q.producer.address, q.producer.size));
  for (const c of commands) {
    v.vm.memory.writeWords(base! + position.index * q.entryBytes, c);
    const next = (position.index + 1) % q.entries();
    position = { index: next, wrap: next === 0 ? !position.wrap : position.wrap };
  }
  v.vm.mmioWrite(q.producer.address, q.producer.size, q.producer.encode(position, v.vm.mmioRead(q.producer.address, q.producer.size)));
}

describe("a refused invalidation on the forwarding path", () => {
  it("stops the queue at the refused command with HOST_REFUSED, after the commands before it took effect; the host logs it and forwarded counts only what it accepted", () => {
    const b = bed();
    const v = b.vms[0]!;
    const driver = v.drivers[0]!;
    const dom = unwrap(driver.createDomain());
    unwrap(driver.attach(0x10, dom));
    unwrap(driver.map(dom, 0x1000, 0x100_0000, 0x2000, Perm.ReadWrite));
    const dev = v.devices[0]!.device;
    expect(dev.read(0x1000, 4).ok).toBe(true);
    // The guest unmaps without flushing yet: the host IOTLB still holds the translation.
    const table = (driver as unknown as { domains: Map<number, { table: { unmap(i: number, l: number): void } }> }).domains.get(dom)!.table;
    table.unmap(0x1000, 0x1000);
    expect(dev.read(0x1000, 4).ok).toBe(true);
    const iommu = v.iommus[0]!;
    const forwarded = iommu.stats.forwarded;
    const cmdq = iommu.guestQueues().find((q) => q.role === "command")!;
    const status = 0x200_0000;
    pushRaw(v, cmdq, [
      encodeMockCommand({ OP: MockOpcode.INV_RANGE, ASID: dom, ADDR: 0x1000, NPAGES: 0 }),
      // Not page aligned: the host's invalidation refuses it (EINVAL).
      encodeMockCommand({ OP: MockOpcode.INV_RANGE, ASID: dom, ADDR: 0x2004, NPAGES: 0 }),
      encodeMockCommand({ OP: MockOpcode.SYNC, ADDR: status, DATA: 0x5a }),
    ]);
    expect(Number(v.vm.mmioRead(iommu.mmioBase + MockReg.STATUS, 4)) & MockStatus.CMD_ERROR).toBeTruthy();
    expect(dev.read(0x1000, 4).ok).toBe(false);
    expect(iommu.stats.forwarded - forwarded).toBe(1);
    expect(v.vm.memory.read32(status)).toBe(0);
    b.poll();
    const errors = driver.readEvents().filter((e) => e.kind === "command-error");
    expect(errors).toHaveLength(1);
    expect(errors[0]!.code).toBe(MockCommandError.HOST_REFUSED);
    expect(b.platform.host.log.entries({ vm: v.vm.id, kind: "invalidation-refused" })).toHaveLength(1);
    // Acknowledged, the device skips the refused command and completes the SYNC.
    v.vm.mmioWrite(iommu.mmioBase + MockReg.STATUS_ACK, 4, MockStatus.CMD_ERROR);
    expect(v.vm.memory.read32(status)).toBe(0x5a);
    b.dispose();
  });
});

describe("hot-unplug, re-addressing and the guest queue views", () => {
  it("unassign blocks the device's DMA, frees its guest RID and its vDEVICE", () => {
    const b = bed();
    const v = b.vms[0]!;
    const driver = v.drivers[0]!;
    const dom = unwrap(driver.createDomain());
    unwrap(driver.attach(0x10, dom));
    unwrap(driver.map(dom, 0x1000, 0x100_0000, 0x1000, Perm.ReadWrite));
    const { device, devId } = v.devices[0]!;
    expect(device.read(0x1000, 4).ok).toBe(true);
    const iommu = v.iommus[0]!;
    const vdevices = v.iommufd.list("VDEVICE").length;
    unwrap(iommu.unassignDevice(0x10));
    expect(device.read(0x1000, 4).ok).toBe(false);
    expect(v.iommufd.list("VDEVICE").length).toBe(vdevices - 1);
    expect(iommu.unassignDevice(0x10)).toMatchObject({ ok: false, error: { errno: "ENOENT" } });
    // The RID takes a device again.
    unwrap(iommu.assignDevice(device, devId, 0x10));
    unwrap(driver.attach(0x10, dom));
    expect(device.read(0x1000, 4).ok).toBe(true);
    expect(b.dispose()).toEqual([]);
  });

  it("renumber moves the device to a new guest RID: it translates only once the guest programs that RID's entry", () => {
    const b = bed();
    const v = b.vms[0]!;
    const driver = v.drivers[0]!;
    const dom = unwrap(driver.createDomain());
    unwrap(driver.attach(0x10, dom));
    unwrap(driver.map(dom, 0x1000, 0x100_0000, 0x1000, Perm.ReadWrite));
    const { device, devId } = v.devices[0]!;
    const iommu = v.iommus[0]!;
    unwrap(iommu.assignDevice(b.platform.createDevice(b.units[0]!, 0x300), unwrap(v.iommufd.bindDevice(b.platform.createDevice(b.units[0]!, 0x301))), 0x30));
    expect(iommu.renumberDevice(0x10, 0x30)).toMatchObject({ ok: false, error: { errno: "EEXIST" } });
    expect(iommu.renumberDevice(0x99, 0x40)).toMatchObject({ ok: false, error: { errno: "ENOENT" } });
    unwrap(iommu.renumberDevice(0x10, 0x20));
    expect(device.read(0x1000, 4).ok).toBe(false);
    unwrap(driver.attach(0x20, dom));
    expect(device.read(0x1000, 4).ok).toBe(true);
    b.poll();
    void devId;
  });

  it("describes its command queue so that a raw SYNC written through the view completes", () => {
    const b = bed();
    const v = b.vms[0]!;
    const iommu = v.iommus[0]!;
    const [cmdq, evtq] = iommu.guestQueues();
    expect(cmdq).toMatchObject({ name: "CMDQ", role: "command", producedBy: "guest", entryBytes: MOCK_CMD_BYTES });
    expect(evtq).toMatchObject({ role: "event", producedBy: "device" });
    const status = 0x200_0000;
    // Enough entries to wrap the ring once.
    for (let i = 0; i < cmdq!.entries() + 3; i++) pushRaw(v, cmdq!, [encodeMockCommand({ OP: MockOpcode.SYNC, ADDR: status, DATA: i & 0xfff })]);
    expect(v.vm.memory.read32(status)).toBe((cmdq!.entries() + 2) & 0xfff);
    const consumer = cmdq!.consumer.decode(v.vm.mmioRead(cmdq!.consumer.address, cmdq!.consumer.size));
    const producer = cmdq!.producer.decode(v.vm.mmioRead(cmdq!.producer.address, cmdq!.producer.size));
    expect(consumer).toEqual(producer);
    b.dispose();
  });
});

describe("restoring a mock state", () => {
  it("refuses forged streams (valid checksum, bad content) naming the field and changing nothing, and never throws", () => {
    const b = bed();
    const v = b.vms[0]!;
    const driver = v.drivers[0]!;
    const dom = unwrap(driver.createDomain());
    unwrap(driver.attach(0x10, dom));
    unwrap(driver.map(dom, 0x1000, 0x100_0000, 0x1000, Perm.ReadWrite));
    const iommu = v.iommus[0]!;
    const good = iommu.save!();
    const state = unwrap(decodeState(good, "mock-iommu", [1])).value as Record<string, StateValue>;
    const keys = Object.keys(state);
    const hostile = fc.oneof(fc.integer({ min: -5, max: 2 ** 53 }), fc.constant(-1), fc.double(), fc.string(), fc.constant(null), fc.array(fc.integer({ min: -1, max: 2 ** 40 }), { maxLength: 5 }), fc.constant(2 ** 16));
    let refused = 0;
    fc.assert(
      fc.property(fc.constantFrom(...keys), fc.nat(4), hostile, (key, index, value) => {
        const forged = JSON.parse(JSON.stringify(state)) as Record<string, StateValue>;
        const field = forged[key];
        if (Array.isArray(field) && index < field.length) field[index] = value as StateValue;
        else forged[key] = value as StateValue;
        const before = iommu.save!();
        const r = iommu.restore!(encodeState("mock-iommu", 1, forged));
        if (!r.ok) {
          refused++;
          expect(r.error.errno).toBe("EINVAL");
          expect(r.error.message).toMatch(new RegExp(`mock state: ${key}`));
          expect(iommu.save!()).toEqual(before);
        } else {
          // Accepted values are ones the register file itself takes: the device keeps working.
          v.devices[0]!.device.read(0x1000, 4);
          unwrap(iommu.restore!(good));
        }
      }),
      { numRuns: 500, seed: SEED },
    );
    expect(refused).toBeGreaterThan(400);
    unwrap(iommu.restore!(good));
    expect(v.devices[0]!.device.read(0x1000, 4).ok).toBe(true);
    b.dispose();
  });
});
