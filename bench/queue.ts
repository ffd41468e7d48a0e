// Sweeps through the Redis queue against the local thread pool (issue 14): cells per second with 1, 2
// and 4 `memvirt worker` processes on loopback, against `memvirt sweep --workers N`, and the queue's
// overhead per cell. Runs its own redis-server on a free loopback port. `npm run bench:queue`
// (`--quick`: fewer and smaller runs).
//
// Wall time is from the sweep's process start to its exit, as a user waits for it; workers are started
// and warmed before (a worker outlives many sweeps). CPU time is every process's user + system time:
// the sweep's (its threads' included) as the kernel charged it, the workers' and redis-server's from
// /proc. Each variant runs once per round, the rounds interleaved; figures are medians with min-max.

import { type ChildProcess, spawn, spawnSync } from "node:child_process";
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { createServer } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { formatRate, runProcess, summarize } from "./harness.js";
import { randomTrace } from "./trace.js";

const quick = process.argv.includes("--quick");
const cli = new URL("../../bin/memvirt.js", import.meta.url).pathname;
const fixtures = new URL("../../test/fixtures/", import.meta.url).pathname;
const temp = mkdtempSync(join(tmpdir(), "memvirt-bench-queue-"));
const TICKS = Number(spawnSync("getconf", ["CLK_TCK"]).stdout.toString().trim()) || 100;

/** User + system CPU seconds a live process (all its threads) has used so far, from /proc. */
function processCpuSeconds(pid: number): number {
  const stat = readFileSync(`/proc/${pid}/stat`, "utf8");
  // Fields after the command name, which is in parentheses and may hold spaces; utime and stime are
  // the line's fields 14 and 15.
  const fields = stat.slice(stat.lastIndexOf(")") + 2).split(" ");
  return (Number(fields[11]) + Number(fields[12])) / TICKS;
}

function freePort(): Promise<number> {
  return new Promise((resolve) => {
    const server = createServer().listen(0, "127.0.0.1", () => {
      const { port } = server.address() as { port: number };
      server.close(() => resolve(port));
    });
  });
}

/** A `memvirt worker` taking one cell at a time; resolves once it waits for cells. */
function startWorker(url: string): Promise<ChildProcess> {
  const child = spawn(process.execPath, [cli, "worker", "--queue", url, "--concurrency", "1"], {
    stdio: ["ignore", "ignore", "pipe"],
  });
  return new Promise((resolve, reject) => {
    let log = "";
    child.stderr?.on("data", (chunk) => {
      log += chunk;
      if (log.includes("waiting for cells")) resolve(child);
    });
    child.once("exit", (code) => reject(new Error(`worker exited with ${code}: ${log}`)));
  });
}

/** Runs a sweep to its exit: wall seconds from process start, and the CPU seconds it was charged. */
function sweep(args: string[]): Sample {
  const start = process.hrtime.bigint();
  const { cpuSeconds } = runProcess(process.execPath, [cli, "sweep", ...args, "--quiet"]);
  return { wall: Number(process.hrtime.bigint() - start) / 1e9, cpu: cpuSeconds };
}

/** A grid of `count` cells: the configs round robin over the trace. */
function grid(name: string, trace: string, count: number): string {
  const modes = [
    {},
    { mode: "ept" },
    { mode: "npt", host: { pageSize: "2M" } },
    { guest: { pageSize: "2M" } },
  ];
  const configs = Object.fromEntries(
    Array.from({ length: count }, (_, i) => [`c${i}`, modes[i % modes.length]]),
  );
  const path = join(temp, `${name}.json`);
  writeFileSync(path, JSON.stringify({ configs, traces: [trace] }));
  return path;
}

interface Sample {
  wall: number;
  cpu: number;
}

/** A local sweep of `path` on `threads` threads. */
function local(path: string, threads: number): Sample {
  const out = join(temp, "local.jsonl");
  rmSync(out, { force: true });
  return sweep([path, "--out", out, "--workers", String(threads)]);
}

/** The same sweep through Redis, with `workers` worker processes already running. */
function queued(path: string, url: string, workers: ChildProcess[], redis: number): Sample {
  const out = join(temp, "queued.jsonl");
  rmSync(out, { force: true });
  const others = () =>
    processCpuSeconds(redis) + workers.reduce((sum, w) => sum + processCpuSeconds(w.pid as number), 0);
  const before = others();
  const { wall, cpu } = sweep([path, "--out", out, "--queue", url]);
  return { wall, cpu: cpu + others() - before };
}

