import { describe, expect, it } from "vitest";
import { fromWords64 } from "@viommu/core";
import { SNP_EFR_BIT, decodeEfr, snpGuestStructures, snpHostRules, snpSharedStructures, stripCBit } from "../../src/format/index.js";

describe("SEV-SNP notes (spec x86.md B10)", () => {
  it("lists the structures an SNP guest shares with the VMM (B10.1 table)", () => {
    expect(snpSharedStructures()).toEqual(["device-table", "command-buffer", "completion-wait-semaphore", "event-log", "interrupt-remapping-table"]);
    expect(snpGuestStructures.find((s) => s.structure === "ppr-log")).toMatchObject({ shared: false, fourKiBPages: true });
    expect(snpGuestStructures.find((s) => s.structure === "ga-log")?.addressed).toBe(false);
  });
  it("reports SNP support in EFR bit 63", () => {
    expect(SNP_EFR_BIT).toBe(63);
    expect(decodeEfr(fromWords64(["0x8000000000000000"])).SNPSup).toBe(1);
  });
  it("keeps the host rules of B10.2", () => {
    expect(snpHostRules.fourKiBPageStructures).toEqual(["event-log", "ppr-log", "completion-wait-semaphore"]);
    expect(snpHostRules.translationValidNeedsDomainId).toBe(true);
  });
  it("strips the C-bit from addresses", () => {
    expect(stripCBit(2 ** 51 + 0x1000, 51)).toBe(0x1000);
    expect(stripCBit(0x1000, 47)).toBe(0x1000);
  });
});
