import type { Command } from "commander";
import type { MappingLeaf, TableInspector, TranslationContext, VendorPlugin } from "@viommu/core";
import { oneVendor, withJson, type CliContext } from "../cli/context.js";
import { UsageError } from "../cli/errors.js";
import { parseCount, parseRequesterId } from "../cli/numbers.js";
import type { Io } from "../io.js";
import { formatBdf } from "@viommu/core";
import { parseRegisters, openGuestMemory } from "./walk.js";

/** A run of leaves contiguous in IOVA and output with the same permissions. */
export interface MappingRange {
  readonly iova: number;
  readonly output: number;
  readonly length: number;
  readonly read: boolean;
  readonly write: boolean;
  /** Leaves by page size ("4K": 12, "2M": 1). */
  readonly pages: Readonly<Record<string, number>>;
  readonly anomalies: readonly string[];
}

export interface ContextMappings {
  readonly context: TranslationContext;
  readonly ranges: readonly MappingRange[];
  readonly leaves: number;
  readonly anomalies: readonly string[];
}

const hex = (n: number): string => `0x${n.toString(16)}`;
/** A requester as bus:dev.fn with its number (StreamIDs and DeviceIDs of PCI devices are the RID). */
const ridName = (rid: number): string => (rid <= 0xffff ? `${formatBdf({ segment: 0, bdf: rid })} (${hex(rid)})` : hex(rid));
const sizeName = (bytes: number): string => (bytes >= 2 ** 30 ? `${bytes / 2 ** 30}G` : bytes >= 2 ** 20 ? `${bytes / 2 ** 20}M` : `${bytes / 1024}K`);

/**
 * Every mapping of the selected contexts, collapsed into ranges like Linux's domain_translation_struct, with
 * what looks wrong flagged: the vendor's findings (reserved bits …), a leaf whose output the dump does not
 * hold, and a table page reached from two contexts of different domains (a shared table no driver builds).
 */
export function collectMappings(inspector: TableInspector, covers: (address: number) => boolean, select: (c: TranslationContext) => boolean): ContextMappings[] {
  const contexts = inspector.contexts().filter(select);
  const tablePages = new Map<number, TranslationContext[]>();
  const out: { context: TranslationContext; ranges: MappingRange[]; leaves: number; tables: Set<number> }[] = [];
  for (const context of contexts) {
    const ranges: MappingRange[] = [];
    const tables = new Set<number>([context.root - (context.root % 4096)]);
    let open: { iova: number; output: number; length: number; read: boolean; write: boolean; pages: Record<string, number>; anomalies: string[] } | undefined;
    const close = (): void => {
      if (open !== undefined) ranges.push(open);
      open = undefined;
    };
    const leaves = inspector.leaves(context, (leaf: MappingLeaf) => {
      tables.add(leaf.entryAddress - (leaf.entryAddress % 4096));
      const anomalies = [...(leaf.anomalies ?? [])];
      if (!covers(leaf.output) || !covers(leaf.output + leaf.size - 1)) anomalies.push(`${hex(leaf.iova)} → ${hex(leaf.output)} lies outside the memory image`);
      const joins = open !== undefined && open.iova + open.length === leaf.iova && open.output + open.length === leaf.output && open.read === leaf.read && open.write === leaf.write;
      if (!joins) {
        close();
        open = { iova: leaf.iova, output: leaf.output, length: 0, read: leaf.read, write: leaf.write, pages: {}, anomalies: [] };
      }
      open!.length += leaf.size;
      open!.pages[sizeName(leaf.size)] = (open!.pages[sizeName(leaf.size)] ?? 0) + 1;
      open!.anomalies.push(...anomalies);
    });
    close();
    for (const page of tables) tablePages.set(page, [...(tablePages.get(page) ?? []), context]);
    out.push({ context, ranges, leaves, tables });
  }
  return out.map(({ context, ranges, leaves, tables }) => {
    const shared = new Set<string>();
    for (const page of tables) {
      for (const other of tablePages.get(page) ?? []) {
        if (other === context || other.domain === context.domain) continue;
        shared.add(`table ${hex(page)} is also reached from ${ridName(other.rid)}${other.pasid !== undefined ? ` PASID ${other.pasid}` : ""} (domain ${other.domain ?? "?"})`);
      }
    }
    return { context, ranges, leaves, anomalies: [...(context.anomalies ?? []), ...shared] };
  });
}

function rangeJson(r: MappingRange): Record<string, unknown> {
  return { iova: hex(r.iova), output: hex(r.output), length: hex(r.length), read: r.read, write: r.write, pages: r.pages, ...(r.anomalies.length > 0 ? { anomalies: r.anomalies } : {}) };
}

