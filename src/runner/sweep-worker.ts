// One sweep cell, on a piscina worker thread (cell-pool.ts): parse the cell's config, replay its
// trace, and return the row. Local sweeps, `--cells` and queue workers all run cells here. Errors
// become rows too, with the statistics gathered before them.

import { parseConfigText } from "../config/config.js";
import { MemvirtError } from "../core/machine.js";
import { buildReport } from "../report/report.js";
import { replayTrace } from "../trace/replay.js";
import type { SweepCell, SweepRow } from "./cell.js";
import { Simulation } from "./simulation.js";

/** `readFrom`: where to read the trace when it is not `cell.trace` (a queue worker's resolved path). */
export default async function runCell({
  cell,
  readFrom = cell.trace,
}: {
  cell: SweepCell;
  readFrom?: string;
}): Promise<SweepRow> {
  const started = performance.now();
  const row = (status: SweepRow["status"], extra: Partial<SweepRow>): SweepRow => ({
    cell: cell.id,
    config: cell.config,
    trace: cell.trace,
    status,
    seconds: +((performance.now() - started) / 1000).toFixed(3),
    ...extra,
  });
  let simulation: Simulation;
  try {
    const config = parseConfigText(JSON.stringify(cell.configValue), cell.origin);
    simulation = new Simulation(config, { build: cell.build });
    simulation.start();
  } catch (error) {
    if (error instanceof MemvirtError) return row("error", { error: error.message });
    throw error;
  }
  // The same source keys as `memvirt run` reports, so a cell's report equals a single run's.
  const source: { kind: "trace"; file: string; format: string; lines?: number; records?: number } = {
    kind: "trace",
    file: cell.trace,
    format: cell.format,
  };
  try {
    const result = await replayTrace(simulation, readFrom, cell.format);
    source.format = result.format;
    source.lines = result.lines;
    source.records = result.records;
    return row("ok", { report: buildReport(simulation, source) });
  } catch (error) {
    if (!(error instanceof MemvirtError)) throw error;
    return row("error", { error: error.message, report: buildReport(simulation, source, error.message) });
  }
}
