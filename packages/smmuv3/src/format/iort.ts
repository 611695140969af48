import { ByteReader, ByteWriter, acpiTableProblem, buildAcpiTable, parseAcpiTableHeader, ACPI_HEADER_BYTES } from "@viommu/core";

/**
 * The ACPI IO Remapping Table (Arm DEN 0049; ACPICA actbl2.h; spec arm-hyperv-virtio.md §3): a typed
 * description encoded to bytes and decoded back. ITS group, named component, PCI root complex and SMMUv3
 * nodes are typed; any other node type (SMMUv1/v2, PMCG, RMR, IWB, future types) is kept as raw body bytes
 * with its ID mappings, so a decoded table re-encodes byte for byte.
 *
 * ID mappings name their target node by index into `nodes`; the byte offset ("output reference") is computed
 * when encoding. `idCount` is the raw "Number of IDs" field, which the specification defines as the number of
 * IDs minus one (QEMU 7.2 mixes that with the plain count, spec §9.6): `iortMapId` reads it the
 * specification's way, as Linux does (inclusive range).
 */

export const IortNodeType = {
  ItsGroup: 0,
  NamedComponent: 1,
  RootComplex: 2,
  Smmu: 3,
  SmmuV3: 4,
  Pmcg: 5,
  Rmr: 6,
  Iwb: 7,
} as const;

/** IORT table header: the ACPI header, node count, node array offset, reserved. */
export const IORT_HEADER_BYTES = ACPI_HEADER_BYTES + 12;
export const IORT_NODE_HEADER_BYTES = 16;
export const IORT_ID_MAPPING_BYTES = 20;
/** ID mapping flags bit 0: one output ID for the whole node (the input is ignored). */
export const IORT_ID_SINGLE_MAPPING = 1;

/** SMMUv3 node flag masks (HttuOverride holds 0 none, 1 AF, 2 AF + dirty in bits [2:1]). */
export const IortSmmuV3Flags = { CohaccOverride: 1 << 0, HttuOverride: 3 << 1, ProximityDomainValid: 1 << 3, DeviceIdMappingValid: 1 << 4 } as const;
/** SMMUv3 node models. */
export const IortSmmuV3Model = { Generic: 0, HiSiliconHi161x: 1, CaviumCn99xx: 2 } as const;
/** Root complex ATS attribute bits. */
export const IortAtsAttribute = { Ats: 1 << 0, Pri: 1 << 1, PasidForwarding: 1 << 2 } as const;

/** Memory access properties (8 bytes) of named component and root complex nodes. */
export interface IortMemoryAccess {
  /** 1 = fully coherent. */
  readonly cacheCoherency: number;
  /** Bit 0 transient, 1 write-allocate, 2 read-allocate, 3 override. */
  readonly allocationHints: number;
  /** Bit 0 coherent path to memory (CPM), 1 device attributes cacheable and inner shareable (DACS), 2 CANWBS. */
  readonly memoryAccessFlags: number;
}

export interface IortIdMapping {
  readonly inputBase: number;
  /** Raw "Number of IDs": the count of IDs minus one, per the specification. */
  readonly idCount: number;
  readonly outputBase: number;
  /** Target node, as an index into the table's nodes. Decoding leaves it undefined for a reference to no node. */
  readonly outputNode?: number;
  /** Target node as a byte offset from the table start; used when `outputNode` is absent. */
  readonly outputReference?: number;
  /** Bit 0: single mapping. */
  readonly flags?: number;
}

interface IortNodeBase {
  /** Node revision; defaults follow QEMU's table (ITS 1, RC 3, SMMUv3 4) and 4 for named components. */
  readonly revision?: number;
  /** Node identifier, unique in the table; defaults to the node's index. */
  readonly identifier?: number;
  readonly mappings?: readonly IortIdMapping[];
}

export interface IortItsGroupNode extends IortNodeBase {
  readonly type: "its-group";
  readonly itsIdentifiers: readonly number[];
}

export interface IortNamedComponentNode extends IortNodeBase {
  readonly type: "named-component";
  /** Bit 0 stall supported, bits [5:1] PASID bits. */
  readonly nodeFlags: number;
  readonly memoryAccess: IortMemoryAccess;
  readonly memoryAddressSizeLimit: number;
  /** Full path of the namespace device, e.g. `\_SB.DEV0`. */
  readonly deviceName: string;
}

