// `memvirt compare`: one workload under every translation technique and page-size pairing, so the cost
// of each technique shows side by side: cycles per access, slowdown against bare metal with the same
// guest page size, TLB misses, walk references by dimension, and VM exits.
import type { Mode, ResolvedConfig } from "../config/config.js";
import type { PageSize } from "../core/types.js";
import type { BuildName } from "../core/wasm.js";
import { attachConfig, buildReport, type RunReport } from "../report/report.js";
import { Simulation } from "../runner/simulation.js";
import { count } from "../util/count.js";
import { drain, type Steps } from "../util/steps.js";
import { type HostWorkloadSpec, workloadSteps } from "../workload/run.js";

export interface CompareRow {
  mode: Mode;
  guestPageSize: PageSize;
  hostPageSize: PageSize | null;
  accesses: number;
  cycles: number;
  cyclesPerAccess: number;
  /** Against native with the same guest page size. */
  slowdown: number;
  stlbMisses: number;
  walks: number;
  walkRefs: number;
  refsPerWalk: number;
  nestedRefs: number;
  vmExits: number;
  exitsPerMillionAccesses: number;
  /** Share of cycles spent in exits and hypervisor handlers. */
  hypervisorCycleShare: number;
  /** With a workload that changes page tables: the guest's address-space system calls. */
  syscalls?: number;
  /** With a workload that shoots down TLBs: the guest's shootdowns, and the VM exits they cost. */
  shootdowns?: number;
  shootdownExits?: number;
}

export interface CompareResult {
  workload: HostWorkloadSpec;
  rows: CompareRow[];
  /** Set when the comparison was stopped (SIGINT, SIGTERM): the rows are the pairings that finished. */
  interrupted?: boolean;
}

const PAIRINGS: { mode: Mode; guest: PageSize; host: PageSize | null }[] = [
  { mode: "native", guest: "4K", host: null },
  { mode: "native", guest: "2M", host: null },
  { mode: "pv", guest: "4K", host: "4K" },
  { mode: "pv", guest: "2M", host: "2M" },
  { mode: "shadow", guest: "4K", host: "4K" },
  { mode: "shadow", guest: "2M", host: "2M" },
  { mode: "ept", guest: "4K", host: "4K" },
  { mode: "ept", guest: "4K", host: "2M" },
  { mode: "ept", guest: "2M", host: "4K" },
  { mode: "ept", guest: "2M", host: "2M" },
  { mode: "npt", guest: "4K", host: "4K" },
  { mode: "npt", guest: "4K", host: "2M" },
  { mode: "npt", guest: "2M", host: "4K" },
  { mode: "npt", guest: "2M", host: "2M" },
];

/**
 * The comparison as steps (util/steps.ts): every batch of every pairing's run, yielding its record
 * count. Rows are pushed to `result.rows` as each pairing finishes, so an interrupted comparison still
 * has the rows before it.
 */
export function* compareSteps(
  base: ResolvedConfig,
  workload: HostWorkloadSpec,
  build: BuildName,
  modes: readonly Mode[],
  result: CompareResult = attachConfig({ workload, rows: [] }, base),
  onRow?: (row: CompareRow) => void,
): Steps<CompareResult> {
  const rows = result.rows;
  const nativeCycles = new Map<PageSize, number>();
  for (const pairing of PAIRINGS) {
    if (!modes.includes(pairing.mode)) continue;
    const config: ResolvedConfig = structuredClone(base);
    config.mode = pairing.mode;
    config.guest.pageSize = pairing.guest;
    if (pairing.host) config.host.pageSize = pairing.host;
    const simulation = new Simulation(config, { build });
    simulation.start();
    yield* workloadSteps(simulation, workload);
    const report: RunReport = buildReport(simulation, { kind: "workload", ...workload });
    const v = report.virtualization;
    const hypervisorCycles = v
      ? v.cycles.vmExits + v.cycles.tdp + v.cycles.shadow + v.cycles.hypercalls + v.cycles.emulation
      : 0;
    if (pairing.mode === "native") nativeCycles.set(pairing.guest, report.cyclesPerAccess);
    const native = nativeCycles.get(pairing.guest);
    const row: CompareRow = {
      mode: pairing.mode,
      guestPageSize: pairing.guest,
      hostPageSize: pairing.host,
      accesses: report.accesses,
      cycles: report.cycles,
      cyclesPerAccess: report.cyclesPerAccess,
      slowdown: native ? +(report.cyclesPerAccess / native).toFixed(3) : 0,
      stlbMisses: report.tlb.l2.misses,
      walks: report.walks,
      walkRefs: report.walkRefs,
      refsPerWalk: report.refsPerWalk,
      nestedRefs: v?.walkRefsByDimension.nested ?? 0,
      vmExits: v?.exitsTotal ?? 0,
      exitsPerMillionAccesses: +(((v?.exitsTotal ?? 0) * 1e6) / Math.max(1, report.accesses)).toFixed(1),
      hypervisorCycleShare: +(hypervisorCycles / Math.max(1, report.cycles)).toFixed(4),
    };
    if (report.syscalls) row.syscalls = Object.values(report.syscalls.calls).reduce((a, b) => a + b, 0);
    if (report.shootdowns) {
      row.shootdowns = report.shootdowns.shootdowns;
      row.shootdownExits = report.shootdowns.technique.exits ?? 0;
    }
    rows.push(row);
    onRow?.(row);
  }
  return result;
}

