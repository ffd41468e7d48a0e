// `memvirt sweep` and `memvirt worker`: a grid of configurations x traces on this machine's threads,
// on workers through a Redis queue (--queue), as parts for Slurm arrays, GNU parallel or shell loops
// (--emit, --cells) and their merge (--merge).

import { mkdirSync } from "node:fs";
import { availableParallelism } from "node:os";
import { SingleBar } from "cli-progress";
import { type Command, Option } from "commander";
import { ConfigError, parseConfigText } from "../config/config.js";
import { MemvirtError } from "../core/machine.js";
import type { BuildName } from "../core/wasm.js";
import type { SweepPageCell, SweepPageConfig } from "../report/html.js";
import { writeSweepReport } from "../report/html-file.js";
import { queueExecutor, runQueueWorker } from "../runner/queue.js";
import { cellRanges, mergeExecutor, slurmScript } from "../runner/slurm.js";
import {
  type Grid,
  readGrid,
  runSweep,
  type SweepOptions,
  type SweepRow,
  selectCells,
} from "../runner/sweep.js";

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
      configs.set(cell.config, { name: cell.config, config });
    } catch (error) {
      if (!(error instanceof ConfigError)) throw error;
      configs.set(cell.config, { name: cell.config, error: error.message });
    }
  }
  return [cells, [...configs.values()]];
}

/** What the host CLI hands the sweep commands (they never import it). */
export interface SweepCommandServices {
  buildOption: Option;
  print: (text: string) => void;
  numberOption: (value: string | undefined, name: string, min: number, max: number) => number | undefined;
  setExitCode: (code: number) => void;
}

interface SweepFlags {
  out?: string;
  csv?: string;
  report?: string;
  workers?: string;
  quiet?: boolean;
  build: BuildName;
  queue?: string;
  cells?: string;
  emit?: "slurm" | "ranges";
  partition?: string;
  cellsPerTask: string;
  maxRunning?: string;
  parts: string;
  merge?: string;
}

interface WorkerFlags {
  queue: string;
  concurrency?: string;
  traceRoot?: string;
  lockDuration?: string;
  stalledInterval?: string;
  quiet?: boolean;
}

export function registerSweepCommands(program: Command, services: SweepCommandServices): void {
  const { numberOption, print } = services;
  const integer = (value: string | undefined, name: string, min: number, max: number) => {
    const n = numberOption(value, name, min, max);
    if (n !== undefined && !Number.isInteger(n)) throw new MemvirtError(`--${name}: must be a whole number`);
    return n;
  };
  program
    .command("sweep")
    .description(
      "run a grid of configurations x traces: on this machine's threads, on workers through Redis, or as parts for Slurm",
    )
    .argument("<grid>", 'grid file (JSON): {"configs": {name: config}, "traces": [file, ...]}')
    .option("-o, --out <file.jsonl>", "result rows as JSON lines (resumable: finished cells are kept)")
    .option("--csv <file>", "also write the rows as CSV")
    .option("--report <file.html>", "also write an HTML report of every cell, side by side")
    .option("--workers <n>", "worker threads (default: the cores available)")
    .addOption(
      new Option(
        "--queue <url>",
        "run the cells on `memvirt worker`s through Redis: redis://HOST:PORT[/DB]",
      ).conflicts(["merge", "emit"]),
    )
    .option("--cells <I..J>", "run only cells I to J (grid order, from 0): one part of the sweep")
    .addOption(
      new Option("--emit <what>", "print a Slurm job-array script, or the cell ranges of its tasks")
        .choices(["slurm", "ranges"])
        .conflicts(["merge", "cells", "out"]),
    )
    .option("--partition <name>", "--emit slurm: the partition")
    .option("--cells-per-task <k>", "--emit: cells each array task runs", "1")
    .option("--max-running <m>", "--emit slurm: array tasks running at once (default: all)")
    .option("--parts <dir>", "--emit slurm: the folder of the parts", "parts")
    .addOption(new Option("--merge <dir>", "merge the parts in DIR into --out").conflicts(["cells"]))
    .option("-q, --quiet", "no progress bar")
    .addOption(services.buildOption)
    .action(async (gridPath: string, flags: SweepFlags) => {
      const grid = readGrid(gridPath, flags.build);
      const workers = integer(flags.workers, "workers", 1, 1024);
      if (flags.emit) {
        const cellsPerTask = integer(flags.cellsPerTask, "cells-per-task", 1, 2 ** 31) as number;
        if (flags.emit === "ranges") {
          print(cellRanges(grid.cells.length, cellsPerTask).join("\n"));
          return;
        }
        // Slurm opens each task's log in the parts folder before the task runs: it must exist.
        mkdirSync(flags.parts, { recursive: true });
        print(
          slurmScript({
            command: [process.execPath, process.argv[1]],
            grid: gridPath,
            cells: grid.cells.length,
            cellsPerTask,
            maxRunning: integer(flags.maxRunning, "max-running", 1, 2 ** 31),
            partition: flags.partition,
            parts: flags.parts,
            workers: workers ?? 1,
            build: flags.build,
          }).trimEnd(),
        );
        return;
      }
      if (!flags.out) throw new MemvirtError("memvirt sweep needs --out FILE (or --emit slurm|ranges)");
      const part = flags.cells ? selectCells(grid, flags.cells) : grid;
      const execute = flags.merge
        ? mergeExecutor(flags.merge, grid, flags.out)
        : flags.queue
          ? queueExecutor(flags.queue, grid)
          : undefined;
      services.setExitCode(
        await runSweepCommand(part, {
          out: flags.out,
          csv: flags.csv,
          report: flags.report,
          workers,
          quiet: flags.quiet === true,
          print,
          execute,
          verb: flags.merge ? "merged" : "run",
        }),
      );
    });

  program
    .command("worker")
    .description("run sweep cells from a Redis queue, for `memvirt sweep --queue`, until SIGTERM")
    .requiredOption("--queue <url>", "the coordinator's queue: redis://HOST:PORT[/DB] or rediss://...")
    .option("--concurrency <n>", "cells run at once, each on its own thread (default: the cores available)")
    .option("--trace-root <dir>", "read traces under DIR only (a job naming another path fails)")
    .option("--lock-duration <ms>", "how long a cell's lock lasts unrenewed (BullMQ lockDuration)", "30000")
    .option(
      "--stalled-interval <ms>",
      "how often to look for cells of dead workers (BullMQ stalledInterval)",
      "30000",
    )
    .option("-q, --quiet", "no line per finished cell on stderr")
    .action(async (flags: WorkerFlags) => {
      await runQueueWorker({
        url: flags.queue,
        concurrency: integer(flags.concurrency, "concurrency", 1, 1024) ?? availableParallelism(),
        traceRoot: flags.traceRoot,
        lockDuration: integer(flags.lockDuration, "lock-duration", 100, 2 ** 31),
        stalledInterval: integer(flags.stalledInterval, "stalled-interval", 100, 2 ** 31),
        log: flags.quiet ? () => {} : (line) => process.stderr.write(`memvirt worker: ${line}\n`),
      });
    });
}
