// One reader for every trace format, on every host. It decodes a trace (plain, gzip or xz; a file
// through trace/stream.ts in Node, bytes or a stream through readTraceData anywhere) into batches of
// 16-byte records in the core's record region and hands each batch to a callback, which replays it
// (trace/replay.ts) or writes it out (trace/convert.ts). Text formats are parsed inside the core;
// the binary formats are copied (memvirt's own, whose records are the region's layout) or unpacked
// (ChampSim) here. Every batch comes with the position after it, which is all a checkpoint needs to
// continue the trace.

import { MemvirtError } from "../core/errors.js";
import * as L from "../core/layout.js";
import type { Machine } from "../core/machine.js";
import { Pacer, unlessAborted } from "../util/steps.js";
import {
  type Compression,
  compressionOf,
  decodeErrorOffset,
  decompressStream,
  describeDecodeError,
  MAGIC_BYTES,
  TraceError,
} from "./decompress.js";
import type { TraceFormat, TraceFormatOption } from "./formats.js";
import { TRACE_FORMATS } from "./formats.js";
import {
  describeParseError,
  type TraceFormat as TextFormat,
  TRACE_FORMAT_CODES,
  TRACE_FORMAT_NAMES,
} from "./text-codes.js";

export { type Compression, TraceError } from "./decompress.js";

export { TRACE_FORMATS, type TraceFormat, type TraceFormatOption } from "./formats.js";

/**
 * memvirt's own trace format: a 16-byte header ("MVTRACE" NUL, u32 version 1, u32 record size 16),
 * then records in exactly the core's layout (u64 address; u8 kind | 0x80 implicit; u8 size; u16 cpu;
 * u32 source line), little-endian. Replaying it is a copy into the record region.
 */
export const OWN_MAGIC = new TextEncoder().encode("MVTRACE\0");
export const OWN_VERSION = 1;
export const OWN_HEADER_BYTES = 16;

/** ChampSim's `input_instr`: ip, is_branch, branch_taken, 2+4 register bytes, 2+4 memory addresses. */
export const CHAMPSIM_RECORD_BYTES = 64;
/** Records one instruction can produce: its fetch, 4 source reads and 2 destination writes. */
const CHAMPSIM_MAX_ACCESSES = 7;

const KIND_READ = L.AccessKind.Read;
const KIND_WRITE = L.AccessKind.Write;
const KIND_FETCH = L.AccessKind.Fetch;

/** Where a trace stands after a batch: enough to reopen it there. */
export interface TracePosition {
  format: TraceFormat;
  compression: Compression;
  /** Bytes of the decoded stream consumed (headers included). */
  decodedBytes: number;
  /** Next line (text formats) or record (binary formats) number, 1-based, for error messages. */
  line: number;
  /** Records delivered so far. */
  records: number;
  /** A pinatrace `#eof` line was seen. */
  eofSeen: boolean;
}

export interface ReadTraceOptions {
  /** Continue from this position instead of the start. */
  resume?: TracePosition;
  /** Most records the next batch may hold (e.g. up to the next checkpoint); at least 1. */
  batchLimit?: () => number;
  /** Compressed (or plain) file bytes read so far, updated as the file is read, for progress. */
  fileBytes?: { read: number };
  /** Awaited before each chunk is decoded, when it returns a promise: lets a consumer hold the reader. */
  pause?: () => Promise<void> | undefined;
  /** Stops the reader while it waits for input, with an InterruptedError. */
  signal?: AbortSignal;
}

/** Gets records [0, count) of the record region; `position` is the trace's position after them. */
export type BatchHandler = (count: number, position: TracePosition) => void;

/** Sniffs the decoded head of a trace; null when it cannot tell. */
export function sniffFormat(
  machine: Machine,
  head: Uint8Array,
  compression: Compression,
): TraceFormat | null {
  if (head.length >= OWN_MAGIC.length && OWN_MAGIC.every((byte, i) => head[i] === byte)) return "memvirt";
  const sample = head.subarray(0, Math.min(head.length, L.TEXT_SIZE / 2));
  machine.textBuffer().set(sample, 0);
  const code = machine.core.sniffText(sample.length);
  if (code !== 0) return TRACE_FORMAT_NAMES[code as 1 | 2 | 3];
  // ChampSim traces have no magic; they come compressed (ChampSim reads them through xz or gzip), and
  // compressed binary that is not memvirt's own is taken to be one.
  if (compression !== "none" && !looksLikeText(sample)) return "champsim";
  return null;
}

