#!/usr/bin/env node
import "reflect-metadata";
import { parseArgs } from "node:util";
import { acpiCommand } from "./commands/acpi.js";
import { benchCommand } from "./commands/bench.js";
import { campaignCommand } from "./commands/campaign.js";
import { conformanceCommand } from "./commands/conformance.js";
import { decodeCommand } from "./commands/decode.js";
import { demoCommand } from "./commands/demo.js";
import { pluginsCommand } from "./commands/plugins.js";
import { walkCommand } from "./commands/walk.js";
import { installedPlugins, selectVendors, unknownVendor } from "./installed.js";
import { processIo } from "./io.js";

const USAGE = `usage: viommu <command> [options]

  plugins                       installed vendor plugins and what each supports
  demo [--vendor V|all]         the main job on every installed vendor
  conformance [--vendor V|all]  the cross-vendor suite, as a matrix [--seed N]
  decode --vendor V --structure S (--hex W[,W...] | --input FILE)
  walk --vendor V --memory FILE[.gz] [--memory-base A] --reg NAME=VALUE...
       (--sid N | --devid N | --rid N) [--pasid N | --ssid N] --iova A [--access read|write]
       or --requests FILE
  acpi --vendor V [--out FILE]  the vendor's ACPI table (DMAR, IVRS, IORT)
  bench [--only NAME,...]       the benchmarks
  campaign [--vendor V|all] [--steps N] [--seed N] [--mode nested,shadow,ir-only]
                                the two-VM hostile campaign

every command takes --json`;

async function main(argv: string[]): Promise<number> {
  const [command, ...rest] = argv;
  if (command === undefined || command === "help" || command === "--help" || command === "-h") {
    process.stdout.write(`${USAGE}\n`);
    return command === undefined ? 2 : 0;
  }
  let parsed;
  try {
    parsed = parseArgs({
      args: rest,
      options: {
        json: { type: "boolean", default: false },
        vendor: { type: "string" },
        seed: { type: "string" },
        structure: { type: "string" },
        hex: { type: "string" },
        input: { type: "string" },
        memory: { type: "string" },
        "memory-base": { type: "string" },
        reg: { type: "string", multiple: true },
        sid: { type: "string" },
        devid: { type: "string" },
        rid: { type: "string" },
        pasid: { type: "string" },
        ssid: { type: "string" },
        iova: { type: "string" },
        access: { type: "string" },
        requests: { type: "string" },
        out: { type: "string" },
        only: { type: "string" },
        steps: { type: "string" },
        mode: { type: "string" },
      },
      strict: true,
    });
  } catch (e) {
    process.stderr.write(`${(e as Error).message}\n${USAGE}\n`);
    return 2;
  }
  const v = parsed.values;
  const json = v.json === true;
  const io = processIo(json);
  const seed = v.seed === undefined ? 1 : Number(v.seed);
  const installed = await installedPlugins();
  for (const f of installed.failures) if (!json) io.err(`warning: plugin ${f.packageName} failed to load: ${f.reason}`);
  const all = installed.plugins.map((p) => p.plugin);

  const oneVendor = () => {
    if (v.vendor === undefined) {
      io.err(`--vendor is required (installed: ${all.map((p) => p.id).join(", ") || "none"})`);
      return undefined;
    }
    const found = all.find((p) => p.id === v.vendor);
    if (found === undefined) io.err(unknownVendor(v.vendor, all));
    return found;
  };

  switch (command) {
    case "plugins":
      return pluginsCommand(io, installed.plugins, installed.failures, json);
    case "demo":
    case "conformance": {
      const selected = selectVendors(installed.plugins, v.vendor);
      if ("error" in selected) {
        io.err(selected.error);
        return 2;
      }
      if (selected.plugins.length === 0) {
        io.err("no viommu plugins installed");
        return 2;
      }
      return command === "demo" ? demoCommand(io, selected.plugins, all, seed, json) : conformanceCommand(io, selected.plugins, all, seed, json);
    }
    case "decode": {
      const plugin = oneVendor();
      return plugin === undefined ? 2 : decodeCommand(io, plugin, { structure: v.structure, hex: v.hex, input: v.input }, json);
    }
    case "walk": {
      const plugin = oneVendor();
      if (plugin === undefined) return 2;
      return walkCommand(io, plugin, {
        memory: v.memory,
        memoryBase: v["memory-base"],
        reg: v.reg,
        rid: v.sid ?? v.devid ?? v.rid,
        pasid: v.pasid ?? v.ssid,
        iova: v.iova,
        access: v.access,
        requests: v.requests,
      });
    }
    case "acpi": {
      const plugin = oneVendor();
      return plugin === undefined ? 2 : acpiCommand(io, plugin, v.out, json);
    }
    case "campaign": {
      const selected = selectVendors(installed.plugins, v.vendor ?? "all");
      if ("error" in selected) {
        io.err(selected.error);
        return 2;
      }
      const steps = v.steps === undefined ? 100_000 : Number(v.steps);
      if (!Number.isSafeInteger(steps) || steps <= 0) {
        io.err(`--steps: "${v.steps}" is not a positive integer`);
        return 2;
      }
      const modes = (v.mode ?? "nested,shadow").split(",");
      const bad = modes.find((m) => m !== "nested" && m !== "shadow" && m !== "ir-only");
      if (bad !== undefined) {
        io.err(`--mode: "${bad}" is not nested, shadow or ir-only`);
        return 2;
      }
      return campaignCommand(io, selected.plugins, all, { steps, seed, modes: modes as ("nested" | "shadow" | "ir-only")[] }, json);
    }
    case "bench": {
      const selected = selectVendors(installed.plugins, v.vendor ?? "all");
      if ("error" in selected) {
        io.err(selected.error);
        return 2;
      }
      return benchCommand(io, selected.plugins, json, v.only?.split(","));
    }
    default:
      process.stderr.write(`unknown command "${command}"\n${USAGE}\n`);
      return 2;
  }
}

main(process.argv.slice(2)).then(
  (code) => {
    process.exitCode = code;
  },
  (e: unknown) => {
    process.stderr.write(`viommu: ${e instanceof Error ? (e.stack ?? e.message) : String(e)}\n`);
    process.exitCode = 70;
  },
);
