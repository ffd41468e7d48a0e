// Streaming trace file reader. Traces run to gigabytes, so they are never read whole; the async
// variant keeps the next read in flight while the caller parses the current chunk. It reads through
// fs's callbacks, not node:fs/promises, which a run would otherwise load for this alone.

import { close, closeSync, open, openSync, read, readSync, statSync } from "node:fs";

export const DEFAULT_CHUNK_SIZE = 4 << 20;

function checkChunkSize(chunkSize: number): void {
  if (!Number.isSafeInteger(chunkSize) || chunkSize <= 0) {
    throw new RangeError(`chunk size must be a positive integer, got ${chunkSize}`);
  }
}

/**
 * Yields the file from byte `start` on as consecutive chunks of at most `chunkSize` bytes (the last
 * may be shorter; an empty file yields nothing).
 *
 * Two buffers alternate: while the caller holds one chunk, the next read fills the other. A chunk
 * therefore stays valid only until the caller asks for the next one, when its buffer is handed back
 * to the kernel; copy it (or finish with it, e.g. copy it into the core's TEXT region) first.
 */
export async function* readChunks(
  path: string,
  chunkSize = DEFAULT_CHUNK_SIZE,
  start = 0,
): AsyncGenerator<Uint8Array> {
  checkChunkSize(chunkSize);
  // A regular file is opened and read synchronously until a read fills a whole chunk: the first read
  // has nothing to overlap with, and a trace of one chunk or less is then read without libuv's thread
  // pool (whose four threads cost a small run about 2% of its CPU). Anything else (a pipe, a device)
  // is opened and read asynchronously, so that a run waiting for its input can still be stopped.
  const regular = statSync(path, { throwIfNoEntry: false })?.isFile() ?? false;
  const descriptor = regular
    ? openSync(path, "r")
    : await new Promise<number>((resolve, reject) =>
        open(path, "r", (error, fd) => (error ? reject(error) : resolve(fd))),
      );
  const buffers = [new Uint8Array(chunkSize), new Uint8Array(chunkSize)];
  let position = start;
  let current = 0;
  let pending: Promise<number> | null = null;

  const startRead = (buffer: Uint8Array): Promise<number> => {
    const bytesRead = new Promise<number>((resolve, reject) =>
      read(descriptor, buffer, 0, chunkSize, position, (error, bytes) =>
        error ? reject(error) : resolve(bytes),
      ),
    );
    // The read may fail while the caller is busy with the previous chunk, before anyone awaits it;
    // this handler keeps Node from treating that as an unhandled rejection. The error still surfaces
    // through the `await` below.
    bytesRead.catch(() => {});
    return bytesRead;
  };

  try {
    for (let whole = false; regular && !whole; ) {
      const bytesRead = readSync(descriptor, buffers[current], 0, chunkSize, position);
      if (bytesRead === 0) return;
      const chunk = buffers[current].subarray(0, bytesRead);
      position += bytesRead;
      current ^= 1;
      whole = bytesRead === chunkSize;
      // From a whole chunk on, the next read is in flight while the caller works on this one.
      if (whole) pending = startRead(buffers[current]);
      yield chunk;
    }
    pending ??= startRead(buffers[current]);
    for (;;) {
      const bytesRead = await pending;
      pending = null;
      if (bytesRead === 0) return;
      const chunk = buffers[current].subarray(0, bytesRead);
      position += bytesRead;
      current ^= 1;
      pending = startRead(buffers[current]);
      yield chunk;
    }
  } finally {
    // Closing under an unfinished read would make it fail or read a recycled descriptor.
    if (pending !== null) await pending.catch(() => {});
    if (regular) closeSync(descriptor);
    else
      await new Promise<void>((resolve, reject) =>
        close(descriptor, (error) => (error ? reject(error) : resolve())),
      );
  }
}

/**
 * Synchronous variant of readChunks, with one buffer, as nothing can overlap: each chunk is
 * overwritten by the next, so again copy it before asking for the next one.
 */
export function* readChunksSync(path: string, chunkSize = DEFAULT_CHUNK_SIZE): Generator<Uint8Array> {
  checkChunkSize(chunkSize);
  const descriptor = openSync(path, "r");
  try {
    const buffer = new Uint8Array(chunkSize);
    let position = 0;
    for (;;) {
      const bytesRead = readSync(descriptor, buffer, 0, chunkSize, position);
      if (bytesRead === 0) return;
      position += bytesRead;
      yield buffer.subarray(0, bytesRead);
    }
  } finally {
    closeSync(descriptor);
  }
}