/**
 * Why a head of text fits no text format: the format it reads furthest in, and its first bad line (the
 * line a user most likely has to fix, such as a lackey size out of range); no `error` when a format
 * reads it all (lines it skips, no record). Undefined for binary data.
 */
function closestTextFormat(
  machine: Machine,
  head: Uint8Array,
): { format: TextFormat; line: number; error?: string } | undefined {
  const sample = head.subarray(0, Math.min(head.length, L.TEXT_SIZE / 2));
  if (!looksLikeText(sample)) return undefined;
  let best: { format: TextFormat; line: number; error?: string } | undefined;
  for (const format of Object.keys(TRACE_FORMAT_CODES) as TextFormat[]) {
    machine.textBuffer().set(sample, 0);
    machine.core.textResetEof(0);
    machine.core.parseText(TRACE_FORMAT_CODES[format], sample.length, 0, 1, L.RECORD_CAPACITY);
    const error = machine.core.textParseError();
    if (error === 0) return { format, line: 0 };
    const line = machine.core.textParseErrorLine();
    if (!best || line > best.line) best = { format, line, error: describeParseError(error) };
  }
  return best;
}

function looksLikeText(bytes: Uint8Array): boolean {
  const end = Math.min(bytes.length, 4096);
  for (let i = 0; i < end; i++) {
    const byte = bytes[i];
    if (byte < 9 || (byte > 13 && byte < 32) || byte === 127) return false;
  }
  return end > 0;
}

/** A format's decoder. Each batch it emits is awaited, so the event loop may turn between batches. */
interface Decoder {
  feed(chunk: Uint8Array): Promise<void>;
  finish(): Promise<void>;
}

/** Decoded chunks of a trace from decoded offset `skip` on, in chunks of about `chunkSize` bytes. */
export type DecodedChunks = (skip: number, chunkSize: number) => AsyncIterable<Uint8Array>;

/**
 * Reads a decoded trace named `name` (for messages) in `format` ("auto": from the content), delivering
 * record batches to `onBatch`. Records before a bad line or record are delivered before the
 * TraceError is thrown.
 */
export async function readDecodedTrace(
  machine: Machine,
  name: string,
  compression: Compression,
  decoded: DecodedChunks,
  formatOption: TraceFormatOption,
  onBatch: BatchHandler,
  options: ReadTraceOptions = {},
): Promise<TracePosition> {
  const position: TracePosition = options.resume
    ? { ...options.resume }
    : {
        format: formatOption === "auto" ? "lackey" : formatOption,
        compression,
        decodedBytes: 0,
        line: 1,
        records: 0,
        eofSeen: false,
      };
  // Chunks of a quarter of the text region: a long trace then holds 2 MiB of read buffers (the reader
  // keeps one chunk in flight while the core parses the other) rather than 4 and touches half the
  // region, for the same CPU time (batches are RECORD_CAPACITY records at most either way).
  const chunks = decoded(position.decodedBytes, L.TEXT_SIZE / 4);
  let decoder: Decoder | undefined;
  let known = options.resume !== undefined || formatOption !== "auto";
  const limit = () => Math.max(1, Math.min(L.RECORD_CAPACITY, options.batchLimit?.() ?? L.RECORD_CAPACITY));
  const pacer = new Pacer(options.signal);
  /** A batch to the handler; then, between batches, the event loop may turn and a stop is seen. */
  const emit = async (count: number) => {
    position.records += count;
    onBatch(count, { ...position });
    await pacer.pace();
  };
  const iterator = chunks[Symbol.asyncIterator]();
  try {
    for (;;) {
      const next = await unlessAborted(iterator.next(), options.signal);
      if (next.done) break;
      // A chunk's batches run at once: between chunks the event loop turns and a stop is seen.
      await pacer.pace();
      const chunk = next.value;
      const held = options.pause?.();
      if (held) await held;
      if (!decoder) {
        if (!known) {
          let sniffed = sniffFormat(machine, chunk, compression);
          if (sniffed === null) {
            const why = closestTextFormat(machine, chunk);
            // Lines one format skips and no record (valgrind's own messages): that format, whose reader
            // then says whether a record ever comes.
            if (why?.error === undefined && why) sniffed = why.format;
            else
              throw new TraceError(
                `${name}:${why?.line ?? 1}: cannot tell the trace format from the content${why ? ` (read as ${why.format}, line ${why.line} is wrong: ${why.error})` : ""}; pass --format ${TRACE_FORMATS.join("|")}`,
              );
          }
          position.format = sniffed;
          known = true;
        }
        decoder = makeDecoder(machine, name, position, limit, emit);
      }
      await decoder.feed(chunk);
    }
  } finally {
    // Closes the file, the decoder or the download when the reader stops early; not waited for when
    // the run was stopped while a read was pending (a pipe with no writer may never answer).
    const closing = iterator.return?.(undefined);
    if (options.signal?.aborted) closing?.catch(() => {});
    else await closing;
  }
  if (!decoder && known) decoder = makeDecoder(machine, name, position, limit, emit);
  await decoder?.finish();
  if (position.records === 0)
    throw new TraceError(`${name}: no records (the trace is empty, or holds only comments and headers)`);
  return position;
}

