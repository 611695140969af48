import { discoverPlugins, loadPlugins, Perm, Testbed, unwrap, type VendorPlugin } from "@viommu/core";

/**
 * A project that installed core and exactly one vendor. It does not name the vendor: it asks core what is
 * installed (package.json manifests in node_modules), wires what it found, and runs a VM with a passthrough
 * device through the vendor's guest driver.
 */
export async function installedVendors(projectRoot: string): Promise<VendorPlugin[]> {
  const { loaded } = await loadPlugins(discoverPlugins([projectRoot]));
  return loaded.map((p) => p.plugin);
}

/** Maps a page through the vendor's guest driver and DMAs into it; returns what landed in guest memory. */
export function dmaThroughVendor(plugin: VendorPlugin): Uint8Array {
  const bed = unwrap(Testbed.create({ plugin, vms: [{ devices: [{ rid: 0x100, guestRid: 0x10 }] }] }));
  try {
    const v = bed.vms[0]!;
    const driver = v.drivers[0]!;
    const domain = unwrap(driver.createDomain());
    unwrap(driver.attach(0x10, domain));
    unwrap(driver.map(domain, 0x10_0000, 0x2000_0000, 0x1000, Perm.ReadWrite));
    const r = v.devices[0]!.device.write(0x10_0000, Uint8Array.of(0xde, 0xad, 0xbe, 0xef));
    if (!r.ok) throw new Error(`DMA faulted: ${r.reason}`);
    return v.vm.memory.readBytes(0x2000_0000, 4);
  } finally {
    bed.dispose();
  }
}
