// SIGINT and SIGTERM (issue 16): a run stops at the next batch boundary, prints the statistics so far
// (`"interrupted": true` in JSON), writes a final checkpoint when it checkpoints, leaves no temporary
// file, and exits with the shell's code for the signal (130, 143). Real signals on a spawned memvirt;
// the rest in this process, with the signal main takes in their place.
import { spawn } from "node:child_process";
import { existsSync, readdirSync } from "node:fs";
import { join } from "node:path";
import { describe, expect, it } from "vitest";
import { readCheckpoint } from "../../src/runner/checkpoint.js";
import { randomRecords, writeOwnTrace } from "../trace/own-trace.js";
import { build, fakeTerminal, runMemvirt as run, scratch } from "./in-process.js";

const cli = new URL("../../bin/memvirt.js", import.meta.url).pathname;
const fixture = (name: string) => new URL(`../fixtures/${name}`, import.meta.url).pathname;
const { dir } = scratch("memvirt-signals-");

interface Child {
  pid: number;
  done: Promise<{ code: number | null; stdout: string; stderr: string }>;
}

function memvirt(args: string[]): Child {
  const child = spawn(process.execPath, [cli, ...args, "--build", build]);
  let stdout = "";
  let stderr = "";
  child.stdout.on("data", (chunk) => {
    stdout += chunk;
  });
  child.stderr.on("data", (chunk) => {
    stderr += chunk;
  });
  const done = new Promise<{ code: number | null; stdout: string; stderr: string }>((resolve) =>
    child.on("exit", (code) => resolve({ code, stdout, stderr })),
  );
  return { pid: child.pid as number, done };
}

const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

// Spawned processes test the signal handling around the core, not the core: on the release build only.
describe.skipIf(process.env.MEMVIRT_BUILD === "debug")("a real SIGINT or SIGTERM", () => {
  it("SIGINT on a long synthetic run prints the statistics so far with interrupted: true, exit 130", async () => {
    const child = memvirt([
      "run",
      "--workload",
      "uniform",
      "--records",
      "200000000",
      "--footprint",
      "1G",
      "--json",
    ]);
    await sleep(1500);
    process.kill(child.pid, "SIGINT");
    const { code, stdout, stderr } = await child.done;
    expect(code).toBe(130);
    expect(stderr).toBe(
      "memvirt: interrupted by SIGINT: stopped between two batches; the statistics so far are on stdout\n",
    );
    const report = JSON.parse(stdout);
    expect(report.interrupted).toBe(true);
    expect(report.error).toBeUndefined();
    expect(report.accesses).toBeGreaterThan(0);
    expect(report.accesses).toBeLessThan(200_000_000);
    // It stopped between batches: whole batches of 65,536 records ran.
    expect(report.accesses % 65536).toBe(0);
  });

  it("SIGTERM on a checkpointed run writes a final checkpoint where it stopped, leaves no CK.tmp, and resumes to the uninterrupted statistics", async () => {
    const trace = join(dir, "random.mvt");
    writeOwnTrace(trace, randomRecords(100_000, 5000, 1));
    const uninterrupted = await memvirt(["run", "--trace", trace, "--json"]).done;
    expect(uninterrupted.code).toBe(0);

    const checkpoint = join(dir, "term.ckpt");
    const child = memvirt([
      "run",
      "--trace",
      trace,
      "--checkpoint",
      checkpoint,
      "--checkpoint-every",
      "10000",
      "--json",
    ]);
    // Stopped (SIGSTOP) as soon as the first checkpoint is in place, the run cannot finish before the
    // SIGTERM, which it takes when it continues.
    while (!existsSync(checkpoint)) await sleep(2);
    process.kill(child.pid, "SIGSTOP");
    process.kill(child.pid, "SIGTERM");
    process.kill(child.pid, "SIGCONT");
    const stopped = await child.done;
    expect(stopped.code).toBe(143);
    expect(stopped.stderr).toMatch(/^memvirt: interrupted by SIGTERM: stopped between two batches/);
    const report = JSON.parse(stopped.stdout);
    expect(report.interrupted).toBe(true);
    expect(report.accesses).toBeLessThan(100_000);
    // The final checkpoint holds exactly what the report covers; nothing temporary is left.
    expect(readCheckpoint(checkpoint, build).position.records).toBe(report.accesses);
    expect(readdirSync(dir).filter((file) => file.endsWith(".tmp"))).toEqual([]);

    const resumed = await memvirt(["run", "--resume", checkpoint, "--checkpoint-every", "1000000", "--json"])
      .done;
    expect(resumed.stderr).toBe("");
    expect(resumed.code).toBe(0);
    expect(JSON.parse(resumed.stdout)).toEqual(JSON.parse(uninterrupted.stdout));
  });
});