export interface IortRootComplexNode extends IortNodeBase {
  readonly type: "root-complex";
  readonly memoryAccess: IortMemoryAccess;
  readonly atsAttribute: number;
  readonly pciSegment: number;
  readonly memoryAddressSizeLimit: number;
  /** Node revision 4 and later only (bits [4:0] max PASID width). */
  readonly pasidCapabilities?: number;
  /** Node revision 4 and later only. */
  readonly flags?: number;
}

export interface IortSmmuV3Node extends IortNodeBase {
  readonly type: "smmuv3";
  readonly baseAddress: bigint;
  readonly flags: number;
  readonly vatosAddress?: bigint;
  readonly model: number;
  readonly eventGsiv: number;
  readonly priGsiv: number;
  readonly gerrGsiv: number;
  readonly syncGsiv: number;
  readonly proximityDomain?: number;
  /** Which ID mapping carries the SMMU's own MSI DeviceID (valid with flag DeviceIdMappingValid). */
  readonly deviceIdMappingIndex?: number;
}

/** Any other node type, kept as the bytes between the node header and its ID mappings. */
export interface IortRawNode extends IortNodeBase {
  readonly type: "raw";
  readonly nodeType: number;
  readonly body: Uint8Array;
}

export type IortNode = IortItsGroupNode | IortNamedComponentNode | IortRootComplexNode | IortSmmuV3Node | IortRawNode;

export interface IortTable {
  /** Table revision (QEMU: 3). */
  readonly revision: number;
  readonly oemId?: string;
  readonly oemTableId?: string;
  readonly oemRevision?: number;
  readonly creatorId?: string;
  readonly creatorRevision?: number;
  readonly nodes: readonly IortNode[];
}

const DEFAULT_REVISION: Record<IortNode["type"], number> = {
  "its-group": 1,
  "named-component": 4,
  "root-complex": 3,
  smmuv3: 4,
  raw: 0,
};

function nodeTypeCode(node: IortNode): number {
  switch (node.type) {
    case "its-group":
      return IortNodeType.ItsGroup;
    case "named-component":
      return IortNodeType.NamedComponent;
    case "root-complex":
      return IortNodeType.RootComplex;
    case "smmuv3":
      return IortNodeType.SmmuV3;
    case "raw":
      return node.nodeType;
  }
}

function writeMemoryAccess(w: ByteWriter, m: IortMemoryAccess): void {
  w.u32(m.cacheCoherency).u8(m.allocationHints).u16(0).u8(m.memoryAccessFlags);
}

/** The node-specific bytes after the 16-byte header, before the ID mappings (padded to 4 bytes). */
function nodeBody(node: IortNode, revision: number): Uint8Array {
  const w = new ByteWriter();
  switch (node.type) {
    case "its-group":
      w.u32(node.itsIdentifiers.length);
      for (const id of node.itsIdentifiers) w.u32(id);
      break;
    case "named-component": {
      w.u32(node.nodeFlags);
      writeMemoryAccess(w, node.memoryAccess);
      w.u8(node.memoryAddressSizeLimit);
      w.ascii(node.deviceName, node.deviceName.length).u8(0);
      break;
    }
    case "root-complex":
      writeMemoryAccess(w, node.memoryAccess);
      w.u32(node.atsAttribute).u32(node.pciSegment).u8(node.memoryAddressSizeLimit);
      if (revision >= 4) w.u16(node.pasidCapabilities ?? 0).u8(0).u32(node.flags ?? 0);
      else w.zeros(3);
      break;
    case "smmuv3":
      w.u64(node.baseAddress)
        .u32(node.flags)
        .u32(0)
        .u64(node.vatosAddress ?? 0n)
        .u32(node.model)
        .u32(node.eventGsiv)
        .u32(node.priGsiv)
        .u32(node.gerrGsiv)
        .u32(node.syncGsiv)
        .u32(node.proximityDomain ?? 0)
        .u32(node.deviceIdMappingIndex ?? 0);
      break;
    case "raw":
      w.bytes(node.body);
      break;
  }
  // Node bodies end on a 4-byte boundary (named-component names are padded with zeros).
  while ((IORT_NODE_HEADER_BYTES + w.offset) % 4 !== 0) w.u8(0);
  return w.finish();
}