/**
 * A trace held in memory or arriving as it downloads: its bytes, a `Blob` (a `File` from an input
 * element), a `ReadableStream` (a `fetch` response body) or any async iterable of byte chunks. It may
 * be gzip- or xz-compressed, as a file may.
 */
export type TraceData =
  | Uint8Array
  | ArrayBuffer
  | Blob
  | ReadableStream<Uint8Array>
  | AsyncIterable<Uint8Array>;

function rawStream(data: TraceData): ReadableStream<Uint8Array> {
  if (data instanceof Uint8Array || data instanceof ArrayBuffer) {
    const bytes = data instanceof Uint8Array ? data : new Uint8Array(data);
    return new ReadableStream({
      start(controller) {
        if (bytes.length > 0) controller.enqueue(bytes);
        controller.close();
      },
    });
  }
  if (typeof Blob !== "undefined" && data instanceof Blob) return data.stream() as ReadableStream<Uint8Array>;
  if (data instanceof ReadableStream) return data;
  const iterator = (data as AsyncIterable<Uint8Array>)[Symbol.asyncIterator]();
  return new ReadableStream({
    async pull(controller) {
      const next = await iterator.next();
      if (next.done) controller.close();
      else controller.enqueue(next.value);
    },
    async cancel() {
      await iterator.return?.();
    },
  });
}

/** The first `count` bytes of a stream (fewer when it is shorter), and a stream of all of it. */
async function peek(
  stream: ReadableStream<Uint8Array>,
  count: number,
): Promise<{ head: Uint8Array; stream: ReadableStream<Uint8Array> }> {
  const reader = stream.getReader();
  const taken: Uint8Array[] = [];
  let length = 0;
  while (length < count) {
    const next = await reader.read();
    if (next.done) break;
    taken.push(next.value);
    length += next.value.length;
  }
  const head = new Uint8Array(length);
  let offset = 0;
  for (const chunk of taken) {
    head.set(chunk, offset);
    offset += chunk.length;
  }
  const whole = new ReadableStream<Uint8Array>({
    start(controller) {
      if (head.length > 0) controller.enqueue(head);
    },
    async pull(controller) {
      const next = await reader.read();
      if (next.done) controller.close();
      else controller.enqueue(next.value);
    },
    cancel(reason) {
      return reader.cancel(reason);
    },
  });
  return { head: head.subarray(0, Math.min(count, head.length)), stream: whole };
}

/**
 * Reads a trace given as data (see TraceData) rather than a file, on any host: the same formats,
 * compressions, batches, positions and errors as a file, with `options.name` standing for the file
 * name in messages ("trace" by default).
 */
