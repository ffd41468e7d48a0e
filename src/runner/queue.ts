// Sweeps through a Redis queue (BullMQ): the coordinator (`memvirt sweep --queue URL`) enqueues each
// cell not yet in its output as a job whose id is made from the grid's content and the cell, so a
// coordinator killed and run again enqueues nothing twice, and collects rows as jobs finish. Workers
// (`memvirt worker --queue URL`), on any machines that see the traces at the same paths, run cells on
// the same cell runner as local sweeps. A job is data: its payload is checked field by field and its
// config as a config file is; nothing in it is ever run as code.
//
// BullMQ and ioredis are loaded only here, and only when a queue is used: every other command starts
// without their import cost.

import { createHash } from "node:crypto";
import { closeSync, constants, openSync, realpathSync } from "node:fs";
import { createRequire } from "node:module";
import { hostname } from "node:os";
import { isAbsolute, relative, resolve, sep } from "node:path";
import type { Job } from "bullmq";
import { MemvirtError } from "../core/machine.js";
import { VERSION } from "../report/report.js";
import { cellFromData, failedRow, type SweepCell, type SweepRow } from "./cell.js";
import { CellPool } from "./cell-pool.js";
import type { Grid, SweepOptions } from "./sweep.js";

/** One queue for every sweep: workers serve whichever grids coordinators enqueue. */
export const QUEUE_NAME = "memvirt-sweep";
/** The Redis key prefix of the queue's keys. */
export const KEY_PREFIX = "memvirt";
/** Attempts of a job before its failure is final (a worker that cannot read the trace hands it on). */
export const ATTEMPTS = 3;

interface JobData {
  version: string;
  cell: SweepCell;
}

/** The password of a URL without one, kept out of the process list (`ps` shows the arguments). */
const PASSWORD_VARIABLE = "MEMVIRT_REDIS_PASSWORD";

/**
 * BullMQ's connection options for `url`: redis://[[USER]:PASSWORD@]HOST[:PORT][/DB], or rediss:// for
 * TLS. The Redis client parses the URL itself (its user, password, database and TLS); a password it
 * lacks comes from $MEMVIRT_REDIS_PASSWORD. TLS verifies the server against Node's CAs and
 * $NODE_EXTRA_CA_CERTS.
 */
export function redisConnection(url: string): { url: string; [option: string]: unknown } {
  let parsed: URL;
  try {
    parsed = new URL(url);
  } catch {
    throw new MemvirtError(`--queue ${url}: not a URL (expected redis://HOST:PORT[/DB] or rediss://...)`);
  }
  if (parsed.protocol !== "redis:" && parsed.protocol !== "rediss:") {
    throw new MemvirtError(
      `--queue ${describeUrl(url)}: expected a redis:// or rediss:// URL, got ${parsed.protocol}//`,
    );
  }
  if (parsed.pathname !== "" && parsed.pathname !== "/" && !/^\/\d+$/.test(parsed.pathname)) {
    throw new MemvirtError(`--queue ${describeUrl(url)}: the path must be a database number (/0, /1, ...)`);
  }
  const password = process.env[PASSWORD_VARIABLE];
  return {
    url,
    ...(parsed.password === "" && password ? { password } : {}),
    // Workers block on Redis: commands must wait for a reconnection rather than fail.
    maxRetriesPerRequest: null,
  };
}

/** The URL with its password masked, for messages. */
export function describeUrl(url: string): string {
  try {
    const parsed = new URL(url);
    if (parsed.password) parsed.password = "***";
    return parsed.toString();
  } catch {
    return url;
  }
}

const load = createRequire(import.meta.url);

/**
 * The queue's client libraries, which are optional peer dependencies: a plain install of memvirt does
 * not carry their ~13 MB, and a machine that sweeps through Redis installs them beside it. Both ship
 * CommonJS, and they are required rather than imported: the command line runs as one CommonJS bundle
 * compiled from a V8 code cache, where a dynamic import() has no loader to call (bin/memvirt.js).
 */
function queueLibrary(name: "bullmq"): typeof import("bullmq");
function queueLibrary(name: "ioredis"): typeof import("ioredis");
function queueLibrary(name: "bullmq" | "ioredis"): unknown {
  try {
    return load(name);
  } catch (error) {
    if ((error as { code?: string }).code !== "MODULE_NOT_FOUND") throw error;
    throw new MemvirtError(
      `--queue needs the ${name} package, which memvirt does not install by itself: npm install bullmq@6.7.6 ioredis@6.1.0`,
    );
  }
}

