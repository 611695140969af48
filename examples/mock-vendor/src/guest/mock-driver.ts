import {
  err,
  fail,
  GuestTableStore,
  ok,
  PageTableBuilder,
  toHex64,
  type GuestContext,
  type GuestDomainId,
  type GuestEvent,
  type GuestIommuDriver,
  type GuestInitOptions,
  type MsiMessage,
  type PageSource,
  type PermBits,
  type RawBits,
  type Result,
} from "@viommu/core";
import { encodeMockCommand, MOCK_CMD_BYTES, MockOpcode, type MockCommand } from "../format/command.js";
import { encodeMockDeviceEntry, MOCK_DTE_BYTES } from "../format/device-entry.js";
import { decodeMockEvent, MOCK_EVENT_BYTES, MockEventType, mockEventNames } from "../format/event.js";
import { encodeMockIrte, MOCK_IRTE_BYTES, mockMsiAddress } from "../format/irte.js";
import { mockGeometry, mockPteFormat } from "../format/pte.js";
import { encodeBase, MOCK_ID_VALUE, MOCK_ID_VQUEUE, MOCK_VQ_BASE, MOCK_VQUEUE_PAGE_OFFSET, MockControl, MockReg, MockStatus, MockVqueueReg } from "../format/registers.js";

const DEVTAB_LOG2 = 12;
const CMDQ_LOG2 = 8;
const IRT_LOG2 = 8;
const VQ_LOG2 = 8;

interface Domain {
  readonly asid: number;
  readonly table: PageTableBuilder;
}

/**
 * The reference guest driver for the mock: everything in guest memory (device table, command ring, event
 * ring, interrupt table, page tables), everything announced through registers, every change followed by the
 * invalidation it needs and a SYNC the driver waits for. With a guest-owned queue offered, invalidations go
 * there without exits.
 */
export class MockGuestDriver implements GuestIommuDriver {
  readonly vendor = "mock";
  private readonly pages: PageSource;
  private readonly store: GuestTableStore;
  private readonly base: number;
  private devtab = 0;
  private cmdq = 0;
  private cmdTail = 0;
  private evtq = 0;
  private evtLog2 = 0;
  private evtHead = 0;
  private irt = 0;
  private statusPage = 0;
  private syncSequence = 0;
  private vq: { address: number; prod: number } | undefined;
  private readonly domains = new Map<GuestDomainId, Domain>();
  private nextAsid = 1;
  private readonly irqSlots: (number | undefined)[] = [];
  private control = 0;
  /** The class of invalidation this driver leaves out (GuestInitOptions.skipInvalidation: audit tests only). */
  private skip: GuestInitOptions["skipInvalidation"];

  constructor(private readonly context: GuestContext) {
    this.pages = context.pages;
    this.store = new GuestTableStore(context.memory, this.pages);
    this.base = context.mmioBase;
  }

  private read(reg: number): bigint {
    return this.context.vm.mmioRead(this.base + reg, 8);
  }

  private write(reg: number, value: bigint | number): void {
    this.context.vm.mmioWrite(this.base + reg, 8, BigInt(value));
  }

  private alloc(pages: number): Result<number> {
    const at = this.pages.allocate(pages, pages);
    return at === undefined ? err("ENOMEM", "guest driver memory exhausted") : ok(at);
  }

