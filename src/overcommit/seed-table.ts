// `memvirt compare --seed-table`: the classic comparison table of memory-virtualization techniques,
// with every number measured by a run: EPT/NPT, shadow paging and paravirtual page tables (on a
// TLB-miss-heavy workload and on one whose page tables churn), ballooning, KSM, huge pages, the IOMMU,
// compression and swap. Each row is a provider (a function returning its measured row) in
// SEED_TABLE_ROWS.
import { type ResolvedConfig, resolveConfig } from "../config/config.js";
import type { BuildName } from "../core/wasm.js";
import { platformOf, runDmaWorkload } from "../iommu/workload.js";
import { Simulation } from "../runner/simulation.js";
import { count } from "../util/count.js";
import { drain, type Steps } from "../util/steps.js";
import { defaultMultiVmOptions, MultiVm, type MultiVmOptions } from "../workload/multivm.js";
import { type HostWorkloadSpec, runWorkload } from "../workload/run.js";
import { OvercommitHost } from "./host.js";

export interface SeedRow {
  technique: string;
  scenario: string;
  /** Cycles per access with the technique, and of the baseline it is measured against. */
  cyclesPerAccess: number;
  baselineCyclesPerAccess: number;
  baseline: string;
  /** Cycles per access against the baseline's; null when the baseline spends none (DMA without an IOMMU). */
  slowdown: number | null;
  /** Host memory saved, in 4 KiB pages (negative: the technique costs memory). */
  pagesSaved: number;
  /** Saved pages as a share of the memory the VMs use without the technique. */
  savedShare: number;
  exitsPerMillionAccesses: number;
}

export type SeedRowProvider = (build: BuildName) => SeedRow;

const ZIPF = { name: "zipf" as const, records: 200_000, footprint: 64 * 2 ** 20, seed: 1 };
const PT_CHURN = { name: "pt-churn" as const, records: 40_000, footprint: 2 ** 20, seed: 1 };

interface SingleRun {
  cpa: number;
  accesses: number;
  exits: number;
  backedPages: number;
  /** Host frames the technique's own tables take (EPT/NPT tables, shadow pages). */
  tables: number;
}

/** Single-VM runs of this table, by mode, pages and workload: several rows compare against one run. */
const singleRuns = new Map<string, SingleRun>();

function single(
  mode: "native" | "ept" | "pv" | "shadow",
  guest: "4K" | "2M",
  host: "4K" | "2M",
  build: BuildName,
  workload: HostWorkloadSpec = ZIPF,
): SingleRun {
  const key = `${mode} ${guest} ${host} ${build} ${workload.name}`;
  const known = singleRuns.get(key);
  if (known) return known;
  const run = measureSingle(mode, guest, host, build, workload);
  singleRuns.set(key, run);
  return run;
}

function measureSingle(
  mode: "native" | "ept" | "pv" | "shadow",
  guest: "4K" | "2M",
  host: "4K" | "2M",
  build: BuildName,
  workload: HostWorkloadSpec,
): SingleRun {
  const config = resolveConfig({
    mode,
    guest: { memory: "4G", pageSize: guest },
    host: { memory: "16G", pageSize: host },
  });
  const simulation = new Simulation(config, { build });
  simulation.start();
  runWorkload(simulation, workload);
  const stats = simulation.stats();
  const technique = simulation.technique;
  const exits = technique ? Object.values(technique.exits()).reduce((a, b) => a + b, 0) : 0;
  const counters = technique?.stats() ?? {};
  return {
    cpa: stats.cycles / stats.accesses,
    accesses: stats.accesses,
    exits,
    backedPages: technique ? Number(technique.vm.backedBytes / 4096n) : 0,
    tables: counters.tables ?? counters.shadow_pages ?? 0,
  };
}

/**
 * A hypervisor technique against bare metal with 4K pages on one workload: its cycles per access, the
 * host frames its own tables take, its exits.
 */
