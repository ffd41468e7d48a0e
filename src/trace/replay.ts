// Replays a trace on a host: the reader (trace/source.ts) fills the core's record region batch by
// batch and the host's loop runs each batch, servicing its exits. Reading the next chunk
// (and inflating it, on the decode worker) overlaps with simulating the current one. Checkpoints are taken
// between batches, where no record is half done.

import * as L from "../core/layout.js";
import { BadRecordError, type Host } from "../host/host.js";
import {
  readTrace,
  TraceError,
  type TraceFormat,
  type TraceFormatOption,
  type TracePosition,
} from "./source.js";

export type { TraceFormatOption } from "./source.js";
export { TraceError } from "./source.js";

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
}

export async function replayTrace(
  host: Host,
  path: string,
  formatOption: TraceFormatOption,
  options: ReplayOptions = {},
): Promise<TraceReplayResult> {
  const every = options.checkpointEvery ?? 0;
  let lastCheckpoint = options.resume?.records ?? 0;
  let delivered = lastCheckpoint;
  const fileBytes = { read: 0 };
  const last = options.last ?? {};
  const position = await readTrace(
    host.machine,
    path,
    formatOption,
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
          throw new TraceError(`${path}: ${where}: ${error.message}`);
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
    },
    {
      resume: options.resume,
      fileBytes,
      batchLimit: every > 0 ? () => every - (delivered - lastCheckpoint) : undefined,
    },
  );
  return {
    format: position.format,
    records: position.records,
    lines: position.line - 1,
    bytes: position.decodedBytes,
  };
}
