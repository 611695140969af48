import { err, fail, ok, type Result } from "../errors/errno.js";
import type { IommufdContext } from "../iommufd/context.js";
import { IoasMapFlag } from "../iommufd/uapi.js";
import type { GuestMemory } from "../memory/guest-memory.js";
import { Perm, type PermBits } from "../translate/access.js";

/**
 * Where a shadowing VMM installs the translations it computed from the guest's tables: IOVA → guest
 * memory. Each map is one entry; unmap removes exactly what was mapped.
 */
export interface ShadowBackend {
  readonly kind: "type1" | "iommufd";
  /** The IOAS the shadowed devices are attached to. */
  readonly ioasId: number;
  map(iova: number, gpa: number, length: number, perms: PermBits): Result<void>;
  unmap(iova: number, length: number): Result<number>;
  /** Mappings currently installed. */
  readonly entries: number;
}

/**
 * The iommufd-like back end: an IOAS of its own, one FIXED_IOVA map per shadow mapping, no entry limit.
 */
export class IommufdShadowBackend implements ShadowBackend {
  readonly kind: "type1" | "iommufd" = "iommufd";
  readonly ioasId: number;
  protected count = 0;

  protected constructor(
    protected readonly ctx: IommufdContext,
    protected readonly memory: GuestMemory,
    ioasId: number,
  ) {
    this.ioasId = ioasId;
  }

  static create(ctx: IommufdContext, memory: GuestMemory): Result<IommufdShadowBackend> {
    const ioas = ctx.ioasAlloc();
    return ioas.ok ? ok(new IommufdShadowBackend(ctx, memory, ioas.value)) : fail(ioas);
  }

  get entries(): number {
    return this.count;
  }

  map(iova: number, gpa: number, length: number, perms: PermBits): Result<void> {
    const flags = IoasMapFlag.FIXED_IOVA | (perms & Perm.Read ? IoasMapFlag.READABLE : 0) | (perms & Perm.Write ? IoasMapFlag.WRITEABLE : 0);
    const r = this.ctx.ioasMap({ ioasId: this.ioasId, flags, memory: this.memory, gpa, length, iova });
    if (!r.ok) return fail(r);
    this.count++;
    return ok();
  }

  unmap(iova: number, length: number): Result<number> {
    const before = this.mappingsIn(iova, length);
    const r = this.ctx.ioasUnmap({ ioasId: this.ioasId, iova, length });
    if (r.ok) this.count -= before;
    return r;
  }

  private mappingsIn(iova: number, length: number): number {
    const ioas = this.ctx.objects.get(this.ioasId);
    if (!ioas.ok || !("areas" in ioas.value)) return 0;
    const areas = (ioas.value as { areas: { iova: number; length: number }[] }).areas;
    return areas.filter((a) => a.iova >= iova && a.iova + a.length <= iova + length).length;
  }
}

/**
 * The vfio type1-like back end: the same mappings, but counted against `dmaEntryLimit` (vfio's
 * dma_entry_limit, default 65535). A map beyond it fails with ENOSPC, as vfio type1 does, so a guest that maps
 * and unmaps often enough exhausts it.
 */
export class Type1ShadowBackend extends IommufdShadowBackend {
  override readonly kind: "type1" | "iommufd" = "type1";

  private constructor(
    ctx: IommufdContext,
    memory: GuestMemory,
    ioasId: number,
    readonly dmaEntryLimit: number,
  ) {
    super(ctx, memory, ioasId);
  }

  static createType1(ctx: IommufdContext, memory: GuestMemory, dmaEntryLimit = 65535): Result<Type1ShadowBackend> {
    const ioas = ctx.ioasAlloc();
    return ioas.ok ? ok(new Type1ShadowBackend(ctx, memory, ioas.value, dmaEntryLimit)) : fail(ioas);
  }

  override map(iova: number, gpa: number, length: number, perms: PermBits): Result<void> {
    if (this.count >= this.dmaEntryLimit) return err("ENOSPC", `type1 DMA entry limit ${this.dmaEntryLimit} reached`);
    return super.map(iova, gpa, length, perms);
  }
}

/** Creates the back end a VMM was configured with. */
export function createShadowBackend(kind: "type1" | "iommufd", ctx: IommufdContext, memory: GuestMemory, dmaEntryLimit?: number): Result<ShadowBackend> {
  return kind === "type1" ? Type1ShadowBackend.createType1(ctx, memory, dmaEntryLimit) : IommufdShadowBackend.create(ctx, memory);
}
