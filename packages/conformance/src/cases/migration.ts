import { DIRTY_TRACKING_ENABLE, DIRTY_BITMAP_NO_CLEAR, HwCapability, type TestVm } from "@viommu/core";
import { check, must, type ConformanceCase } from "../case.js";
import { DATA_GPA, IOVA, mapOne, oneDevice, pattern, sameBytes } from "./support.js";

const PAGE = 4096;

/**
 * The VM's stage-2 parent's dirty bitmap over [gpa, gpa + length) at `pageSize` granularity (IOVA = GPA in the
 * parent's IOAS), as the guest-physical addresses of the set bits.
 */
function dirtyPages(v: TestVm, gpa: number, length: number, flags = 0, pageSize = PAGE): number[] {
  let bitmap = new Uint8Array(0);
  must(
    v.iommufd.hwptGetDirtyBitmap({
      hwptId: v.parentHwptId,
      flags,
      iova: gpa,
      length,
      pageSize,
      bitmap: (bytes) => (bitmap = new Uint8Array(bytes)),
    }),
    "IOMMU_HWPT_GET_DIRTY_BITMAP",
  );
  const out: number[] = [];
  for (let i = 0; i < bitmap.length; i++) {
    for (let b = 0; b < 8; b++) if (bitmap[i]! & (1 << b)) out.push(gpa + (i * 8 + b) * pageSize);
  }
  return out;
}

const hex = (pages: readonly number[]): string => `[${pages.map((p) => `0x${p.toString(16)}`).join(", ")}]`;

/** A seeded xorshift for the pages a round writes. */
function rng(seed: number): () => number {
  let x = seed >>> 0 || 1;
  return () => {
    x ^= x << 13;
    x ^= x >>> 17;
    x ^= x << 5;
    return (x >>> 0) / 2 ** 32;
  };
}

