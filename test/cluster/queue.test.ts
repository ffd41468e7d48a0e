// Sweeps through a Redis queue (issue 14), against a real redis-server on loopback with a password
// and TLS: a coordinator and worker processes, one worker SIGKILLed mid-cell, the coordinator killed
// and run again; jobs are data, checked before they run; an unreachable Redis is a clear error.
import { spawnSync } from "node:child_process";
import {
  closeSync,
  constants,
  copyFileSync,
  mkdirSync,
  mkdtempSync,
  openSync,
  renameSync,
  rmSync,
  writeFileSync,
} from "node:fs";
import { hostname, tmpdir } from "node:os";
import { join } from "node:path";
import { Queue } from "bullmq";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { VERSION } from "../../src/report/report.js";
import { cellFromData } from "../../src/runner/cell.js";
import { describeUrl, jobIds, KEY_PREFIX, QUEUE_NAME, redisConnection } from "../../src/runner/queue.js";
import { readGrid, readRows, type SweepRow } from "../../src/runner/sweep.js";
import { type Child, freePort, memvirt, type RedisServer, startRedis, waitFor } from "./servers.js";

const temp = mkdtempSync(join(tmpdir(), "memvirt-queue-"));
const fixture = (name: string) => new URL(`../fixtures/${name}`, import.meta.url).pathname;
const cli = new URL("../../bin/memvirt.js", import.meta.url).pathname;
/** Short lock and stalled-check intervals: a killed worker's cell is taken over within about 2 s. */
const FAST = ["--lock-duration", "1000", "--stalled-interval", "500"];

let redis: RedisServer;
const children: Child[] = [];
const start = (args: string[], env: NodeJS.ProcessEnv = {}) => {
  const child = memvirt(args, env);
  children.push(child);
  return child;
};
/** The password in the URL; */
const url = () => `redis://:${redis.password}@127.0.0.1:${redis.port}`;
/** ... or, for workers, from the environment, over TLS. */
const tlsUrl = () => `rediss://127.0.0.1:${redis.tlsPort}`;
const workerEnv = () => ({ MEMVIRT_REDIS_PASSWORD: redis.password, NODE_EXTRA_CA_CERTS: redis.ca });

function mkfifo(path: string): void {
  const made = spawnSync("mkfifo", [path]);
  if (made.status !== 0) throw new Error(`mkfifo ${path}: ${made.stderr}`);
}

/** Cells a worker finished, from its log, in order. */
function finishedBy(worker: Child): string[] {
  return [...worker.output.matchAll(/^memvirt worker: (.+): (?:ok|error)\b.*, [\d.]+ s$/gm)].map((m) => m[1]);
}

function localSweep(grid: string, out: string): Map<string, SweepRow> {
  const result = spawnSync(process.execPath, [cli, "sweep", grid, "--out", out, "--workers", "2"]);
  expect(result.stderr.toString()).not.toMatch(/\n\s+at /);
  return new Map(readRows(out).map((row) => [row.cell, row]));
}

beforeAll(async () => {
  redis = await startRedis(temp);
});

afterAll(async () => {
  for (const child of children) await child.stop("SIGKILL");
  await redis?.stop();
  rmSync(temp, { recursive: true, force: true });
});

