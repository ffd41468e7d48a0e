import { availableParallelism } from "node:os";
import { defineConfig } from "vitest/config";

// Every test runs against both WebAssembly builds: release (what users run and bench measures) and
// debug (assertions on). src/core/wasm.ts picks the build from MEMVIRT_BUILD. The debug build runs a
// quarter of the fast-check differential cases (FC_RUNS_SCALE): the release build runs all of them, and
// the debug build's part is its assertions, which a quarter of the cases exercise as well.
// Three projects run once, on the release build, because they test what surrounds the core, not the core:
// the package as a user installs it (npm pack, install, Node, esbuild, Chromium), the cluster engines
// (real redis-server and Slurm daemons, sweeps across processes), and the playground (the site built
// once, served by memvirt web, every view driven in Chromium).
const once = ["test/package/**", "test/cluster/**", "test/web/**"];
export default defineConfig({
  test: {
    // One test file per CPU. Vitest's default leaves a CPU to its main process, which only waits here:
    // on a 2-core machine that would run the files one at a time.
    maxWorkers: availableParallelism(),
    testTimeout: 120_000,
    hookTimeout: 120_000,
    projects: [
      {
        extends: true,
        test: {
          name: "release",
          include: ["test/**/*.test.ts"],
          exclude: once,
          env: { MEMVIRT_BUILD: "release" },
        },
      },
      {
        extends: true,
        test: {
          name: "debug",
          include: ["test/**/*.test.ts"],
          exclude: once,
          env: { MEMVIRT_BUILD: "debug", FC_RUNS_SCALE: process.env.FC_RUNS_SCALE ?? "0.25" },
        },
      },
      { extends: true, test: { name: "package", include: ["test/package/**/*.test.ts"] } },
      {
        extends: true,
        test: { name: "cluster", include: ["test/cluster/**/*.test.ts"], env: { MEMVIRT_BUILD: "release" } },
      },
      { extends: true, test: { name: "web", include: ["test/web/**/*.test.ts"], env: { MEMVIRT_BUILD: "release" } } },
    ],
  },
});
