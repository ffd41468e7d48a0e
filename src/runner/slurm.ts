// Sweeps split into parts: a Slurm job-array script whose tasks each run a range of cells
// (`memvirt sweep GRID --cells I..J --out PARTS/I.jsonl`), the same ranges for GNU parallel or a shell
// loop, and the merge of the parts into the rows and order a local sweep writes.

import { readdirSync } from "node:fs";
import { basename, join, resolve } from "node:path";
import { MemvirtError } from "../core/machine.js";
import type { SweepRow } from "./cell.js";
import type { Grid, SweepOptions } from "./sweep.js";
import { readRows } from "./sweep-output.js";

/** `I..J` for each task of `perTask` cells, in grid order. */
export function cellRanges(cells: number, perTask: number): string[] {
  const ranges: string[] = [];
  for (let first = 0; first < cells; first += perTask) {
    ranges.push(`${first}..${Math.min(first + perTask, cells) - 1}`);
  }
  return ranges;
}

export interface SlurmScriptOptions {
  /** The command that runs memvirt on the compute nodes, e.g. [node, /path/to/bin/memvirt.js]. */
  command: string[];
  grid: string;
  cells: number;
  cellsPerTask: number;
  /** Array tasks running at once (the `%M` of `--array`); default: all. */
  maxRunning?: number;
  partition?: string;
  /** Folder of the parts (and of Slurm's task logs). */
  parts: string;
  /** Worker threads of each task, and the CPUs it asks for. */
  workers: number;
  build: string;
}

/** A word for bash, quoted only when it needs to be. */
function shellWord(text: string): string {
  return /^[\w@%+=:,./-]+$/.test(text) ? text : `'${text.replaceAll("'", "'\\''")}'`;
}

/** An #SBATCH value: sbatch reads these lines itself, so a path may not hold a line break or a quote. */
function sbatchValue(text: string, what: string): string {
  if (/["\n\r]/.test(text)) throw new MemvirtError(`${what} ${text}: holds a quote or a line break`);
  return /\s/.test(text) ? `"${text}"` : text;
}

/**
 * The job-array script: task T runs cells T*K to T*K+K-1 into PARTS/(T*K).jsonl. Paths are absolute,
 * as the tasks run on other nodes, which must see the grid, its traces and memvirt at the same paths.
 */
export function slurmScript(options: SlurmScriptOptions): string {
  const grid = resolve(options.grid);
  const parts = resolve(options.parts);
  const tasks = Math.ceil(options.cells / options.cellsPerTask);
  const maxRunning = Math.min(options.maxRunning ?? tasks, tasks);
  const memvirt = options.command.map(shellWord).join(" ");
  const lines = [
    "#!/bin/bash",
    `# memvirt sweep of ${grid} as a Slurm job array: ${options.cells} cells, ${options.cellsPerTask} per task, ${tasks} tasks.`,
    "# Submit with `sbatch THIS_FILE` (options on sbatch's command line override the #SBATCH lines).",
    `# Each task writes the rows of its cells to ${parts}/FIRST.jsonl (a rerun task resumes it).`,
    "# When every task has finished:",
    `#   ${memvirt} sweep ${shellWord(grid)} --merge ${shellWord(parts)} --out rows.jsonl`,
    `#SBATCH --job-name=${sbatchValue(`memvirt-${basename(grid, ".json")}`, "the grid")}`,
    `#SBATCH --array=0-${tasks - 1}%${maxRunning}`,
    `#SBATCH --cpus-per-task=${options.workers}`,
    `#SBATCH --output=${sbatchValue(join(parts, "slurm-%A_%a.out"), "--parts")}`,
    ...(options.partition ? [`#SBATCH --partition=${sbatchValue(options.partition, "--partition")}`] : []),
    "set -euo pipefail",
    `first=$(( SLURM_ARRAY_TASK_ID * ${options.cellsPerTask} ))`,
    `last=$(( first + ${options.cellsPerTask - 1} ))`,
    `if (( last > ${options.cells - 1} )); then last=${options.cells - 1}; fi`,
    `mkdir -p ${shellWord(parts)}`,
    [
      `exec ${memvirt} sweep ${shellWord(grid)} --cells "$first..$last"`,
      `--out ${shellWord(parts)}/"$first".jsonl --workers ${options.workers} --quiet`,
      ...(options.build !== "release" ? [`--build ${shellWord(options.build)}`] : []),
    ].join(" "),
  ];
  return `${lines.join("\n")}\n`;
}

/**
 * Rows from the parts in `dir` (every `*.jsonl` but the output itself) for the cells not yet in the
 * output, handed on in grid order. A row of a cell the grid does not have is refused: those parts
 * belong to another grid.
 */
export function mergeExecutor(dir: string, grid: Grid, out: string): NonNullable<SweepOptions["execute"]> {
  return async (cells, emit) => {
    let files: string[];
    try {
      files = readdirSync(dir)
        .filter((name) => name.endsWith(".jsonl") && resolve(dir, name) !== resolve(out))
        .sort((a, b) => a.localeCompare(b, "en", { numeric: true }));
    } catch (error) {
      throw new MemvirtError(`--merge ${dir}: ${(error as Error).message}`);
    }
    if (files.length === 0) throw new MemvirtError(`--merge ${dir}: no parts (*.jsonl) in it`);
    const inGrid = new Set(grid.cells.map((cell) => cell.id));
    const rows = new Map<string, SweepRow>();
    for (const name of files) {
      for (const row of readRows(join(dir, name))) {
        if (!inGrid.has(row.cell)) {
          throw new MemvirtError(
            `--merge ${join(dir, name)}: cell ${row.cell} is not in the grid (a part of another sweep?)`,
          );
        }
        if (!rows.has(row.cell)) rows.set(row.cell, row);
      }
    }
    for (const cell of cells) {
      const row = rows.get(cell.id);
      if (row) emit(row);
    }
  };
}
