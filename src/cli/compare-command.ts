// `memvirt compare`: one workload under every technique and page-size pairing (cli/compare.ts), a DMA
// workload under every IOMMU mode (iommu/compare.ts), or the seed table (overcommit/seed-table.ts).
// Each draws progress, stops between batches on SIGINT or SIGTERM with the rows that finished, and
// writes its JSON (with the effective config), CSV and HTML forms.
import { configToJson, MODES, type Mode } from "../config/config.js";
import { MemvirtError } from "../core/errors.js";
import type { BuildName } from "../core/wasm.js";
import type { IommuCompareResult } from "../iommu/compare.js";
import { formatCsv } from "../report/csv.js";
import { writeHtmlReport, writeIommuCompareReport } from "../report/html-file.js";
import { attachConfig } from "../report/report.js";
import { drive } from "../util/steps.js";
import { familyOf, isDmaWorkload } from "../workload/catalog.js";
import { type CompareResult, comparePairings, compareSteps, formatCompare } from "./compare.js";
import { checkOutput, loadConfig } from "./files.js";
import type { CommandIo } from "./io.js";
import { dmaOperations, flagName, seedOf, workloadSpec } from "./options.js";
import { attempt, finish } from "./outcome.js";
import { ProgressBar } from "./progress.js";

export interface CompareFlags {
  config?: string;
  preset?: string;
  printConfig?: boolean;
  workload?: string;
  records?: string;
  footprint?: string;
  stride?: string;
  zipf?: string;
  writeFraction?: string;
  seed?: string;
  modes?: string;
  seedTable?: boolean;
  json?: boolean;
  csv?: boolean;
  report?: string;
  quiet?: boolean;
  build: BuildName;
}

const SYNTHETIC_ONLY = ["footprint", "stride", "zipf", "writeFraction", "modes"] as const;

export async function compareCommand(flags: CompareFlags, io: CommandIo): Promise<number> {
  if (flags.seedTable) return seedTable(flags, io);
  const workload = flags.workload ?? "zipf";
  const family = familyOf(workload)?.family;
  if (family === "multi-vm")
    throw new MemvirtError(
      `--workload ${workload}: multi-VM workloads run on an overcommitted host under ept or npt only, so there is no per-mode comparison; use memvirt run --workload ${workload}, or compare --seed-table`,
    );
  if (family !== "synthetic")
    for (const key of SYNTHETIC_ONLY)
      if (flags[key] !== undefined)
        throw new MemvirtError(
          `${flagName(key)}: does not apply to --workload ${workload} (it compares IOMMU modes); it applies to the synthetic workloads`,
        );
  const config = loadConfig(flags.config, flags.preset);
  if (flags.printConfig) {
    io.print(JSON.stringify(configToJson(config), null, 2));
    return 0;
  }
  if (flags.report) checkOutput(flags.report, "--report");
  const seed = seedOf(flags, config);
  const stream = io.progress(flags.quiet);
  if (isDmaWorkload(workload)) {
    // Device workloads compare IOMMU modes (off, strict, deferred, pass-through) instead.
    const { iommuCompareSteps, formatIommuCompare } = await import("../iommu/compare.js");
    const { IOMMU_MODES } = await import("../iommu/driver.js");
    const operations = dmaOperations(flags);
    const result: IommuCompareResult = { workload, operations, rows: [] };
    const progress = ProgressBar.count(operations * IOMMU_MODES.length, "operations", !stream, stream);
    const ending = await attempt(() =>
      drive(iommuCompareSteps(config, workload, operations, seed, flags.build, result), {
        signal: io.signal,
        onProgress: (done) => progress.update(done),
      }),
    );
    progress.stop();
    if (ending?.interrupted) Object.assign(result, { interrupted: true });
    io.print(
      flags.json
        ? JSON.stringify({ ...result, config: configToJson(config) }, null, 2)
        : flags.csv
          ? formatCsv(result.rows)
          : formatIommuCompare(result),
    );
    if (flags.report) writeIommuCompareReport(flags.report, result, config);
    return finish(ending);
  }
  const modes = (flags.modes ?? MODES.join(",")).split(",").map((m) => m.trim());
  for (const mode of modes) {
    if (!(MODES as readonly string[]).includes(mode))
      throw new MemvirtError(`--modes: unknown mode "${mode}" (modes: ${MODES.join(", ")})`);
  }
  const spec = workloadSpec({ ...flags, workload }, seed, config.guest.levels);
  const result: CompareResult = attachConfig({ workload: spec, rows: [] }, config);
  const progress = ProgressBar.count(
    spec.records * comparePairings(modes as Mode[]),
    "records",
    !stream,
    stream,
  );
  const ending = await attempt(() =>
    drive(compareSteps(config, spec, flags.build, modes as Mode[], result), {
      signal: io.signal,
      onProgress: (done) => progress.update(done),
    }),
  );
  progress.stop();
  if (ending?.interrupted) Object.assign(result, { interrupted: true });
  io.print(
    flags.json
      ? JSON.stringify({ ...result, config: configToJson(config) }, null, 2)
      : flags.csv
        ? formatCsv(result.rows)
        : formatCompare(result),
  );
  if (flags.report) writeHtmlReport(flags.report, [], result);
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
    ...SYNTHETIC_ONLY,
  ] as const)
    if (flags[key] !== undefined)
      throw new MemvirtError(
        `${flagName(key)}: does not apply to --seed-table (each row runs its own fixed scenario)`,
      );
  const { formatSeedTable, SEED_TABLE_ORDER, seedTableSteps } = await import("../overcommit/seed-table.js");
  const stream = io.progress(flags.quiet);
  const progress = ProgressBar.count(SEED_TABLE_ORDER.length, "rows", !stream, stream);
  progress.update(0);
  const table = { rows: [], absent: {} };
  const ending = await attempt(() =>
    drive(seedTableSteps(flags.build, table), {
      signal: io.signal,
      onProgress: (done) => progress.update(done),
    }),
  );
  progress.stop();
  if (ending?.interrupted) Object.assign(table, { interrupted: true });
  io.print(flags.json ? JSON.stringify(table, null, 2) : formatSeedTable(table));
  return finish(ending);
}
