// Sweeps: a grid of configurations x traces, one simulation per cell, run in parallel on worker
// threads (piscina), on `memvirt worker`s through a Redis queue (queue.ts) or as Slurm array tasks
// whose parts are merged (slurm.ts). Results go to a JSON-lines file as cells finish, which makes a
// sweep resumable: cells already in the file are not run again. A cell that fails (a bad config, a
// bad trace) is recorded with its error and the statistics it gathered; the others go on.

import { readFileSync, writeFileSync } from "node:fs";
import { availableParallelism } from "node:os";
import { dirname, isAbsolute, resolve } from "node:path";
import { MemvirtError } from "../core/machine.js";
import type { BuildName } from "../core/wasm.js";
import { formatCsv } from "../report/csv.js";
import { TRACE_FORMATS, type TraceFormatOption } from "../trace/source.js";
import { failedRow, type SweepCell, type SweepRow } from "./cell.js";
import { CellPool } from "./cell-pool.js";
import { SweepOutput } from "./sweep-output.js";

export type { SweepCell, SweepRow } from "./cell.js";
export { readRows } from "./sweep-output.js";

export interface Grid {
  cells: SweepCell[];
}

/**
 * Reads a grid file: `{"configs": {NAME: CONFIG, ...}, "traces": [FILE | {"file", "format"}, ...]}`.
 * Trace paths are relative to the grid file. Mistakes are reported with the key's path.
 */
export function readGrid(path: string, build: BuildName): Grid {
  let grid: unknown;
  try {
    grid = JSON.parse(readFileSync(path, "utf8"));
  } catch (error) {
    throw new MemvirtError(`${path}: cannot read the grid: ${(error as Error).message}`);
  }
  if (grid === null || typeof grid !== "object")
    throw new MemvirtError(`${path}: the grid must be a JSON object`);
  const { configs, traces, ...rest } = grid as Record<string, unknown>;
  for (const key of Object.keys(rest))
    throw new MemvirtError(`${path}: ${key}: unknown key (expected configs, traces)`);
  if (
    configs === null ||
    typeof configs !== "object" ||
    Array.isArray(configs) ||
    Object.keys(configs).length === 0
  ) {
    throw new MemvirtError(`${path}: configs: must be an object of named configurations`);
  }
  if (!Array.isArray(traces) || traces.length === 0) {
    throw new MemvirtError(`${path}: traces: must be a non-empty array`);
  }
  const base = dirname(path);
  const traceList = traces.map((entry, i) => {
    const item = typeof entry === "string" ? { file: entry } : entry;
    if (item === null || typeof item !== "object" || typeof (item as { file?: unknown }).file !== "string") {
      throw new MemvirtError(`${path}: traces[${i}]: must be a file name or {"file", "format"}`);
    }
    const { file, format = "auto" } = item as { file: string; format?: string };
    if (format !== "auto" && !(TRACE_FORMATS as readonly string[]).includes(format)) {
      throw new MemvirtError(`${path}: traces[${i}].format: unknown format "${format}"`);
    }
    return { file, path: isAbsolute(file) ? file : resolve(base, file), format: format as TraceFormatOption };
  });
  // A cell is known by its config's name and its trace as written: each must name one cell.
  traceList.forEach(({ file }, i) => {
    const first = traceList.findIndex((trace) => trace.file === file);
    if (first < i)
      throw new MemvirtError(`${path}: traces[${i}]: ${file} is listed twice (traces[${first}])`);
  });
  const cells: SweepCell[] = [];
  for (const [name, value] of Object.entries(configs as Record<string, unknown>)) {
    for (const trace of traceList) {
      cells.push({
        id: `${name}|${trace.file}`,
        config: name,
        configValue: value,
        trace: trace.path,
        format: trace.format,
        build,
        origin: `${path}: configs.${name}`,
      });
    }
  }
  return { cells };
}

