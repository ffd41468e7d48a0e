// `memvirt compare`: one workload under every technique and page-size pairing (cli/compare.ts), a DMA
// workload under every IOMMU mode (iommu/compare.ts), or the seed table (overcommit/seed-table.ts).
// Each draws progress, stops between batches on SIGINT or SIGTERM with the rows that finished, and
// writes its JSON (with the effective config), CSV and HTML forms.
import { configToJson, MODES, type Mode } from "../config/config.js";
import { MemvirtError } from "../core/errors.js";
import type { IommuCompareResult } from "../iommu/compare.js";
import type { SeedTable } from "../overcommit/seed-table.js";
import { formatCsv } from "../report/csv.js";
import { attachConfig } from "../report/report.js";
import { drive, type Steps } from "../util/steps.js";
import { familyOf, isDmaWorkload } from "../workload/catalog.js";
import { type CompareResult, comparePairings, compareSteps, formatCompare } from "./compare.js";
import { checkOutput, loadConfig } from "./files.js";
import type { CommandIo } from "./io.js";
import { dmaOperations, flagName, type RunOptions, seedOf, workloadSpec } from "./options.js";
import { attempt, finish } from "./outcome.js";
import { ProgressBar } from "./progress.js";

/** `compare` takes run's config, workload and output options, and its own. */
export type CompareFlags = Pick<
  RunOptions,
  | "config"
  | "preset"
  | "printConfig"
  | "workload"
  | "records"
  | "footprint"
  | "stride"
  | "zipf"
  | "writeFraction"
  | "seed"
  | "json"
  | "csv"
  | "report"
  | "quiet"
  | "build"
> & { modes?: string; seedTable?: boolean };

/** Flags only some families take: the workload's shape, and the techniques a per-mode comparison runs. */
const SHAPE_FLAGS = ["footprint", "stride", "zipf", "writeFraction", "modes"] as const;

export async function compareCommand(flags: CompareFlags, io: CommandIo): Promise<number> {
  if (flags.seedTable) return seedTable(flags, io);
  const workload = flags.workload ?? "zipf";
  const entry = familyOf(workload);
  const family = entry?.family;
  if (family === "multi-vm")
    throw new MemvirtError(
      `--workload ${workload}: multi-VM workloads run on an overcommitted host under ept or npt only, so there is no per-mode comparison; use memvirt run --workload ${workload}, or compare --seed-table`,
    );
  // --modes goes with every per-technique comparison; the shape flags with the families that take them.
  const takes = (key: (typeof SHAPE_FLAGS)[number]) =>
    key === "modes"
      ? family !== "dma"
      : (entry?.options as readonly string[] | undefined)?.includes(key) === true;
  for (const key of SHAPE_FLAGS)
    if (flags[key] !== undefined && !takes(key))
      throw new MemvirtError(
        `${flagName(key)}: does not apply to --workload ${workload}${family === "dma" ? " (it compares IOMMU modes)" : ""}`,
      );
  const config = loadConfig(flags.config, flags.preset);
  if (flags.printConfig) {
    io.print(JSON.stringify(configToJson(config), null, 2));
    return 0;
  }
  if (flags.report) checkOutput(flags.report, "--report");
  const seed = seedOf(flags, config);
  /** The table's forms: JSON with the effective config, CSV of the rows, or the text table. */
  const forms =
    <R extends { rows: object[] }>(text: (result: R) => string) =>
    (result: R) =>
      flags.json
        ? JSON.stringify({ ...result, config: configToJson(config) }, null, 2)
        : flags.csv
          ? formatCsv(result.rows)
          : text(result);
  const report = flags.report;
  if (isDmaWorkload(workload)) {
    // Device workloads compare IOMMU modes (off, strict, deferred, pass-through) instead.
    const { iommuCompareSteps, formatIommuCompare } = await import("../iommu/compare.js");
    const { IOMMU_MODES } = await import("../iommu/driver.js");
    const operations = dmaOperations(flags);
    const result: IommuCompareResult = { workload, operations, rows: [] };
    return runComparison(
      iommuCompareSteps(config, workload, operations, seed, flags.build, result),
      result,
      { count: operations * IOMMU_MODES.length, unit: "operations" },
      flags,
      io,
      forms(formatIommuCompare),
      report
        ? async () => (await import("../report/html-file.js")).writeIommuCompareReport(report, result, config)
        : undefined,
    );
  }
  const modes = (flags.modes ?? MODES.join(",")).split(",").map((m) => m.trim());
  for (const mode of modes) {
    if (!(MODES as readonly string[]).includes(mode))
      throw new MemvirtError(`--modes: unknown mode "${mode}" (modes: ${MODES.join(", ")})`);
  }
  const spec = workloadSpec({ ...flags, workload }, seed, config.guest.levels);
  const result: CompareResult = attachConfig({ workload: spec, rows: [] }, config);
  return runComparison(
    compareSteps(config, spec, flags.build, modes as Mode[], result),
    result,
    { count: spec.records * comparePairings(modes as Mode[]), unit: "records" },
    flags,
    io,
    forms(formatCompare),
    report
      ? async () => (await import("../report/html-file.js")).writeHtmlReport(report, [], result)
      : undefined,
  );
}

/**
 * Runs a comparison's steps with a progress bar over `total`, then prints `result` (the rows that
 * finished, marked interrupted when it was stopped), writes its page and ends as the run did.
 */
async function runComparison<R extends object>(
  steps: Steps<unknown>,
  result: R,
  total: { count: number; unit: string },
  flags: { quiet?: boolean },
  io: CommandIo,
  print: (result: R) => string,
  writeReport?: () => Promise<void>,
): Promise<number> {
  const stream = io.progress(flags.quiet);
  const progress = ProgressBar.count(total.count, total.unit, !stream, stream);
  const ending = await attempt(() =>
    drive(steps, { signal: io.signal, onProgress: (done) => progress.update(done) }),
  );
  progress.stop();
  if (ending?.interrupted) Object.assign(result, { interrupted: true });
  io.print(print(result));
  await writeReport?.();
  return finish(ending);
}

/** `compare --seed-table`: its rows run fixed scenarios, so it takes no config or workload options. */
async function seedTable(flags: CompareFlags, io: CommandIo): Promise<number> {
  for (const key of [
    "config",
    "preset",
    "printConfig",
    "workload",
    "records",
    "csv",
    "report",
    ...SHAPE_FLAGS,
  ] as const)
    if (flags[key] !== undefined)
      throw new MemvirtError(
        `${flagName(key)}: does not apply to --seed-table (each row runs its own fixed scenario)`,
      );
  const { formatSeedTable, SEED_TABLE_ORDER, seedTableSteps } = await import("../overcommit/seed-table.js");
  const table: SeedTable = { rows: [], absent: {} };
  return runComparison(
    seedTableSteps(flags.build, table),
    table,
    { count: SEED_TABLE_ORDER.length, unit: "rows" },
    flags,
    io,
    (result) => (flags.json ? JSON.stringify(result, null, 2) : formatSeedTable(result)),
  );
}
