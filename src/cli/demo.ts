// The embedded default job (`npm start`): one workload, run with 4K and with 2M guest pages on the
// default Skylake-class machine, to show what page size does to TLB reach and walk cost.
import { defaultConfig } from "../config/config.js";
import type { BuildName } from "../core/wasm.js";
import { buildReport, formatRows, type RunReport } from "../report/report.js";
import { Simulation } from "../runner/simulation.js";
import { count } from "../util/count.js";
import { drain, type Steps } from "../util/steps.js";
import { workloadSteps } from "../workload/run.js";
import type { WorkloadSpec } from "../workload/synthetic.js";

/** Zipf-skewed accesses over 512 MiB: far more 4K pages than the STLB's 1536 entries cover. */
export const DEMO_WORKLOAD: WorkloadSpec = {
  name: "zipf",
  records: 4_000_000,
  footprint: 512 * 2 ** 20,
  zipfS: 0.8,
  writeFraction: 0.3,
  seed: 42,
};

export interface DemoResult {
  workload: WorkloadSpec;
  runs: Record<"4K" | "2M", RunReport>;
}

export function runDemo(build: BuildName = "release"): DemoResult {
  return drain(demoSteps(build));
}

/** The demo as steps (util/steps.ts): both runs' batches, yielding their record counts. */
export function* demoSteps(build: BuildName = "release"): Steps<DemoResult> {
  const runs = {} as DemoResult["runs"];
  for (const pageSize of ["4K", "2M"] as const) {
    const config = defaultConfig();
    config.guest.pageSize = pageSize;
    const simulation = new Simulation(config, { build });
    simulation.start();
    yield* workloadSteps(simulation, DEMO_WORKLOAD);
    runs[pageSize] = buildReport(simulation, { kind: "workload", ...DEMO_WORKLOAD });
  }
  return { workload: DEMO_WORKLOAD, runs };
}

export function formatDemo(result: DemoResult): string {
  const { "4K": small, "2M": large } = result.runs;
  const w = result.workload;
  const change = (before: number, after: number) =>
    before === 0
      ? "-"
      : `${after < before ? "-" : after > before ? "+" : ""}${Math.abs((100 * (after - before)) / before).toFixed(1)}%`;
  const n = count;
  const stlbMisses = (r: RunReport) => r.tlb.l2.misses;
  const rows: [string, string][] = [
    ["", `${"4K pages".padStart(16)} ${"2M pages".padStart(16)} ${"change".padStart(9)}`],
  ];
  const row = (label: string, a: number, b: number) =>
    rows.push([label, `${n(a).padStart(16)} ${n(b).padStart(16)} ${change(a, b).padStart(9)}`]);
  row("accesses", small.accesses, large.accesses);
  row("L1 DTLB misses", small.tlb.l1d.misses, large.tlb.l1d.misses);
  row("STLB misses", stlbMisses(small), stlbMisses(large));
  row("page walks", small.walks, large.walks);
  row("walk references", small.walkRefs, large.walkRefs);
  row("walk refs from DRAM", small.cache.dram, large.cache.dram);
  row("demand-paging faults", small.guestOs.minorFaults, large.guestOs.minorFaults);
  row("page tables built", small.guestOs.tablesAllocated, large.guestOs.tablesAllocated);
  row("cycles", small.cycles, large.cycles);
  rows.push([
    "cycles per access",
    `${small.cyclesPerAccess.toFixed(2).padStart(16)} ${large.cyclesPerAccess.toFixed(2).padStart(16)} ${change(small.cyclesPerAccess, large.cyclesPerAccess).padStart(9)}`,
  ]);
  const header =
    `memvirt demo: ${n(w.records)} ${w.name} accesses (s=${w.zipfS}) over ${w.footprint / 2 ** 20} MiB, ` +
    "native 4-level paging on a Skylake-class core\n" +
    "(L1 DTLB 64x4K/32x2M, STLB 1536 4K+2M entries, PSCs on, page-table lines priced by L1/L2/LLC/DRAM)\n";
  return `${header}\n${formatRows(rows)}\n\nRun your own: memvirt run --workload zipf --footprint 1G --json, or --trace FILE.`;
}
