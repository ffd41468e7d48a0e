// `memvirt convert`: any trace format to memvirt's own. The reader delivers record batches exactly
// as replay sees them, and they are written out unchanged, so replaying the output gives the
// statistics of replaying the input (the records are the same bytes).

import { closeSync, openSync, renameSync, statSync, unlinkSync, writeSync } from "node:fs";
import { defaultConfig } from "../config/config.js";
import * as L from "../core/layout.js";
import { Machine, MemvirtError } from "../core/machine.js";
import type { BuildName } from "../core/wasm.js";
import { interruption } from "../util/steps.js";
import {
  OWN_HEADER_BYTES,
  OWN_MAGIC,
  OWN_VERSION,
  type TraceFormat,
  type TraceFormatOption,
} from "./source.js";
import { readTrace } from "./stream.js";

export interface ConvertResult {
  input: string;
  output: string;
  format: TraceFormat;
  records: number;
  bytesWritten: number;
}

/** The 16-byte header of memvirt's own format. */
export function ownFormatHeader(): Uint8Array {
  const header = new Uint8Array(OWN_HEADER_BYTES);
  header.set(OWN_MAGIC, 0);
  const view = new DataView(header.buffer);
  view.setUint32(8, OWN_VERSION, true);
  view.setUint32(12, L.RECORD_SIZE, true);
  return header;
}

/** How a conversion is watched and stopped. */
export interface ConvertOptions {
  build?: BuildName;
  /** Stops the conversion between batches (an InterruptedError); OUT is not written. */
  signal?: AbortSignal;
  /** After each batch: records converted and input file bytes read so far. */
  onProgress?: (records: number, fileBytes: number) => void;
}

/**
 * Converts `input` to memvirt's format at `output` (written to `output.tmp` and renamed at the end,
 * so a failed or interrupted conversion leaves no half file under the final name, and no `.tmp`). A
 * bad input line stops it with the reader's error, after writing nothing.
 */
export async function convertTrace(
  input: string,
  format: TraceFormatOption,
  output: string,
  options: BuildName | ConvertOptions = {},
): Promise<ConvertResult> {
  const { build, signal, onProgress } = typeof options === "string" ? { build: options } : options;
  // Only the core's text parser and its record region are used: a one-CPU machine is enough.
  const machine = new Machine(defaultConfig().machine, { build });
  const temporary = `${output}.tmp`;
  let descriptor: number;
  try {
    if (statSync(output, { throwIfNoEntry: false })?.isDirectory()) throw new Error("it is a directory");
    descriptor = openSync(temporary, "w");
  } catch (error) {
    throw new MemvirtError(`--out ${output}: cannot write: ${(error as Error).message}`);
  }
  let bytesWritten = 0;
  let position: Awaited<ReturnType<typeof readTrace>>;
  const fileBytes = { read: 0 };
  try {
    const header = ownFormatHeader();
    writeSync(descriptor, header);
    bytesWritten += header.length;
    position = await readTrace(
      machine,
      input,
      format,
      (count, after) => {
        const records = machine.memory.subarray(L.RECORDS_BASE, L.RECORDS_BASE + count * L.RECORD_SIZE);
        let written = 0;
        while (written < records.length) written += writeSync(descriptor, records, written);
        bytesWritten += records.length;
        onProgress?.(after.records, fileBytes.read);
        if (signal?.aborted) throw interruption(signal);
      },
      { fileBytes },
    );
    closeSync(descriptor);
    renameSync(temporary, output);
  } catch (error) {
    try {
      closeSync(descriptor);
    } catch {
      // Closed already, before the rename that failed.
    }
    unlinkSync(temporary);
    if (error instanceof MemvirtError) throw error;
    throw new MemvirtError(`--out ${output}: cannot write: ${(error as Error).message}`);
  }
  return { input, output, format: position.format, records: position.records, bytesWritten };
}
