// `memvirt sweep GRID --out rows.jsonl [--csv rows.csv] [--workers N]`.

import type { BuildName } from "../core/wasm.js";
import { readGrid, runSweep } from "../runner/sweep.js";

export interface SweepCommandOptions {
  out: string;
  csv?: string;
  workers?: number;
  quiet: boolean;
  build: BuildName;
  print: (text: string) => void;
}

/** Runs the sweep; exit code 2 when a cell failed (each failure is in the rows and on stderr). */
export async function runSweepCommand(gridPath: string, options: SweepCommandOptions): Promise<number> {
  const grid = readGrid(gridPath, options.build);
  const result = await runSweep(grid, {
    out: options.out,
    csv: options.csv,
    workers: options.workers,
    onRow: (row, done, total) => {
      if (row.status === "error") process.stderr.write(`memvirt: sweep cell ${row.cell}: ${row.error}\n`);
      else if (!options.quiet && process.stderr.isTTY) {
        process.stderr.write(`[${done}/${total}] ${row.cell}: ${row.seconds}s\n`);
      }
    },
  });
  options.print(
    `sweep: ${grid.cells.length} cells, ${result.ran} run, ${result.skipped} already done, ${result.failed} failed; rows in ${options.out}${options.csv ? ` and ${options.csv}` : ""}`,
  );
  return result.failed > 0 ? 2 : 0;
}
