// Replays a trace on a host: the reader (trace/source.ts) fills the core's record region batch by
// batch and the host's loop runs each batch, servicing its exits. Checkpoints are taken
// between batches, where no record is half done. replayTraceData replays a trace given as bytes or a
// stream, on any host; trace/replay.ts replays a file in Node.

import { InterruptedError } from "../core/errors.js";
import * as L from "../core/layout.js";
import { BadRecordError, type Host } from "../host/host.js";
import { interruption } from "../util/steps.js";
import {
  type BatchHandler,
  type ReadTraceOptions,
  readTraceData,
  type TraceData,
  TraceError,
  type TraceFormat,
  type TraceFormatOption,
  type TracePosition,
} from "./source.js";

export interface TraceReplayResult {
  format: TraceFormat;
  records: number;
  lines: number;
  bytes: number;
}

export interface ReplayOptions {
  /** Continue the trace from a checkpoint's position (the simulation already holds its state). */
  resume?: TracePosition;
  /** Take a checkpoint every this many records (0 or undefined: never). */
  checkpointEvery?: number;
  onCheckpoint?: (position: TracePosition) => void;
  /** Called after every batch, with the file bytes read so far. */
  onProgress?: (position: TracePosition, fileBytesRead: number) => void;
  /** Set as the trace goes, so a caller that catches an error still knows how far it got. */
  last?: { position?: TracePosition };
  /**
   * Stops the replay after the batch that is running, with an InterruptedError; with checkpoints on, a
   * last checkpoint is taken there first, so the run resumes exactly where it stopped.
   */
  signal?: AbortSignal;
}

/** Reads a trace with `onBatch` and these options; the trace's name is for messages. */
export type TraceRead = (onBatch: BatchHandler, options: ReadTraceOptions) => Promise<TracePosition>;

/** Runs every batch `read` delivers on the host, with checkpoints and progress. */
export async function replayBatches(
  host: Host,
  name: string,
  read: TraceRead,
  options: ReplayOptions = {},
): Promise<TraceReplayResult> {
  const every = options.checkpointEvery ?? 0;
  let lastCheckpoint = options.resume?.records ?? 0;
  let delivered = lastCheckpoint;
  const fileBytes = { read: 0 };
  const last = options.last ?? {};
  let position: TracePosition;
  try {
    position = await read(
      (count, after) => {
        try {
          host.replay(count);
        } catch (error) {
          if (error instanceof BadRecordError) {
            // Only memvirt's format can hold such a record (the other readers write CPU 0 and valid
            // kinds), and its records have fixed offsets; the record count covers any other source.
            const where =
              after.format === "memvirt"
                ? `byte ${after.decodedBytes - (count - error.index) * L.RECORD_SIZE}`
                : `record ${after.records - count + error.index + 1}`;
            throw new TraceError(`${name}: ${where}: ${error.message}`);
          }
          throw error;
        }
        delivered = after.records;
        last.position = after;
        if (every > 0 && delivered - lastCheckpoint >= every) {
          lastCheckpoint = delivered;
          options.onCheckpoint?.(after);
        }
        options.onProgress?.(after, fileBytes.read);
        if (options.signal?.aborted) throw interruption(options.signal);
      },
      {
        resume: options.resume,
        fileBytes,
        batchLimit: every > 0 ? () => every - (delivered - lastCheckpoint) : undefined,
        signal: options.signal,
      },
    );
  } catch (error) {
    // Stopped on request: a last checkpoint where it stopped, so a resume loses nothing.
    if (error instanceof InterruptedError && every > 0 && last.position && delivered > lastCheckpoint)
      options.onCheckpoint?.(last.position);
    throw error;
  }
  return {
    format: position.format,
    records: position.records,
    lines: position.line - 1,
    bytes: position.decodedBytes,
  };
}

/**
 * Replays a trace given as data (bytes, a Blob, a ReadableStream such as a `fetch` body, or async
 * chunks; plain, gzip or xz) on any host. `name` stands for the file name in messages.
 */
export function replayTraceData(
  host: Host,
  data: TraceData,
  formatOption: TraceFormatOption,
  options: ReplayOptions & { name?: string } = {},
): Promise<TraceReplayResult> {
  const name = options.name ?? "trace";
  return replayBatches(
    host,
    name,
    (onBatch, readOptions) =>
      readTraceData(host.machine, data, formatOption, onBatch, { ...readOptions, name }),
    options,
  );
}
