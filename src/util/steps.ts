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

/**
 * Lets the event loop turn every SLICE_MS of a long run, and stops it there once `signal` aborts: a
 * loop that does its work in synchronous batches (a trace reader feeding chunks) calls `pace` between
 * them, so a signal handler gets to run and its abort is seen.
 */
export class Pacer {
  // Date.now, not performance.now: a millisecond clock serves 50 ms slices, and in Node the first use
  // of `performance` loads perf_hooks (about a dozen modules) at every run's start.
  private turned = Date.now();

  constructor(private readonly signal?: AbortSignal) {}

  async pace(): Promise<void> {
    if (Date.now() - this.turned >= SLICE_MS) {
      await turn();
      this.turned = Date.now();
    }
    if (this.signal?.aborted) throw interruption(this.signal);
  }
}

/** The InterruptedError for an aborted signal. */
export function interruption(signal: AbortSignal): InterruptedError {
  const reason = signal.reason;
  return new InterruptedError(typeof reason === "string" ? reason : "SIGINT");
}

/**
 * `promise`, or an InterruptedError as soon as `signal` aborts: a run waiting for input (a pipe, a slow
 * disk, a reader thread) stops without waiting for it.
 */
export function unlessAborted<T>(promise: Promise<T>, signal: AbortSignal | undefined): Promise<T> {
  if (!signal) return promise;
  if (signal.aborted) return Promise.reject(interruption(signal));
  return new Promise<T>((resolve, reject) => {
    const onAbort = () => reject(interruption(signal));
    signal.addEventListener("abort", onAbort, { once: true });
    promise.then(
      (value) => {
        signal.removeEventListener("abort", onAbort);
        resolve(value);
      },
      (error) => {
        signal.removeEventListener("abort", onAbort);
        reject(error);
      },
    );
  });
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
  const pacer = new Pacer(control.signal);
  try {
    for (;;) {
      await pacer.pace();
      const next = steps.next();
      if (next.done) return next.value;
      done += next.value;
      control.onProgress?.(done);
    }
  } finally {
    steps.return(undefined as T);
  }
}
