import {
  decodeLayout,
  EntryKind,
  err,
  GuestTableReader,
  newEntryDecode,
  newWalkResult,
  ok,
  PageWalker,
  Perm,
  toHex64,
  WalkFault,
  walkFaultNames,
  type GuestMemory,
  type MappingLeaf,
  type Result,
  type TableGeometry,
  type TableInspector,
  type TranslationContext,
  type WalkAnswer,
  type WalkRequest,
  type WalkStep,
  type WalkTool,
} from "@viommu/core";
import { hypervPageTableFormat, hypervStage1Geometry, x86PteLayout } from "../format/x86-page-table.js";

/** The Intel SDM's names of the entries of each level (vol. 3 §4.5). */
const ENTRY_NAMES = ["", "PTE", "PDE", "PDPTE", "PML4E", "PML5E"];
const hex = (n: number): string => `0x${n.toString(16)}`;
const fault = (f: WalkFault, steps: WalkStep[]): WalkAnswer => ({ ok: false, fault: { code: f, name: walkFaultNames[f] }, steps });

/** The device domain as HVCALL_CONFIGURE_DEVICE_DOMAIN configured it (and, for labels, who is attached). */
interface Domain {
  readonly root: number;
  readonly levels: 4 | 5;
  readonly geometry: TableGeometry;
  readonly deviceId: number;
  readonly domainId: number | undefined;
}

function domainOf(registers: Readonly<Record<string, bigint>>): Result<Domain> {
  const root = registers["PAGE_TABLE_ROOT"];
  if (root === undefined) return err("EINVAL", "PAGE_TABLE_ROOT is required (HVCALL_CONFIGURE_DEVICE_DOMAIN page_table_root)");
  for (const [name, v] of Object.entries(registers)) if (v < 0n || v > 0xffff_ffff_ffff_ffffn) return err("EINVAL", `${name} is not a 64-bit value`);
  if ((root & 0xfffn) !== 0n || root >= 1n << 52n) return err("EINVAL", `PAGE_TABLE_ROOT 0x${root.toString(16)} is not a 4 KiB-aligned address below 2^52`);
  const mode = registers["FIRST_STAGE_PAGING_MODE"] ?? 0n;
  if (mode > 1n) return err("EINVAL", `FIRST_STAGE_PAGING_MODE ${mode} is neither 0 (4-level) nor 1 (5-level)`);
  const levels = mode === 1n ? 5 : 4;
  const deviceId = registers["DEVICE_ID"] ?? 0n;
  if (deviceId > BigInt(Number.MAX_SAFE_INTEGER)) return err("EINVAL", "DEVICE_ID is wider than 53 bits");
  const domainId = registers["DOMAIN_ID"];
  if (domainId !== undefined && domainId > 0xffff_ffffn) return err("EINVAL", "DOMAIN_ID is wider than 32 bits");
  return ok({ root: Number(root), levels, geometry: hypervStage1Geometry(levels), deviceId: Number(deviceId), domainId: domainId === undefined ? undefined : Number(domainId) });
}

/**
 * `viommu walk --vendor hyperv --reg PAGE_TABLE_ROOT=V [--reg FIRST_STAGE_PAGING_MODE=1] --iova A`: the guest's
 * x86-64 stage-1 table of one device domain, from a memory image. The pvIOMMU has no device table in guest memory:
 * the root and paging mode are the arguments of HVCALL_CONFIGURE_DEVICE_DOMAIN (from a hypercall trace or the
 * guest kernel's domain structure), so the walk covers the domain, whichever device is attached; DEVICE_ID and
 * DOMAIN_ID only label `viommu mappings`. Steps name each entry as the SDM does; an input at or above 2^48 (2^57
 * with 5 levels) faults AddressSize, as the unit faults it (Linux's driver does not sign-extend).
 */
