import { readdirSync, existsSync } from "node:fs";
import { defineConfig } from "vitest/config";

// Workspace packages resolve to their TypeScript sources in tests (the "viommu-source" export
// condition), so `npm test` needs no build step to see a change.
const conditions = ["viommu-source"];

const projectDirs = ["packages", "examples"].flatMap((top) =>
  existsSync(top) ? readdirSync(top, { withFileTypes: true }).filter((d) => d.isDirectory()).map((d) => `${top}/${d.name}`) : [],
);

export default defineConfig({
  resolve: { conditions },
  ssr: { resolve: { conditions } },
  test: {
    // Conformance cases run a hostile campaign each: seconds, not milliseconds, on a loaded machine.
    testTimeout: 120_000,
    projects: projectDirs.map((dir) => ({
      extends: true,
      test: {
        name: dir.split("/")[1],
        root: dir,
        include: ["test/**/*.test.ts", "src/**/*.test.ts"],
      },
    })),
  },
});