function againstNative(
  technique: string,
  scenario: string,
  mode: "ept" | "pv" | "shadow",
  workload: HostWorkloadSpec,
  build: BuildName,
): SeedRow {
  const native = single("native", "4K", "4K", build, workload);
  const run = single(mode, "4K", "4K", build, workload);
  return {
    technique,
    scenario,
    cyclesPerAccess: round(run.cpa),
    baselineCyclesPerAccess: round(native.cpa),
    baseline: "native 4K",
    slowdown: round(run.cpa / native.cpa),
    // PV takes no tables of its own (the hardware walks the guest's): saved 0, not -0.
    pagesSaved: 0 - run.tables || 0,
    savedShare: round(-run.tables / Math.max(1, run.backedPages), 4) || 0,
    exitsPerMillionAccesses: round((run.exits * 1e6) / run.accesses, 1),
  };
}

interface HostRun {
  host: OvercommitHost;
  cpa: number;
  accesses: number;
  /** Guest pages the VMs have in host memory or parked (what they would use with nothing reclaimed). */
  vmPages: number;
}

function multi(
  overcommit: Record<string, unknown>,
  workload: Partial<MultiVmOptions>,
  hostMemory: string,
  build: BuildName,
): HostRun {
  const config: ResolvedConfig = resolveConfig({
    mode: "ept",
    guest: { memory: "1G" },
    host: { memory: hostMemory },
    overcommit: overcommit as Parameters<typeof resolveConfig>[0],
  });
  const spec = { ...defaultMultiVmOptions(workload.name ?? "identical-vms"), ...workload };
  const host = new OvercommitHost(config, new MultiVm(spec), { build });
  host.run();
  const stats = host.machine.stats();
  const vmPages = host.vms.reduce((sum, vm) => sum + vm.gvaToGpa.size, 0);
  return { host, cpa: stats.cycles / stats.accesses, accesses: stats.accesses, vmPages };
}

const OFF = { ksm: false, balloon: false, zswap: false, swap: false, controller: false, admissionRatio: 0 };
const round = (n: number, digits = 3) => +n.toFixed(digits);

/** Frames an allocator has handed out, in 4 KiB pages. */
const pagesOf = (allocated: Record<"4K" | "2M" | "1G", number>) =>
  allocated["4K"] + allocated["2M"] * 512 + allocated["1G"] * 512 * 512;

function overcommitRow(
  technique: string,
  scenario: string,
  workload: Partial<MultiVmOptions>,
  hostMemory: string,
  on: Record<string, unknown>,
  saved: (run: HostRun) => number,
  mechanism: "ksm" | "balloon" | "zswap" | "swap",
  build: BuildName,
): SeedRow {
  const base = multi(OFF, workload, "4G", build);
  const run = multi({ ...OFF, ...on }, workload, hostMemory, build);
  const pages = saved(run);
  return {
    technique,
    scenario,
    cyclesPerAccess: round(run.cpa),
    baselineCyclesPerAccess: round(base.cpa),
    baseline: "same VMs, EPT, no overcommit",
    slowdown: round(run.cpa / base.cpa),
    pagesSaved: pages,
    savedShare: round(pages / Math.max(1, base.vmPages), 4),
    exitsPerMillionAccesses: round((run.host.exitsBy[mechanism] * 1e6) / Math.max(1, run.accesses), 1),
  };
}

