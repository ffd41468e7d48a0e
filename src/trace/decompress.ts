// What wraps a trace's bytes (plain, gzip or xz), told from its magic, and the decompression of a
// byte stream on any host: gzip through the platform's DecompressionStream (browsers, workers and
// Node alike), xz through xz-embedded compiled to WebAssembly (trace/xz.ts). Node's file reader
// (trace/stream.ts) uses node:zlib for gzip instead, which inflates on libuv's thread pool.

import { MemvirtError } from "../core/errors.js";
import { XzDecodeError, xzDecode } from "./xz.js";

export type Compression = "none" | "gzip" | "xz";

/** A malformed or unreadable trace: `FILE:LINE: what is wrong` or `FILE: byte N: ...`, exit code 2. */
export class TraceError extends MemvirtError {}

const XZ_MAGIC = [0xfd, 0x37, 0x7a, 0x58, 0x5a, 0x00];
const GZIP_MAGIC = [0x1f, 0x8b];
/** Bytes of the head compressionOf needs. */
export const MAGIC_BYTES = XZ_MAGIC.length;

function startsWith(bytes: Uint8Array, magic: readonly number[]): boolean {
  return bytes.length >= magic.length && magic.every((byte, i) => bytes[i] === byte);
}

/** The compression of a trace whose first bytes are `head`. */
export function compressionOf(head: Uint8Array): Compression {
  if (startsWith(head, XZ_MAGIC)) return "xz";
  if (startsWith(head, GZIP_MAGIC)) return "gzip";
  return "none";
}

/** xz-embedded's xz_ret codes, which xz-decompress reports as bare numbers. */
const XZ_ERRORS: Record<string, string> = {
  "2": "unsupported integrity check",
  "3": "out of memory",
  "4": "dictionary larger than the memory limit",
  "5": "not an xz stream",
  "6": "unsupported xz options",
  "7": "corrupt xz data",
  "8": "truncated xz data (the file ends inside the stream)",
};

export function describeDecodeError(compression: Compression, error: unknown): string {
  const message = error instanceof Error ? error.message : String(error);
  if (compression === "xz") {
    const code = error instanceof XzDecodeError ? String(error.code) : /error code (\d+)/.exec(message)?.[1];
    if (code && XZ_ERRORS[code]) return XZ_ERRORS[code];
  }
  if (compression === "gzip") {
    if (/unexpected end of file|premature end|truncated/i.test(message))
      return "truncated gzip data (the file ends inside the stream)";
    return `corrupt gzip data (${message})`;
  }
  return message;
}

/**
 * The decoded bytes of a compressed stream. An xz failure is an XzDecodeError naming the compressed byte
 * where decoding failed; a gzip one is the platform's error.
 */
export function decompressStream(
  compressed: ReadableStream<Uint8Array>,
  compression: Exclude<Compression, "none">,
): ReadableStream<Uint8Array> {
  if (compression === "xz") {
    const decoded = xzDecode(chunksOf(compressed));
    return new ReadableStream<Uint8Array>({
      async pull(controller) {
        const next = await decoded.next();
        if (next.done) controller.close();
        else controller.enqueue(next.value);
      },
      async cancel() {
        await decoded.return(undefined);
      },
    });
  }
  return compressed.pipeThrough(
    new DecompressionStream("gzip") as unknown as ReadableWritablePair<Uint8Array, Uint8Array>,
  );
}

async function* chunksOf(stream: ReadableStream<Uint8Array>): AsyncGenerator<Uint8Array> {
  const reader = stream.getReader();
  try {
    for (;;) {
      const next = await reader.read();
      if (next.done) return;
      yield next.value;
    }
  } finally {
    await reader.cancel().catch(() => {});
  }
}

/** The compressed byte offset a decoder error names, when it names one. */
export function decodeErrorOffset(error: unknown): number | undefined {
  return error instanceof XzDecodeError ? error.offset : undefined;
}
