// `memvirt sweep GRID --out rows.jsonl [--csv rows.csv] [--workers N]`.

import { SingleBar } from "cli-progress";
import type { BuildName } from "../core/wasm.js";
import { writeHtmlReport } from "../report/html-file.js";
import { readGrid, runSweep } from "../runner/sweep.js";

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
  if (options.report) {
    const reports = result.rows.flatMap((row) => (row.report ? [row.report] : []));
    writeHtmlReport(options.report, reports);
  }
  options.print(
    `sweep: ${grid.cells.length} cells, ${result.ran} run, ${result.skipped} already done, ${result.failed} failed; rows in ${options.out}${options.csv ? ` and ${options.csv}` : ""}`,
  );
  return result.failed > 0 ? 2 : 0;
}