export const SEED_TABLE_ROWS: Record<string, SeedRowProvider> = {
  "EPT/NPT": (build) =>
    againstNative(
      "EPT/NPT",
      "any VM: every TLB miss walks guest and EPT tables (Zipf, 64 MiB)",
      "ept",
      ZIPF,
      build,
    ),
  "shadow paging": (build) =>
    againstNative(
      "shadow paging",
      "shadow page tables: TLB misses walk one dimension; guest #PFs and table writes exit (Zipf, 64 MiB)",
      "shadow",
      ZIPF,
      build,
    ),
  "PV page tables": (build) =>
    againstNative(
      "PV page tables",
      "trapped page-table updates (Xen PV): each an mmu_update hypercall, guest #PFs bounced (Zipf, 64 MiB)",
      "pv",
      ZIPF,
      build,
    ),
  "EPT/NPT, pt-churn": (build) =>
    againstNative(
      "EPT/NPT, pt-churn",
      "fork/exec of short-lived programs: the guest rewrites its own tables, no exit for it",
      "ept",
      PT_CHURN,
      build,
    ),
  "shadow paging, pt-churn": (build) =>
    againstNative(
      "shadow paging, pt-churn",
      "fork/exec of short-lived programs: every new address space shadowed again, table writes trap",
      "shadow",
      PT_CHURN,
      build,
    ),
  "PV page tables, pt-churn": (build) =>
    againstNative(
      "PV page tables, pt-churn",
      "fork/exec of short-lived programs: pins, batched updates, a hypercall per demand fault",
      "pv",
      PT_CHURN,
      build,
    ),
  "huge pages": (build) => {
    const native = single("native", "4K", "4K", build);
    const small = single("ept", "4K", "4K", build);
    const huge = single("ept", "2M", "2M", build);
    return {
      technique: "huge pages",
      scenario: "2M guest pages on 2M host backing (THP): TLB reach, whole 2M backing",
      cyclesPerAccess: round(huge.cpa),
      baselineCyclesPerAccess: round(native.cpa),
      baseline: "native 4K",
      slowdown: round(huge.cpa / native.cpa),
      pagesSaved: small.backedPages - huge.backedPages,
      savedShare: round((small.backedPages - huge.backedPages) / Math.max(1, small.backedPages), 4),
      exitsPerMillionAccesses: round((huge.exits * 1e6) / huge.accesses, 1),
    };
  },
  ballooning: (build) =>
    overcommitRow(
      "ballooning",
      "memory-hog grows past host memory; balloons take the other VMs' cold page cache",
      { name: "memory-hog", vms: 3, pagesPerVm: 1024, records: 200_000, seconds: 5 },
      "20M",
      { balloon: { deflateOnOom: true }, controller: { minFreePercent: 10 } },
      (run) => run.host.vms.reduce((sum, vm) => sum + (run.host.balloon?.actual(vm) ?? 0), 0),
      "balloon",
      build,
    ),
  KSM: (build) =>
    overcommitRow(
      "KSM",
      "4 VMs from one image (50% shared pages), writes to private pages",
      { name: "identical-vms", vms: 4, pagesPerVm: 2048, records: 200_000, seconds: 10, writeFraction: 0.3 },
      "64M",
      { ksm: {} },
      (run) => run.host.ksm?.savedPages ?? 0,
      "ksm",
      build,
    ),
  IOMMU: (build) => {
    // Host DMA protection: the same NVMe workload with the IOMMU off and with strict dma_map/dma_unmap.
    // A DMA request is the access; its cost is the IOMMU's translation cycles plus the driver's
    // map/unmap and invalidation cycles; the memory is the host frames the IOMMU's tables take.
    const dma = (mode: "off" | "strict") => {
      const base = resolveConfig({ iommu: { kind: "vtd", mode } });
      const simulation = new Simulation(base, { build });
      simulation.start();
      const platform = platformOf(simulation);
      const report = runDmaWorkload(platform, { name: "dma-nvme", operations: 20_000, seed: 1 });
      const exits = simulation.technique
        ? Object.values(simulation.technique.exits()).reduce((a, b) => a + b, 0)
        : 0;
      return {
        cpa: (report.cycles + report.driver.cycles) / Math.max(1, report.requests),
        requests: report.requests,
        exits,
        frames: pagesOf(platform.hostFrames.allocated),
      };
    };
    const off = dma("off");
    const strict = dma("strict");
    const pages = off.frames - strict.frames;
    return {
      technique: "IOMMU",
      scenario: "NVMe DMA through dma_map/dma_unmap with strict invalidation (VT-d), per DMA request",
      cyclesPerAccess: round(strict.cpa),
      baselineCyclesPerAccess: round(off.cpa),
      baseline: "IOMMU off",
      slowdown: off.cpa > 0 ? round(strict.cpa / off.cpa) : null,
      pagesSaved: pages,
      savedShare: round(pages / Math.max(1, off.frames), 4),
      exitsPerMillionAccesses: round((strict.exits * 1e6) / Math.max(1, strict.requests), 1),
    };
  },
  compression: (build) =>
    overcommitRow(
      "compression",
      "memory-hog growing past host memory; cold pages to zswap (lzo), rejects to NVMe swap",
      { name: "memory-hog", vms: 3, pagesPerVm: 1024, records: 200_000, seconds: 5 },
      "24M",
      { zswap: {}, swap: {}, controller: {} },
      (run) => (run.host.zswap ? run.host.zswap.counters.stored_pages - run.host.frames.poolFrames : 0),
      "zswap",
      build,
    ),
  swap: (build) =>
    overcommitRow(
      "swap",
      "memory-hog growing past host memory; cold pages to NVMe swap",
      { name: "memory-hog", vms: 3, pagesPerVm: 1024, records: 200_000, seconds: 5 },
      "24M",
      { swap: {}, controller: {} },
      (run) => run.host.swap?.counters.swap_pages ?? 0,
      "swap",
      build,
    ),
};

