import { err, GuestTableStore, ok, PageTableBuilder, type GuestMemory, type GuestProcess, type PageSource, type PermBits, type Result, type WritableFormat } from "@viommu/core";
import { linuxUserPteEncoder } from "../format/aarch64-user-pte.js";
import { stage1Geometry } from "../format/vmsa-geometry.js";
import { vmsaStage1Format } from "../format/vmsa-stage1.js";

/** A 48-bit user address space (vabits_actual 48, 4 KiB pages): T0SZ 16, walked from ARM level 0. */
export const PROCESS_T0SZ = 16;
/** User addresses end where TTBR0's 48-bit range does. */
const USER_LIMIT = 2 ** 48;

/**
 * A guest process's address space as the arm64 Linux kernel keeps it: a 4-level TTBR0 page table in guest memory
 * with Linux's user entries (`linuxUserPteEncoder`), 4 KiB pages, and the ASID the kernel's allocator gave the mm.
 * `map` populates pages as a fault on them would (writable ones already dirty); `unmap` clears them (the caller
 * then invalidates, as the kernel's MMU notifier does for bound devices).
 */
export class GuestCpuProcess implements GuestProcess {
  private constructor(
    private readonly builder: PageTableBuilder,
    readonly asid: number,
  ) {}

  static create(memory: GuestMemory, pages: PageSource, asid: number): Result<GuestCpuProcess> {
    const g = stage1Geometry(12, PROCESS_T0SZ, { outputBits: 48 });
    if (!g.ok) return err("EINVAL", g.reason);
    const format: WritableFormat = { ...vmsaStage1Format({ granuleShift: 12, outputBits: 48 }), ...linuxUserPteEncoder(g.geometry) };
    const builder = PageTableBuilder.create(format, g.geometry, new GuestTableStore(memory, pages), { largePages: false });
    if (builder === undefined) return err("ENOMEM", "no guest memory for the process's page table");
    return ok(new GuestCpuProcess(builder, asid));
  }

  /** TTBR0's table address: the pgd. */
  get root(): number {
    return this.builder.root;
  }

  map(va: number, gpa: number, length: number, perms: PermBits): Result<void> {
    if (!Number.isSafeInteger(va) || va < 0 || va + length > USER_LIMIT || length <= 0) return err("EINVAL", `0x${va.toString(16)}+0x${length.toString(16)} is not a user range`);
    return this.builder.map(va, gpa, length, perms);
  }

  unmap(va: number, length: number): Result<void> {
    if (!Number.isSafeInteger(va) || va < 0 || va + length > USER_LIMIT || length <= 0) return err("EINVAL", `0x${va.toString(16)}+0x${length.toString(16)} is not a user range`);
    this.builder.unmap(va, length);
    return ok();
  }

  /** The leaf mapping `va` (for tests). */
  lookup(va: number): { level: number; pageShift: number; output: number } | undefined {
    return this.builder.lookupLeaf(va);
  }
}
