// Real traces in several VMs on one host: VM i replays trace i on its own vCPU. Each trace has its own
// reader (trace/source.ts) on a parser core of its own, so the readers, each at its own place in its
// file, never share the parsing state the core keeps; their records queue up per VM. The host's loop
// runs them in rounds of SLICE records from each VM in turn (VM 0 first), the way pinned vCPUs run
// side by side, so the interleaving depends only on the traces and never on how fast each file reads.
// A checkpoint is taken between rounds: each trace's position and the records it had queued.

import { defaultConfig } from "../config/config.js";
import { InterruptedError } from "../core/errors.js";
import * as L from "../core/layout.js";
import { Machine, MemvirtError } from "../core/machine.js";
import type { BuildName } from "../core/wasm.js";
import type { Host } from "../host/host.js";
import { fingerprintOf, makeContent, type PageContent } from "../overcommit/content.js";
import type { MultiVmLayout } from "../overcommit/host.js";
import { interruption, Pacer, unlessAborted } from "../util/steps.js";
import { TraceError, type TraceFormatOption, type TracePosition } from "./source.js";
import { readTrace } from "./stream.js";

/** Records each VM runs per round: 16 VMs' slices fill the record region. */
export const SLICE = L.RECORD_CAPACITY / L.MAX_CPUS;
/** Records a trace's reader may queue before it waits for the VMs to catch up. */
const HIGH_WATER = L.RECORD_CAPACITY;

export interface TraceSpec {
  file: string;
  format: TraceFormatOption;
}

/**
 * VMs whose applications are traces: each VM's process spans the whole user half, demand-paged,
 * writable and executable. A trace carries addresses, not data: every page starts as zeros (the
 * guest kernel zeroes what it allocates), and each store leaves data of its own, so KSM finds to
 * merge only pages a trace never writes (its code, data it only reads).
 */
export class TraceVms implements MultiVmLayout {
  readonly name = "traces";
  readonly vms: MultiVmLayout["vms"];

  constructor(
    readonly files: readonly string[],
    guest: { memory: number; levels: 4 | 5 },
    readonly seconds = 0,
  ) {
    const userPages = 2 ** ((guest.levels === 5 ? 56 : 47) - 12);
    this.vms = files.map(() => ({
      memoryPages: Math.floor(guest.memory / 4096),
      image: 0,
      regions: [{ start: 0n, pages: userPages, file: false, executable: true }],
    }));
  }

  contentOfWrite(vm: number, page: bigint, sequence: number): PageContent {
    return makeContent("heap", fingerprintOf(3, vm, page, sequence));
  }

  fileContent(): PageContent | undefined {
    return undefined;
  }
}

/** Where one trace stands at a checkpoint: its reader's position and the records not yet run. */
export interface FeedPosition {
  /** After the last batch its reader delivered; absent before the first. */
  position?: TracePosition;
  /** The reader reached the end of the file. */
  done: boolean;
  /** Records delivered and not yet run, base64. */
  pending: string;
  /** Records of this trace run so far. */
  records: number;
}

export interface MultiTracePosition {
  feeds: FeedPosition[];
  /** Records run so far, over all VMs. */
  records: number;
}

export interface MultiReplayOptions {
  build?: BuildName;
  resume?: MultiTracePosition;
  /** Take a checkpoint every this many records (over all VMs); 0 or undefined: never. */
  checkpointEvery?: number;
  onCheckpoint?: (position: MultiTracePosition) => void;
  /** After every round: records run and file bytes read so far, over all traces. */
  onProgress?: (records: number, fileBytesRead: number) => void;
  /**
   * Stops the run after the round that is running, as an InterruptedError in the result; with
   * checkpoints on, a last checkpoint is taken there first.
   */
  signal?: AbortSignal;
}

export interface MultiTraceResult {
  traces: { file: string; format: string; lines: number; records: number }[];
  records: number;
  /** Bad input that stopped the run (the statistics cover the records before it). */
  error?: MemvirtError;
}

/** Thrown into a waiting reader to end it when the run stops early. */
class Stopped extends Error {}