  init(options: GuestInitOptions): Result<void> {
    this.skip = options.skipInvalidation;
    if ((this.read(MockReg.ID) & ~MOCK_ID_VQUEUE) !== MOCK_ID_VALUE) return err("ENODEV", "no mock IOMMU at the expected address");
    const devtab = this.alloc((2 ** DEVTAB_LOG2 * MOCK_DTE_BYTES) / 4096);
    const cmdq = this.alloc(1);
    const irt = this.alloc(1);
    const status = this.alloc(1);
    if (!devtab.ok || !cmdq.ok || !irt.ok || !status.ok) return err("ENOMEM", "guest driver memory exhausted");
    this.devtab = devtab.value;
    this.cmdq = cmdq.value;
    this.irt = irt.value;
    this.statusPage = status.value;
    this.write(MockReg.DEVTAB_BASE, encodeBase(this.devtab, DEVTAB_LOG2));
    this.write(MockReg.CMDQ_BASE, encodeBase(this.cmdq, CMDQ_LOG2));
    this.write(MockReg.IRT_BASE, encodeBase(this.irt, IRT_LOG2));
    const events = this.resetEventLog(options.eventLogEntries ?? 64, false);
    if (!events.ok) return events;
    if (options.eventVector !== undefined) {
      this.write(MockReg.EVT_MSI_ADDR, 0xfee0_0000 | ((options.eventDestination ?? 0) << 12));
      this.write(MockReg.EVT_MSI_DATA, options.eventVector);
    }
    this.control =
      MockControl.CMDQ_EN |
      MockControl.EVTQ_EN |
      (options.eventVector !== undefined ? MockControl.EVT_INT_EN : 0) |
      (options.translation ? MockControl.TRANSLATE_EN : 0) |
      (options.interruptRemapping ? MockControl.IR_EN : 0);
    this.write(MockReg.CONTROL, this.control);
    if (this.read(MockReg.ID) & MOCK_ID_VQUEUE) {
      const vq = this.alloc(((2 ** VQ_LOG2) * MOCK_CMD_BYTES) / 4096);
      if (vq.ok) {
        this.write(MOCK_VQ_BASE(0), encodeBase(vq.value, VQ_LOG2));
        this.vq = { address: vq.value, prod: 0 };
      }
    }
    return ok();
  }

  // ---- commands ----

  /** Queues commands then a SYNC, rings the doorbell, and checks the SYNC wrote its sequence number. */
  private submit(commands: Partial<MockCommand>[]): Result<void> {
    this.syncSequence = (this.syncSequence + 1) & 0xfff;
    const all = [...commands, { OP: MockOpcode.SYNC, ADDR: this.statusPage, DATA: this.syncSequence }];
    // TLB invalidations may use the guest-owned queue; configuration changes must reach the VMM.
    const tlbOnly = commands.every((c) => c.OP === MockOpcode.INV_ASID || c.OP === MockOpcode.INV_RANGE || c.OP === MockOpcode.INV_ALL);
    if (this.vq !== undefined && tlbOnly) return this.submitToVqueue(all);
    const entries = 2 ** CMDQ_LOG2;
    for (const c of all) {
      this.context.memory.writeWords(this.cmdq + this.cmdTail * MOCK_CMD_BYTES, encodeMockCommand(c));
      this.cmdTail = (this.cmdTail + 1) % entries;
    }
    this.write(MockReg.CMDQ_TAIL, this.cmdTail);
    if (this.read(MockReg.STATUS) & BigInt(MockStatus.CMD_ERROR)) {
      // As Linux recovers a command queue: acknowledge, so the device skips the bad command and runs the rest.
      this.write(MockReg.STATUS_ACK, MockStatus.CMD_ERROR);
      return err("EIO", "command queue reported an error");
    }
    if (this.context.memory.read32(this.statusPage) !== this.syncSequence) return err("ETIMEDOUT", "SYNC did not complete");
    return ok();
  }

  /** The guest-owned queue: commands written to memory, PROD written to the directly mapped page. */
  private submitToVqueue(commands: Partial<MockCommand>[]): Result<void> {
    const vq = this.vq!;
    const entries = 2 ** VQ_LOG2;
    for (const c of commands) {
      this.context.memory.writeWords(vq.address + (vq.prod % entries) * MOCK_CMD_BYTES, encodeMockCommand(c));
      vq.prod = (vq.prod + 1) & (2 * entries - 1);
    }
    const page = this.base + MOCK_VQUEUE_PAGE_OFFSET;
    this.context.vm.mmioWrite(page + MockVqueueReg.PROD, 4, vq.prod);
    if (this.context.vm.mmioRead(page + MockVqueueReg.ERR, 4) !== 0n) return err("EIO", "guest queue reported an error");
    if (this.context.memory.read32(this.statusPage) !== this.syncSequence) return err("ETIMEDOUT", "SYNC did not complete");
    return ok();
  }