export interface MappingsArgs {
  readonly memory: readonly string[];
  readonly memoryBase?: string;
  readonly reg?: readonly string[];
  readonly rid?: string;
  readonly pasid?: string;
}

/** `viommu mappings`: every mapping of a device (or of every device) from the tables in a dump. */
export async function mappingsCommand(io: Io, plugin: VendorPlugin, args: MappingsArgs, json: boolean): Promise<number> {
  const tool = plugin.walk;
  if (tool?.inspect === undefined) throw new UsageError(`--vendor: ${plugin.id} cannot list its tables' mappings (its walk tool has no inspect)`);
  const registers = parseRegisters(plugin, tool, args.reg ?? []);
  const base = args.memoryBase === undefined ? 0 : Number(parseCount(args.memoryBase, "--memory-base"));
  const rid = args.rid === undefined ? undefined : parseRequesterId(args.rid, "--rid");
  const pasid = args.pasid === undefined ? undefined : parseCount(args.pasid, "--pasid");
  const { memory, image } = await openGuestMemory(args.memory, base);
  try {
    const inspector = tool.inspect(memory, registers);
    if (!inspector.ok) throw new UsageError(`--reg: ${inspector.error.message} (${plugin.id} takes ${tool.registers.join(", ")})`);
    const found = collectMappings(inspector.value, (a) => image.covers(a), (c) => (rid === undefined || c.rid === rid) && (pasid === undefined || c.pasid === pasid));
    if (json) {
      io.out(
        JSON.stringify({
          vendor: plugin.id,
          contexts: found.map((m) => ({
            rid: hex(m.context.rid),
            ...(m.context.rid <= 0xffff ? { bdf: formatBdf({ segment: 0, bdf: m.context.rid }) } : {}),
            ...(m.context.pasid !== undefined ? { pasid: m.context.pasid } : {}),
            ...(m.context.domain !== undefined ? { domain: m.context.domain } : {}),
            mode: m.context.mode,
            root: hex(m.context.root),
            leaves: m.leaves,
            ranges: m.ranges.map(rangeJson),
            ...(m.anomalies.length > 0 ? { anomalies: m.anomalies } : {}),
          })),
        }),
      );
      return 0;
    }
    if (found.length === 0) io.out(rid === undefined ? "no device has translation configured in these tables" : `${ridName(rid)} has no translation configured in these tables`);
    for (const m of found) {
      const c = m.context;
      io.out(`${ridName(c.rid)}${c.pasid !== undefined ? ` PASID ${c.pasid}` : ""}  ${c.mode}${c.domain !== undefined ? `  domain ${c.domain}` : ""}  root ${hex(c.root)}  ${m.leaves} leaves in ${m.ranges.length} ranges`);
      for (const a of m.anomalies) io.out(`  ! ${a}`);
      for (const r of m.ranges) {
        const pages = Object.entries(r.pages)
          .map(([size, n]) => `${size}×${n}`)
          .join(" ");
        io.out(`  ${hex(r.iova).padStart(18)}-${hex(r.iova + r.length - 1).padEnd(18)} → ${hex(r.output).padStart(14)}-${hex(r.output + r.length - 1).padEnd(14)} ${r.read ? "r" : "-"}${r.write ? "w" : "-"}  ${pages}`);
        for (const a of r.anomalies) io.out(`      ! ${a}`);
      }
    }
    return 0;
  } finally {
    image.close();
  }
}

export function registerMappings(program: Command, ctx: CliContext): void {
  withJson(program.command("mappings").description("every mapping of a device (or of every device) in a dump's tables, as IOVA ranges with what looks wrong flagged"))
    .requiredOption("--vendor <id>", "the vendor")
    .requiredOption("--memory <file[@base]>", "guest memory, as for walk (raw images, ELF cores, gzip; repeatable)", (v: string, all: string[] = []) => [...all, v])
    .option("--memory-base <address>", "guest-physical address of raw images given without @BASE (default 0)")
    .option("--reg <name=value>", "a register the guest programmed (repeatable)", (v: string, all: string[] = []) => [...all, v])
    .option("--rid <id>", "only this requester (a number or bus:dev.fn; StreamID, DeviceID)")
    .option("--pasid <n>", "only this PASID")
    .action(async (opts: { json?: boolean; vendor: string; memory: string[]; memoryBase?: string; reg?: string[]; rid?: string; pasid?: string }) => {
      const json = opts.json === true;
      const io = ctx.io(json);
      const plugin = await oneVendor(ctx, io, json, opts.vendor);
      ctx.exit(await mappingsCommand(io, plugin, opts, json));
    });
}
