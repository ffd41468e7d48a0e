// Long runs as steps: a source of work (a workload, a comparison, a DMA run) is a generator that runs
// one batch per step and yields how many units (records, operations, rows) the batch did. `drain` runs
// it to the end at once; `drive` runs it with the event loop turning between batches, so a progress bar
// redraws and an abort (SIGINT, SIGTERM, a page's stop button) is seen at the next batch boundary.
// Batches are the same either way, so the statistics are too.
import { InterruptedError } from "../core/errors.js";

export type Steps<T> = Generator<number, T, void>;

export interface RunControl {
  /** Stops the run at the next batch boundary with an InterruptedError (the abort's reason names why). */
  signal?: AbortSignal;
  /** After each step: the units done so far. */
  onProgress?: (done: number) => void;
}

/** How long a run may hold the event loop before it lets it turn. */
const SLICE_MS = 50;

const turn = () =>
  new Promise<void>((resolve) =>
    typeof setImmediate === "function" ? setImmediate(resolve) : setTimeout(resolve, 0),
  );

/** The InterruptedError for an aborted signal. */
export function interruption(signal: AbortSignal): InterruptedError {
  const reason = signal.reason;
  return new InterruptedError(typeof reason === "string" ? reason : "SIGINT");
}

/** Runs `steps` to its end and returns its result. */
export function drain<T>(steps: Steps<T>): T {
  for (;;) {
    const next = steps.next();
    if (next.done) return next.value;
  }
}

/** Runs `steps` to its end, letting the event loop turn every SLICE_MS; an abort throws between steps. */
export async function drive<T>(steps: Steps<T>, control: RunControl = {}): Promise<T> {
  let done = 0;
  let turned = performance.now();
  for (;;) {
    if (control.signal?.aborted) {
      steps.return(undefined as T);
      throw interruption(control.signal);
    }
    const next = steps.next();
    if (next.done) return next.value;
    done += next.value;
    control.onProgress?.(done);
    if (performance.now() - turned >= SLICE_MS) {
      await turn();
      turned = performance.now();
    }
  }
}
