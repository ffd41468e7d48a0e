import { defineConfig } from "vitest/config";

// Every test runs against both WebAssembly builds: release (what users run and bench measures) and
// debug (assertions on). src/core/wasm.ts picks the build from MEMVIRT_BUILD. The debug build runs a
// quarter of the fast-check differential cases (FC_RUNS_SCALE): the release build runs all of them, and
// the debug build's part is its assertions, which a quarter of the cases exercise as well. The cluster
// tests (real redis-server and Slurm daemons, sweeps across processes) test the engines around the
// core, not the core: they run once, on the release build.
const cluster = "test/cluster/**/*.test.ts";
export default defineConfig({
  test: {
    testTimeout: 120_000,
    hookTimeout: 120_000,
    projects: [
      {
        extends: true,
        test: {
          name: "release",
          include: ["test/**/*.test.ts"],
          exclude: [cluster],
          env: { MEMVIRT_BUILD: "release" },
        },
      },
      {
        extends: true,
        test: {
          name: "debug",
          include: ["test/**/*.test.ts"],
          exclude: [cluster],
          env: { MEMVIRT_BUILD: "debug", FC_RUNS_SCALE: process.env.FC_RUNS_SCALE ?? "0.25" },
        },
      },
      { extends: true, test: { name: "cluster", include: [cluster], env: { MEMVIRT_BUILD: "release" } } },
    ],
  },
});
