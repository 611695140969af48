import type { NestedDomain, PhysicalIommu, RawBits, TablePagingDomain } from "@viommu/core";
import { encodeSte, SteConfig } from "../format/stream-table-entry.js";
import { abortSte, stage2Ste, stage2SteFields } from "./stage2-domain.js";
import type { ArmVsmmu } from "./smmuv3-viommu.js";

/** STE dw1.MEV: Linux sets it on nested STEs to merge similar events (a guest cannot flood the host's queue). */
const DW1_MEV = 1 << (83 - 64);

/**
 * A nested domain on a vSMMU (Linux `struct arm_smmu_nested_domain`): the guest's validated vSTE (dw0, dw1,
 * EATS removed) over the vSMMU's stage-2 parent. Its S1ContextPtr is a guest IPA: the CD table and every
 * stage-1 table are fetched through stage 2.
 */
export class Smmuv3NestedDomain implements NestedDomain {
  readonly kind = "nested" as const;
  readonly unit: PhysicalIommu;

  constructor(
    readonly vsmmu: ArmVsmmu,
    /** dw0, dw1 of the vSTE as 4 halves; all zero for a guest STE with V = 0. */
    readonly vste: RawBits,
    readonly enableAts: boolean,
  ) {
    this.unit = vsmmu.unit;
  }

  get parent(): TablePagingDomain {
    return this.vsmmu.parent;
  }

  /** The Config the vSTE asks for; a vSTE with V = 0 behaves as abort. */
  get config(): number {
    if ((this.vste[0]! & 1) === 0) return SteConfig.Abort;
    return (this.vste[0]! >>> 1) & 0b111;
  }

  /**
   * The physical STE this domain installs (Linux `arm_smmu_make_nested_domain_ste`): S1 translate → the
   * stage-2 STE turned into Config nested with the vSTE's dw0 (but Config) and dw1 ORed in, plus MEV;
   * bypass → the plain stage-2 STE; abort or invalid → an abort STE.
   */
  physicalSte(forcedWriteBack: boolean): RawBits {
    switch (this.config) {
      case SteConfig.S1Translate: {
        const ste = encodeSte({ V: 1, Config: SteConfig.Nested, ...stage2SteFields(this.parent, forcedWriteBack) });
        ste[0] = (ste[0]! | (this.vste[0]! & ~0b1110)) >>> 0;
        ste[1] = (ste[1]! | this.vste[1]!) >>> 0;
        ste[2] = (ste[2]! | this.vste[2]! | DW1_MEV) >>> 0;
        ste[3] = (ste[3]! | this.vste[3]!) >>> 0;
        return ste;
      }
      case SteConfig.Bypass:
        return stage2Ste(this.parent, forcedWriteBack);
      default:
        return abortSte();
    }
  }

  destroy(): void {
    // Nothing cached belongs to the domain itself: the STE it installed is replaced on detach.
  }
}