/** Encodes an IORT. Throws on a description that cannot be encoded (a mapping to a missing node: a bug). */
export function encodeIort(table: IortTable): Uint8Array {
  const bodies = table.nodes.map((n) => nodeBody(n, n.revision ?? DEFAULT_REVISION[n.type]));
  const offsets: number[] = [];
  let at = IORT_HEADER_BYTES;
  table.nodes.forEach((n, i) => {
    offsets.push(at);
    at += IORT_NODE_HEADER_BYTES + bodies[i]!.length + (n.mappings?.length ?? 0) * IORT_ID_MAPPING_BYTES;
  });
  const w = new ByteWriter();
  w.u32(table.nodes.length).u32(IORT_HEADER_BYTES).u32(0);
  table.nodes.forEach((n, i) => {
    const body = bodies[i]!;
    const mappings = n.mappings ?? [];
    const length = IORT_NODE_HEADER_BYTES + body.length + mappings.length * IORT_ID_MAPPING_BYTES;
    if (length > 0xffff) throw new RangeError(`IORT node ${i} is ${length} bytes, more than a 16-bit length`);
    w.u8(nodeTypeCode(n))
      .u16(length)
      .u8(n.revision ?? DEFAULT_REVISION[n.type])
      .u32(n.identifier ?? i)
      .u32(mappings.length)
      .u32(mappings.length === 0 ? 0 : IORT_NODE_HEADER_BYTES + body.length)
      .bytes(body);
    for (const m of mappings) {
      let reference: number | undefined;
      if (m.outputNode !== undefined) {
        reference = offsets[m.outputNode];
        if (reference === undefined) throw new RangeError(`IORT node ${i} maps to node ${m.outputNode}, which does not exist`);
      } else {
        reference = m.outputReference;
        if (reference === undefined) throw new RangeError(`IORT node ${i} has a mapping with no output node`);
      }
      w.u32(m.inputBase).u32(m.idCount).u32(m.outputBase).u32(reference).u32(m.flags ?? 0);
    }
  });
  return buildAcpiTable(
    {
      signature: "IORT",
      revision: table.revision,
      ...(table.oemId !== undefined ? { oemId: table.oemId } : {}),
      ...(table.oemTableId !== undefined ? { oemTableId: table.oemTableId } : {}),
      ...(table.oemRevision !== undefined ? { oemRevision: table.oemRevision } : {}),
      ...(table.creatorId !== undefined ? { creatorId: table.creatorId } : {}),
      ...(table.creatorRevision !== undefined ? { creatorRevision: table.creatorRevision } : {}),
    },
    w.finish(),
  );
}

export type IortDecodeResult = { readonly ok: true; readonly table: IortTable } | { readonly ok: false; readonly problem: string };

function readMemoryAccess(r: ByteReader, at: number): IortMemoryAccess {
  return { cacheCoherency: r.u32(at), allocationHints: r.u8(at + 4), memoryAccessFlags: r.u8(at + 7) };
}