/** One trace's reader and the records it has queued for its VM. */
class TraceFeed {
  private readonly chunks: Uint8Array[] = [];
  /** Records queued. */
  queued = 0;
  /** Records of this trace run so far. */
  records = 0;
  position?: TracePosition;
  done: boolean;
  error?: unknown;
  readonly fileBytes = { read: 0 };
  private waiting?: () => void;
  private paused?: { resume: () => void; stop: (error: Error) => void };
  private stopped = false;
  readonly reading: Promise<void>;

  constructor(
    private readonly spec: TraceSpec,
    build: BuildName | undefined,
    resume: FeedPosition | undefined,
  ) {
    this.position = resume?.position;
    this.done = resume?.done ?? false;
    this.records = resume?.records ?? 0;
    if (resume?.pending) {
      const bytes = new Uint8Array(Buffer.from(resume.pending, "base64"));
      this.chunks.push(bytes);
      this.queued = bytes.length / L.RECORD_SIZE;
    }
    this.reading = this.done ? Promise.resolve() : this.read(build);
  }

  /** Reads the trace on a parser core of its own, queueing each batch's records. */
  private async read(build: BuildName | undefined): Promise<void> {
    const parser = new Machine(defaultConfig().machine, { build, backedFramesLog2: 8 });
    try {
      await readTrace(
        parser,
        this.spec.file,
        this.spec.format,
        (count, after) => {
          const bytes = parser.memory.slice(L.RECORDS_BASE, L.RECORDS_BASE + count * L.RECORD_SIZE);
          // Each VM has one vCPU: a record for another CPU (memvirt's format can hold one) is refused.
          const view = new DataView(bytes.buffer);
          for (let i = 0; i < count; i++) {
            const cpu = view.getUint16(i * L.RECORD_SIZE + L.REC_CPU, true);
            if (cpu !== 0) {
              this.enqueue(bytes.subarray(0, i * L.RECORD_SIZE), after);
              const where =
                after.format === "memvirt"
                  ? `byte ${after.decodedBytes - (count - i) * L.RECORD_SIZE}`
                  : `record ${after.records - count + i + 1}`;
              throw new TraceError(
                `${this.spec.file}: ${where}: cpu ${cpu}, but each VM of a multi-trace run has one vCPU (cpu 0)`,
              );
            }
          }
          this.enqueue(bytes, after);
        },
        {
          resume: this.position,
          fileBytes: this.fileBytes,
          pause: () => this.pause(),
        },
      );
      this.done = true;
    } catch (error) {
      if (!(error instanceof Stopped)) this.error = error;
    } finally {
      this.wake();
    }
  }

  private enqueue(bytes: Uint8Array, after: TracePosition): void {
    if (bytes.length > 0) this.chunks.push(bytes);
    this.queued += bytes.length / L.RECORD_SIZE;
    this.position = after;
    this.wake();
  }

  private wake(): void {
    const waiting = this.waiting;
    this.waiting = undefined;
    waiting?.();
  }

  /** Before each chunk: the reader waits while its VM has plenty queued. */
  private pause(): Promise<void> | undefined {
    if (this.stopped) throw new Stopped();
    if (this.queued < HIGH_WATER) return undefined;
    return new Promise<void>((resume, stop) => {
      this.paused = { resume, stop };
    });
  }

  get finished(): boolean {
    return this.done || this.error !== undefined;
  }

  /** Resolves when a slice is queued or the reader has finished. */
  async ready(): Promise<void> {
    while (this.queued < SLICE && !this.finished) await new Promise<void>((wake) => (this.waiting = wake));
  }

