// The progress bar of long runs: records/s, percent of the file and ETA, on stderr. It only draws
// on a terminal and never with --quiet, so piped output and logs stay clean. Progress is measured
// in file bytes (compressed bytes for xz and gzip), the one quantity known in advance.

import { statSync } from "node:fs";
import { SingleBar } from "cli-progress";

/** Redraws at most this often: a batch ends every few milliseconds on fast traces. */
const REDRAW_MS = 200;

export class ProgressBar {
  private readonly bar: SingleBar | undefined;
  private readonly started = Date.now();
  private lastDraw = 0;

  /** `files`: the trace, or the traces read side by side (progress is then their bytes together). */
  constructor(
    files: string | readonly string[],
    quiet: boolean,
    stream: NodeJS.WriteStream = process.stderr,
  ) {
    if (quiet || !stream.isTTY) return;
    let total = 0;
    try {
      for (const file of typeof files === "string" ? [files] : files) total += statSync(file).size;
    } catch {
      return;
    }
    this.bar = new SingleBar({
      stream,
      format: "{bar} {percentage}% | {records} records | {rate} records/s | ETA {eta_formatted}",
      hideCursor: true,
      clearOnComplete: true,
      etaBuffer: 20,
      barsize: 30,
    });
    this.bar.start(Math.max(1, total), 0, { records: "0", rate: "-" });
  }

  update(records: number, fileBytes: number): void {
    if (!this.bar) return;
    const now = Date.now();
    if (now - this.lastDraw < REDRAW_MS) return;
    this.lastDraw = now;
    const seconds = (now - this.started) / 1000;
    this.bar.update(fileBytes, {
      records: records.toLocaleString("en-US"),
      rate: seconds > 0 ? Math.round(records / seconds).toLocaleString("en-US") : "-",
    });
  }

  stop(): void {
    this.bar?.stop();
  }
}