describe("memvirt sweep --queue and memvirt worker, on a real redis-server", () => {
  it("a worker SIGKILLed mid-cell: another runs the cell; a killed coordinator, rerun, collects every cell once with the local sweep's report", async () => {
    // The first cell's trace is a named pipe: the worker that takes it blocks in it, mid-cell, until
    // it is killed. Then a real trace takes the pipe's place for the worker that takes the cell over.
    const slow = join(temp, "slow.din");
    mkfifo(slow);
    const grid = join(temp, "grid.json");
    writeFileSync(
      grid,
      JSON.stringify({
        configs: { native: {}, ept2m: { mode: "ept", host: { pageSize: "2M" } }, typo: { tbl: {} } },
        traces: ["slow.din", { file: fixture("ls-head.champsim.xz"), format: "champsim" }, "missing.din"],
      }),
    );
    const out = join(temp, "rows.jsonl");
    const first = start(["worker", "--queue", url(), "--concurrency", "1", ...FAST]);
    await first.waitForOutput(/waiting for cells/);
    const coordinator = start(["sweep", grid, "--out", out, "--queue", url()]);
    await first.waitForOutput(/native\|slow\.din: started/);
    await first.stop("SIGKILL");
    await coordinator.stop("SIGKILL");
    copyFileSync(fixture("ls.din"), `${slow}.new`);
    renameSync(`${slow}.new`, slow);

    const second = start(["worker", "--queue", tlsUrl(), "--concurrency", "2", ...FAST], workerEnv());
    await waitFor(
      `9 cells finished by the second worker:\n${second.output}`,
      () => finishedBy(second).length >= 9,
    );
    const rerun = start(["sweep", grid, "--out", out, "--queue", url()]);
    expect(await rerun.exited).toBe(2);
    expect(rerun.output).toContain("sweep: 9 cells, 9 run, 0 already done, 5 failed");
    expect(rerun.output).not.toMatch(/\n\s+at /);

    // Every cell ran once on the second worker (the killed one's cell too) and is in the rows once.
    const cells = readGrid(grid, "release").cells.map((cell) => cell.id);
    expect(finishedBy(second).sort()).toEqual([...cells].sort());
    const rows = readRows(out);
    expect(rows.map((row) => row.cell).sort()).toEqual([...cells].sort());
    // Each row holds what a local sweep of the same grid holds: the report, the status, the error.
    const local = localSweep(grid, join(temp, "local.jsonl"));
    for (const row of rows) {
      const mine = local.get(row.cell) as SweepRow;
      expect({ cell: row.cell, status: row.status, error: row.error }).toEqual({
        cell: mine.cell,
        status: mine.status,
        error: mine.error,
      });
      expect(row.report).toEqual(mine.report);
    }
    expect(rows.find((row) => row.cell === "native|slow.din")?.report?.accesses).toBe(47_234);
    // A trace no worker can read: handed on while attempts remain, then that cell's error, as locally.
    expect(rows.find((row) => row.cell === "native|missing.din")?.error).toMatch(/missing\.din.*ENOENT/);
    expect(second.output).toMatch(/native\|missing\.din: attempt failed: cannot read the trace on /);
    await second.stop();
    expect(await second.exited).toBe(0);
    // Collected jobs are removed: the queue is empty.
    const queue = new Queue(QUEUE_NAME, { connection: redisConnection(url()), prefix: KEY_PREFIX });
    try {
      const counts = await queue.getJobCounts();
      expect(Object.values(counts).every((count) => count === 0)).toBe(true);
    } finally {
      await queue.close();
    }
  });

  it("a job is data: unknown keys and traces outside --trace-root are refused without retries; a second SIGTERM hands a running cell back", async () => {
    const root = join(temp, "traces");
    mkdirSync(root);
    copyFileSync(fixture("ls.din"), join(root, "ls.din"));
    const worker = start(["worker", "--queue", url(), "--concurrency", "1", "--trace-root", root, ...FAST]);
    await worker.waitForOutput(/waiting for cells/);
    const grid = join(temp, "rooted.json");
    writeFileSync(
      grid,
      JSON.stringify({ configs: { native: {} }, traces: ["traces/ls.din", fixture("ls.din")] }),
    );
    const out = join(temp, "rooted.jsonl");
    const coordinator = start(["sweep", grid, "--out", out, "--queue", url()]);
    expect(await coordinator.exited).toBe(2);
    const rows = new Map(readRows(out).map((row) => [row.cell, row]));
    expect(rows.get("native|traces/ls.din")?.status).toBe("ok");
    expect(rows.get(`native|${fixture("ls.din")}`)?.error).toBe(
      `worker failed: refused on ${hostname()}: ${fixture("ls.din")}: outside this worker's --trace-root ${root}`,
    );

    // Jobs put on the queue by anything but a coordinator: checked field by field, refused at once.
    const queue = new Queue(QUEUE_NAME, { connection: redisConnection(url()), prefix: KEY_PREFIX });
    try {
      const cell = { ...readGrid(grid, "release").cells[0] };
      const bad = [
        { version: VERSION, cell, code: "process.exit(1)" },
        { version: VERSION, cell: { ...cell, run: "require('child_process')" } },
        { version: VERSION, cell: { ...cell, trace: "../../etc/shadow" } },
        { version: "0.0.0-other", cell },
      ];
      for (const [i, data] of bad.entries())
        await queue.add("cell", data, { jobId: `bad-${i}`, attempts: 3 });
      const reasons = await Promise.all(
        bad.map(async (_, i) => {
          await waitFor(`bad-${i} to fail`, async () => (await queue.getJobState(`bad-${i}`)) === "failed");
          const job = await queue.getJob(`bad-${i}`);
          return [job?.attemptsMade, job?.failedReason];
        }),
      );
      expect(reasons).toEqual([
        [1, `refused on ${hostname()}: code: unknown key`],
        [1, `refused on ${hostname()}: cell.run: unknown key`],
        [1, `refused on ${hostname()}: cell.trace: must be an absolute path`],
        [1, `refused on ${hostname()}: the sweep runs memvirt 0.0.0-other, this worker ${VERSION}`],
      ]);

      // A cell stuck in its trace (a named pipe): the first SIGTERM waits for it, the second hands it
      // back to the queue with no attempt spent, and the worker exits.
      const pipe = join(root, "pipe.din");
      mkfifo(pipe);
      await queue.add(
        "cell",
        { version: VERSION, cell: { ...cell, id: "native|pipe", trace: pipe } },
        {
          jobId: "handed-back",
          attempts: 3,
        },
      );
      await worker.waitForOutput(/native\|pipe: started/);
      worker.process.kill("SIGTERM");
      await worker.waitForOutput(/SIGTERM: finishing the running cells/);
      worker.process.kill("SIGTERM");
      await worker.waitForOutput(/SIGTERM: handing the running cells back to the queue/);
      await waitFor(
        "the cell back in the queue",
        async () => (await queue.getJobState("handed-back")) === "waiting",
      );
      expect((await queue.getJob("handed-back"))?.attemptsMade).toBe(0);
      // The abandoned thread still sits in open() on the pipe, which no termination interrupts: give
      // it a writer, and the process ends.
      closeSync(openSync(pipe, constants.O_WRONLY | constants.O_NONBLOCK));
      expect(await worker.exited).toBe(0);
    } finally {
      await queue.obliterate({ force: true });
      await queue.close();
    }
  });

  it("an unreachable Redis or a wrong password is a clear error with exit 2, from the coordinator and the worker", async () => {
    const closed = await freePort();
    const grid = join(temp, "grid.json");
    const sweep = start([
      "sweep",
      grid,
      "--out",
      join(temp, "never.jsonl"),
      "--queue",
      `redis://127.0.0.1:${closed}`,
    ]);
    const worker = start(["worker", "--queue", `redis://:wrong@127.0.0.1:${redis.port}`]);
    expect(await sweep.exited).toBe(2);
    expect(sweep.output).toBe(
      `memvirt: --queue redis://127.0.0.1:${closed}: cannot reach Redis: connect ECONNREFUSED 127.0.0.1:${closed}\n`,
    );
    expect(readRows(join(temp, "never.jsonl"))).toEqual([]);
    expect(await worker.exited).toBe(2);
    expect(worker.output).toMatch(
      new RegExp(
        `^memvirt: --queue redis://:\\*\\*\\*@127\\.0\\.0\\.1:${redis.port}: cannot reach Redis: WRONGPASS`,
      ),
    );
  });
});