/** Decodes an IORT. Malformed bytes give `{ ok: false, problem }`, never an exception. */
export function decodeIort(bytes: Uint8Array): IortDecodeResult {
  const headerProblem = acpiTableProblem(bytes, "IORT");
  if (headerProblem !== undefined) return { ok: false, problem: headerProblem };
  try {
    const header = parseAcpiTableHeader(bytes);
    const r = new ByteReader(bytes);
    const count = r.u32(36);
    const first = r.u32(40);
    const starts: number[] = [];
    let at = first;
    for (let i = 0; i < count; i++) {
      if (at + IORT_NODE_HEADER_BYTES > bytes.length) return { ok: false, problem: `node ${i} at ${at} runs past the table` };
      const length = r.u16(at + 1);
      if (length < IORT_NODE_HEADER_BYTES || at + length > bytes.length) return { ok: false, problem: `node ${i} at ${at} has length ${length}` };
      starts.push(at);
      at += length;
    }
    const indexByOffset = new Map(starts.map((s, i) => [s, i]));
    const nodes = starts.map((start, i): IortNode => {
      const type = r.u8(start);
      const length = r.u16(start + 1);
      const revision = r.u8(start + 3);
      const identifier = r.u32(start + 4);
      const mappingCount = r.u32(start + 8);
      const mappingOffset = r.u32(start + 12);
      const bodyEnd = mappingCount === 0 ? length : mappingOffset;
      if (mappingCount > 0 && (mappingOffset < IORT_NODE_HEADER_BYTES || mappingOffset + mappingCount * IORT_ID_MAPPING_BYTES > length)) {
        throw new RangeError(`node ${i}: ${mappingCount} mappings at ${mappingOffset} do not fit its ${length} bytes`);
      }
      const mappings: IortIdMapping[] = [];
      for (let m = 0; m < mappingCount; m++) {
        const base = start + mappingOffset + m * IORT_ID_MAPPING_BYTES;
        const outputReference = r.u32(base + 12);
        const outputNode = indexByOffset.get(outputReference);
        mappings.push({
          inputBase: r.u32(base),
          idCount: r.u32(base + 4),
          outputBase: r.u32(base + 8),
          ...(outputNode !== undefined ? { outputNode } : {}),
          outputReference,
          flags: r.u32(base + 16),
        });
      }
      const common = { revision, identifier, mappings };
      switch (type) {
        case IortNodeType.ItsGroup: {
          const n = r.u32(start + 16);
          if (20 + n * 4 > bodyEnd) throw new RangeError(`node ${i}: ${n} ITS identifiers do not fit`);
          const itsIdentifiers = Array.from({ length: n }, (_, k) => r.u32(start + 20 + k * 4));
          return { type: "its-group", ...common, itsIdentifiers };
        }
        case IortNodeType.NamedComponent: {
          const nameBytes = r.slice(start + 29, Math.max(0, bodyEnd - 29));
          const nul = nameBytes.indexOf(0);
          const deviceName = String.fromCharCode(...(nul < 0 ? nameBytes : nameBytes.subarray(0, nul)));
          return {
            type: "named-component",
            ...common,
            nodeFlags: r.u32(start + 16),
            memoryAccess: readMemoryAccess(r, start + 20),
            memoryAddressSizeLimit: r.u8(start + 28),
            deviceName,
          };
        }
        case IortNodeType.RootComplex: {
          const rc = {
            type: "root-complex" as const,
            ...common,
            memoryAccess: readMemoryAccess(r, start + 16),
            atsAttribute: r.u32(start + 24),
            pciSegment: r.u32(start + 28),
            memoryAddressSizeLimit: r.u8(start + 32),
          };
          return revision >= 4 && bodyEnd >= 40 ? { ...rc, pasidCapabilities: r.u16(start + 33), flags: r.u32(start + 36) } : rc;
        }
        case IortNodeType.SmmuV3:
          if (bodyEnd < 68) throw new RangeError(`node ${i}: SMMUv3 body of ${bodyEnd - 16} bytes is shorter than 52`);
          return {
            type: "smmuv3",
            ...common,
            baseAddress: r.u64(start + 16),
            flags: r.u32(start + 24),
            vatosAddress: r.u64(start + 32),
            model: r.u32(start + 40),
            eventGsiv: r.u32(start + 44),
            priGsiv: r.u32(start + 48),
            gerrGsiv: r.u32(start + 52),
            syncGsiv: r.u32(start + 56),
            proximityDomain: r.u32(start + 60),
            deviceIdMappingIndex: r.u32(start + 64),
          };
        default:
          return { type: "raw", ...common, nodeType: type, body: r.slice(start + IORT_NODE_HEADER_BYTES, bodyEnd - IORT_NODE_HEADER_BYTES).slice() };
      }
    });
    return {
      ok: true,
      table: {
        revision: header.revision,
        oemId: header.oemId,
        oemTableId: header.oemTableId,
        oemRevision: header.oemRevision,
        creatorId: header.creatorId,
        creatorRevision: header.creatorRevision,
        nodes,
      },
    };
  } catch (e) {
    if (e instanceof RangeError) return { ok: false, problem: e.message };
    throw e;
  }
}

/**
 * The output ID an ID mapping gives `id`, or undefined when the mapping does not cover it. A single mapping
 * gives its output base for any input; otherwise the range is [inputBase, inputBase + idCount] inclusive
 * (idCount is the count minus one).
 */
export function iortMapId(mapping: IortIdMapping, id: number): number | undefined {
  if (((mapping.flags ?? 0) & IORT_ID_SINGLE_MAPPING) !== 0) return mapping.outputBase;
  if (id < mapping.inputBase || id > mapping.inputBase + mapping.idCount) return undefined;
  return (mapping.outputBase + (id - mapping.inputBase)) >>> 0;
}