export async function readTraceData(
  machine: Machine,
  data: TraceData,
  formatOption: TraceFormatOption,
  onBatch: BatchHandler,
  options: ReadTraceOptions & { name?: string } = {},
): Promise<TracePosition> {
  const name = options.name ?? "trace";
  const { head, stream } = await peek(rawStream(data), MAGIC_BYTES);
  const compression = compressionOf(head);
  const fileBytes = options.fileBytes ?? { read: 0 };
  const counted = stream.pipeThrough(
    new TransformStream<Uint8Array, Uint8Array>({
      transform(chunk, controller) {
        fileBytes.read += chunk.length;
        controller.enqueue(chunk);
      },
    }),
  );
  const decoded: DecodedChunks = (skip, chunkSize) =>
    skipped(
      compression === "none" ? counted : decompressStream(counted, compression),
      skip,
      (error) => {
        if (error instanceof MemvirtError || compression === "none") return error;
        return new TraceError(
          `${name}: byte ${decodeErrorOffset(error) ?? fileBytes.read} of the ${compression} data: ${describeDecodeError(compression, error)}`,
        );
      },
      chunkSize,
      name,
    );
  return readDecodedTrace(machine, name, compression, decoded, formatOption, onBatch, options);
}

/** A resume position beyond the trace's end: the checkpoint was taken on another, longer trace. */
export function pastTheEnd(name: string, position: number, length: number): TraceError {
  return new TraceError(
    `${name}: byte ${length}: the trace ends before the checkpoint's position (decoded byte ${position}); resume with the trace the checkpoint was taken on`,
  );
}

/**
 * The bytes of `stream` from byte `skip` on, in chunks of `chunkSize` bytes (the last may be shorter),
 * as a file is read: a network or a decompressor delivers pieces of any size, and the format is told
 * from a whole first chunk. Read errors pass through `wrap`.
 */
async function* skipped(
  stream: ReadableStream<Uint8Array>,
  skip: number,
  wrap: (error: unknown) => unknown,
  chunkSize: number,
  name: string,
): AsyncGenerator<Uint8Array> {
  const reader = stream.getReader();
  let offset = 0;
  let chunk = new Uint8Array(chunkSize);
  let filled = 0;
  try {
    for (;;) {
      let next: ReadableStreamReadResult<Uint8Array>;
      try {
        next = await reader.read();
      } catch (error) {
        throw wrap(error);
      }
      if (next.done) break;
      let bytes = next.value;
      if (offset + bytes.length <= skip) {
        offset += bytes.length;
        continue;
      }
      if (offset < skip) bytes = bytes.subarray(skip - offset);
      offset += next.value.length;
      while (bytes.length > 0) {
        const take = Math.min(bytes.length, chunkSize - filled);
        chunk.set(bytes.subarray(0, take), filled);
        filled += take;
        bytes = bytes.subarray(take);
        if (filled === chunkSize) {
          yield chunk;
          // The reader may hold on to the chunk it was given until it asks for the next one.
          chunk = new Uint8Array(chunkSize);
          filled = 0;
        }
      }
    }
    if (filled > 0) yield chunk.subarray(0, filled);
    if (offset < skip) throw pastTheEnd(name, skip, offset);
  } finally {
    // Stops the download or decompression when the reader gives up early (a bad line).
    await reader.cancel().catch(() => {});
  }
}

function makeDecoder(
  machine: Machine,
  path: string,
  position: TracePosition,
  limit: () => number,
  emit: (count: number) => Promise<void>,
): Decoder {
  switch (position.format) {
    case "memvirt":
      return new OwnFormatDecoder(machine, path, position, limit, emit);
    case "champsim":
      return new ChampSimDecoder(machine, path, position, limit, emit);
    default:
      return new TextFormatDecoder(machine, path, position, limit, emit);
  }
}

/** Text formats: the bytes go into the core's text region and the core parses whole lines. */
class TextFormatDecoder implements Decoder {
  private carried = 0;
  private readonly code: number;
  /** Chunks copied into the text region: half of it, so a chunk always fits beside the carried tail. */
  private readonly pieceBytes = L.TEXT_SIZE / 2;

  constructor(
    private readonly machine: Machine,
    private readonly path: string,
    private readonly position: TracePosition,
    private readonly limit: () => number,
    private readonly emit: (count: number) => Promise<void>,
  ) {
    this.code = TRACE_FORMAT_CODES[position.format as TextFormat];
    machine.core.textResetEof(position.eofSeen ? 1 : 0);
  }

  async feed(chunk: Uint8Array): Promise<void> {
    for (let offset = 0; offset < chunk.length; offset += this.pieceBytes) {
      const piece = chunk.subarray(offset, offset + this.pieceBytes);
      this.machine.textBuffer().set(piece, this.carried);
      this.carried = await this.drain(this.carried + piece.length, false);
      if (this.carried >= this.pieceBytes) {
        throw new TraceError(`${this.path}:${this.position.line}: line longer than ${this.pieceBytes} bytes`);
      }
    }
  }

