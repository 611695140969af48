import type { AcpiTableBlob } from "@viommu/core";
import { decodeIort } from "@viommu/smmuv3";
import { buildCmdqvSsdt, type Tegra241CmdqvAcpiDevice } from "../format/acpi-device.js";
import { cmdqvApertureSize } from "../format/aperture.js";
import type { CmdqvVmmPlacement } from "./cmdqv-vmm.js";

/** The Identifier of the SMMUv3 node in an IORT the VMM published (the CMDQV's _UID names it); 0 when absent. */
export function iortSmmuIdentifier(tables: readonly AcpiTableBlob[]): number {
  for (const t of tables) {
    if (t.signature !== "IORT") continue;
    const iort = decodeIort(t.bytes);
    if (!iort.ok) continue;
    const node = iort.table.nodes.find((n) => n.type === "smmuv3");
    if (node !== undefined) return node.identifier ?? 0;
  }
  return 0;
}

/**
 * The firmware description of the VM's CMDQV (spec arm-hyperv-virtio.md §4.6): not an IORT node but an SSDT
 * declaring Device(CVnn) with _HID "NVDA200C", _UID = the IORT SMMUv3 node it extends, _CCA 1 and a _CRS with
 * the one-VINTF aperture and the error interrupt — published alongside the SMMU's IORT.
 */
export function cmdqvAcpiTable(instance: number, placement: CmdqvVmmPlacement, smmuTables: readonly AcpiTableBlob[]): AcpiTableBlob {
  const device: Tegra241CmdqvAcpiDevice = {
    name: `CV${instance.toString(16).toUpperCase().padStart(2, "0")}`,
    uid: iortSmmuIdentifier(smmuTables),
    base: placement.base,
    length: cmdqvApertureSize(1),
    gsiv: placement.gsiv,
  };
  return { signature: "SSDT", bytes: buildCmdqvSsdt([device]) };
}