/** Connects once, without retrying, so that an unreachable Redis is a clear error (exit 2), not a hang. */
export async function probeRedis(url: string): Promise<void> {
  const { url: _, ...options } = redisConnection(url);
  const { Redis } = queueLibrary("ioredis");
  const client = new Redis(url, {
    ...options,
    lazyConnect: true,
    connectTimeout: 5000,
    maxRetriesPerRequest: 0,
    retryStrategy: () => null,
    enableOfflineQueue: false,
    // A socket that never connected is otherwise given 2 s to close, which the exit would wait for.
    disconnectTimeout: 100,
  });
  // Without retries, connect() fails with "Connection is closed."; the socket's error says why.
  let cause: Error | undefined;
  client.on("error", (error: Error) => {
    cause ??= error;
  });
  try {
    await client.connect();
    await client.ping();
  } catch (error) {
    const reason = (cause ?? (error as Error)).message;
    throw new MemvirtError(`--queue ${describeUrl(url)}: cannot reach Redis: ${reason}`);
  } finally {
    client.disconnect();
  }
}

/** JSON with object keys sorted: the same content hashes the same, however the file spelt it. */
function canonical(value: unknown): string {
  if (Array.isArray(value)) return `[${value.map(canonical).join(",")}]`;
  if (value !== null && typeof value === "object") {
    const record = value as Record<string, unknown>;
    return `{${Object.keys(record)
      .sort()
      .map((key) => `${JSON.stringify(key)}:${canonical(record[key])}`)
      .join(",")}}`;
  }
  return JSON.stringify(value) ?? "null";
}

const digest = (text: string) => createHash("sha256").update(text).digest("hex").slice(0, 16);

/**
 * Job ids by cell id: the hash of the whole grid (and memvirt's version, whose results may differ),
 * then the hash of the cell. The same grid enqueued again names the same jobs, which BullMQ adds
 * once; another grid, or a changed cell, never collides with them.
 */
export function jobIds(grid: Grid): Map<string, string> {
  const content = (cell: SweepCell) =>
    canonical([cell.id, cell.configValue, cell.trace, cell.format, cell.build]);
  const gridHash = digest(canonical([VERSION, grid.cells.map(content)]));
  return new Map(grid.cells.map((cell) => [cell.id, `${gridHash}-${digest(content(cell))}`]));
}

/** Redis errors on a live connection are reported (once each in a row), never thrown: it reconnects. */
function reportErrors(
  url: string,
  ...emitters: { on(event: "error", listener: (e: Error) => void): void }[]
) {
  let last = "";
  for (const emitter of emitters) {
    emitter.on("error", (error: Error) => {
      if (error.message === last) return;
      last = error.message;
      process.stderr.write(`memvirt: redis ${describeUrl(url)}: ${error.message}\n`);
    });
  }
}

/** A worker's answer, checked before it becomes a row: it comes from another machine. */
function rowFromResult(cell: SweepCell, result: unknown): SweepRow {
  const row = result as SweepRow | null;
  if (
    row === null ||
    typeof row !== "object" ||
    row.cell !== cell.id ||
    (row.status !== "ok" && row.status !== "error")
  ) {
    return failedRow(cell, "the worker returned no row for this cell");
  }
  return row;
}

const RECONCILE_MS = 2000;
/** Every this many reconciliations, jobs that vanished (a flushed Redis) are enqueued again. */
const RECHECK_EVERY = 10;

/**
 * The coordinator: enqueues the cells, then collects each job's row as it completes or finally fails,
 * and removes the job once its row is in the output. `fullGrid` names the jobs (with `--cells`, the
 * cells are a part of it).
 */
