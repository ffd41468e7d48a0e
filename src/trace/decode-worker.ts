// The decode worker: inflates a compressed trace on its own thread and posts the decoded chunks to
// the simulating thread, so decompression (xz's runs on the calling thread otherwise) overlaps with
// simulation. At most IN_FLIGHT chunks wait unconsumed, which bounds memory whatever the speeds.

import { parentPort, workerData } from "node:worker_threads";
import { MemvirtError } from "../core/machine.js";
import { type Compression, decodedChunks } from "./stream.js";

export interface DecodeJob {
  path: string;
  compression: Compression;
  skip: number;
  chunkSize: number;
}

export type DecodeMessage =
  | { kind: "chunk"; bytes: Uint8Array; fileBytes: number }
  | { kind: "end" }
  | { kind: "error"; message: string; trace: boolean };

export const IN_FLIGHT = 4;

async function decode(job: DecodeJob): Promise<void> {
  const port = parentPort;
  if (!port) return;
  let outstanding = 0;
  let wake: (() => void) | undefined;
  // The consumer says "taken" for every chunk it is done with.
  port.on("message", () => {
    outstanding--;
    wake?.();
  });
  const fileBytes = { read: 0 };
  try {
    for await (const chunk of decodedChunks(job.path, job.compression, job.skip, job.chunkSize, fileBytes)) {
      // The chunk may be a view into a buffer the stream reuses (and Buffer's slice() is a view, not
      // a copy): send a copy in an ArrayBuffer of its own, transferred.
      const bytes = new Uint8Array(chunk);
      port.postMessage({ kind: "chunk", bytes, fileBytes: fileBytes.read } satisfies DecodeMessage, [
        bytes.buffer,
      ]);
      outstanding++;
      while (outstanding >= IN_FLIGHT) await new Promise<void>((resolve) => (wake = resolve));
    }
    port.postMessage({ kind: "end" } satisfies DecodeMessage);
  } catch (error) {
    port.postMessage({
      kind: "error",
      message: error instanceof Error ? error.message : String(error),
      trace: error instanceof MemvirtError,
    } satisfies DecodeMessage);
  }
  port.close();
}

if (parentPort && workerData) void decode(workerData as DecodeJob);
