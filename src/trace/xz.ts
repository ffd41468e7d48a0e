// xz decoding that knows where it failed. xz-decompress (xz-embedded compiled to WebAssembly) decodes
// behind a ReadableStream that hides its decoder's input position, so a corrupt file could only be
// reported at the bytes read so far (for a small file, its length). This drives the same compiled
// decoder directly, the way that stream does (one context: supply input, take output), and on a
// failure names the compressed byte the decoder had reached. The package is pinned to one version;
// the layout read here is that version's context header.

/** xz-embedded's return codes (xz.h): OK, STREAM_END; the rest are errors. */
const XZ_OK = 0;
const XZ_STREAM_END = 1;

/** The decoder failed at compressed byte `offset` with xz-embedded's code `code` (xz.h's xz_ret). */
export class XzDecodeError extends Error {
  constructor(
    readonly code: number,
    readonly offset: number,
  ) {
    super(`xz decoding failed with error code ${code} at byte ${offset}`);
  }
}

interface XzExports {
  memory: WebAssembly.Memory;
  create_context(): number;
  destroy_context(context: number): void;
  supply_input(context: number, length: number): void;
  get_next_output(context: number): number;
}

/** The static side of xz-decompress's stream class that holds the shared compiled module. */
interface XzModuleHolder {
  _moduleInstance?: WebAssembly.Instance;
  _moduleInstancePromise?: Promise<void>;
  _getModuleInstance(): Promise<void>;
}

async function xzExports(): Promise<XzExports> {
  // Loaded on first use: a run of a plain or gzip trace never needs it.
  const xz = (await import("xz-decompress")).default;
  const holder = xz.XzReadableStream as unknown as XzModuleHolder;
  if (!holder._moduleInstance) {
    holder._moduleInstancePromise ??= holder._getModuleInstance();
    await holder._moduleInstancePromise;
  }
  return (holder._moduleInstance as WebAssembly.Instance).exports as unknown as XzExports;
}

/**
 * One decoder context. Its header is six u32s: buffer size, input pointer, input position, input
 * size, output pointer, output position; the input and output buffers follow.
 */
class XzContext {
  private readonly context: number;
  readonly bufferSize: number;

  constructor(private readonly exports: XzExports) {
    this.context = exports.create_context();
    this.bufferSize = this.header(0);
  }

  private header(word: number): number {
    return new Uint32Array(this.exports.memory.buffer, this.context, 6)[word];
  }

  supply(bytes: Uint8Array): void {
    const input = this.header(1);
    new Uint8Array(this.exports.memory.buffer, input, bytes.length).set(bytes);
    this.exports.supply_input(this.context, bytes.length);
  }

  /** Bytes of the last supplied input the decoder has consumed. */
  get inputPosition(): number {
    return this.header(2);
  }

  get needsInput(): boolean {
    return this.header(2) === this.header(3);
  }

  /** Decodes into the output buffer; returns the code and a copy of the output. */
  decode(): { code: number; output: Uint8Array } {
    const code = this.exports.get_next_output(this.context);
    const output = new Uint8Array(this.exports.memory.buffer, this.header(4), this.header(5)).slice();
    // Reset the output position: the next call fills the buffer from its start.
    new Uint32Array(this.exports.memory.buffer, this.context, 6)[5] = 0;
    return { code, output };
  }

  dispose(): void {
    this.exports.destroy_context(this.context);
  }
}

/**
 * The decoded bytes of an xz stream given as chunks. A failure throws an XzDecodeError naming the
 * compressed byte the decoder had reached: where the data stopped making sense, or for a file cut
 * short, its end.
 */
export async function* xzDecode(compressed: AsyncIterable<Uint8Array>): AsyncGenerator<Uint8Array> {
  const decoder = new XzContext(await xzExports());
  const iterator = compressed[Symbol.asyncIterator]();
  let pending: Uint8Array = new Uint8Array(0);
  let ended = false;
  /** Compressed bytes supplied before the piece the decoder is working on. */
  let before = 0;
  let piece = 0;
  try {
    for (;;) {
      if (decoder.needsInput) {
        before += piece;
        while (pending.length === 0 && !ended) {
          const next = await iterator.next();
          if (next.done) ended = true;
          else pending = next.value;
        }
        // At the end the decoder is given nothing: it finishes or reports the stream truncated.
        piece = Math.min(decoder.bufferSize, pending.length);
        decoder.supply(pending.subarray(0, piece));
        pending = pending.subarray(piece);
      }
      const { code, output } = decoder.decode();
      if (code !== XZ_OK && code !== XZ_STREAM_END) {
        throw new XzDecodeError(code, before + decoder.inputPosition);
      }
      if (output.length > 0) yield output;
      if (code === XZ_STREAM_END) return;
    }
  } finally {
    decoder.dispose();
    await iterator.return?.();
  }
}
