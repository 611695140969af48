import { cpSync, existsSync, mkdirSync, readdirSync, readFileSync, writeFileSync } from "node:fs";
import { createRequire } from "node:module";
import { basename, dirname, join, resolve } from "node:path";
import type { Command } from "commander";
import type { CliContext } from "../cli/context.js";
import { fileProblem, UsageError } from "../cli/errors.js";
import type { Io } from "../io.js";

export interface NewBackendArgs {
  readonly directory: string;
  /** The plugin id (`viommu --vendor ID`): lower-case letters, digits and dashes. */
  readonly id: string;
  readonly displayName?: string;
  readonly packageName?: string;
}

const require = createRequire(import.meta.url);

function versionOf(pkg: string): string {
  return (JSON.parse(readFileSync(require.resolve(`${pkg}/package.json`), "utf8")) as { version: string }).version;
}

/** The standalone package around the template's sources: its own build, tests and discovery by `viommu`. */
function packageJson(args: NewBackendArgs): Record<string, unknown> {
  const core = `^${versionOf("@viommu/core")}`;
  return {
    name: args.packageName ?? `viommu-${args.id}`,
    version: "0.1.0",
    description: `${args.displayName ?? args.id}: a viommu vendor plugin`,
    type: "module",
    license: "MIT",
    exports: {
      ".": { types: "./dist/index.d.ts", default: "./dist/index.js" },
      "./plugin": { types: "./dist/plugin.d.ts", default: "./dist/plugin.js" },
      "./package.json": "./package.json",
    },
    files: ["dist", "src", "README.md"],
    // `kind: vendor`: default runs of viommu (conformance, demo) include it.
    viommu: { plugin: "./plugin", kind: "vendor" },
    scripts: {
      build: "tsc -p .",
      test: "tsc -p . && tsc -p tsconfig.test.json && vitest run",
      conformance: "npm run build && viommu conformance --plugin .",
    },
    peerDependencies: { "@viommu/core": core },
    devDependencies: {
      "@viommu/core": core,
      "@viommu/conformance": `^${versionOf("@viommu/conformance")}`,
      "@viommu/cli": `^${versionOf("@viommu/cli")}`,
      "@types/node": "^20.19.0",
      "fast-check": "^4.0.0",
      typescript: "^7.0.2",
      vitest: "^4.1.0",
    },
    engines: { node: ">=20.19" },
  };
}

const compilerOptions = {
  target: "ES2022",
  lib: ["ES2023"],
  module: "NodeNext",
  moduleResolution: "NodeNext",
  strict: true,
  noImplicitOverride: true,
  experimentalDecorators: true,
  emitDecoratorMetadata: true,
  skipLibCheck: true,
  types: ["node"],
};

function readme(args: NewBackendArgs): string {
  return `# ${args.displayName ?? args.id}

A viommu vendor plugin, started from the viommu mock backend: a whole plugin (format/, hw/, vmm/, guest/,
plugin.ts) with a simple format of its own. Replace the formats with your hardware's and keep the rooms.

\`\`\`sh
npm install
npm test                 # its own tests, written against the plugin it contains
npm run conformance      # the cross-vendor suite on this plugin (viommu conformance --plugin .)
npx viommu plugins       # viommu finds the package it runs in
\`\`\`

## Capabilities
Declare every capability in \`src/plugin.ts\`; each one you do not claim needs its reason in
\`capabilities.reasons\` (viommu refuses to load a plugin without one: the reason is what the conformance suite
shows for the cases that do not apply).

## uAPI type numbers
iommufd tells vendors' objects apart by type numbers: \`IOMMU_VIOMMU_TYPE_*\`, \`IOMMU_HWPT_DATA_*\`,
\`IOMMU_HW_INFO_TYPE_*\`, \`IOMMU_VEVENTQ_TYPE_*\`, \`IOMMU_HW_QUEUE_TYPE_*\` (include/uapi/linux/iommufd.h). For a
vIOMMU that Linux already knows, use Linux's values. For a new one, pick values Linux does not use (the
template's are the mock's, 0xdead…/0xbeef…, which Linux's selftest also uses: change them) and run
\`npx viommu plugins\`: it warns when two installed plugins use the same number for the same kind of object.
`;
}

/** `viommu new-backend`: a standalone plugin package from the mock backend's sources and tests. */
export function newBackendCommand(io: Io, args: NewBackendArgs): number {
  if (!/^[a-z][a-z0-9-]*$/.test(args.id)) throw new UsageError(`--id: "${args.id}" is not lower-case letters, digits and dashes`);
  const target = resolve(args.directory);
  if (existsSync(target) && readdirSync(target).length > 0) throw new UsageError(`${args.directory}: the directory exists and is not empty`);
  const template = dirname(require.resolve("@viommu/example-mock/package.json"));
  try {
    mkdirSync(target, { recursive: true });
    for (const dir of ["src", "test"]) cpSync(join(template, dir), join(target, dir), { recursive: true });
    const pluginFile = join(target, "src/plugin.ts");
    const plugin = readFileSync(pluginFile, "utf8");
    const renamed = plugin.replace(/id: "mock"/, `id: ${JSON.stringify(args.id)}`).replace(/displayName: "[^"]*"/, `displayName: ${JSON.stringify(args.displayName ?? args.id)}`);
    if (renamed === plugin) throw new UsageError("the template's plugin.ts has no id to rename (is @viommu/example-mock current?)");
    writeFileSync(pluginFile, renamed);
    writeFileSync(join(target, "package.json"), `${JSON.stringify(packageJson(args), null, 2)}\n`);
    writeFileSync(join(target, "tsconfig.json"), `${JSON.stringify({ compilerOptions: { ...compilerOptions, rootDir: "src", outDir: "dist", declaration: true, sourceMap: true }, include: ["src"] }, null, 2)}\n`);
    writeFileSync(join(target, "tsconfig.test.json"), `${JSON.stringify({ compilerOptions: { ...compilerOptions, noEmit: true }, include: ["src", "test"] }, null, 2)}\n`);
    writeFileSync(join(target, "vitest.config.ts"), `import { defineConfig } from "vitest/config";\n\nexport default defineConfig({ test: { include: ["test/**/*.test.ts"], testTimeout: 120_000 } });\n`);
    writeFileSync(join(target, "README.md"), readme(args));
    writeFileSync(join(target, ".gitignore"), "node_modules\ndist\n");
  } catch (e) {
    if (e instanceof UsageError) throw e;
    throw fileProblem("new-backend", args.directory, e);
  }
  io.out(`created ${basename(target)} (plugin id ${args.id}) in ${target}: cd there, npm install, npm test, npm run conformance`);
  return 0;
}

export function registerNewBackend(program: Command, ctx: CliContext): void {
  program
    .command("new-backend")
    .description("create a standalone vendor plugin package from the mock backend (its own build, tests and conformance run)")
    .argument("<directory>", "where to create it (absent or empty)")
    .requiredOption("--id <id>", "the plugin id (lower-case, used as --vendor)")
    .option("--name <text>", "display name")
    .option("--package-name <name>", "npm package name (default viommu-<id>)")
    .action((directory: string, opts: { id: string; name?: string; packageName?: string }) => {
      ctx.exit(newBackendCommand(ctx.io(false), { directory, id: opts.id, displayName: opts.name, packageName: opts.packageName }));
    });
}