export const hypervWalkTool: WalkTool = {
  registers: ["PAGE_TABLE_ROOT", "FIRST_STAGE_PAGING_MODE", "DEVICE_ID", "DOMAIN_ID"],
  wideAddresses: true,

  prepare(memory: GuestMemory, registers: Readonly<Record<string, bigint>>): Result<(request: WalkRequest) => WalkAnswer> {
    const d = domainOf(registers);
    if (!d.ok) return d;
    const { root, levels, geometry } = d.value;
    const reader = new GuestTableReader(memory);
    const walker = new PageWalker();
    const out = newWalkResult();
    const decoded = newEntryDecode();
    const words = new Uint32Array(2);
    return ok((request: WalkRequest): WalkAnswer => {
      const steps: WalkStep[] = [];
      if ((request.address !== undefined && request.address >= 1n << 53n) || request.iova >= 2 ** geometry.inputBits) return fault(WalkFault.AddressSize, steps);
      let table = root;
      for (let level = levels; level >= 1; level--) {
        const at = table + (Math.floor(request.iova / 2 ** geometry.levelShift[level]!) % 512) * 8;
        if (!memory.contains(at, 8)) break;
        words[0] = memory.read32(at);
        words[1] = memory.read32(at + 4);
        hypervPageTableFormat.decodeEntry(words[0], words[1], level, decoded);
        const leaf = decoded.kind === EntryKind.Leaf;
        const f = decodeLayout(x86PteLayout, words);
        steps.push({
          what: ENTRY_NAMES[level]!,
          address: at,
          raw: toHex64(words),
          level,
          stage: 1,
          fields: Object.fromEntries(Object.entries(f).map(([k, v]) => [k, k === "ADDR" ? hex(Number(v)) : Number(v)])),
          ...(leaf ? { pageSize: 2 ** decoded.pageShift } : {}),
        });
        if (decoded.kind !== EntryKind.Table) break;
        table = decoded.address;
      }
      walker.walk(hypervPageTableFormat, geometry, root, request.iova, request.write ? Perm.Write : Perm.Read, reader, out);
      if (!out.ok) return fault(out.fault, steps);
      // As the pvIOMMU faults it: an output the partition's memory does not hold.
      if (!memory.contains(out.output)) return fault(WalkFault.AddressSize, steps);
      return { ok: true, output: out.output, pageSize: 2 ** out.pageShift, read: true, write: (out.perms & Perm.Write) !== 0, ...(d.value.domainId !== undefined ? { domain: d.value.domainId } : {}), steps };
    });
  },

  inspect(memory: GuestMemory, registers: Readonly<Record<string, bigint>>): Result<TableInspector> {
    const d = domainOf(registers);
    return d.ok ? ok(new HypervTableInspector(memory, d.value)) : d;
  },
};

/** The one device domain's leaves, in IOVA order, with entries the walk faults on flagged. */
class HypervTableInspector implements TableInspector {
  constructor(
    private readonly memory: GuestMemory,
    private readonly d: Domain,
  ) {}

  contexts(): readonly TranslationContext[] {
    const anomalies = this.memory.contains(this.d.root, 4096) ? undefined : [`page_table_root ${hex(this.d.root)} lies outside guest RAM`];
    return [{ rid: this.d.deviceId, ...(this.d.domainId !== undefined ? { domain: this.d.domainId } : {}), root: this.d.root, mode: `stage 1 (${this.d.levels}-level)`, ...(anomalies ? { anomalies } : {}) }];
  }

  leaves(context: TranslationContext, visit: (leaf: MappingLeaf) => void): number {
    return this.table(context.root, this.d.levels, 0, Perm.Write, visit);
  }

  /** `write`: whether every table above grants R/W (x86 cannot withhold read from a present entry). */
  private table(address: number, level: number, base: number, write: number, visit: (leaf: MappingLeaf) => void): number {
    if (!this.memory.contains(address, 4096)) return 0;
    const decoded = newEntryDecode();
    const span = 2 ** this.d.geometry.levelShift[level]!;
    let count = 0;
    for (let i = 0; i < 512; i++) {
      const iova = base + i * span;
      if (iova >= 2 ** this.d.geometry.inputBits) break;
      const at = address + i * 8;
      const lo = this.memory.read32(at);
      const hi = this.memory.read32(at + 4);
      if ((lo & 1) === 0) continue;
      hypervPageTableFormat.decodeEntry(lo, hi, level, decoded);
      const output = (hi & 0xfffff) * 2 ** 32 + ((lo & 0xffff_f000) >>> 0);
      if (decoded.kind === EntryKind.Table) {
        if (this.memory.contains(decoded.address, 4096)) {
          count += this.table(decoded.address, level - 1, iova, write & decoded.perms, visit);
          continue;
        }
        visit({ iova, output, size: span, read: false, write: false, entryAddress: at, anomalies: [`${ENTRY_NAMES[level]} ${hex(at)} points to a table at ${hex(output)} outside guest RAM`] });
      } else if (decoded.kind === EntryKind.Leaf) {
        visit({ iova, output: decoded.address, size: span, read: true, write: (write & decoded.perms & Perm.Write) !== 0, entryAddress: at });
      } else {
        visit({ iova, output, size: span, read: false, write: false, entryAddress: at, anomalies: [`${ENTRY_NAMES[level]} ${hex(at)} has reserved bits set (the walk faults)`] });
      }
      count++;
    }
    return count;
  }
}
