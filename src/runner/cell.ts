// A sweep cell, the unit every engine runs: one configuration on one trace. It crosses threads,
// processes and machines as plain data; what arrives from a queue is checked field by field before
// it runs, exactly as a grid file's entries are.

import { isAbsolute } from "node:path";
import type { BuildName } from "../core/wasm.js";
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

/** The row of a cell whose worker died or refused it: no statistics, the reason. */
export function failedRow(cell: Pick<SweepCell, "id" | "config" | "trace">, reason: string): SweepRow {
  return {
    cell: cell.id,
    config: cell.config,
    trace: cell.trace,
    status: "error",
    error: `worker failed: ${reason}`,
    seconds: 0,
  };
}

const CELL_KEYS = ["id", "config", "configValue", "trace", "format", "build", "origin"] as const;

/**
 * A cell from outside this process (a queue job's payload): every field checked as a grid file's
 * would be, nothing else accepted. The config itself is checked by the cell runner, key by key, as a
 * config file is (a bad one is that cell's error row, as in a local sweep). Throws naming the field.
 */
export function cellFromData(data: unknown): SweepCell {
  if (data === null || typeof data !== "object" || Array.isArray(data)) {
    throw new Error("the cell must be an object");
  }
  const record = data as Record<string, unknown>;
  for (const key of Object.keys(record)) {
    if (!(CELL_KEYS as readonly string[]).includes(key)) throw new Error(`cell.${key}: unknown key`);
  }
  for (const key of ["id", "config", "trace", "origin"] as const) {
    const value = record[key];
    if (typeof value !== "string" || value === "" || value.length > 4096 || value.includes("\0")) {
      throw new Error(`cell.${key}: must be a string of 1 to 4096 characters without NUL`);
    }
  }
  if (!isAbsolute(record.trace as string)) throw new Error("cell.trace: must be an absolute path");
  if (record.format !== "auto" && !(TRACE_FORMATS as readonly unknown[]).includes(record.format)) {
    throw new Error(`cell.format: unknown format ${JSON.stringify(record.format)}`);
  }
  if (record.build !== "release" && record.build !== "debug") {
    throw new Error(`cell.build: must be "release" or "debug"`);
  }
  return record as unknown as SweepCell;
}
