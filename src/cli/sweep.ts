// `memvirt sweep` and `memvirt worker`: a grid of configurations x traces on this machine's threads,
// on workers through a Redis queue (--queue), as parts for Slurm arrays, GNU parallel or shell loops
// (--emit, --cells) and their merge (--merge).

import { type Command, Option } from "commander";
import { MemvirtError } from "../core/errors.js";
import type { BuildName } from "../core/wasm.js";

/** What the host CLI hands the sweep commands (they never import it). */
export interface SweepCommandServices {
  buildOption: Option;
  print: (text: string) => void;
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
  const { print } = services;
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
      // What a sweep runs is loaded when it runs: the grid reader, the engines, the worker pool.
      const { integerOption: integer } = await import("./options.js");
      const { readGrid, selectCells } = await import("../runner/sweep.js");
      const grid = readGrid(gridPath, flags.build);
      const workers = integer(flags.workers, "workers", 1, 1024);
      if (flags.emit) {
        const cellsPerTask = integer(flags.cellsPerTask, "cells-per-task", 1, 2 ** 31) as number;
        const { cellRanges, slurmScript } = await import("../runner/slurm.js");
        if (flags.emit === "ranges") {
          print(cellRanges(grid.cells.length, cellsPerTask).join("\n"));
          return;
        }
        // Slurm opens each task's log in the parts folder before the task runs: it must exist.
        process.getBuiltinModule("node:fs").mkdirSync(flags.parts, { recursive: true });
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
        ? (await import("../runner/slurm.js")).mergeExecutor(flags.merge, grid, flags.out)
        : flags.queue
          ? (await import("../runner/queue.js")).queueExecutor(flags.queue, grid)
          : undefined;
      const { runSweepCommand } = await import("./sweep-run.js");
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
      const { integerOption: integer } = await import("./options.js");
      const { runQueueWorker } = await import("../runner/queue.js");
      const { availableParallelism } = process.getBuiltinModule("node:os");
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
