import { fail, ok, Perm, TablePagingDomain, type HostServices, type PageTableEncoder, type PagingDomain, type PhysicalIommu, type RawBits, type Result, type TableGeometry, type WritableFormat } from "@viommu/core";
import { encodeCd, Tg0 } from "../format/context-descriptor.js";
import { Shareability } from "../format/control-registers.js";
import { stage1Geometry } from "../format/vmsa-geometry.js";
import { stage1DirtyBits, vmsaStage1Encoder, vmsaStage1Format } from "../format/vmsa-stage1.js";

/**
 * The host's stage-1 domains, as Linux's arm-smmu-v3 builds an ARM_SMMU_DOMAIN_S1 with io-pgtable-arm
 * (ARM_64_LPAE_S1): 4 KiB granule, 48-bit input (T0SZ 16) walked from ARM level 0, 48-bit output, leaves mapped
 * unprivileged (AP[1], as io-pgtable writes without IOMMU_PRIV). Linux gives paging domains allocated with
 * IOMMU_HWPT_ALLOC_PASID or IOMMU_HWPT_ALLOC_DIRTY_TRACKING (without NEST_PARENT) stage 1 (arm_smmu_domain_alloc_paging_flags),
 * and only a stage-1 domain can be attached at a PASID: its CD goes into the master's CD table at that SubstreamID.
 */
export const S1_T0SZ = 16;
export const S1_IPS_CODE = 5;
const S1_OUTPUT_BITS = 48;

const geometryResult = stage1Geometry(12, S1_T0SZ, { outputBits: S1_OUTPUT_BITS });
if (!geometryResult.ok) throw new Error(`host stage-1 geometry: ${geometryResult.reason}`);

export const smmuStage1Geometry: TableGeometry = geometryResult.geometry;

/** io-pgtable maps every DMA page unprivileged (ARM_LPAE_PTE_AP_UNPRIV unless IOMMU_PRIV). */
function unprivileged(encoder: PageTableEncoder): PageTableEncoder {
  return {
    ...encoder,
    encodeLeaf: (address, pageShift, perms, level, out) => encoder.encodeLeaf(address, pageShift, perms | Perm.User, level, out),
  };
}

function stage1Format(dirty: boolean): WritableFormat {
  return {
    ...vmsaStage1Format({ granuleShift: 12, outputBits: S1_OUTPUT_BITS, accessFlagFaultDisabled: dirty, hardwareDirty: dirty }),
    ...unprivileged(vmsaStage1Encoder({ granuleShift: 12, geometry: smmuStage1Geometry, dirtyBitModifier: dirty })),
  };
}

const smmuStage1Format = stage1Format(false);
/** The table of a dirty-tracking stage-1 domain (its CDs set HA and HD): writable leaves carry DBM. */
const smmuStage1DirtyFormat = stage1Format(true);

/** What a host stage-1 domain adds to its table: the ASID its CDs carry (the IOTLB tag, with VMID 0). */
interface Stage1Info {
  readonly asid: number;
}

const stage1Domains = new WeakMap<PagingDomain, Stage1Info>();

export function isSmmuStage1Domain(domain: unknown): domain is TablePagingDomain {
  return domain instanceof TablePagingDomain && stage1Domains.has(domain);
}

/** The ASID of a host stage-1 domain (undefined for any other domain). */
export function stage1Asid(domain: PagingDomain): number | undefined {
  return stage1Domains.get(domain)?.asid;
}

/** Allocates a stage-1 domain with `asid`; with `dirty`, its leaves track DMA writes (DBM and AP[2], `stage1DirtyBits`). */
export function createStage1Domain(unit: PhysicalIommu, host: HostServices, asid: number, dirty: boolean): Result<TablePagingDomain> {
  const r = TablePagingDomain.create(unit, host, dirty ? smmuStage1DirtyFormat : smmuStage1Format, smmuStage1Geometry, { nestParent: false, dirty: dirty ? stage1DirtyBits : undefined });
  if (!r.ok) return fail(r);
  stage1Domains.set(r.value, { asid });
  return ok(r.value);
}

/** io-pgtable-arm's MAIR for stage 1: attr0 0x44 NC, attr1 0xFF WB RWA, attr2 0x04 Device-nGnRE, attr3 0xF4 (ARM_LPAE_MAIR_ATTR_*). */
const IO_PGTABLE_MAIR0 = 0xf404ff44;
/** TCR cache encoding 1: write-back read/write-allocate. */
const TCR_WBWA = 1;

/**
 * The CD Linux writes for a stage-1 domain (arm_smmu_make_s1_cd): the io-pgtable TCR (T0SZ, TG0 4K, IRGN0/ORGN0
 * WBWA, SH0 ISH, IPS), EPD1, V, AA64, R, A, ASET, the ASID, TTB0 and MAIR; HA and HD when the domain tracks dirty
 * pages ("to enable dirty flag update, set both Access flag and dirty state update").
 */
export function stage1Cd(domain: TablePagingDomain, asid: number): RawBits {
  const dirty = domain.dirtyOps !== undefined ? 1 : 0;
  return encodeCd({
    T0SZ: S1_T0SZ,
    TG0: Tg0.Granule4K,
    IR0: TCR_WBWA,
    OR0: TCR_WBWA,
    SH0: Shareability.ISH,
    EPD1: 1,
    V: 1,
    IPS: S1_IPS_CODE,
    AA64: 1,
    HD: dirty,
    HA: dirty,
    R: 1,
    A: 1,
    ASET: 1,
    ASID: asid,
    TTB0: domain.table.root,
    MAIR0: IO_PGTABLE_MAIR0,
  });
}
