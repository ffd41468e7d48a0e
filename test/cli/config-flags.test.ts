// The config flags (issue 12, item 5): `memvirt presets`, `--preset NAME` with a config file's keys over
// it, `--print-config` printing the effective config as JSON that `--config` reads back to identical
// statistics, and the effective config in every `--json` report. In this process (test/cli/in-process.ts).
import { writeFileSync } from "node:fs";
import { join } from "node:path";
import { describe, expect, it } from "vitest";
import { runMemvirt as run, scratch } from "./in-process.js";

const fixture = (name: string) => new URL(`../fixtures/${name}`, import.meta.url).pathname;
const { dir, config } = scratch("memvirt-config-flags-");
const PRESETS = ["icelake", "sapphire-rapids", "skylake", "zen2", "zen3", "zen4"];

describe("memvirt presets and --preset", () => {
  it("memvirt presets lists the six presets, one line each, and --json their files", async () => {
    const table = await run(["presets"], { withoutBuild: true });
    expect(table.code).toBe(0);
    expect(table.output.split("\n").map((line) => line.split(/\s+/)[0])).toEqual(PRESETS);
    const files = JSON.parse((await run(["presets", "--json"], { withoutBuild: true })).output);
    expect(files.map((file: { name: string }) => file.name)).toEqual(PRESETS);
  });

  it("run --preset zen4 --trace runs on Zen 4's TLBs; an unknown preset is exit 2 naming the ones there are", async () => {
    const zen4 = await run(["run", "--preset", "zen4", "--trace", fixture("ls-head.lk"), "--json"]);
    expect(zen4.code).toBe(0);
    const report = JSON.parse(zen4.output);
    expect(report.accesses).toBeGreaterThan(0);
    expect(report.config.tlb.l1d.arrays[0].entries).toBe(72);
    const unknown = await run(["run", "--preset", "zen9", "--trace", fixture("ls-head.lk")]);
    expect(unknown.code).toBe(2);
    expect(unknown.stderr).toBe(
      `memvirt: --preset zen9: no such preset (there are ${PRESETS.join(", ")}; see memvirt presets)\n`,
    );
  });

  it("a config file's keys lie over the preset's, and its errors name the file and the preset", async () => {
    const over = config("over.json", { mode: "ept" });
    const printed = JSON.parse(
      (await run(["run", "--preset", "zen3", "--config", over, "--print-config"])).output,
    );
    expect(printed.mode).toBe("ept");
    expect(printed.tlb).toEqual(
      JSON.parse((await run(["run", "--preset", "zen3", "--print-config"])).output).tlb,
    );
    const bad = config("bad.json", { tlb: { l1d: { entries: -1 } } });
    const result = await run(["run", "--preset", "zen3", "--config", bad, "--print-config"]);
    expect(result.code).toBe(2);
    expect(result.stderr).toMatch(
      new RegExp(`^memvirt: ${bad} \\(over preset zen3\\): .*tlb\\.l1d\\.entries`),
    );
  });
});

describe("--print-config round-trips into --config", () => {
  it.each([
    ["a preset and a trace", ["--preset", "icelake", "--trace", fixture("ls-head.lk")]],
    ["zen2 on a synthetic workload", ["--preset", "zen2", "--workload", "zipf", "--records", "50000"]],
    [
      "a multi-VM workload",
      ["--workload", "cloud-mix", "--vms", "2", "--pages-per-vm", "256", "--records", "20000"],
    ],
  ])("%s: the printed config, read back with --config, gives identical statistics", async (_, args) => {
    const printed = await run(["run", ...args, "--print-config"]);
    expect(printed.code).toBe(0);
    const file = join(dir, `printed-${args[1]}.json`);
    writeFileSync(file, printed.output);
    const withoutPreset = args.filter((arg, i) => arg !== "--preset" && args[i - 1] !== "--preset");
    const original = JSON.parse((await run(["run", ...args, "--json"])).output);
    const readBack = JSON.parse((await run(["run", ...withoutPreset, "--config", file, "--json"])).output);
    expect(readBack).toEqual(original);
    expect(readBack.config).toEqual(JSON.parse(printed.output));
  });
});

describe("--print-config of a checkpoint", () => {
  it("run --resume CK --print-config prints the config the checkpoint's run has, and runs nothing", async () => {
    const over = config("ept-for-checkpoint.json", { mode: "ept" });
    const checkpoint = join(dir, "print.ckpt");
    const args = ["--trace", fixture("ls-head.lk"), "--checkpoint", checkpoint, "--checkpoint-every", "5000"];
    const ran = await run(["run", "--config", over, ...args, "--json"]);
    expect(ran.code).toBe(0);
    const printed = await run(["run", "--resume", checkpoint, "--print-config"]);
    expect(printed.code).toBe(0);
    expect(JSON.parse(printed.output)).toEqual(JSON.parse(ran.output).config);
  });
});

describe("every --json report carries the effective config", () => {
  it.each([
    ["run --trace", ["run", "--trace", fixture("ls-head.lk")]],
    ["run --workload (synthetic)", ["run", "--workload", "uniform", "--records", "10000"]],
    ["run --workload dma-nic", ["run", "--workload", "dma-nic", "--records", "50"]],
    ["run of several traces", ["run", "--trace", fixture("ls-head.lk"), "--trace", fixture("ls-head.lk")]],
    ["compare", ["compare", "--workload", "uniform", "--records", "5000", "--modes", "native,ept"]],
    ["compare --workload dma-nvme", ["compare", "--workload", "dma-nvme", "--records", "50"]],
  ])("%s", async (_, args) => {
    const result = await run([...args, "--json"]);
    expect(result.code).toBe(0);
    const report = JSON.parse(result.output);
    expect(report.config.mode).toMatch(/^(native|pv|shadow|ept|npt)$/);
    expect(report.config.tlb.l1d.arrays[0].entries).toBeGreaterThan(0);
  });
});