  /** Moves up to `count` records into `memory` at `offset`, on machine CPU `cpu`; returns how many. */
  take(memory: Uint8Array, offset: number, count: number, cpu: number): number {
    let taken = 0;
    while (taken < count && this.chunks.length > 0) {
      const chunk = this.chunks[0];
      const n = Math.min(count - taken, chunk.length / L.RECORD_SIZE);
      const bytes = n * L.RECORD_SIZE;
      memory.set(chunk.subarray(0, bytes), offset + taken * L.RECORD_SIZE);
      if (bytes === chunk.length) this.chunks.shift();
      else this.chunks[0] = chunk.subarray(bytes);
      taken += n;
    }
    const view = new DataView(memory.buffer, memory.byteOffset + offset, taken * L.RECORD_SIZE);
    for (let i = 0; i < taken; i++) view.setUint16(i * L.RECORD_SIZE + L.REC_CPU, cpu, true);
    this.queued -= taken;
    this.records += taken;
    if (this.queued < HIGH_WATER && this.paused) {
      const { resume } = this.paused;
      this.paused = undefined;
      resume();
    }
    return taken;
  }

  /** Ends the reader (the run stopped early) and waits for it. */
  async stop(): Promise<void> {
    this.stopped = true;
    this.paused?.stop(new Stopped());
    this.paused = undefined;
    await this.reading;
  }

  snapshot(): FeedPosition {
    return {
      position: this.position ? { ...this.position } : undefined,
      done: this.done,
      pending: Buffer.concat(this.chunks).toString("base64"),
      records: this.records,
    };
  }

  result(): MultiTraceResult["traces"][number] {
    return {
      file: this.spec.file,
      format: this.position?.format ?? this.spec.format,
      lines: (this.position?.line ?? 1) - 1,
      records: this.records,
    };
  }
}

/**
 * Replays trace i in the VM of host guest i, to the end of every trace. A bad record or line stops
 * the run once the records before it have run, and comes back as the result's error.
 */
export async function replayTraces(
  host: Host,
  traces: readonly TraceSpec[],
  options: MultiReplayOptions = {},
): Promise<MultiTraceResult> {
  if (traces.length !== host.guests.length)
    throw new MemvirtError(`${traces.length} traces for ${host.guests.length} VMs`, 1);
  const feeds = traces.map((spec, i) => new TraceFeed(spec, options.build, options.resume?.feeds[i]));
  const every = options.checkpointEvery ?? 0;
  let records = options.resume?.records ?? 0;
  let lastCheckpoint = records;
  let error: MemvirtError | undefined;
  const pacer = new Pacer(options.signal);
  try {
    for (;;) {
      await unlessAborted(Promise.all(feeds.map((feed) => feed.ready())), options.signal);
      await pacer.pace();
      // A trace that failed stops the run once its records before the failure have run.
      const failed = feeds.find((feed) => feed.error !== undefined && feed.queued === 0);
      if (failed) throw failed.error;
      if (feeds.every((feed) => feed.queued === 0)) break;
      const memory = host.machine.memory;
      let count = 0;
      feeds.forEach((feed, i) => {
        count += feed.take(memory, L.RECORDS_BASE + count * L.RECORD_SIZE, SLICE, host.guests[i].firstCpu);
      });
      host.replay(count);
      records += count;
      if (every > 0 && records - lastCheckpoint >= every) {
        lastCheckpoint = records;
        options.onCheckpoint?.({ feeds: feeds.map((feed) => feed.snapshot()), records });
      }
      options.onProgress?.(
        records,
        feeds.reduce((sum, feed) => sum + feed.fileBytes.read, 0),
      );
      if (options.signal?.aborted) throw interruption(options.signal);
    }
  } catch (caught) {
    if (!(caught instanceof MemvirtError)) throw caught;
    error = caught;
    // Stopped on request: a last checkpoint where it stopped (between rounds), so a resume loses nothing.
    if (caught instanceof InterruptedError && every > 0 && records > lastCheckpoint)
      options.onCheckpoint?.({ feeds: feeds.map((feed) => feed.snapshot()), records });
  } finally {
    // Not waited for when the run was stopped while a reader waited for input (a pipe may never answer).
    const stopping = Promise.all(feeds.map((feed) => feed.stop()));
    if (options.signal?.aborted) stopping.catch(() => {});
    else await stopping;
  }
  return { traces: feeds.map((feed) => feed.result()), records, error };
}