  // ---- domains ----

  createDomain(): Result<GuestDomainId> {
    const table = PageTableBuilder.create(mockPteFormat, mockGeometry, this.store);
    if (table === undefined) return err("ENOMEM", "no memory for a page table");
    const asid = this.nextAsid++;
    this.domains.set(asid, { asid, table });
    return ok(asid);
  }

  private domain(id: GuestDomainId): Result<Domain> {
    const d = this.domains.get(id);
    return d === undefined ? err("ENOENT", `no domain ${id}`) : ok(d);
  }

  private writeDeviceEntry(rid: number, raw: RawBits): Result<void> {
    if (rid >= 2 ** DEVTAB_LOG2) return err("EINVAL", `requester id 0x${rid.toString(16)} beyond the device table`);
    const at = this.devtab + rid * MOCK_DTE_BYTES;
    // A valid entry may be cached: changing it needs INV_DEVICE, the invalidation skipInvalidation "context" leaves
    // out. Validating an entry is announced as well (caching mode), so a VMM builds the host side.
    const wasValid = (this.context.memory.read32(at) & 1) !== 0;
    this.context.memory.writeWords(at, raw);
    if (this.skip === "context" && wasValid) return ok();
    return this.submit([{ OP: MockOpcode.INV_DEVICE, RID: rid }]);
  }

  attach(rid: number, domainId: GuestDomainId): Result<void> {
    const d = this.domain(domainId);
    if (!d.ok) return fail(d);
    return this.writeDeviceEntry(rid, encodeMockDeviceEntry({ V: 1, TR: 1, S1ROOT: d.value.table.root, ASID: d.value.asid }));
  }

  detach(rid: number): Result<void> {
    return this.writeDeviceEntry(rid, encodeMockDeviceEntry({ V: 0 }));
  }

  map(domainId: GuestDomainId, iova: number, gpa: number, length: number, perms: PermBits): Result<void> {
    const d = this.domain(domainId);
    if (!d.ok) return fail(d);
    const r = d.value.table.map(iova, gpa, length, perms);
    if (!r.ok) return r;
    // Caching mode: a not-present → present change is announced too, so a shadowing VMM sees it.
    return this.flush(domainId, iova, length);
  }

  unmap(domainId: GuestDomainId, iova: number, length: number): Result<void> {
    const d = this.domain(domainId);
    if (!d.ok) return fail(d);
    d.value.table.unmap(iova, length);
    if (this.skip === "iotlb") return ok();
    return this.flush(domainId, iova, length);
  }

  flush(domainId: GuestDomainId, iova?: number, length?: number): Result<void> {
    const d = this.domain(domainId);
    if (!d.ok) return fail(d);
    if (iova === undefined || length === undefined) return this.submit([{ OP: MockOpcode.INV_ASID, ASID: d.value.asid }]);
    const commands: Partial<MockCommand>[] = [];
    for (let at = iova; at < iova + length; at += 65536 * 4096) {
      const pages = Math.min(65536, Math.ceil((iova + length - at) / 4096));
      commands.push({ OP: MockOpcode.INV_RANGE, ASID: d.value.asid, ADDR: at, NPAGES: pages - 1 });
    }
    return this.submit(commands);
  }

  // ---- interrupts ----

