/**
 * memvirt's public API in Node: everything of the browser-safe entry, plus what works on files and
 * threads (trace files, conversion, checkpoints, written reports, sweeps on worker threads, the CLI).
 * package.json's "node" condition makes `import ... from "memvirt"` resolve here in Node.
 *
 * @module memvirt (Node)
 */

/** The command line: `main(process.argv)` runs it and resolves to its exit code. */
export { main } from "./cli/main.js";
export * from "./index.js";
export { writeHtmlReport } from "./report/html-file.js";
export {
  type Checkpoint,
  type CheckpointRun,
  loadCheckpoint,
  type MultiCheckpoint,
  readCheckpoint,
  saveCheckpoint,
} from "./runner/checkpoint.js";
/** Sweeps on `memvirt worker` processes through a Redis queue (bullmq is loaded on first use). */
export { queueExecutor, runQueueWorker } from "./runner/queue.js";
export {
  type Grid,
  readGrid,
  readRows,
  runSweep,
  type SweepCell,
  type SweepOptions,
  type SweepResult,
  type SweepRow,
} from "./runner/sweep.js";
export { type ConvertResult, convertTrace } from "./trace/convert.js";
/** Several VMs, one trace file each, on the overcommitted host. */
export {
  type MultiReplayOptions,
  type MultiTracePosition,
  type MultiTraceResult,
  replayTraces,
  type TraceSpec,
  TraceVms,
} from "./trace/multi.js";
export { replayTrace } from "./trace/replay.js";
export { readTrace } from "./trace/stream.js";