export const migrationCases: ConformanceCase[] = [
  {
    id: "dirty-tracking",
    rule: "A stage-2 parent allocated for dirty tracking reports exactly the pages DMA wrote (not those it read) in IOMMU_HWPT_GET_DIRTY_BITMAP, a large leaf as a whole, keeps them with NO_CLEAR, forgets them after a clearing read, and catches a write through a translation cached before the clear; GET_HW_INFO advertises the capability and a misaligned range is EINVAL.",
    requires: ["dirtyTracking"],
    run(c) {
      // Guest RAM backed by scattered 4 KiB host pages: the stage-2 leaves are 4 KiB and the bitmap is exact.
      const bed = c.bed({ vms: [{ ...oneDevice(), backingPageShift: 12 }], dirtyTracking: true });
      const v = bed.vms[0]!;
      const dev = v.devices[0]!.device;
      const info = must(v.iommufd.getHwInfo({ flags: 0, devId: v.devices[0]!.devId, dataLen: 0 }), "IOMMU_GET_HW_INFO");
      check((info.capabilities & HwCapability.DIRTY_TRACKING) !== 0, `GET_HW_INFO capabilities 0x${info.capabilities.toString(16)} lack IOMMU_HW_CAP_DIRTY_TRACKING`);
      mapOne(v, 0x10, IOVA, DATA_GPA, 16 * PAGE);
      must(v.iommufd.hwptSetDirtyTracking(v.parentHwptId, DIRTY_TRACKING_ENABLE), "IOMMU_HWPT_SET_DIRTY_TRACKING");
      const window = { gpa: DATA_GPA, length: 16 * PAGE };
      // Enabling clears what was dirty before (iopt_set_dirty_tracking clears on enable).
      check(dirtyPages(v, window.gpa, window.length).length === 0, "pages dirty right after enabling");
      check(dev.write(IOVA + PAGE + 8, pattern(16, 1)).ok, "DMA write failed");
      check(dev.write(IOVA + 6 * PAGE - 8, pattern(16, 2)).ok, "DMA write across a page boundary failed");
      check(dev.read(IOVA + 9 * PAGE, 64).ok, "DMA read failed");
      const expected = [DATA_GPA + PAGE, DATA_GPA + 5 * PAGE, DATA_GPA + 6 * PAGE];
      const kept = dirtyPages(v, window.gpa, window.length, DIRTY_BITMAP_NO_CLEAR);
      check(hex(kept) === hex(expected), `NO_CLEAR read ${hex(kept)}, expected ${hex(expected)}`);
      const read = dirtyPages(v, window.gpa, window.length);
      check(hex(read) === hex(expected), `NO_CLEAR cleared something: the next read is ${hex(read)}`);
      const after = dirtyPages(v, window.gpa, window.length);
      check(after.length === 0, `a clearing read left ${hex(after)} dirty`);
      // The translation of page 1 is cached from before the clear; the write must still reach the table.
      check(dev.write(IOVA + PAGE, pattern(8, 3)).ok, "DMA write after the clear failed");
      const again = dirtyPages(v, window.gpa, window.length);
      check(hex(again) === hex([DATA_GPA + PAGE]), `a write after the clear was not caught: ${hex(again)}`);
      // A coarser bitmap: one bit per 2 MiB.
      check(dev.write(IOVA + 3 * PAGE, pattern(8, 4)).ok, "DMA write failed");
      const huge = dirtyPages(v, DATA_GPA, 2 ** 21, 0, 2 ** 21);
      check(hex(huge) === hex([DATA_GPA]), `the 2 MiB-granule bitmap read ${hex(huge)}`);
      const bad = v.iommufd.hwptGetDirtyBitmap({ hwptId: v.parentHwptId, flags: 0, iova: DATA_GPA + 512, length: PAGE, pageSize: PAGE, bitmap: (n) => new Uint8Array(n) });
      check(!bad.ok && bad.error.errno === "EINVAL", `a misaligned range answered ${bad.ok ? "success" : bad.error.errno}, not EINVAL`);

      // Guest RAM backed by 2 MiB host pages: stage 2 maps it with 2 MiB leaves where the format has them, and a
      // write dirties the leaf, so all 512 pages of it read dirty (iommu_dirty_bitmap_record takes the leaf's size).
      if (!c.plugin.capabilities.pageShifts.includes(21)) return;
      const large = c.bed({ vms: [oneDevice()], dirtyTracking: true });
      const l = large.vms[0]!;
      mapOne(l, 0x10, IOVA, DATA_GPA, 16 * PAGE);
      must(l.iommufd.hwptSetDirtyTracking(l.parentHwptId, DIRTY_TRACKING_ENABLE), "IOMMU_HWPT_SET_DIRTY_TRACKING");
      check(l.devices[0]!.device.write(IOVA + 2 * PAGE, pattern(8, 5)).ok, "DMA write failed");
      const leaf = dirtyPages(l, DATA_GPA - 2 ** 21, 3 * 2 ** 21);
      const whole = Array.from({ length: 512 }, (_, i) => DATA_GPA + i * PAGE);
      check(hex(leaf) === hex(whole), `a write through a 2 MiB leaf read ${leaf.length} dirty pages (${hex(leaf.slice(0, 4))}…), not the leaf's 512`);
    },
  },
  {
    id: "live-migration-precopy",
    rule: "A VM whose passed-through device keeps DMA-writing migrates by pre-copy: each round copies the pages the IOMMU's dirty bitmap and the CPU dirty log name, until few are left; then the VM stops, the vIOMMU state is saved and restored on a second host, and every page the device wrote arrives with its last contents.",
    requires: ["dirtyTracking", "migration"],
    run(c) {
      // 4 KiB host pages behind guest RAM, so stage 2 maps 4 KiB leaves and the rounds shrink with the writes
      // (with 2 MiB leaves every round copies whole 2 MiB pages: the dirty-tracking case checks that).
      const topology = { devices: [{ rid: 0x100, guestRid: 0x10 }], memoryBytes: 2 ** 30, backingPageShift: 12 };
      const source = c.bed({ vms: [topology], dirtyTracking: true });
      const s = source.vms[0]!;
      const windowPages = 64;
      mapOne(s, 0x10, IOVA, DATA_GPA, windowPages * PAGE);
      const dev = s.devices[0]!.device;
      const random = rng(c.seed);
      const lastWrite = new Map<number, number>();
      let roundWrites = new Set<number>();
      const dmaRound = (writes: number, round: number): void => {
        roundWrites = new Set();
        for (let i = 0; i < writes; i++) {
          const page = Math.floor(random() * windowPages);
          const stamp = round * 1000 + i;
          check(dev.write(IOVA + page * PAGE, pattern(PAGE, stamp)).ok, `round ${round}: DMA write to page ${page} failed`);
          lastWrite.set(DATA_GPA + page * PAGE, stamp);
          roundWrites.add(DATA_GPA + page * PAGE);
        }
      };

      const dest = c.bed({ vms: [topology], noInit: true });
      const d = dest.vms[0]!;
      const copy = (pages: Iterable<number>): number => {
        let n = 0;
        for (const page of pages) {
          d.vm.memory.writeBytes(page, s.vm.memory.readBytes(page, PAGE));
          n++;
        }
        return n;
      };
      const mem = s.vm.memory;
      // The IOMMU's bitmap must name every page the device wrote this round and nothing outside the large pages
      // those writes touched (a 2 MiB leaf is dirty as a whole); the CPU log adds what the VMM and guest wrote.
      const dirtyNow = (round: number): Set<number> => {
        const dma = dirtyPages(s, mem.base, mem.sizeBytes);
        const named = new Set(dma);
        const missing = [...roundWrites].filter((p) => !named.has(p));
        check(missing.length === 0, `round ${round}: the dirty bitmap misses DMA-written pages ${hex(missing)}`);
        const granules = new Set([...roundWrites].map((p) => p - (p % 2 ** 21)));
        const stray = dma.filter((p) => !granules.has(p - (p % 2 ** 21)));
        check(stray.length === 0, `round ${round}: the dirty bitmap names pages no DMA wrote ${hex(stray.slice(0, 8))}`);
        return new Set([...dma, ...mem.takeDirtyLog()]);
      };

      // Round 0: logging on, then everything the guest has.
      mem.startDirtyLog();
      must(s.iommufd.hwptSetDirtyTracking(s.parentHwptId, DIRTY_TRACKING_ENABLE), "IOMMU_HWPT_SET_DIRTY_TRACKING");
      c.metric("pages-copied-round-0", copy(mem.writtenPages()));
      let writes = 48;
      let round = 1;
      for (; round < 8; round++) {
        dmaRound(writes, round);
        const pages = copy(dirtyNow(round));
        c.metric(`pages-copied-round-${round}`, pages);
        if (pages <= 4) break;
        writes = Math.max(1, writes >> 1);
      }
      // Stop-and-copy: the device's last burst, then the final bitmap, the VMM's event loop and the state.
      dmaRound(3, round + 1);
      source.poll();
      const blob = s.iommus[0]!.save!();
      const final = copy(dirtyNow(round + 1));
      c.metric("pages-copied-stop", final);
      c.metric("rounds", round);
      must(d.iommus[0]!.restore!(blob), "restore on the second host");

      for (const [page, stamp] of lastWrite) {
        check(sameBytes(d.vm.memory.readBytes(page, PAGE), pattern(PAGE, stamp)), `GPA 0x${page.toString(16)} lost the DMA write ${stamp}`);
      }
      for (const page of mem.writtenPages()) {
        check(sameBytes(d.vm.memory.readBytes(page, PAGE), mem.readBytes(page, PAGE)), `GPA 0x${page.toString(16)} differs on the destination`);
      }
      const [page, stamp] = [...lastWrite][0]!;
      const r = d.devices[0]!.device.read(IOVA + (page - DATA_GPA), PAGE);
      check(r.ok && sameBytes(r.data, pattern(PAGE, stamp)), "the destination's device does not read the migrated data through the restored vIOMMU");
      const left = source.dispose();
      check(left.length === 0, `the source left objects behind: ${JSON.stringify(left)}`);
    },
  },
];
