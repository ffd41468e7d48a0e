// Several VMs on one host, one real trace each (`memvirt run --trace A --trace B`): each trace runs in
// its own VM, KSM and the controller act on them, the interleaving is the traces' alone, and a
// checkpoint resumes to the statistics of an uninterrupted run, also after a SIGKILL.
import { spawn, spawnSync } from "node:child_process";
import { existsSync, readFileSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { describe, expect, it } from "vitest";
import { resolveConfig } from "../../src/config/config.js";
import { OvercommitHost } from "../../src/overcommit/host.js";
import { buildOvercommitReport } from "../../src/overcommit/report.js";
import { type MultiCheckpoint, readCheckpoint, saveCheckpoint } from "../../src/runner/checkpoint.js";
import { convertTrace } from "../../src/trace/convert.js";
import { type MultiTracePosition, replayTraces, TraceVms } from "../../src/trace/multi.js";
import { build, runMemvirt as run, scratch } from "../cli/in-process.js";
import { randomRecords, writeOwnTrace } from "./own-trace.js";

const { dir: temp, config } = scratch("memvirt-multi-");
const fixture = (name: string) => new URL(`../fixtures/${name}`, import.meta.url).pathname;
const cli = new URL("../../bin/memvirt.js", import.meta.url).pathname;

/** A host too small for two `ls` VMs: KSM, the balloon and the controller have work to do. */
const SHORT = {
  mode: "ept",
  guest: { memory: "1G" },
  host: { memory: "1M" },
  overcommit: { admissionRatio: 0 },
};

describe("memvirt run with --trace given once per VM", () => {
  it("replays one trace in each of two VMs on one host: each VM runs exactly its trace's records", async () => {
    const { code, output } = await run([
      "run",
      "--config",
      config("ept.json", { mode: "ept" }),
      "--trace",
      fixture("ls.lk"),
      "--trace",
      fixture("ls.din"),
      "--json",
    ]);
    expect(code).toBe(0);
    const report = JSON.parse(output);
    expect(report.mode).toBe("ept");
    expect(report.guests).toHaveLength(2);
    expect(report.source.traces.map((t: { format: string }) => t.format)).toEqual(["lackey", "din"]);
    // The records `memvirt run --trace` counts for each file alone.
    expect(report.source.traces.map((t: { records: number }) => t.records)).toEqual([199_994, 47_234]);
    expect(report.accesses).toBe(199_994 + 47_234);
    expect(report.memory.usedByVm.every((pages: number) => pages > 0)).toBe(true);
    expect(report.virtualization.exits.eptViolation).toBeGreaterThan(0);
  });

  it("on a short host KSM merges the pages neither trace writes and the controller changes state", async () => {
    const { code, output } = await run([
      "run",
      "--config",
      config("short.json", SHORT),
      "--trace",
      fixture("ls.lk"),
      "--trace",
      fixture("ls.din"),
      "--seconds",
      "2",
      "--json",
    ]);
    expect(code).toBe(0);
    const report = JSON.parse(output);
    expect(report.controller.transitions).toBeGreaterThan(0);
    expect(report.ksm.pages_sharing).toBeGreaterThan(0);
    expect(report.memory.saved.ksm).toBe(report.ksm.pages_sharing);
    expect(report.invalidationsByMechanism.ksm).toBeGreaterThan(0);
  });

  it("the interleaving is the traces' alone: the same records in memvirt's format give the same statistics", async () => {
    const converted = join(temp, "ls.mvt");
    await convertTrace(fixture("ls.lk"), "auto", converted, build);
    const runOf = async (first: string) => {
      const { code, output } = await run([
        "run",
        "--config",
        config("short2.json", SHORT),
        "--trace",
        first,
        "--trace",
        fixture("ls.din"),
        "--json",
      ]);
      expect(code).toBe(0);
      const { source, ...rest } = JSON.parse(output);
      return rest;
    };
    expect(await runOf(converted)).toEqual(await runOf(fixture("ls.lk")));
  });

  it("a bad line in one trace stops the run with FILE:LINE and exit code 2, with the statistics so far", async () => {
    const bad = join(temp, "bad.lk");
    const head = readFileSync(fixture("ls.lk"), "utf8").split("\n").slice(0, 5000).join("\n");
    writeFileSync(bad, `${head}\n L zzzz,8\n`);
    const { code, output, stderr } = await run([
      "run",
      "--trace",
      fixture("ls.din"),
      "--trace",
      bad,
      "--json",
    ]);
    expect(code).toBe(2);
    expect(stderr).toContain(`${bad}:5001:`);
    const report = JSON.parse(output);
    expect(report.error).toContain(`${bad}:5001:`);
    expect(report.accesses).toBeGreaterThan(4900);
  });

  it("--vms with --trace is refused: a trace run has one VM per --trace", async () => {
    const { code, stderr } = await run(["run", "--trace", fixture("ls.din"), "--vms", "2"]);
    expect(code).toBe(2);
    expect(stderr).toMatch(/--vms: a trace run has one VM per --trace/);
  });

  it("several traces need a mode with nested tables: shadow is refused naming the key", async () => {
    const path = config("shadow.json", { mode: "shadow" });
    const { code, stderr } = await run([
      "run",
      "--config",
      path,
      "--trace",
      fixture("ls.din"),
      "--trace",
      fixture("ls.din"),
    ]);
    expect(code).toBe(2);
    expect(stderr).toMatch(/config key "mode"/);
  });
});

describe("checkpoints of a run of several traces", () => {
  const traces = [fixture("ls.lk"), fixture("ls-head.champsim.xz"), fixture("ls.din")];
  const specs = traces.map((file) => ({ file, format: "auto" as const }));
  const hostFor = () => {
    const base = resolveConfig(SHORT);
    return new OvercommitHost(base, new TraceVms(traces, base.guest, 1), { build });
  };

  it("resumed from the middle, end with the statistics of an uninterrupted run", async () => {
    const host = hostFor();
    const checkpoint = join(temp, "middle.ckpt");
    let taken: MultiTracePosition | undefined;
    const runInfo = {
      config: host.config,
      trace: traces[0],
      traces,
      format: "auto" as const,
      build,
      checkpoint,
      checkpointEvery: 50_000,
      seconds: 1,
    };
    const whole = await replayTraces(host, specs, {
      build,
      checkpointEvery: 50_000,
      onCheckpoint: (position) => {
        if (taken) return;
        taken = position;
        saveCheckpoint(checkpoint, host, runInfo, position);
      },
    });
    host.finish();
    const uninterrupted = buildOvercommitReport(host, { traces: whole.traces }, "test");
    // The first checkpoint falls mid-way, with records queued that had not run yet.
    expect(taken?.records).toBeGreaterThanOrEqual(50_000);
    expect(taken?.records).toBeLessThan(whole.records);

    const saved = readCheckpoint(checkpoint, build) as MultiCheckpoint;
    const rest = await replayTraces(saved.host, specs, { build, resume: saved.position });
    saved.host.finish();
    expect(rest.records).toBe(whole.records);
    expect(buildOvercommitReport(saved.host, { traces: rest.traces }, "test")).toEqual(uninterrupted);
  });

  it("killed with SIGKILL and resumed, the run ends with the statistics of an uninterrupted run", async () => {
    const a = join(temp, "a.mvt");
    const b = join(temp, "b.mvt");
    writeOwnTrace(a, randomRecords(20_000, 500, 1, 7));
    writeOwnTrace(b, randomRecords(20_000, 500, 1, 8));
    const path = config("kill.json", { mode: "ept", guest: { memory: "1G" } });
    const args = ["run", "--config", path, "--trace", a, "--trace", b, "--json", "--build", build];
    const uninterrupted = spawnSync(process.execPath, [cli, ...args], { maxBuffer: 1 << 26 });
    expect(uninterrupted.status).toBe(0);

    const checkpoint = join(temp, "killed.ckpt");
    const child = spawn(process.execPath, [
      cli,
      ...args,
      "--checkpoint",
      checkpoint,
      "--checkpoint-every",
      "5000",
    ]);
    const exited = new Promise<NodeJS.Signals | null>((resolve) =>
      child.on("exit", (_, signal) => resolve(signal)),
    );
    while (!existsSync(checkpoint) && child.exitCode === null) await new Promise((r) => setTimeout(r, 5));
    child.kill("SIGKILL");
    // The run must really have died mid-way, or this test would prove nothing.
    expect(await exited).toBe("SIGKILL");
    const saved = readCheckpoint(checkpoint, build) as MultiCheckpoint;
    expect(saved.position.records).toBeGreaterThan(0);
    expect(saved.position.records).toBeLessThan(40_000);

    const resumed = spawnSync(process.execPath, [cli, "run", "--resume", checkpoint, "--json"], {
      maxBuffer: 1 << 26,
    });
    expect(resumed.stderr.toString()).toBe("");
    expect(resumed.status).toBe(0);
    expect(JSON.parse(resumed.stdout.toString())).toEqual(JSON.parse(uninterrupted.stdout.toString()));
  });
});