describe("queue jobs, as data", () => {
  it("job ids are the grid's content and the cell: the same grid names the same jobs, a changed cell another", () => {
    const path = join(temp, "ids.json");
    writeFileSync(
      path,
      JSON.stringify({ configs: { a: { mode: "ept", seed: 3 }, b: {} }, traces: ["x.din"] }),
    );
    const ids = jobIds(readGrid(path, "release"));
    // Key order and spacing do not matter; content does.
    writeFileSync(path, `{"traces": ["x.din"], "configs": {"a": {"seed": 3,   "mode": "ept"}, "b": {}}}`);
    expect(jobIds(readGrid(path, "release"))).toEqual(ids);
    writeFileSync(
      path,
      JSON.stringify({ configs: { a: { mode: "ept", seed: 4 }, b: {} }, traces: ["x.din"] }),
    );
    const changed = jobIds(readGrid(path, "release"));
    expect(changed.get("a|x.din")).not.toBe(ids.get("a|x.din"));
    expect([...ids.values()].every((id) => /^[0-9a-f]{16}-[0-9a-f]{16}$/.test(id))).toBe(true);
    expect(new Set(ids.values()).size).toBe(2);
  });

  it("a cell from outside is checked field by field like a grid entry", () => {
    const cell = {
      id: "a|x",
      config: "a",
      configValue: {},
      trace: "/t/x.din",
      format: "din",
      build: "release",
      origin: "g",
    };
    expect(cellFromData(cell)).toEqual(cell);
    expect(() => cellFromData({ ...cell, format: "elf" })).toThrow('cell.format: unknown format "elf"');
    expect(() => cellFromData({ ...cell, build: "../x" })).toThrow("cell.build");
    expect(() => cellFromData({ ...cell, trace: "/t/\0x" })).toThrow("cell.trace: must be a string");
    expect(() => cellFromData([cell])).toThrow("must be an object");
  });

  it("queue URLs: redis:// or rediss:// with a database number; passwords never printed", () => {
    expect(() => redisConnection("http://h:1")).toThrow("expected a redis:// or rediss:// URL");
    expect(() => redisConnection("redis://h:1/x")).toThrow("the path must be a database number");
    expect(describeUrl("rediss://u:secret@h:6380/2")).toBe("rediss://u:***@h:6380/2");
    expect(redisConnection("redis://h:1/3")).toMatchObject({
      url: "redis://h:1/3",
      maxRetriesPerRequest: null,
    });
  });
});
