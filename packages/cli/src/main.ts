#!/usr/bin/env node
import "reflect-metadata";
import { processContext } from "./cli/context.js";
import { runCli } from "./cli/program.js";

// `viommu … | head`: the reader went away; stop quietly, as a Unix tool does.
for (const stream of [process.stdout, process.stderr]) {
  stream.on("error", (e: NodeJS.ErrnoException) => {
    if (e.code === "EPIPE") process.exit(process.exitCode ?? 0);
    throw e;
  });
}

runCli(process.argv.slice(2), processContext(), { out: (s) => process.stdout.write(s), err: (s) => process.stderr.write(s) }).then(
  (code) => {
    process.exitCode = code;
  },
  (e: unknown) => {
    // Only a bug gets here: say so with the stack, so it can be reported.
    process.stderr.write(`viommu: internal error: ${e instanceof Error ? (e.stack ?? e.message) : String(e)}\n`);
    process.exitCode = 70;
  },
);