/** The pairings of `modes` a comparison runs. */
export function comparePairings(modes: readonly Mode[]): number {
  return PAIRINGS.filter((pairing) => modes.includes(pairing.mode)).length;
}

export function runCompare(
  base: ResolvedConfig,
  workload: HostWorkloadSpec,
  build: BuildName,
  modes: readonly Mode[],
  onRow?: (row: CompareRow) => void,
): CompareResult {
  return drain(compareSteps(base, workload, build, modes, undefined, onRow));
}

/** The techniques' table: its columns, and a row's cells as every form of the table (text, HTML,
 * the playground) shows them. */
export const COMPARE_COLUMNS = [
  "mode",
  "guest/host",
  "cycles/access",
  "vs native",
  "STLB misses",
  "walks",
  "refs/walk",
  "nested refs",
  "VM exits",
  "exits/M",
  "hv cycles",
];

/** Columns a workload that changes its page tables adds (the rows carry shootdowns). */
export const CHURN_COLUMNS = ["shootdowns", "their exits"];

/** A row's cells; `churn` adds CHURN_COLUMNS' cells. */
export function compareCells(r: CompareRow, churn = false): string[] {
  return [
    r.mode,
    `${r.guestPageSize}/${r.hostPageSize ?? "-"}`,
    r.cyclesPerAccess.toFixed(2),
    r.mode === "native" ? "1.00x" : `${r.slowdown.toFixed(2)}x`,
    count(r.stlbMisses),
    count(r.walks),
    r.refsPerWalk.toFixed(2),
    count(r.nestedRefs),
    count(r.vmExits),
    count(r.exitsPerMillionAccesses),
    `${(100 * r.hypervisorCycleShare).toFixed(1)}%`,
    ...(churn ? [count(r.shootdowns ?? 0), count(r.shootdownExits ?? 0)] : []),
  ];
}

/** The table of a comparison: its header and one line of cells per row. */
export function compareTable(result: CompareResult): { header: string[]; lines: string[][] } {
  const churn = result.rows.some((r) => r.shootdowns !== undefined);
  return {
    header: churn ? [...COMPARE_COLUMNS, ...CHURN_COLUMNS] : COMPARE_COLUMNS,
    lines: result.rows.map((r) => compareCells(r, churn)),
  };
}

export function formatCompare(result: CompareResult): string {
  const w = result.workload;
  const { header, lines } = compareTable(result);
  const churn = header.length > COMPARE_COLUMNS.length;
  const widths = header.map((h, i) => Math.max(h.length, ...lines.map((l) => l[i].length)));
  const format = (cells: string[]) =>
    cells.map((c, i) => (i < 2 ? c.padEnd(widths[i]) : c.padStart(widths[i]))).join("  ");
  return [
    `memvirt compare: ${count(w.records)} ${w.name} accesses over ${w.footprint / 2 ** 20} MiB (seed ${w.seed})`,
    "",
    format(header),
    ...lines.map(format),
    "",
    "vs native: cycles per access against bare metal with the same guest page size. exits/M: VM exits per",
    "million accesses. hv cycles: share of all cycles spent in VM exits and hypervisor handlers.",
    ...(churn
      ? [
          "shootdowns: TLB flushes the guest sent to other vCPUs; their exits: the VM exits those took (IPIs,",
          "the targets' trapped flushes under shadow paging; PV: its flush hypercalls).",
        ]
      : []),
  ].join("\n");
}