  async finish(): Promise<void> {
    if (this.carried > 0) this.carried = await this.drain(this.carried, true);
    if (this.position.format === "pinatrace" && !this.position.eofSeen && this.position.decodedBytes > 0) {
      throw new TraceError(
        `${this.path}:${this.position.line}: the trace ends without Pin's #eof line (truncated?)`,
      );
    }
  }

  /** Parses and delivers the `length` bytes at the front of the text region; returns the tail kept. */
  private async drain(length: number, isFinal: boolean): Promise<number> {
    const core = this.machine.core;
    const position = this.position;
    while (length > 0) {
      const parsed = core.parseText(this.code, length, isFinal ? 1 : 0, position.line, this.limit());
      const consumed = core.textParsedBytes();
      position.decodedBytes += consumed;
      position.line += core.textParsedLines();
      position.eofSeen = core.textEofSeen() !== 0;
      const error = core.textParseError();
      // Records before a bad line still run, so the statistics printed with the error cover them.
      if (parsed > 0) await this.emit(parsed);
      if (error !== 0) {
        throw new TraceError(`${this.path}:${core.textParseErrorLine()}: ${describeParseError(error)}`);
      }
      if (consumed > 0 && consumed < length) this.machine.textBuffer().copyWithin(0, consumed, length);
      length -= consumed;
      // Nothing parsed and nothing consumed: only a partial line is left.
      if (consumed === 0) break;
    }
    return length;
  }
}

/** memvirt's own format: header check, then a straight copy of whole records. */
class OwnFormatDecoder implements Decoder {
  /** Bytes in the record region not yet delivered (a partial record at the end is kept). */
  private pending = 0;
  private readonly header: number[] = [];

  constructor(
    private readonly machine: Machine,
    private readonly path: string,
    private readonly position: TracePosition,
    private readonly limit: () => number,
    private readonly emit: (count: number) => Promise<void>,
  ) {}

  async feed(chunk: Uint8Array): Promise<void> {
    let offset = 0;
    while (this.position.decodedBytes + this.header.length < OWN_HEADER_BYTES && offset < chunk.length) {
      this.header.push(chunk[offset++]);
      if (this.header.length === OWN_HEADER_BYTES) this.checkHeader();
    }
    while (offset < chunk.length) {
      const batchBytes = this.limit() * L.RECORD_SIZE;
      const take = Math.min(batchBytes - this.pending, chunk.length - offset);
      this.machine.memory.set(chunk.subarray(offset, offset + take), L.RECORDS_BASE + this.pending);
      this.pending += take;
      offset += take;
      if (this.pending >= batchBytes) await this.flush();
    }
  }

  async finish(): Promise<void> {
    // An empty file is no memvirt trace either: even a trace of no records has its header.
    if (this.position.decodedBytes < OWN_HEADER_BYTES) {
      throw new TraceError(`${this.path}: byte ${this.header.length}: the file ends inside the header`);
    }
    await this.flush();
    if (this.pending > 0) {
      throw new TraceError(
        `${this.path}: byte ${this.position.decodedBytes}: the file ends inside a record (${this.pending} of ${L.RECORD_SIZE} bytes)`,
      );
    }
  }

  private checkHeader(): void {
    const header = Uint8Array.from(this.header);
    const view = new DataView(header.buffer);
    if (!OWN_MAGIC.every((byte, i) => header[i] === byte)) {
      throw new TraceError(`${this.path}: byte 0: not a memvirt trace (bad magic)`);
    }
    const version = view.getUint32(8, true);
    if (version !== OWN_VERSION) {
      throw new TraceError(
        `${this.path}: byte 8: memvirt trace version ${version}; this memvirt reads ${OWN_VERSION}`,
      );
    }
    const recordSize = view.getUint32(12, true);
    if (recordSize !== L.RECORD_SIZE) {
      throw new TraceError(`${this.path}: byte 12: record size ${recordSize}; expected ${L.RECORD_SIZE}`);
    }
    this.position.decodedBytes = OWN_HEADER_BYTES;
    this.header.length = 0;
  }

