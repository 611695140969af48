import { err, ok, PageTableBuilder, Perm, x86PagingFormat, x86PagingGeometry, type GuestProcess, type PermBits, type Result, type TableStore } from "@viommu/core";

/**
 * The CPU page table of a user process as an x86-64 guest kernel keeps it: 4-level long-mode paging (the
 * format the AMD IOMMU's guest (v2) tables share, so the IOMMU walks it as it is when the table's root sits in
 * a GCR3 entry). User pages: P | U/S | A, R/W | D when writable, XD unless executable; tables P | R/W | U/S | A
 * so the leaf decides. User addresses are the canonical lower half, below 2^47.
 */
const cpuFormat = x86PagingFormat({ name: "x86-64-cpu", leafUserExec: "from-perms" });
const USER_LIMIT = 2 ** 47;

export class CpuProcess implements GuestProcess {
  private constructor(
    private readonly table: PageTableBuilder,
    readonly asid: number,
  ) {}

  static create(store: TableStore, asid: number): CpuProcess | undefined {
    const table = PageTableBuilder.create(cpuFormat, x86PagingGeometry(4), store);
    return table === undefined ? undefined : new CpuProcess(table, asid);
  }

  get root(): number {
    return this.table.root;
  }

  map(va: number, gpa: number, length: number, perms: PermBits): Result<void> {
    if (!Number.isSafeInteger(va) || !Number.isSafeInteger(length) || length <= 0 || va < 0 || va + length > USER_LIMIT) return err("EINVAL", "not a user address range");
    return this.table.map(va, gpa, length, perms | Perm.User);
  }

  unmap(va: number, length: number): Result<void> {
    if (!Number.isSafeInteger(va) || !Number.isSafeInteger(length) || length <= 0 || va < 0 || va + length > USER_LIMIT) return err("EINVAL", "not a user address range");
    this.table.unmap(va, length);
    return ok();
  }
}