/** A stand-in terminal that aborts `controller` once what it is shown matches `when`. */
const abortingTerminal = (controller: AbortController, when: RegExp, reason = "SIGINT") =>
  fakeTerminal(true, (text) => {
    if (when.test(text) && !controller.signal.aborted) controller.abort(reason);
  });

describe("stopped between batches (the signal main takes in SIGINT's place)", () => {
  it("convert stopped leaves neither OUT nor OUT.tmp and says so, exit 130", async () => {
    const controller = new AbortController();
    controller.abort("SIGINT");
    const out = join(dir, "stopped.mvt");
    const result = await run(["convert", fixture("ls.lk"), "--out", out], { signal: controller.signal });
    expect(result.code).toBe(130);
    expect(result.stderr).toBe(`memvirt: interrupted by SIGINT: ${out} not written\n`);
    expect(existsSync(out)).toBe(false);
    expect(existsSync(`${out}.tmp`)).toBe(false);
  });

  it("a trace run stopped before its first batch reports nothing run, interrupted, exit 143", async () => {
    const controller = new AbortController();
    controller.abort("SIGTERM");
    const result = await run(["run", "--trace", fixture("ls.lk"), "--json"], { signal: controller.signal });
    expect(result.code).toBe(143);
    const report = JSON.parse(result.output);
    expect(report.interrupted).toBe(true);
    expect(report.accesses).toBe(0);
  });

  it("compare keeps the rows that finished and marks the table interrupted", async () => {
    const controller = new AbortController();
    // Aborted once the bar has shown progress past the first pairings (of 14, 400,000 records each).
    const terminal = abortingTerminal(controller, /[2-9],\d{3},\d{3}\/5,600,000 records/);
    const result = await run(
      ["compare", "--workload", "uniform", "--records", "400000", "--footprint", "64M", "--json"],
      { signal: controller.signal, progress: terminal },
    );
    expect(result.code).toBe(130);
    const table = JSON.parse(result.output);
    expect(table.interrupted).toBe(true);
    expect(table.rows.length).toBeGreaterThan(0);
    expect(table.rows.length).toBeLessThan(14);
    expect(table.config.mode).toBe("native");
  });

  it("a multi-VM run stopped mid-way reports its host as it stands, interrupted", async () => {
    const controller = new AbortController();
    const terminal = abortingTerminal(
      controller,
      /[1-9][\d,]+\/[\d,]+ records \| [\d,]+ records\/s/,
      "SIGTERM",
    );
    const result = await run(
      [
        "run",
        "--workload",
        "cloud-mix",
        "--vms",
        "2",
        "--pages-per-vm",
        "1024",
        "--records",
        "4000000",
        "--json",
      ],
      { signal: controller.signal, progress: terminal },
    );
    expect(result.code).toBe(143);
    const report = JSON.parse(result.output);
    expect(report.interrupted).toBe(true);
    expect(report.accesses).toBeGreaterThan(0);
    expect(report.accesses).toBeLessThan(4_000_000);
    expect(report.config.overcommit).toBeDefined();
  });
});