export function queueExecutor(url: string, fullGrid: Grid): NonNullable<SweepOptions["execute"]> {
  const ids = jobIds(fullGrid);
  return async (cells, emit) => {
    if (cells.length === 0) return;
    await probeRedis(url);
    const { Job, Queue, QueueEvents } = queueLibrary("bullmq");
    const connection = redisConnection(url);
    const queue = new Queue<JobData, SweepRow>(QUEUE_NAME, { connection, prefix: KEY_PREFIX });
    const events = new QueueEvents(QUEUE_NAME, { connection, prefix: KEY_PREFIX });
    reportErrors(url, queue, events);
    const byJob = new Map(cells.map((cell) => [ids.get(cell.id) as string, cell]));
    const remaining = new Set(byJob.keys());
    const collecting = new Map<string, Promise<void>>();
    let wake = () => {};

    const collect = (jobId: string): Promise<void> => {
      const running = collecting.get(jobId);
      if (running || !remaining.has(jobId)) return running ?? Promise.resolve();
      const work = (async () => {
        const job = (await Job.fromId(queue, jobId)) as Job<JobData, SweepRow> | undefined;
        const state = job ? await job.getState() : "unknown";
        const cell = byJob.get(jobId) as SweepCell;
        if (!job || (state !== "completed" && state !== "failed")) return;
        emit(
          state === "completed" ? rowFromResult(cell, job.returnvalue) : failedRow(cell, job.failedReason),
        );
        remaining.delete(jobId);
        // Written, so the job has served: a rerun finds the row in the output, not in Redis.
        await job.remove();
        wake();
      })().finally(() => collecting.delete(jobId));
      collecting.set(jobId, work);
      return work;
    };
    const finishedIds = async () => {
      const finished = await queue.getRanges(["completed", "failed"], 0, -1);
      await Promise.all(finished.filter((id) => remaining.has(id)).map(collect));
    };
    const enqueue = (list: SweepCell[]) =>
      queue.addBulk(
        list.map((cell) => ({
          name: "cell",
          data: { version: VERSION, cell },
          // Kept until the coordinator has written the row, even if it was not running when it finished.
          opts: { jobId: ids.get(cell.id), attempts: ATTEMPTS, removeOnComplete: false, removeOnFail: false },
        })),
      );
    try {
      // Listen before enqueueing; what finished before (an earlier coordinator's jobs) is found below.
      await events.waitUntilReady();
      const onFinished = ({ jobId }: { jobId: string }) => {
        if (remaining.has(jobId)) void collect(jobId).catch(() => wake());
      };
      events.on("completed", onFinished);
      events.on("failed", onFinished);
      await enqueue(cells);
      for (let round = 1; remaining.size > 0; round++) {
        await finishedIds();
        if (round % RECHECK_EVERY === 0) {
          const states = await Promise.all(
            [...remaining].map(async (id) => [id, await queue.getJobState(id)] as const),
          );
          const lost = states
            .filter(([id, state]) => state === "unknown" && remaining.has(id) && !collecting.has(id))
            .map(([id]) => byJob.get(id) as SweepCell);
          if (lost.length > 0) await enqueue(lost);
        }
        if (remaining.size === 0) break;
        await new Promise<void>((done) => {
          const timer = setTimeout(done, RECONCILE_MS);
          wake = () => {
            clearTimeout(timer);
            done();
          };
        });
      }
      await Promise.all(collecting.values());
    } finally {
      await events.close();
      await queue.close();
    }
  };
}

export interface WorkerOptions {
  url: string;
  concurrency: number;
  /** Only traces under this folder are read (symbolic links resolved). */
  traceRoot?: string;
  /** BullMQ's lock duration and stalled-check interval, in ms (a SIGKILLed worker's cell is run again after about both). */
  lockDuration?: number;
  stalledInterval?: number;
  log: (line: string) => void;
}

/** Where a worker reads the cell's trace; refuses a path outside its trace root. */
function tracePath(cell: SweepCell, root: string | undefined): string {
  if (!root) return cell.trace;
  let real: string;
  try {
    real = realpathSync(cell.trace);
  } catch {
    // Missing here: checked as written, and the read will fail with the reason.
    real = resolve(cell.trace);
  }
  const inside = relative(root, real);
  if (inside === ".." || inside.startsWith(`..${sep}`) || isAbsolute(inside)) {
    throw new MemvirtError(`${cell.trace}: outside this worker's --trace-root ${root}`);
  }
  return real;
}

function unreadable(path: string): string | undefined {
  try {
    // Non-blocking: opening a named pipe must not stall the thread that renews the job locks.
    closeSync(openSync(path, constants.O_RDONLY | constants.O_NONBLOCK));
    return undefined;
  } catch (error) {
    return (error as Error).message;
  }
}

