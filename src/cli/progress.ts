// Progress bars of long runs, on stderr: only on a terminal and never with --quiet, so piped output and
// logs stay clean. A trace's bar measures file bytes (compressed bytes for xz and gzip), the one
// quantity known in advance, and shows records and records/s; a workload's, a comparison's or a
// table's (`ProgressBar.count`) measures the units it knows it will do (records, operations, rows),
// with their rate and ETA.

import { statSync } from "node:fs";
import { createRequire } from "node:module";
import type { SingleBar } from "cli-progress";
import { count } from "../util/count.js";

// cli-progress is loaded only when a bar is drawn: loading it costs about 30 ms of CPU, a tenth of a
// small run's start-up, and runs that are piped, logged or --quiet draw none. It is CommonJS, so a
// synchronous require serves a bar that starts synchronously.
const load = createRequire(import.meta.url);

/** Redraws at most this often: a batch ends every few milliseconds on fast traces. */
const REDRAW_MS = 200;

export class ProgressBar {
  private bar: SingleBar | undefined;
  private readonly started = Date.now();
  private lastDraw = 0;

  /**
   * A bar over trace files: `files` is the trace, or the traces read side by side (progress is then
   * their bytes together). `stream`: where to draw; nothing is drawn when it is not a terminal.
   */
  constructor(files: string | readonly string[], quiet: boolean, stream?: NodeJS.WriteStream) {
    // process.stderr only when a bar may draw: creating it costs a run that draws none (cli/stdio.ts).
    if (quiet || files.length === 0) return;
    stream ??= process.stderr;
    if (!stream.isTTY) return;
    let total = 0;
    try {
      for (const file of typeof files === "string" ? [files] : files) total += statSync(file).size;
    } catch {
      return;
    }
    this.start(
      stream,
      "{bar} {percentage}% | {records} records | {rate} records/s | ETA {eta_formatted}",
      total,
    );
  }

  /** A bar over a known number of `unit`s (records, operations, rows): done of total, rate, ETA. */
  static count(total: number, unit: string, quiet: boolean, stream?: NodeJS.WriteStream): ProgressBar {
    const progress = new ProgressBar([], quiet, stream);
    if (quiet) return progress;
    stream ??= process.stderr;
    if (stream.isTTY)
      progress.start(
        stream,
        `{bar} {percentage}% | {records}/${count(total)} ${unit} | {rate} ${unit}/s | ETA {eta_formatted}`,
        total,
      );
    return progress;
  }

  private start(stream: NodeJS.WriteStream, format: string, total: number): void {
    const { SingleBar: Bar } = load("cli-progress") as typeof import("cli-progress");
    this.bar = new Bar({
      stream,
      format,
      hideCursor: true,
      clearOnComplete: true,
      etaBuffer: 20,
      barsize: 30,
    });
    this.bar.start(Math.max(1, total), 0, { records: "0", rate: "-" });
  }

  /** `done` units so far; a file bar's position is the bytes read (`fileBytes`). */
  update(done: number, fileBytes = done): void {
    if (!this.bar) return;
    const now = Date.now();
    if (now - this.lastDraw < REDRAW_MS) return;
    this.lastDraw = now;
    const seconds = (now - this.started) / 1000;
    this.bar.update(fileBytes, {
      records: count(done),
      rate: seconds > 0 ? count(Math.round(done / seconds)) : "-",
    });
  }

  stop(): void {
    this.bar?.stop();
  }
}
