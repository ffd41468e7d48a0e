// The decoded bytes of a trace file (Node), whatever wraps them: plain, gzip (node:zlib, which inflates
// on libuv's thread pool, so it overlaps with simulation) or xz (xz-decompress, xz-embedded compiled to
// WebAssembly, on a decode worker thread: see decodedChunksOverlapped). Chunks stream; nothing holds
// the whole file. readTrace hands them to the host-agnostic reader of trace/source.ts.

import { closeSync, existsSync, openSync, readSync, statSync } from "node:fs";
import { fileURLToPath } from "node:url";
import { MemvirtError } from "../core/errors.js";
import type { Machine } from "../core/machine.js";
import {
  type Compression,
  compressionOf,
  decodeErrorOffset,
  describeDecodeError,
  MAGIC_BYTES,
  TraceError,
} from "./decompress.js";
import { DEFAULT_CHUNK_SIZE, readChunks } from "./reader.js";
import {
  type BatchHandler,
  pastTheEnd,
  type ReadTraceOptions,
  readDecodedTrace,
  type TraceFormatOption,
  type TracePosition,
} from "./source.js";
import { xzDecode } from "./xz.js";

export { type Compression, TraceError } from "./decompress.js";

// node:zlib, node:worker_threads and fs's streams serve compressed traces only: they are taken when one
// is read, so that a plain trace's run does not load them (a few ms of CPU and MB at start-up).

/** The first `count` bytes of the file (fewer when it is shorter). */
export function readHead(path: string, count: number): Uint8Array {
  let descriptor: number;
  try {
    descriptor = openSync(path, "r");
  } catch (error) {
    throw new TraceError(`${path}: cannot open the trace: ${(error as Error).message}`);
  }
  try {
    const head = new Uint8Array(count);
    const read = readSync(descriptor, head, 0, count, 0);
    return head.subarray(0, read);
  } catch (error) {
    throw new TraceError(`${path}: cannot read the trace: ${(error as Error).message}`);
  } finally {
    closeSync(descriptor);
  }
}

/** The compression of the file, from its magic bytes. */
export function detectCompression(path: string): Compression {
  return compressionOf(readHead(path, MAGIC_BYTES));
}

/**
 * Yields the decoded bytes of the trace from decoded offset `skip` on. Plain files seek there; a
 * compressed stream cannot seek, so it is decoded from the start and the first `skip` bytes dropped
 * (resuming a checkpoint of a compressed trace costs one decode of the part already done).
 * Decode errors become TraceErrors naming the compressed byte offset reached.
 */
export async function* decodedChunks(
  path: string,
  compression: Compression,
  skip = 0,
  chunkSize = DEFAULT_CHUNK_SIZE,
  fileBytes: { read: number } = { read: 0 },
): AsyncGenerator<Uint8Array> {
  if (compression === "none") {
    const size = fileSize(path);
    if (skip > size) throw pastTheEnd(path, skip, size);
    fileBytes.read = skip;
    const chunks = readChunks(path, chunkSize, skip);
    try {
      for (;;) {
        let next: IteratorResult<Uint8Array>;
        try {
          next = await chunks.next();
        } catch (error) {
          throw new TraceError(
            `${path}: byte ${fileBytes.read}: cannot read the trace: ${(error as Error).message}`,
          );
        }
        if (next.done) return;
        fileBytes.read += next.value.length;
        yield next.value;
      }
    } finally {
      // A reader that stops early (bad input, a run that ended) closes the file now, not on GC.
      await chunks.return(undefined);
    }
  }
  const file = process.getBuiltinModule("node:fs").createReadStream(path, { highWaterMark: 1 << 20 });
  fileBytes.read = 0;
  let decoded: AsyncIterable<Uint8Array>;
  /** Compressed bytes the decoder got through before it failed. */
  let reached: () => number;
  if (compression === "gzip") {
    file.on("data", (chunk) => {
      fileBytes.read += chunk.length;
    });
    // Output in 64 KiB steps: a failure is then reported where the step that failed began, within
    // the few KiB of compressed data one step inflates.
    const gunzip = process.getBuiltinModule("node:zlib").createGunzip({ chunkSize: 1 << 16 });
    file.on("error", (error) => gunzip.destroy(error));
    decoded = file.pipe(gunzip);
    reached = () => gunzip.bytesWritten;
  } else {
    decoded = xzDecode(counted(file, fileBytes));
    reached = () => fileBytes.read;
  }
  let offset = 0;
  try {
    for await (const chunk of decoded) {
      let bytes = chunk instanceof Uint8Array ? chunk : new Uint8Array(chunk);
      if (offset + bytes.length <= skip) {
        offset += bytes.length;
        continue;
      }
      if (offset < skip) bytes = bytes.subarray(skip - offset);
      offset += chunk.length;
      yield bytes;
    }
  } catch (error) {
    if (error instanceof MemvirtError) throw error;
    throw new TraceError(
      `${path}: byte ${decodeErrorOffset(error) ?? reached()} of the ${compression} file: ${describeDecodeError(compression, error)}`,
    );
  } finally {
    file.destroy();
  }
  if (offset < skip) throw pastTheEnd(path, skip, offset);
}