/**
 * A worker: takes cells from the queue and runs `concurrency` at a time on worker threads. The first
 * SIGTERM or SIGINT stops taking cells and finishes the running ones; a second hands them back to the
 * queue at once. Resolves when it has stopped.
 */
export async function runQueueWorker(options: WorkerOptions): Promise<void> {
  let root: string | undefined;
  if (options.traceRoot !== undefined) {
    try {
      root = realpathSync(options.traceRoot);
    } catch (error) {
      throw new MemvirtError(`--trace-root ${options.traceRoot}: ${(error as Error).message}`);
    }
  }
  await probeRedis(options.url);
  const { UnrecoverableError, WaitingError, Worker } = queueLibrary("bullmq");
  const pool = new CellPool(options.concurrency);
  const host = hostname();

  const process_ = async (job: Job<JobData, SweepRow>, token?: string, signal?: AbortSignal) => {
    const data = job.data as Partial<JobData> | undefined;
    let cell: SweepCell;
    let readFrom: string;
    try {
      if (data?.version !== VERSION) {
        throw new Error(`the sweep runs memvirt ${String(data?.version)}, this worker ${VERSION}`);
      }
      const keys = Object.keys(data).filter((key) => key !== "version" && key !== "cell");
      if (keys.length > 0) throw new Error(`${keys[0]}: unknown key`);
      cell = cellFromData(data.cell);
      readFrom = tracePath(cell, root);
    } catch (error) {
      // Malformed or refused: no other attempt can do better.
      throw new UnrecoverableError(`refused on ${host}: ${(error as Error).message}`);
    }
    // A trace another machine may see: hand the cell on while attempts remain; the last attempt
    // runs it, and the row says why it could not be read, as a local sweep's would.
    options.log(`${cell.id}: started (attempt ${job.attemptsMade + 1} of ${job.opts.attempts ?? 1})`);
    const cannotRead = unreadable(readFrom);
    if (cannotRead && job.attemptsMade + 1 < (job.opts.attempts ?? 1)) {
      throw new Error(`cannot read the trace on ${host}: ${cannotRead}`);
    }
    try {
      return await pool.run(cell, signal, readFrom);
    } catch (error) {
      if (signal?.aborted && token) {
        // Handed back: waiting again, for this or another worker, with no attempt spent.
        await job.moveToWait(token);
        throw new WaitingError();
      }
      throw error;
    }
  };

  const worker = new Worker<JobData, SweepRow>(QUEUE_NAME, process_, {
    connection: redisConnection(options.url),
    prefix: KEY_PREFIX,
    concurrency: options.concurrency,
    name: `${host}:${process.pid}`,
    ...(options.lockDuration !== undefined ? { lockDuration: options.lockDuration } : {}),
    ...(options.stalledInterval !== undefined ? { stalledInterval: options.stalledInterval } : {}),
  });
  reportErrors(options.url, worker);
  worker.on("completed", (_job, row) =>
    options.log(`${row.cell}: ${row.status}${row.error ? ` (${row.error})` : ""}, ${row.seconds} s`),
  );
  worker.on("failed", (job, error) => {
    if (job) options.log(`${(job.data as JobData).cell?.id ?? job.id}: attempt failed: ${error.message}`);
  });
  const stopped = new Promise<void>((done) => {
    let signals = 0;
    const onSignal = (signal: NodeJS.Signals) => {
      signals++;
      if (signals === 1) {
        options.log(`${signal}: finishing the running cells, then exiting (again: hand them back now)`);
        void worker.close().then(done, done);
      } else {
        options.log(`${signal}: handing the running cells back to the queue`);
        worker.cancelAllJobs("handed back");
      }
    };
    process.on("SIGTERM", onSignal);
    process.on("SIGINT", onSignal);
  });
  await worker.waitUntilReady();
  options.log(
    `waiting for cells on ${describeUrl(options.url)} (queue ${QUEUE_NAME}), ${options.concurrency} at a time`,
  );
  await stopped;
  // A handed-back cell's thread can sit in a read that termination cannot interrupt (a hung network
  // filesystem): its cell is back in the queue already; the process ends when the read returns.
  await Promise.race([pool.destroy(), new Promise((done) => setTimeout(done, 2000).unref())]);
}