  mapInterrupt(rid: number, vector: number, destination: number): Result<MsiMessage> {
    let index = this.irqSlots.findIndex((s) => s === undefined);
    if (index < 0) index = this.irqSlots.length;
    if (index >= 2 ** IRT_LOG2) return err("ENOSPC", "interrupt table full");
    this.irqSlots[index] = rid;
    this.context.memory.writeWords(this.irt + index * MOCK_IRTE_BYTES, encodeMockIrte({ P: 1, SVT: 1, SID: rid, VECTOR: vector, DEST: destination }));
    const r = this.skip === "interrupt" ? ok() : this.submit([{ OP: MockOpcode.INV_IRTE, RID: index }]);
    return r.ok ? ok({ address: mockMsiAddress(index), data: 0 }) : fail(r);
  }

  unmapInterrupt(_rid: number, msi: MsiMessage): Result<void> {
    const index = (msi.address >>> 4) & 0xffff;
    this.context.memory.writeWords(this.irt + index * MOCK_IRTE_BYTES, encodeMockIrte({ P: 0 }));
    this.irqSlots[index] = undefined;
    if (this.skip === "interrupt") return ok();
    return this.submit([{ OP: MockOpcode.INV_IRTE, RID: index }]);
  }

  // ---- events ----

  readEvents(): GuestEvent[] {
    const tail = Number(this.read(MockReg.EVTQ_TAIL));
    const entries = 2 ** this.evtLog2;
    const out: GuestEvent[] = [];
    const words = new Uint32Array(4);
    for (let budget = entries; this.evtHead !== tail && budget > 0; budget--) {
      this.context.memory.readWords(this.evtq + this.evtHead * MOCK_EVENT_BYTES, words);
      const e = decodeMockEvent(words);
      const raw = toHex64(words);
      const name = mockEventNames[e.TYPE] ?? "UNKNOWN";
      if (e.TYPE === MockEventType.DMA_FAULT) out.push({ kind: "dma-fault", code: e.REASON, name, rid: e.RID, address: Number(e.ADDR), write: e.WRITE === 1, raw });
      else if (e.TYPE === MockEventType.CMD_ERROR) out.push({ kind: "command-error", code: e.REASON, name, address: e.INDEX, raw });
      else if (e.TYPE === MockEventType.IR_FAULT) out.push({ kind: "interrupt-fault", code: e.REASON, name, rid: e.RID, raw });
      else if (e.TYPE === MockEventType.GLOBAL_ERROR) out.push({ kind: "global-error", code: e.REASON, name, raw });
      else out.push({ kind: "other", code: e.TYPE, name, raw });
      this.evtHead = (this.evtHead + 1) % entries;
    }
    this.write(MockReg.EVTQ_HEAD, this.evtHead);
    return out;
  }

  takeOverflow(): boolean {
    const overflow = (this.read(MockReg.STATUS) & BigInt(MockStatus.EVT_OVERFLOW)) !== 0n;
    if (overflow) this.write(MockReg.STATUS_ACK, MockStatus.EVT_OVERFLOW);
    return overflow;
  }

  resetEventLog(entries: number, reenable = true): Result<void> {
    const log2 = Math.ceil(Math.log2(Math.max(2, entries)));
    const pages = Math.max(1, ((2 ** log2) * MOCK_EVENT_BYTES) / 4096);
    const ring = this.alloc(pages);
    if (!ring.ok) return fail(ring);
    if (reenable) this.write(MockReg.CONTROL, this.control & ~MockControl.EVTQ_EN);
    this.evtq = ring.value;
    this.evtLog2 = log2;
    this.evtHead = 0;
    this.write(MockReg.EVTQ_BASE, encodeBase(this.evtq, log2));
    if (reenable) this.write(MockReg.CONTROL, this.control);
    return ok();
  }

  submitIllegalCommand(): Result<void> {
    // submit acknowledges the error: the device skips the bad command and runs the SYNC behind it.
    const r = this.submit([{ OP: 0xff }]);
    return r.ok ? err("EIO", "the illegal command was accepted") : ok();
  }
}
