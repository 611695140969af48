import { err, ok, PageTableBuilder, Perm, radixGeometry, x86PagingFormat, type GuestProcess, type PermBits, type Result, type TableStore } from "@viommu/core";

/**
 * The CPU's page-table format for a process: x86-64 4-level paging (Intel SDM vol. 3 §4.5), user pages as Linux
 * maps them (P, R/W for writable ones, U/S, XD unless executable), tables P | R/W | U/S | A. 1 GiB pages: the
 * CPU has them (X86_FEATURE_GBPAGES), and Linux's intel_svm_check refuses SVA on a unit without CAP.FL1GP.
 */
const cpuFormat = x86PagingFormat({ name: "x86-64 4-level (CPU)", outputBits: 52, gigaPages: true, leafUserExec: "from-perms" });

/** The user half of a 4-level address space: canonical addresses below 2^47. */
const userGeometry = radixGeometry(4, 12, 9, 47);

/** PCIDs are 12 bits; 0 is the kernel's. */
const PCID_LIMIT = 4096;

/**
 * A guest process's address space as the guest kernel keeps it: its own x86-64 page table in guest memory (the
 * root is what CR3 holds), with a PCID. The IOMMU walks this same table when the process is bound to a PASID
 * (first-level translation is the CPU's format), so a device and the process see the same addresses.
 */
export class CpuProcess implements GuestProcess {
  private constructor(
    private readonly table: PageTableBuilder,
    readonly asid: number,
  ) {}

  static create(store: TableStore, asid: number): Result<CpuProcess> {
    if (!Number.isInteger(asid) || asid <= 0 || asid >= PCID_LIMIT) return err("ENOSPC", "PCIDs exhausted");
    const table = PageTableBuilder.create(cpuFormat, userGeometry, store);
    return table === undefined ? err("ENOMEM", "no memory for a process page table") : ok(new CpuProcess(table, asid));
  }

  get root(): number {
    return this.table.root;
  }

  /** User pages: U/S is set whatever `perms` says (a process maps nothing the kernel alone may reach here). */
  map(va: number, gpa: number, length: number, perms: PermBits): Result<void> {
    return this.table.map(va, gpa, length, perms | Perm.User);
  }

  unmap(va: number, length: number): Result<void> {
    this.table.unmap(va, length);
    return ok();
  }
}