/** `I..J` (or `I`): cells I to J of the grid, in grid order from 0, both included. */
export function parseCellRange(text: string, total: number): { first: number; last: number } {
  const match = /^(\d+)(?:\.\.(\d+))?$/.exec(text.trim());
  const first = Number(match?.[1]);
  const last = Number(match?.[2] ?? match?.[1]);
  if (!match || first > last || last >= total) {
    throw new MemvirtError(
      `--cells ${text}: expected I..J with 0 <= I <= J < ${total} (the grid's cells, from 0)`,
    );
  }
  return { first, last };
}

/** The grid's cells I..J only (a Slurm array task's, a GNU parallel job's share). */
export function selectCells(grid: Grid, range: string): Grid {
  const { first, last } = parseCellRange(range, grid.cells.length);
  return { cells: grid.cells.slice(first, last + 1) };
}

export interface SweepOptions {
  out: string;
  csv?: string;
  /** Checked writable with the others before any cell runs; written by the caller. */
  report?: string;
  workers?: number;
  onRow?: (row: SweepRow, done: number, total: number) => void;
  /**
   * Runs the cells not yet in the output and hands each row to `emit` as it finishes. The default
   * runs them on this machine's worker threads; a queue or a merge of parts stands in for it.
   */
  execute?: (cells: SweepCell[], emit: (row: SweepRow) => void) => Promise<void>;
}

export interface SweepResult {
  rows: SweepRow[];
  ran: number;
  skipped: number;
  failed: number;
  /** Cells without a row at the end (a merge of incomplete parts). */
  missing: number;
}

/** The cells on this machine's worker threads (default: one per core available). */
export function threadExecutor(workers?: number): NonNullable<SweepOptions["execute"]> {
  return async (cells, emit) => {
    const threads = Math.max(1, Math.min(workers ?? availableParallelism(), cells.length || 1));
    const pool = new CellPool(threads);
    try {
      await Promise.all(
        cells.map(async (cell) => {
          let row: SweepRow;
          try {
            row = await pool.run(cell);
          } catch (error) {
            row = failedRow(cell, (error as Error).message);
          }
          emit(row);
        }),
      );
    } finally {
      await pool.destroy();
    }
  };
}

export async function runSweep(grid: Grid, options: SweepOptions): Promise<SweepResult> {
  const output = new SweepOutput(options.out, [
    { path: options.csv, flag: "--csv" },
    { path: options.report, flag: "--report" },
  ]);
  const rows: SweepRow[] = [];
  let pending: SweepCell[];
  try {
    const inGrid = new Set(grid.cells.map((cell) => cell.id));
    // Rows of cells outside the grid (another --cells range written to the same file) are kept in
    // the file but are not this sweep's.
    rows.push(...output.existing.filter((row) => inGrid.has(row.cell)));
    const finished = new Set(rows.map((row) => row.cell));
    pending = grid.cells.filter((cell) => !finished.has(cell.id));
    let done = grid.cells.length - pending.length;
    const emitted = new Set<string>();
    const execute = options.execute ?? threadExecutor(options.workers);
    await execute(pending, (row) => {
      // A row is written once, whatever the engine delivers.
      if (emitted.has(row.cell)) return;
      emitted.add(row.cell);
      output.append(row);
      rows.push(row);
      done++;
      options.onRow?.(row, done, grid.cells.length);
    });
  } finally {
    output.close();
  }
  // Grid order, whatever order the cells finished in.
  const order = new Map(grid.cells.map((cell, i) => [cell.id, i]));
  rows.sort((a, b) => (order.get(a.cell) ?? Infinity) - (order.get(b.cell) ?? Infinity));
  if (options.csv) writeFileSync(options.csv, `${formatCsv(rows)}\n`);
  return {
    rows,
    ran: rows.length - (grid.cells.length - pending.length),
    skipped: grid.cells.length - pending.length,
    failed: rows.filter((row) => row.status === "error").length,
    missing: grid.cells.length - rows.length,
  };
}
