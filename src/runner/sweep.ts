// Sweeps: a grid of configurations x traces, one simulation per cell, run in parallel on worker
// threads (piscina). Results go to a JSON-lines file as cells finish, which makes a sweep
// resumable: cells already in the file are not run again. A cell that fails (a bad config, a bad
// trace) is recorded with its error and the statistics it gathered; the others go on.

import { appendFileSync, existsSync, readFileSync, writeFileSync } from "node:fs";
import { availableParallelism } from "node:os";
import { dirname, isAbsolute, resolve } from "node:path";
import { fileURLToPath } from "node:url";
import { Piscina } from "piscina";
import { MemvirtError } from "../core/machine.js";
import type { BuildName } from "../core/wasm.js";
import { formatCsv } from "../report/csv.js";
import type { RunReport } from "../report/report.js";
import { TRACE_FORMATS, type TraceFormatOption } from "../trace/source.js";

export interface SweepCell {
  /** `config|trace`, the key a resumed sweep matches on. */
  id: string;
  config: string;
  /** The raw config object from the grid, validated by the worker like a config file. */
  configValue: unknown;
  trace: string;
  format: TraceFormatOption;
  build: BuildName;
  /** For error messages: where the config came from. */
  origin: string;
}

export interface SweepRow {
  cell: string;
  config: string;
  trace: string;
  status: "ok" | "error";
  error?: string;
  seconds: number;
  report?: RunReport;
}

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

/** Rows already in the output file (a partial last line, from a killed sweep, is ignored). */
export function readRows(path: string): SweepRow[] {
  if (!existsSync(path)) return [];
  const rows: SweepRow[] = [];
  for (const line of readFileSync(path, "utf8").split("\n")) {
    if (line.trim() === "") continue;
    try {
      rows.push(JSON.parse(line) as SweepRow);
    } catch {
      // Only the last line can be cut short by a kill; a row that did not finish is run again.
    }
  }
  return rows;
}

export interface SweepOptions {
  out: string;
  csv?: string;
  workers?: number;
  onRow?: (row: SweepRow, done: number, total: number) => void;
}

export interface SweepResult {
  rows: SweepRow[];
  ran: number;
  skipped: number;
  failed: number;
}

const WORKER = fileURLToPath(new URL("./sweep-worker.js", import.meta.url));

export async function runSweep(grid: Grid, options: SweepOptions): Promise<SweepResult> {
  // Worker threads load compiled JavaScript: from the TypeScript sources (tsx, vitest) there is none.
  if (!existsSync(WORKER)) {
    throw new MemvirtError(`${WORKER} is missing: sweeps run from the built package (npm run build)`, 1);
  }
  const existing = readRows(options.out);
  const finished = new Set(existing.map((row) => row.cell));
  const pending = grid.cells.filter((cell) => !finished.has(cell.id));
  // A killed sweep can leave a cut line without a newline: start the next row on a line of its own.
  if (existsSync(options.out)) {
    const text = readFileSync(options.out, "utf8");
    if (text.length > 0 && !text.endsWith("\n")) {
      writeFileSync(options.out, `${text.slice(0, text.lastIndexOf("\n") + 1)}`);
    }
  }
  const threads = Math.max(1, Math.min(options.workers ?? availableParallelism(), pending.length || 1));
  const pool = new Piscina({ filename: WORKER, minThreads: threads, maxThreads: threads });
  let done = grid.cells.length - pending.length;
  const rows: SweepRow[] = [...existing];
  try {
    await Promise.all(
      pending.map(async (cell) => {
        let row: SweepRow;
        try {
          row = (await pool.run(cell)) as SweepRow;
        } catch (error) {
          row = {
            cell: cell.id,
            config: cell.config,
            trace: cell.trace,
            status: "error",
            error: `worker failed: ${(error as Error).message}`,
            seconds: 0,
          };
        }
        appendFileSync(options.out, `${JSON.stringify(row)}\n`);
        rows.push(row);
        done++;
        options.onRow?.(row, done, grid.cells.length);
      }),
    );
  } finally {
    await pool.destroy();
  }
  // Grid order, whatever order the cells finished in.
  const order = new Map(grid.cells.map((cell, i) => [cell.id, i]));
  rows.sort((a, b) => (order.get(a.cell) ?? Infinity) - (order.get(b.cell) ?? Infinity));
  if (options.csv) writeFileSync(options.csv, `${formatCsv(rows)}\n`);
  return {
    rows,
    ran: pending.length,
    skipped: grid.cells.length - pending.length,
    failed: rows.filter((row) => row.status === "error").length,
  };
}
