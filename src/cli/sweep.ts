// `memvirt sweep GRID --out rows.jsonl [--csv rows.csv] [--workers N]`.

import { SingleBar } from "cli-progress";
import { ConfigError, parseConfigText } from "../config/config.js";
import type { BuildName } from "../core/wasm.js";
import type { SweepPageCell, SweepPageConfig } from "../report/html.js";
import { writeSweepReport } from "../report/html-file.js";
import { type Grid, readGrid, runSweep, type SweepRow } from "../runner/sweep.js";

export interface SweepCommandOptions {
  out: string;
  csv?: string;
  /** An HTML report of every cell's run, with the cells side by side. */
  report?: string;
  workers?: number;
  quiet: boolean;
  build: BuildName;
  print: (text: string) => void;
}

/** Runs the sweep; exit code 2 when a cell failed (each failure is in the rows and on stderr). */
export async function runSweepCommand(gridPath: string, options: SweepCommandOptions): Promise<number> {
  const grid = readGrid(gridPath, options.build);
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
  const result = await runSweep(grid, {
    out: options.out,
    csv: options.csv,
    workers: options.workers,
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
  bar?.stop();
  if (options.report) writeSweepReport(options.report, ...sweepPage(grid, result.rows));
  options.print(
    `sweep: ${grid.cells.length} cells, ${result.ran} run, ${result.skipped} already done, ${result.failed} failed; rows in ${options.out}${options.csv ? ` and ${options.csv}` : ""}`,
  );
  return result.failed > 0 ? 2 : 0;
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
      configs.set(cell.config, { name: cell.config, config });
    } catch (error) {
      if (!(error instanceof ConfigError)) throw error;
      configs.set(cell.config, { name: cell.config, error: error.message });
    }
  }
  return [cells, [...configs.values()]];
}
