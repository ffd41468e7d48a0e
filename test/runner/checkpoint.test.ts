// Checkpoints (issue 5): the whole simulation state, core memory and host state, saved atomically
// every N records, and `memvirt run --resume FILE` continuing to exactly the statistics of a run
// that was never interrupted, including one killed with SIGKILL.
import { spawn, spawnSync } from "node:child_process";
import { existsSync, mkdtempSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { describe, expect, it } from "vitest";
import { parseConfigText } from "../../src/config/config.js";
import { buildReport, type RunReport } from "../../src/report/report.js";
import { loadCheckpoint, saveCheckpoint } from "../../src/runner/checkpoint.js";
import { Simulation } from "../../src/runner/simulation.js";
import { replayTrace } from "../../src/trace/replay.js";
import type { TracePosition } from "../../src/trace/source.js";
import { decodeState, encodeState, StateError } from "../../src/util/state.js";
import { randomRecords, writeOwnTrace } from "../trace/own-trace.js";

const temp = mkdtempSync(join(tmpdir(), "memvirt-checkpoint-"));
const build = process.env.MEMVIRT_BUILD === "debug" ? "debug" : "release";
const cli = new URL("../../bin/memvirt.js", import.meta.url).pathname;
const fixture = (name: string) => new URL(`../fixtures/${name}`, import.meta.url).pathname;

/** Two CPUs and two processes switching every 5,000 records: every kind of host state is in play. */
const configFor = (mode: string) =>
  JSON.stringify({ mode, cpus: 2, guest: { processes: 2, quantum: 5000 }, seed: 7 });

const traceRecords = 100_000;
const trace = join(temp, "random.mvt");
// Sparse random accesses on two CPUs: thousands of demand faults, page tables everywhere.
writeOwnTrace(trace, randomRecords(traceRecords, 5000, 2));

function cliRun(args: string[]): { status: number | null; stdout: string; stderr: string } {
  const result = spawnSync(process.execPath, [cli, "run", ...args, "--build", build], { maxBuffer: 1 << 26 });
  return { status: result.status, stdout: result.stdout.toString(), stderr: result.stderr.toString() };
}

// Three processes per mode, so on the release build only: what it checks is the host's state and file
// handling; the debug build's core is checked by the in-process resumes below.
describe.skipIf(build === "debug")(
  "a run killed with SIGKILL and resumed ends with the statistics of an uninterrupted run",
  () => {
    it.each(["native", "shadow", "ept"])("mode %s", async (mode) => {
      const config = join(temp, `${mode}.json`);
      writeFileSync(config, configFor(mode));
      const uninterrupted = cliRun(["--config", config, "--trace", trace, "--json"]);
      expect(uninterrupted.status).toBe(0);

      const checkpoint = join(temp, `${mode}.ckpt`);
      const child = spawn(process.execPath, [
        cli,
        "run",
        "--config",
        config,
        "--trace",
        trace,
        "--json",
        "--checkpoint",
        checkpoint,
        "--checkpoint-every",
        // One checkpoint before the kill and one after the resume: each saves the whole core.
        "50000",
        "--build",
        build,
      ]);
      const exited = new Promise<{ code: number | null; signal: NodeJS.Signals | null }>((resolve) =>
        child.on("exit", (code, signal) => resolve({ code, signal })),
      );
      // Kill as soon as the first checkpoint is in place (it appears whole, by rename).
      while (!existsSync(checkpoint) && child.exitCode === null) await new Promise((r) => setTimeout(r, 5));
      child.kill("SIGKILL");
      const { signal } = await exited;
      // The run must really have died mid-way, or this test would prove nothing.
      expect(signal).toBe("SIGKILL");
      const saved = loadCheckpoint(checkpoint, build);
      expect(saved.position.records).toBeGreaterThan(0);
      expect(saved.position.records).toBeLessThan(traceRecords);

      const resumed = cliRun(["--resume", checkpoint, "--json"]);
      expect(resumed.stderr).toBe("");
      expect(resumed.status).toBe(0);
      expect(JSON.parse(resumed.stdout)).toEqual(JSON.parse(uninterrupted.stdout));
    });
  },
);

async function runWithCheckpoint(
  configText: string,
  path: string,
  every: number,
): Promise<{ report: RunReport; checkpoint: string; position: TracePosition }> {
  const config = parseConfigText(configText, "test");
  const simulation = new Simulation(config, { build });
  simulation.start();
  const checkpoint = join(temp, `inproc-${Math.random().toString(36).slice(2)}.ckpt`);
  let position: TracePosition | undefined;
  const run = { config, trace: path, format: "auto" as const, build, checkpoint, checkpointEvery: every };
  await replayTrace(simulation, path, "auto", {
    checkpointEvery: every,
    onCheckpoint: (at) => {
      // Only the first: resuming from the middle is the case to check.
      if (position) return;
      position = at;
      saveCheckpoint(checkpoint, simulation, run, at);
    },
  });
  if (!position) throw new Error("no checkpoint was taken");
  return { report: buildReport(simulation, { kind: "trace", file: path }), checkpoint, position };
}

async function resumeInProcess(checkpoint: string): Promise<RunReport> {
  const saved = loadCheckpoint(checkpoint, build);
  await replayTrace(saved.simulation, saved.run.trace, saved.run.format, { resume: saved.position });
  return buildReport(saved.simulation, { kind: "trace", file: saved.run.trace });
}

describe("resuming from a checkpoint in the middle gives identical statistics", () => {
  const smaller = join(temp, "smaller.mvt");
  writeOwnTrace(smaller, randomRecords(60_000, 3000, 2, 99));

  it.each(["native", "ept", "npt", "shadow", "pv"])("in mode %s, on memvirt's own format", async (mode) => {
    const { report, checkpoint, position } = await runWithCheckpoint(configFor(mode), smaller, 25_000);
    expect(position.records).toBe(25_000);
    expect(await resumeInProcess(checkpoint)).toEqual(report);
  });

  it.each(["wp", "dbit", "pml"])(
    "with dirty logging by %s, whose harvests run on budget exits of simulated time",
    async (dirtyLog) => {
      const configText = JSON.stringify({
        mode: "ept",
        cpus: 2,
        hypervisor: { dirtyLog, dirtyLogIntervalCycles: 2_000_000 },
      });
      const { report, checkpoint } = await runWithCheckpoint(configText, smaller, 25_000);
      expect(report.virtualization?.hypervisor.dirty_log_harvests).toBeGreaterThan(2);
      expect(await resumeInProcess(checkpoint)).toEqual(report);
    },
  );

  it.each([
    ["ls.lk", "lackey", "{}"],
    ["ls-head.pinatrace", "pinatrace", JSON.stringify({ mode: "shadow" })],
    ["ls-head.champsim.xz", "champsim", JSON.stringify({ mode: "ept" })],
  ])("on %s (%s: the position is a line or a decoded byte offset)", async (name, _format, configText) => {
    const { report, checkpoint, position } = await runWithCheckpoint(configText, fixture(name), 1000);
    expect(position.records).toBe(1000);
    expect(position.line).toBeGreaterThan(1);
    expect(await resumeInProcess(checkpoint)).toEqual(report);
  });
});

describe("resuming a compressed trace from the command line", () => {
  it("decodes again up to the position (on the decode worker) and ends as an uninterrupted run", () => {
    const path = fixture("ls-head.champsim.xz");
    const uninterrupted = cliRun(["--trace", path, "--json"]);
    const checkpoint = join(temp, "champsim.ckpt");
    const checkpointed = cliRun([
      "--trace",
      path,
      "--json",
      "--checkpoint",
      checkpoint,
      "--checkpoint-every",
      "7000",
    ]);
    expect(checkpointed.stdout).toBe(uninterrupted.stdout);
    // The last checkpoint is at 14,000 records (of 20,014): the resumed run replays the rest.
    const saved = loadCheckpoint(checkpoint, build);
    expect(saved.position.records).toBe(14_000);
    expect(saved.position.compression).toBe("xz");
    const resumed = cliRun(["--resume", checkpoint, "--json"]);
    expect(resumed.status).toBe(0);
    expect(JSON.parse(resumed.stdout)).toEqual(JSON.parse(uninterrupted.stdout));
  });
});

describe("checkpoint files", () => {
  it("are written atomically: the final name holds a whole checkpoint and no FILE.tmp is left", async () => {
    const { checkpoint } = await runWithCheckpoint("{}", fixture("ls.din"), 10_000);
    expect(existsSync(checkpoint)).toBe(true);
    expect(existsSync(`${checkpoint}.tmp`)).toBe(false);
    expect(loadCheckpoint(checkpoint, build).position.records).toBe(10_000);
  });

  it("a damaged checkpoint is refused with exit code 2 and the file named", () => {
    const { checkpoint } = { checkpoint: join(temp, "damaged.ckpt") };
    writeFileSync(checkpoint, Buffer.concat([Buffer.from("MVCKPT01"), Buffer.from("not deflate data")]));
    const result = cliRun(["--resume", checkpoint, "--json"]);
    expect(result.status).toBe(2);
    expect(result.stderr).toContain(`${checkpoint}: byte 8: corrupt checkpoint`);
    const notOne = join(temp, "not-a-checkpoint");
    writeFileSync(notOne, "hello");
    expect(cliRun(["--resume", notOne]).stderr).toContain(`${notOne}: byte 0: not a memvirt checkpoint`);
  });

  it("--checkpoint needs --checkpoint-every, and both need a trace", () => {
    expect(cliRun(["--trace", fixture("ls.din"), "--checkpoint", join(temp, "x")]).status).toBe(2);
    expect(
      cliRun(["--workload", "uniform", "--checkpoint", join(temp, "x"), "--checkpoint-every", "5"]).status,
    ).toBe(2);
  });
});

describe("host state encoding", () => {
  class Known {
    readonly items = new Map<bigint, { tag: string }>();
    shared = { count: 1 };
    cycle: Known | undefined;
  }
  const classes = new Map([["Known", Known]]);

  it("keeps shared objects shared, cycles, Maps with bigint keys, and the prototype", () => {
    const known = new Known();
    known.items.set(0x1234n, known.shared as unknown as { tag: string });
    known.cycle = known;
    const copy = decodeState(
      encodeState({ known, again: known.shared }, classes, new Map()),
      classes,
      new Map(),
    ) as {
      known: Known;
      again: unknown;
    };
    expect(copy.known).toBeInstanceOf(Known);
    expect(copy.known.cycle).toBe(copy.known);
    expect(copy.known.items.get(0x1234n)).toBe(copy.again);
    expect(copy.known.shared).toBe(copy.again);
  });

  it("records a class under its registry name, not its own, which a bundler may have changed", () => {
    // What esbuild makes of a class that refers to itself: `var Known = class _Known { ... }`.
    const Renamed = class _Known {
      tag = "renamed";
    };
    const registry = new Map([["Known", Renamed]]);
    const text = encodeState({ known: new Renamed() }, registry, new Map());
    expect(JSON.parse(text).o.known.c).toBe("Known");
    const copy = decodeState(text, classes, new Map()) as { known: Known };
    expect(Object.getPrototypeOf(copy.known)).toBe(Known.prototype);
  });

  it("refuses what it cannot restore faithfully, naming where it is", () => {
    expect(() => encodeState({ a: { f: () => 1 } }, classes, new Map())).toThrow(StateError);
    expect(() => encodeState({ a: { f: () => 1 } }, classes, new Map())).toThrow(/state\.a\.f is a function/);
    class Unknown {}
    expect(() => encodeState([new Unknown()], classes, new Map())).toThrow(
      /state\[0\] is an instance of Unknown/,
    );
  });
});
