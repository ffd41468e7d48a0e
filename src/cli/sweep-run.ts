// A sweep's run on this machine: the cells through the chosen engine, a bar counting them, the rows in
// --out (and --csv), and the HTML page of every cell (--report). Loaded when a sweep runs.

import { SingleBar } from "cli-progress";
import { ConfigError, configToJson, parseConfigText } from "../config/config.js";
import type { SweepPageCell, SweepPageConfig } from "../report/html.js";
import { writeSweepReport } from "../report/html-file.js";
import { type Grid, runSweep, type SweepOptions, type SweepRow } from "../runner/sweep.js";

export interface SweepCommandOptions {
  out: string;
  csv?: string;
  /** An HTML report of every cell's run, with the cells side by side. */
  report?: string;
  workers?: number;
  quiet: boolean;
  print: (text: string) => void;
  /** How the cells run (default: this machine's worker threads) and what the summary calls it. */
  execute?: SweepOptions["execute"];
  verb?: string;
}

/** Runs the sweep; exit code 2 when a cell failed (each failure is in the rows and on stderr) or is missing. */
export async function runSweepCommand(grid: Grid, options: SweepCommandOptions): Promise<number> {
  // Cells, not bytes, are the unit here: a bar on a terminal, nothing otherwise or with --quiet.
  const bar =
    !options.quiet && process.stderr.isTTY
      ? new SingleBar({
          stream: process.stderr,
          format: "{bar} {value}/{total} cells | {failed} failed | ETA {eta_formatted}",
          hideCursor: true,
          clearOnComplete: true,
          barsize: 30,
        })
      : undefined;
  let failed = 0;
  bar?.start(grid.cells.length, 0, { failed });
  let result: Awaited<ReturnType<typeof runSweep>>;
  try {
    result = await runSweep(grid, {
      out: options.out,
      csv: options.csv,
      report: options.report,
      workers: options.workers,
      execute: options.execute,
      onRow: (row, done) => {
        if (row.status === "error") {
          failed++;
          // Above the bar, so the message stays when the bar redraws.
          bar?.stop();
          process.stderr.write(`memvirt: sweep cell ${row.cell}: ${row.error}\n`);
          bar?.start(grid.cells.length, done, { failed });
        }
        bar?.update(done, { failed });
      },
    });
  } finally {
    bar?.stop();
  }
  if (options.report) writeSweepReport(options.report, ...sweepPage(grid, result.rows));
  const missing = result.missing > 0 ? `, ${result.missing} missing` : "";
  options.print(
    `sweep: ${grid.cells.length} cells, ${result.ran} ${options.verb ?? "run"}, ${result.skipped} already done, ${result.failed} failed${missing}; rows in ${options.out}${options.csv ? ` and ${options.csv}` : ""}`,
  );
  return result.failed > 0 || result.missing > 0 ? 2 : 0;
}

/**
 * The sweep page's cells in grid order, named by config and by the trace as the grid wrote it, and each
 * config resolved as the workers resolve it (the rows, which may come from an earlier run of the sweep,
 * hold reports but not configs).
 */
function sweepPage(grid: Grid, rows: SweepRow[]): [SweepPageCell[], SweepPageConfig[]] {
  const byId = new Map(rows.map((row) => [row.cell, row]));
  const cells: SweepPageCell[] = grid.cells.map((cell) => {
    const row = byId.get(cell.id);
    return {
      config: cell.config,
      trace: cell.id.slice(cell.config.length + 1),
      status: row?.status ?? "not run",
      error: row?.error,
      report: row?.report,
    };
  });
  const configs = new Map<string, SweepPageConfig>();
  for (const cell of grid.cells) {
    if (configs.has(cell.config)) continue;
    try {
      const config = parseConfigText(JSON.stringify(cell.configValue), cell.origin);
      configs.set(cell.config, { name: cell.config, config: configToJson(config) });
    } catch (error) {
      if (!(error instanceof ConfigError)) throw error;
      configs.set(cell.config, { name: cell.config, error: error.message });
    }
  }
  return [cells, [...configs.values()]];
}
