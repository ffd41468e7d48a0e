// `memvirt sweep` (issue 5): a grid of configurations x traces on worker threads, one row per cell
// as JSON lines and CSV; resumable (finished cells are not run again); a failed cell is reported
// and the others finish. Runs the built CLI, as the workers load the compiled worker module.
import { spawnSync } from "node:child_process";
import { mkdtempSync, readFileSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { describe, expect, it } from "vitest";
import { readGrid, readRows } from "../../src/runner/sweep.js";
import { charts, configBlocks } from "../report/html-page.js";

const temp = mkdtempSync(join(tmpdir(), "memvirt-sweep-"));
const build = process.env.MEMVIRT_BUILD === "debug" ? "debug" : "release";
const cli = new URL("../../bin/memvirt.js", import.meta.url).pathname;
const fixture = (name: string) => new URL(`../fixtures/${name}`, import.meta.url).pathname;

function sweep(args: string[]) {
  const result = spawnSync(process.execPath, [cli, "sweep", ...args, "--build", build]);
  return { status: result.status, stdout: result.stdout.toString(), stderr: result.stderr.toString() };
}

function runOne(config: object, trace: string) {
  const path = join(temp, `single-${Math.random().toString(36).slice(2)}.json`);
  writeFileSync(path, JSON.stringify(config));
  const result = spawnSync(process.execPath, [
    cli,
    "run",
    "--config",
    path,
    "--trace",
    trace,
    "--json",
    "--build",
    build,
  ]);
  // A row's report is run --json's object without `config` (the row names its config instead).
  const { config: _, ...report } = JSON.parse(result.stdout.toString());
  return report;
}

describe("memvirt sweep", () => {
  const broken = join(temp, "broken.din");
  writeFileSync(broken, "0 1000\n1 2000\n7 3000\n");
  const grid = join(temp, "grid.json");
  writeFileSync(
    grid,
    JSON.stringify({
      configs: { native: {}, ept2m: { mode: "ept", host: { pageSize: "2M" } }, typo: { tbl: {} } },
      traces: [
        fixture("ls.din"),
        { file: fixture("ls-head.champsim.xz"), format: "champsim" },
        { file: "broken.din", format: "din" },
      ],
    }),
  );
  const out = join(temp, "rows.jsonl");
  const csv = join(temp, "rows.csv");
  const html = join(temp, "rows.html");

  it("runs every cell once, reports failed cells with their error, and the others finish", () => {
    const result = sweep([grid, "--out", out, "--csv", csv, "--report", html, "--workers", "2"]);
    expect(result.status).toBe(2);
    expect(result.stdout).toContain("9 cells, 9 run, 0 already done, 5 failed");
    const rows = readRows(out);
    expect(rows).toHaveLength(9);
    const byCell = new Map(rows.map((row) => [row.cell, row]));
    // A bad trace line fails its cells with FILE:LINE, and keeps the statistics before it.
    const bad = byCell.get(`native|broken.din`);
    expect(bad?.status).toBe("error");
    expect(bad?.error).toContain(`${broken}:3: bad record type`);
    expect(bad?.report?.accesses).toBe(2);
    // A bad config fails its cells with the key's name.
    expect(byCell.get(`typo|${fixture("ls.din")}`)?.error).toMatch(/"tbl"/);
    expect(result.stderr).toMatch(/sweep cell typo\|/);
    // The good cells hold exactly what a single run of the same config and trace reports.
    const good = byCell.get(`ept2m|${fixture("ls.din")}`);
    expect(good?.status).toBe("ok");
    expect(good?.report).toEqual(runOne({ mode: "ept", host: { pageSize: "2M" } }, fixture("ls.din")));
    expect(byCell.get(`native|${fixture("ls-head.champsim.xz")}`)?.report?.accesses).toBe(20014);
  });

  it("writes the rows as CSV in grid order, one line per cell under one header", () => {
    const lines = readFileSync(csv, "utf8").trim().split("\n");
    expect(lines).toHaveLength(10);
    const header = lines[0].split(",");
    expect(header.slice(0, 4)).toEqual(["cell", "config", "trace", "status"]);
    expect(header).toContain("report.tlb.l1d.misses");
    expect(lines[1].startsWith(`native|${fixture("ls.din")},native,`)).toBe(true);
    expect(lines[9].startsWith("typo|broken.din,typo,")).toBe(true);
  });

  it("--report sets the cells side by side, named by config and trace, with charts comparing them", () => {
    const page = readFileSync(html, "utf8");
    // A grid of configs x traces; every cell a card named "config · trace".
    const grid = /<table class="grid">([\s\S]*?)<\/table>/.exec(page)?.[1] ?? "";
    const traces = ["ls.din", "ls-head.champsim.xz", "broken.din"];
    expect([...grid.matchAll(/<th>([^<]*)<\/th>/g)].map((m) => m[1])).toEqual([
      "config \\ trace",
      ...traces,
      "native",
      "ept2m",
      "typo",
    ]);
    expect([...grid.matchAll(/<h3>([^<]*)<\/h3>/g)].map((m) => m[1])).toEqual(
      ["native", "ept2m", "typo"].flatMap((config) => traces.map((trace) => `${config} · ${trace}`)),
    );
    // Charts comparing the cells that finished: a column per trace, a bar per config.
    const [cycles, misses] = charts(page);
    expect(cycles.caption).toMatch(/^Cycles per access, each config against each trace/);
    expect(misses.caption).toMatch(/^STLB misses per 1,000 accesses/);
    for (const chart of [cycles, misses]) {
      expect(chart.labels).toEqual(traces);
      expect(chart.legend).toEqual(["native", "ept2m"]);
      expect(chart.bars).toHaveLength(4);
      expect(chart.ticks.length).toBeGreaterThanOrEqual(3);
    }
    // Each config's effective JSON, or why it is not one.
    const blocks = configBlocks(page);
    expect(blocks.map((block) => block.summary)).toEqual([
      "native: effective config (JSON)",
      "ept2m: effective config (JSON)",
      "typo: not a valid config",
    ]);
    expect(blocks[1].config).toMatchObject({ mode: "ept", host: { pageSize: "2M" } });
    expect(blocks[2].error).toMatch(/"tbl"/);
    // Then every cell that gathered statistics with its own charts: four good, two stopped early.
    expect(page.match(/<section id="cell-\d+"><h2>/g)).toHaveLength(6);
    expect(page.match(/stopped early/g)).toHaveLength(2);
  });

  it("is resumable: cells already in the output are not run again, a cut last line is run again", () => {
    const rows = readFileSync(out, "utf8").trim().split("\n");
    // Drop one finished row and cut another in half, as a kill during its write would.
    const keep = rows.slice(0, 7);
    writeFileSync(out, `${keep.join("\n")}\n${rows[7].slice(0, 40)}`);
    const result = sweep([grid, "--out", out, "--workers", "1"]);
    expect(result.stdout).toContain("9 cells, 2 run, 7 already done");
    expect(readRows(out)).toHaveLength(9);
    expect(new Set(readRows(out).map((row) => row.cell)).size).toBe(9);
  });

  it("a grid with an unknown key or without traces is refused with the key's name", () => {
    const badGrid = join(temp, "bad-grid.json");
    writeFileSync(badGrid, JSON.stringify({ configs: { a: {} }, trace: ["x"] }));
    expect(() => readGrid(badGrid, "release")).toThrow(/trace: unknown key/);
    // A cell is its config's name and its trace: a trace listed twice would be two cells of one name.
    writeFileSync(badGrid, JSON.stringify({ configs: { a: {} }, traces: ["x.din", "y.din", "x.din"] }));
    expect(() => readGrid(badGrid, "release")).toThrow("traces[2]: x.din is listed twice (traces[0])");
    writeFileSync(badGrid, JSON.stringify({ configs: { a: {} }, trace: ["x"] }));
    const result = sweep([badGrid, "--out", join(temp, "never.jsonl")]);
    expect(result.status).toBe(2);
    expect(result.stderr).toContain("trace: unknown key");
  });
});