  private async flush(): Promise<void> {
    const count = Math.floor(this.pending / L.RECORD_SIZE);
    if (count === 0) return;
    const bytes = count * L.RECORD_SIZE;
    this.position.decodedBytes += bytes;
    this.position.line += count;
    const memory = this.machine.memory;
    const leftover = this.pending - bytes;
    // The partial record at the end waits outside the region while the batch runs.
    const tail = memory.slice(L.RECORDS_BASE + bytes, L.RECORDS_BASE + this.pending);
    this.pending = 0;
    await this.emit(count);
    this.machine.memory.set(tail, L.RECORDS_BASE);
    this.pending = leftover;
  }
}

/** ChampSim `input_instr` records, unpacked into a fetch, reads and writes per instruction. */
class ChampSimDecoder implements Decoder {
  /** An aligned copy of the current 64-byte records, read as 32-bit words. */
  private readonly staging = new Uint32Array((L.RECORD_CAPACITY * CHAMPSIM_RECORD_BYTES) / 4);
  private readonly stagingBytes = new Uint8Array(this.staging.buffer);
  private staged = 0;

  constructor(
    private readonly machine: Machine,
    private readonly path: string,
    private readonly position: TracePosition,
    private readonly limit: () => number,
    private readonly emit: (count: number) => Promise<void>,
  ) {}

  async feed(chunk: Uint8Array): Promise<void> {
    let offset = 0;
    while (offset < chunk.length) {
      const take = Math.min(this.stagingBytes.length - this.staged, chunk.length - offset);
      this.stagingBytes.set(chunk.subarray(offset, offset + take), this.staged);
      this.staged += take;
      offset += take;
      await this.unpack();
    }
  }

  async finish(): Promise<void> {
    await this.unpack();
    if (this.staged > 0) {
      throw new TraceError(
        `${this.path}: byte ${this.position.decodedBytes}: the trace ends inside a ${CHAMPSIM_RECORD_BYTES}-byte ChampSim record (${this.staged} bytes)`,
      );
    }
  }

  /** Turns the whole staged instructions into record batches at once (so a decode error later
   *  still finds them simulated); keeps a partial one staged. */
  private async unpack(): Promise<void> {
    const whole = Math.floor(this.staged / CHAMPSIM_RECORD_BYTES);
    const words = this.staging;
    let instruction = 0;
    while (instruction < whole) {
      const out = new Uint32Array(this.machine.memory.buffer, L.RECORDS_BASE, L.RECORD_CAPACITY * 4);
      const maxRecords = this.limit();
      let records = 0;
      const firstInstruction = instruction;
      while (
        instruction < whole &&
        records + CHAMPSIM_MAX_ACCESSES <= Math.max(maxRecords, CHAMPSIM_MAX_ACCESSES)
      ) {
        const base = instruction * 16;
        const number = (this.position.line + (instruction - firstInstruction)) >>> 0;
        records = put(out, records, words[base], words[base + 1], KIND_FETCH, number);
        // Sources are loads and come before the stores to the destinations, as ChampSim issues them.
        for (let source = 0; source < 4; source++) {
          const low = words[base + 8 + source * 2];
          const high = words[base + 9 + source * 2];
          if ((low | high) !== 0) records = put(out, records, low, high, KIND_READ, number);
        }
        for (let destination = 0; destination < 2; destination++) {
          const low = words[base + 4 + destination * 2];
          const high = words[base + 5 + destination * 2];
          if ((low | high) !== 0) records = put(out, records, low, high, KIND_WRITE, number);
        }
        instruction++;
        if (records >= maxRecords) break;
      }
      const done = instruction - firstInstruction;
      this.position.decodedBytes += done * CHAMPSIM_RECORD_BYTES;
      this.position.line += done;
      await this.emit(records);
    }
    const used = whole * CHAMPSIM_RECORD_BYTES;
    this.stagingBytes.copyWithin(0, used, this.staged);
    this.staged -= used;
  }
}

function put(out: Uint32Array, index: number, low: number, high: number, kind: number, line: number): number {
  const word = index * 4;
  out[word] = low;
  out[word + 1] = high;
  // kind, size (unknown: 0) and cpu 0 share one word, as in the text formats.
  out[word + 2] = kind;
  out[word + 3] = line;
  return index + 1;
}
