// Replays a trace file through a simulation (Node): the file is read, and inflated on the decode
// worker, while the core simulates the previous chunk. The batch loop is trace/replay-data.ts's.

import type { Simulation } from "../runner/simulation.js";
import { type ReplayOptions, replayBatches, type TraceReplayResult } from "./replay-data.js";
import type { TraceFormatOption } from "./source.js";
import { readTrace } from "./stream.js";

export type { ReplayOptions, TraceReplayResult } from "./replay-data.js";
export type { TraceFormatOption } from "./source.js";
export { TraceError } from "./source.js";

export function replayTrace(
  simulation: Simulation,
  path: string,
  formatOption: TraceFormatOption,
  options: ReplayOptions = {},
): Promise<TraceReplayResult> {
  return replayBatches(
    simulation,
    path,
    (onBatch, readOptions) => readTrace(simulation.machine, path, formatOption, onBatch, readOptions),
    options,
  );
}
