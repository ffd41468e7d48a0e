#!/usr/bin/env node
// Golden outputs: the JSON of a fixed set of CLI runs (every mode and page-size pairing, every trace
// format, the DMA and multi-VM workloads, compare and the seed table). A restructuring keeps every one
// byte-identical unless its commit names the bug it fixes.
//   node scripts/golden.mjs          compare against test/golden/*.json (exit 1 on a difference)
//   node scripts/golden.mjs --write  record them
//   node scripts/golden.mjs --only NAME
import { execFileSync } from "node:child_process";
import { existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";

const root = join(dirname(fileURLToPath(import.meta.url)), "..");
const goldenDir = join(root, "test", "golden");
const fx = (name) => join("test", "fixtures", name);
const tmp = mkdtempSync(join(tmpdir(), "memvirt-golden-"));
const configFile = (name, obj) => {
  const path = join(tmp, `${name}.json`);
  writeFileSync(path, JSON.stringify(obj));
  return path;
};

const runs = [];
const add = (name, args) => runs.push({ name, args });

// Every mode and page-size pairing on a synthetic workload.
const pairs = [
  ["native", "4K", "4K"],
  ["native", "2M", "4K"],
];
for (const mode of ["pv", "shadow", "ept", "npt"])
  for (const g of ["4K", "2M"]) for (const h of ["4K", "2M"]) pairs.push([mode, g, h]);
for (const [mode, g, h] of pairs) {
  const cfg = configFile(`${mode}-${g}-${h}`, { mode, guest: { pageSize: g }, host: { pageSize: h } });
  add(`zipf-${mode}-${g}-${h}`, [
    "run",
    "--config",
    cfg,
    "--workload",
    "zipf",
    "--records",
    "60000",
    "--footprint",
    "64M",
    "--json",
  ]);
}
// Every synthetic workload, native and EPT.
for (const w of ["sequential", "strided", "uniform", "pointer-chase"]) {
  add(`${w}-native`, ["run", "--workload", w, "--records", "40000", "--footprint", "32M", "--json"]);
  add(`${w}-ept`, [
    "run",
    "--config",
    configFile("ept", { mode: "ept" }),
    "--workload",
    w,
    "--records",
    "40000",
    "--footprint",
    "32M",
    "--json",
  ]);
}
// Every trace format, and every mode on a real trace.
add("trace-lackey", ["run", "--trace", fx("ls.lk"), "--json"]);
add("trace-din", ["run", "--trace", fx("ls.din"), "--json"]);
add("trace-pinatrace", ["run", "--trace", fx("ls-head.pinatrace"), "--json"]);
add("trace-champsim-xz", ["run", "--trace", fx("ls-head.champsim.xz"), "--json"]);
add("trace-champsim-gz", ["run", "--trace", fx("ls-head.champsim.gz"), "--json"]);
add("trace-memvirt", ["run", "--trace", join(tmp, "ls-head.mvt"), "--json"]);
for (const mode of ["pv", "shadow", "ept", "npt"])
  add(`trace-lackey-${mode}`, [
    "run",
    "--config",
    configFile(mode, { mode }),
    "--trace",
    fx("ls-head.lk"),
    "--json",
  ]);
add("trace-din-fifo", [
  "run",
  "--config",
  configFile("fifo", { tlb: { l1d: { entries: 16, ways: 2, policy: "fifo" }, l2: null } }),
  "--trace",
  fx("ls.din"),
  "--json",
]);
// DMA workloads under both IOMMUs.
for (const w of ["dma-nic", "dma-nvme", "dma-gpu"]) {
  add(`${w}-vtd`, ["run", "--workload", w, "--records", "3000", "--json"]);
  add(`${w}-amdvi`, [
    "run",
    "--config",
    configFile("amdvi", { iommu: { kind: "amdvi" } }),
    "--workload",
    w,
    "--records",
    "3000",
    "--json",
  ]);
}
add("dma-nic-passthrough", [
  "run",
  "--config",
  configFile("pt", { mode: "ept", host: { pageSize: "2M" }, iommu: { mode: "passthrough" } }),
  "--workload",
  "dma-nic",
  "--records",
  "3000",
  "--json",
]);
// Multi-VM workloads.
add("identical-vms", [
  "run",
  "--workload",
  "identical-vms",
  "--vms",
  "3",
  "--pages-per-vm",
  "1024",
  "--records",
  "50000",
  "--seconds",
  "2",
  "--json",
]);
add("cloud-mix", [
  "run",
  "--workload",
  "cloud-mix",
  "--vms",
  "3",
  "--pages-per-vm",
  "1024",
  "--records",
  "50000",
  "--seconds",
  "2",
  "--json",
]);
add("memory-hog", [
  "run",
  "--config",
  "examples/overcommit.json",
  "--workload",
  "memory-hog",
  "--pages-per-vm",
  "1024",
  "--records",
  "100000",
  "--seconds",
  "2",
  "--json",
]);
// Page-table churn: the guest's system calls under each kind of technique, shootdowns on 4 vCPUs.
for (const mode of ["native", "pv", "shadow", "ept"])
  add(`pt-churn-${mode}`, [
    "run",
    "--config",
    configFile(`churn-${mode}`, { mode }),
    "--workload",
    "pt-churn",
    "--records",
    "20000",
    "--json",
  ]);
add("mmap-churn-shadow", [
  "run",
  "--config",
  configFile("mmap-churn", { mode: "shadow", cpus: 2 }),
  "--workload",
  "mmap-churn",
  "--records",
  "20000",
  "--footprint",
  "2M",
  "--json",
]);
for (const [mode, ipi] of [
  ["ept", "exit"],
  ["npt", "posted"],
  ["shadow", "exit"],
  ["pv", "exit"],
])
  add(`threads-shootdown-${mode}`, [
    "run",
    "--config",
    configFile(`threads-${mode}`, { mode, cpus: 4, hypervisor: { ipi } }),
    "--workload",
    "threads-shootdown",
    "--records",
    "20000",
    "--footprint",
    "2M",
    "--json",
  ]);
for (const kind of ["vtd", "amdvi"])
  add(`dma-faulty-${kind}`, [
    "run",
    "--config",
    configFile(`faulty-${kind}`, { iommu: { kind } }),
    "--workload",
    "dma-faulty",
    "--records",
    "3000",
    "--json",
  ]);
// compare, the IOMMU compare, and the seed table.
add("compare-zipf", ["compare", "--workload", "zipf", "--records", "30000", "--footprint", "32M", "--json"]);
add("compare-dma-nvme", ["compare", "--workload", "dma-nvme", "--records", "2000", "--json"]);
add("compare-pt-churn", ["compare", "--workload", "pt-churn", "--records", "10000", "--json"]);
add("seed-table", ["compare", "--seed-table", "--json"]);
add("demo", ["demo", "--json"]);

const write = process.argv.includes("--write");
const onlyAt = process.argv.indexOf("--only");
const only = onlyAt > 0 ? process.argv[onlyAt + 1] : undefined;
if (!existsSync(goldenDir)) mkdirSync(goldenDir, { recursive: true });

// A run's output as JSON: its --json object, or, for a run that fails, its exit code and messages.
function cli(args) {
  try {
    return execFileSync(process.execPath, [join(root, "bin", "memvirt.js"), ...args], {
      cwd: root,
      encoding: "utf8",
      maxBuffer: 1 << 28,
      stdio: ["ignore", "pipe", "pipe"],
    });
  } catch (error) {
    return JSON.stringify({ exit: error.status, stdout: error.stdout, stderr: error.stderr });
  }
}
// Keys that hold host measurements (wall-clock time) rather than simulated results.
const VOLATILE = new Set(["seconds", "wallSeconds", "elapsedSeconds", "recordsPerSecond"]);
// The effective config every --json report carries (`config`, an object) is not a result: its
// round trip through --config is tested on its own (test/cli/presets.test.ts), and it would change
// every file here whenever a config key is added.
const notResult = (k, v) => VOLATILE.has(k) || (k === "config" && typeof v === "object" && v !== null);
function stable(text) {
  return `${JSON.stringify(JSON.parse(text), (k, v) => (notResult(k, v) ? undefined : v), 2)}\n`;
}

cli(["convert", fx("ls-head.lk"), "--out", join(tmp, "ls-head.mvt")]);
let failed = 0;
const selected = runs.filter((r) => !only || r.name.includes(only));
for (const run of selected) {
  const shown = stable(cli(run.args)).replaceAll(tmp, "<tmp>");
  const file = join(goldenDir, `${run.name}.json`);
  if (write) writeFileSync(file, shown);
  else if (!existsSync(file) || readFileSync(file, "utf8") !== shown) {
    failed++;
    writeFileSync(`${file}.actual`, shown);
    console.log(`DIFFERS ${run.name} (see ${file}.actual)`);
  } else console.log(`same    ${run.name}`);
}
rmSync(tmp, { recursive: true, force: true });
console.log(
  write ? `wrote ${selected.length} golden outputs` : `${selected.length - failed} same, ${failed} differ`,
);
process.exit(failed ? 1 : 0);