/** Rows of techniques that are not in this build (reported, not measured). */
export const SEED_TABLE_ABSENT: Record<string, string> = {};

export const SEED_TABLE_ORDER = [
  "EPT/NPT",
  "shadow paging",
  "PV page tables",
  "EPT/NPT, pt-churn",
  "shadow paging, pt-churn",
  "PV page tables, pt-churn",
  "ballooning",
  "KSM",
  "huge pages",
  "IOMMU",
  "compression",
  "swap",
];

export interface SeedTable {
  rows: SeedRow[];
  absent: Record<string, string>;
  /** Set when the table was stopped (SIGINT, SIGTERM): the rows are the ones that finished. */
  interrupted?: boolean;
}

/** Called as each row is done (for progress): the row, rows done so far and rows in all. */
export type OnSeedRow = (row: SeedRow, done: number, total: number) => void;

/** Measures every row; `onRow` hears of each row as it is done. */
export function runSeedTable(build: BuildName, onRow?: OnSeedRow): SeedTable {
  return drain(seedTableSteps(build, undefined, onRow));
}

/** The table as steps (util/steps.ts), one row each; rows go to `table.rows` as they finish. */
export function* seedTableSteps(
  build: BuildName,
  table: SeedTable = { rows: [], absent: {} },
  onRow?: OnSeedRow,
): Steps<SeedTable> {
  // Rows share their runs (singleRuns) within one table only.
  singleRuns.clear();
  for (const [i, name] of SEED_TABLE_ORDER.entries()) {
    const provider = SEED_TABLE_ROWS[name];
    if (provider) {
      table.rows.push(provider(build));
      onRow?.(table.rows[table.rows.length - 1], i + 1, SEED_TABLE_ORDER.length);
    } else table.absent[name] = SEED_TABLE_ABSENT[name] ?? "no row provider";
    yield 1;
  }
  singleRuns.clear();
  return table;
}

export function formatSeedTable(result: SeedTable): string {
  const header = [
    "technique",
    "typical scenario",
    "cycles/access",
    "slowdown",
    "vs",
    "memory saved",
    "exits/M",
  ];
  const lines = result.rows.map((r) => [
    r.technique,
    r.scenario,
    `${r.cyclesPerAccess.toFixed(2)} (${r.baselineCyclesPerAccess.toFixed(2)})`,
    r.slowdown === null ? `+${r.cyclesPerAccess.toFixed(2)} cyc` : `${r.slowdown.toFixed(2)}x`,
    r.baseline,
    `${count(r.pagesSaved)} pages (${(100 * r.savedShare).toFixed(1)}%)`,
    count(r.exitsPerMillionAccesses),
  ]);
  const widths = header.map((h, i) => Math.max(h.length, ...lines.map((l) => l[i].length)));
  const format = (cells: string[]) =>
    cells.map((c, i) => (i >= 2 && i !== 4 ? c.padStart(widths[i]) : c.padEnd(widths[i]))).join("  ");
  const notes = Object.entries(result.absent).map(([name, why]) => `${name}: ${why}.`);
  return [
    format(header),
    ...lines.map(format),
    "",
    "cycles/access: with the technique (the baseline's in brackets); slowdown: against the baseline named in",
    "'vs'. memory saved: host pages the technique frees (negative: it costs memory: EPT tables, shadow",
    "pages), and the share of the VMs' memory. exits/M: VM exits the technique causes per million accesses.",
    "pt-churn rows: a shell forking and execing short-lived programs. The IOMMU row's access is a",
    "DMA request and its memory the host DMA buffers; without an IOMMU a request costs no cycles, so its",
    "slowdown is the cycles the IOMMU adds.",
    ...notes,
  ].join("\n");
}
