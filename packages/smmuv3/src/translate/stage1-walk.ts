import { resetWalkResult, WalkFault, type EntryReader, type PageWalker, type PermBits, type WalkResult } from "@viommu/core";
import type { CdSettings } from "./cd-config.js";

/**
 * A stage-1 walk through a CD's TTB0 (ARM DDI0487 D8.2; spec §2.2): an input address beyond TTB0's range
 * (64 − T0SZ bits), or any address while EPD0 is set, is a translation fault before any table is read. IOVAs
 * are numbers below 2^53, so the upper (TTB1) half of the 64-bit space is never selected: those addresses, and
 * anything that is not an integer, are out of TTB0's range. `reader` reads table entries by the address kind the CD holds.
 */
export function walkStage1(cd: CdSettings, iova: number, access: PermBits, walker: PageWalker, reader: EntryReader, out: WalkResult): void {
  if (cd.epd0 || !Number.isSafeInteger(iova) || iova < 0 || iova >= 2 ** cd.geometry.inputBits) {
    resetWalkResult(out);
    out.fault = WalkFault.Translation;
    out.faultInput = iova;
    out.level = cd.geometry.startLevel;
    return;
  }
  walker.walk(cd.format, cd.geometry, cd.ttb0, iova, access, reader, out);
}
