// Replays a trace file on a host (Node): the file is read, and inflated on the decode worker, while
// the core simulates the previous chunk. The batch loop is trace/replay-data.ts's.

import type { Host } from "../host/host.js";
import { type ReplayOptions, replayBatches, type TraceReplayResult } from "./replay-data.js";
import type { TraceFormatOption } from "./source.js";
import { readTrace } from "./stream.js";

export type { ReplayOptions, TraceReplayResult } from "./replay-data.js";
export type { TraceFormatOption } from "./source.js";
export { TraceError } from "./source.js";

export function replayTrace(
  host: Host,
  path: string,
  formatOption: TraceFormatOption,
  options: ReplayOptions = {},
): Promise<TraceReplayResult> {
  return replayBatches(
    host,
    path,
    (onBatch, readOptions) => readTrace(host.machine, path, formatOption, onBatch, readOptions),
    options,
  );
}
