// Streams a text trace through the core: file chunks go into the core's text buffer, the core parses
// whole lines into records and replays them, and the simulation services exits. Reading the next
// chunk overlaps with parsing and simulating the current one.

import * as L from "../core/layout.js";
import { MemvirtError } from "../core/machine.js";
import type { Simulation } from "../runner/simulation.js";
import { readChunks } from "./reader.js";
import { describeParseError, TRACE_FORMAT_CODES, TRACE_FORMAT_NAMES, type TraceFormat } from "./text.js";

export type TraceFormatOption = TraceFormat | "auto";

/** A malformed trace: `FILE:LINE: what is wrong`, exit code 2. */
export class TraceError extends MemvirtError {}

export interface TraceReplayResult {
  format: TraceFormat;
  records: number;
  lines: number;
  bytes: number;
}

/** Chunks read from disk: half the text buffer, so a chunk always fits beside the carried tail. */
const CHUNK_BYTES = L.TEXT_SIZE / 2;

export async function replayTextTrace(
  simulation: Simulation,
  path: string,
  formatOption: TraceFormatOption,
  onProgress?: (bytes: number, records: number) => void,
): Promise<TraceReplayResult> {
  const machine = simulation.machine;
  const core = machine.core;
  let format: TraceFormat | undefined = formatOption === "auto" ? undefined : formatOption;
  let carried = 0;
  let line = 1;
  let records = 0;
  let bytes = 0;

  // Parses and replays the `length` bytes at the front of the text buffer; whole lines only unless
  // `isFinal`. Moves the unconsumed tail to the front and returns its length.
  const drain = (length: number, isFinal: boolean): number => {
    while (length > 0) {
      const parsed = core.parseText(
        TRACE_FORMAT_CODES[format as TraceFormat],
        length,
        isFinal ? 1 : 0,
        line,
        L.RECORD_CAPACITY,
      );
      // Records before a bad line still run, so the statistics printed with the error cover them.
      simulation.replayBuffer(parsed);
      records += parsed;
      const consumed = core.textParsedBytes();
      line += core.textParsedLines();
      const error = core.textParseError();
      if (error !== 0) {
        throw new TraceError(`${path}:${core.textParseErrorLine()}: ${describeParseError(error)}`);
      }
      if (consumed > 0 && consumed < length) machine.textBuffer().copyWithin(0, consumed, length);
      length -= consumed;
      // Fewer records than the buffer holds means the parser ran out of whole lines.
      if (parsed < L.RECORD_CAPACITY || consumed === 0) break;
    }
    return length;
  };

  for await (const chunk of readChunks(path, CHUNK_BYTES)) {
    machine.textBuffer().set(chunk, carried);
    const length = carried + chunk.length;
    if (format === undefined) {
      const sniffed = core.sniffText(length);
      if (sniffed === 0)
        throw new TraceError(`${path}:1: cannot tell the trace format; pass --format lackey|din`);
      format = TRACE_FORMAT_NAMES[sniffed as 1 | 2];
    }
    bytes += chunk.length;
    carried = drain(length, false);
    if (carried >= CHUNK_BYTES) {
      throw new TraceError(`${path}:${line}: line longer than ${CHUNK_BYTES} bytes`);
    }
    onProgress?.(bytes, records);
  }
  if (carried > 0) drain(carried, true);
  return { format: format ?? "lackey", records, lines: line - 1, bytes };
}