/** The file's chunks, counted into `fileBytes` as they are read. */
async function* counted(
  file: AsyncIterable<Uint8Array>,
  fileBytes: { read: number },
): AsyncGenerator<Uint8Array> {
  for await (const chunk of file) {
    fileBytes.read += chunk.length;
    yield chunk;
  }
}

function fileSize(path: string): number {
  try {
    return statSync(path).size;
  } catch (error) {
    throw new TraceError(`${path}: cannot open the trace: ${(error as Error).message}`);
  }
}

/** The compiled decode worker; absent when memvirt runs from its TypeScript sources (tests). */
const DECODE_WORKER = fileURLToPath(new URL("./decode-worker.js", import.meta.url));

/**
 * decodedChunks, with the decompression on a worker thread when the file is compressed, so that
 * decoding the next chunks overlaps with simulating this one. Plain files are read asynchronously
 * on the calling thread already. Falls back to decoding here when the worker module is not built.
 */
export async function* decodedChunksOverlapped(
  path: string,
  compression: Compression,
  skip = 0,
  chunkSize = DEFAULT_CHUNK_SIZE,
  fileBytes: { read: number } = { read: 0 },
): AsyncGenerator<Uint8Array> {
  if (compression === "none" || !existsSync(DECODE_WORKER)) {
    yield* decodedChunks(path, compression, skip, chunkSize, fileBytes);
    return;
  }
  type Message =
    | { kind: "chunk"; bytes: Uint8Array; fileBytes: number }
    | { kind: "end" }
    | { kind: "error"; message: string; trace: boolean };
  const { Worker } = process.getBuiltinModule("node:worker_threads");
  const worker = new Worker(DECODE_WORKER, { workerData: { path, compression, skip, chunkSize } });
  const queue: Message[] = [];
  let wake: (() => void) | undefined;
  let failure: Error | undefined;
  worker.on("message", (message: Message) => {
    queue.push(message);
    wake?.();
  });
  worker.on("error", (error) => {
    failure = error;
    wake?.();
  });
  try {
    for (;;) {
      while (queue.length === 0 && !failure) await new Promise<void>((resolve) => (wake = resolve));
      if (failure) throw new TraceError(`${path}: the decode worker failed: ${failure.message}`);
      const message = queue.shift() as Message;
      if (message.kind === "end") return;
      if (message.kind === "error") {
        throw message.trace ? new TraceError(message.message) : new Error(message.message);
      }
      fileBytes.read = message.fileBytes;
      yield message.bytes;
      worker.postMessage("taken");
    }
  } finally {
    await worker.terminate();
  }
}

/**
 * Reads the trace file at `path` in `format` ("auto": from the content), delivering record batches to
 * `onBatch`. Records before a bad line or record are delivered before the TraceError is thrown.
 */
export async function readTrace(
  machine: Machine,
  path: string,
  formatOption: TraceFormatOption,
  onBatch: BatchHandler,
  options: ReadTraceOptions = {},
): Promise<TracePosition> {
  const compression = options.resume?.compression ?? detectCompression(path);
  const chunks = (skip: number, chunkSize: number) =>
    decodedChunksOverlapped(path, compression, skip, chunkSize, options.fileBytes);
  return readDecodedTrace(machine, path, compression, chunks, formatOption, onBatch, options);
}