/** "1.23 (1.10–1.31)": the median of `values` with their min and max. */
function spread(values: number[], digits: number): string {
  return formatRate(summarize(values), 1, "", digits);
}

async function main(): Promise<void> {
  const port = await freePort();
  const redis = spawn(
    "redis-server",
    ["--port", String(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"],
    {
      stdio: "ignore",
    },
  );
  const url = `redis://127.0.0.1:${port}`;
  const rounds = quick ? 1 : 5;
  // Heavy cells: random accesses over sparse pages, mostly walks and demand faults.
  const heavy = grid("heavy", randomTrace(quick ? 25_000 : 100_000, 8192), 8);
  // Light cells, in two grid sizes: the difference per cell is the marginal cost of one more cell,
  // without the process start and connections both sizes pay.
  const light = join(fixtures, "ls-head.pinatrace");
  const [few, many] = quick ? [8, 24] : [16, 64];
  const lightFew = grid("light-few", light, few);
  const lightMany = grid("light-many", light, many);
  await new Promise((done) => setTimeout(done, 300));
  const samples = new Map<string, Sample[]>();
  const add = (key: string, sample: Sample) => samples.set(key, [...(samples.get(key) ?? []), sample]);
  try {
    for (let round = 0; round < rounds; round++) {
      for (const n of [1, 2, 4]) {
        add(`local ${n}`, local(heavy, n));
        const workers = await Promise.all(Array.from({ length: n }, () => startWorker(url)));
        try {
          // Warm: each worker's thread has compiled the core and run a cell.
          queued(lightFew, url, workers, redis.pid as number);
          add(`queue ${n}`, queued(heavy, url, workers, redis.pid as number));
          if (n === 1) {
            add("queue light few", queued(lightFew, url, workers, redis.pid as number));
            add("queue light many", queued(lightMany, url, workers, redis.pid as number));
          }
        } finally {
          for (const worker of workers) worker.kill("SIGTERM");
          await Promise.all(workers.map((w) => new Promise((done) => w.once("exit", done))));
        }
      }
      add("local light few", local(lightFew, 1));
      add("local light many", local(lightMany, 1));
    }
  } finally {
    redis.kill("SIGTERM");
    rmSync(temp, { recursive: true, force: true });
  }
  const cells = 8;
  const get = (key: string) => samples.get(key) as Sample[];
  const lines = [
    `8 cells (4 configs x a ${quick ? "25 k" : "100 k"}-record random trace over 8,192 sparse pages), ${rounds} rounds`,
    "| engine | processes or threads | cells/s (wall, process start to exit) | CPU-seconds per cell (all processes) |",
    "|---|---|---|---|",
  ];
  for (const n of [1, 2, 4]) {
    for (const engine of ["local", "queue"]) {
      const runs = get(`${engine} ${n}`);
      lines.push(
        `| ${engine === "local" ? "memvirt sweep --workers N (threads)" : "memvirt sweep --queue, N memvirt worker processes"} | ${n} | ${spread(
          runs.map((s) => cells / s.wall),
          2,
        )} | ${spread(
          runs.map((s) => s.cpu / cells),
          3,
        )} |`,
      );
    }
  }
  // Marginal cost of a cell: (many - few) cells apart, per engine, then the queue's extra.
  const perCell = (engine: string, field: keyof Sample) =>
    get(`${engine} light many`).map(
      (s, i) => (s[field] - get(`${engine} light few`)[i][field]) / (many - few),
    );
  const wallExtra = perCell("queue", "wall").map((q, i) => (q - perCell("local", "wall")[i]) * 1000);
  const cpuExtra = perCell("queue", "cpu").map((q, i) => (q - perCell("local", "cpu")[i]) * 1000);
  lines.push(
    "",
    `queue overhead per cell (${few} and ${many} cells of ls-head.pinatrace, one worker against one thread): ` +
      `${spread(wallExtra, 1)} ms wall, ${spread(cpuExtra, 1)} ms CPU (coordinator, worker and redis-server)`,
    `a light cell alone, local thread: ${spread(
      perCell("local", "wall").map((s) => s * 1000),
      1,
    )} ms wall`,
  );
  console.log(lines.join("\n"));
}

await main();
