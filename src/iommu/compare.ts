// `memvirt compare --workload dma-*`: the same device workload with the IOMMU off, in strict and
// deferred invalidation, and in pass-through to a VM, so the cost of each shows side by side.
import type { ResolvedConfig } from "../config/config.js";
import type { BuildName } from "../core/wasm.js";
import { Simulation } from "../runner/simulation.js";
import { count } from "../util/count.js";
import { drain, type Steps } from "../util/steps.js";
import { IOMMU_MODES, type IommuMode } from "./driver.js";
import { type DmaWorkloadName, platformOf, startDmaWorkload } from "./workload.js";

export interface IommuCompareRow {
  mode: IommuMode;
  kind: string;
  translations: number;
  /** Translations per second of simulated IOMMU and driver time (null when neither spent any). */
  translationsPerSecond: number | null;
  iotlbHitRate: number;
  refsPerMiss: number;
  cyclesPerTranslation: number;
  invalidations: number;
  faults: number;
  driverCycles: number;
}

export interface IommuCompareResult {
  workload: DmaWorkloadName;
  operations: number;
  rows: IommuCompareRow[];
  /** Set when the comparison was stopped (SIGINT, SIGTERM): the rows are the modes that finished. */
  interrupted?: boolean;
}

export function runIommuCompare(
  base: ResolvedConfig,
  workload: DmaWorkloadName,
  operations: number,
  seed: number,
  build: BuildName,
): IommuCompareResult {
  return drain(iommuCompareSteps(base, workload, operations, seed, build));
}

/**
 * The comparison as steps (util/steps.ts), one DMA batch each, yielding its operations. Rows go to
 * `result.rows` as each mode finishes, so an interrupted comparison keeps the modes before it.
 */
export function* iommuCompareSteps(
  base: ResolvedConfig,
  workload: DmaWorkloadName,
  operations: number,
  seed: number,
  build: BuildName,
  result: IommuCompareResult = { workload, operations, rows: [] },
): Steps<IommuCompareResult> {
  for (const mode of IOMMU_MODES) {
    // Pass-through gives the devices to a VM: EPT with 2M backing, as VFIO guests usually have.
    const config: ResolvedConfig =
      mode === "passthrough"
        ? { ...base, mode: "ept", host: { ...base.host, pageSize: "2M" }, iommu: { ...base.iommu, mode } }
        : { ...base, iommu: { ...base.iommu, mode } };
    const simulation = new Simulation(config, { build });
    simulation.start();
    const run = startDmaWorkload(platformOf(simulation), { name: workload, operations, seed });
    yield* run.steps();
    const report = run.report();
    const sum = (record: Record<string, number>) => Object.values(record).reduce((a, b) => a + b, 0);
    result.rows.push({
      mode,
      kind: report.kind,
      translations: report.translations,
      translationsPerSecond: report.translationsPerSecond,
      iotlbHitRate: report.iotlbHitRate,
      refsPerMiss: report.refsPerMiss,
      cyclesPerTranslation: report.cyclesPerTranslation,
      invalidations: sum(report.invalidations),
      faults: sum(report.faults),
      driverCycles: report.driver.cycles,
    });
  }
  return result;
}

/** The IOMMU comparison's columns, for the text table and the HTML report alike. */
export const IOMMU_COMPARE_COLUMNS = [
  "iommu",
  "translations",
  "translations/s",
  "IOTLB hit rate",
  "refs/miss",
  "cycles/transl",
  "invalidations",
  "faults",
  "driver cycles",
];

/** One row's cells under IOMMU_COMPARE_COLUMNS ("-" where the mode has no such figure). */
export function iommuCompareCells(row: IommuCompareRow): string[] {
  return [
    row.mode === "off" ? "off" : `${row.kind} ${row.mode}`,
    count(row.translations),
    row.translationsPerSecond === null ? "-" : count(row.translationsPerSecond),
    row.mode === "off" ? "-" : `${(row.iotlbHitRate * 100).toFixed(1)}%`,
    row.mode === "off" ? "-" : row.refsPerMiss.toFixed(2),
    row.cyclesPerTranslation.toFixed(2),
    count(row.invalidations),
    count(row.faults),
    count(row.driverCycles),
  ];
}

export function formatIommuCompare(result: IommuCompareResult): string {
  const header = IOMMU_COMPARE_COLUMNS;
  const lines = result.rows.map(iommuCompareCells);
  const widths = header.map((h, i) => Math.max(h.length, ...lines.map((l) => l[i].length)));
  const render = (cells: string[]) =>
    cells.map((cell, i) => (i === 0 ? cell.padEnd(widths[i]) : cell.padStart(widths[i]))).join("  ");
  return [
    `${result.workload}, ${count(result.operations)} operations`,
    render(header),
    ...lines.map(render),
  ].join("\n");
}
