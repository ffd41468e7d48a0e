// Report forms of issue 5: CSV (`--csv`), the self-contained HTML report (`--report out.html`) with
// its charts, and the progress bar, which draws only on a terminal and never with --quiet.
import { spawnSync } from "node:child_process";
import { mkdtempSync, readFileSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { Writable } from "node:stream";
import { describe, expect, it } from "vitest";
import { ProgressBar } from "../../src/cli/progress.js";
import { configToJson, defaultConfig, resolveConfig } from "../../src/config/config.js";
import { flatten, formatCsv } from "../../src/report/csv.js";
import { charts, configBlocks } from "./html-page.js";

const temp = mkdtempSync(join(tmpdir(), "memvirt-reports-"));
const build = process.env.MEMVIRT_BUILD === "debug" ? "debug" : "release";
const cli = new URL("../../bin/memvirt.js", import.meta.url).pathname;
const fixture = (name: string) => new URL(`../fixtures/${name}`, import.meta.url).pathname;

function memvirt(args: string[]) {
  const result = spawnSync(process.execPath, [cli, ...args, "--build", build], { maxBuffer: 1 << 26 });
  return { status: result.status, stdout: result.stdout.toString(), stderr: result.stderr.toString() };
}

/** Minimal CSV reader for the tests: quoted cells with doubled quotes. */
function parseCsvLine(line: string): string[] {
  const cells: string[] = [];
  let cell = "";
  let quoted = false;
  for (let i = 0; i < line.length; i++) {
    const c = line[i];
    if (quoted) {
      if (c === '"' && line[i + 1] === '"') {
        cell += '"';
        i++;
      } else if (c === '"') quoted = false;
      else cell += c;
    } else if (c === '"') quoted = true;
    else if (c === ",") {
      cells.push(cell);
      cell = "";
    } else cell += c;
  }
  cells.push(cell);
  return cells;
}

describe("CSV reports", () => {
  it("run --csv prints a header of dotted keys and one row holding the JSON report's values", () => {
    // The JSON's `config` (the effective config) is not a statistic: the CSV row leaves it out.
    const { config: _, ...json } = JSON.parse(
      memvirt(["run", "--trace", fixture("ls.din"), "--json"]).stdout,
    );
    const csv = memvirt(["run", "--trace", fixture("ls.din"), "--csv"])
      .stdout.trim()
      .split("\n");
    expect(csv).toHaveLength(2);
    const header = parseCsvLine(csv[0]);
    const values = parseCsvLine(csv[1]);
    const row = Object.fromEntries(header.map((key, i) => [key, values[i]]));
    const flat = flatten(json);
    expect(header).toEqual(Object.keys(flat));
    expect(row["tlb.l1d.misses"]).toBe(String(json.tlb.l1d.misses));
    expect(row["histogram.0"]).toBe(String(json.histogram[0]));
    expect(row.cycles).toBe(String(json.cycles));
  });

  it("quotes cells holding commas, quotes and newlines, and unions the keys of differing rows", () => {
    const text = formatCsv([{ a: 'say "hi", then\nleave' }, { b: { c: 1 } }]);
    expect(text).toBe('a,b.c\n"say ""hi"", then\nleave",\n,1');
  });
});

interface RunReportLike {
  tlb: Record<string, { hits: number; misses: number }>;
  cycles: number;
  cyclesByWho: Record<string, number>;
  histogram: number[];
}

describe("HTML report", () => {
  const powersOfTen = (ticks: string[]) =>
    ticks.map((tick) => Number(tick.replace("k", "e3").replace("M", "e6").replace("G", "e9")));

  // One EPT run of the real ls trace, read by the first three tests.
  let runPage: { report: RunReportLike; html: string } | undefined;
  const ept = { mode: "ept" };
  function eptRunPage() {
    if (!runPage) {
      const path = join(temp, "run.html");
      const result = memvirt([
        "run",
        "--config",
        writeConfig(ept),
        "--trace",
        fixture("ls.lk"),
        "--json",
        "--report",
        path,
      ]);
      expect(result.status).toBe(0);
      runPage = { report: JSON.parse(result.stdout), html: readFileSync(path, "utf8") };
    }
    return runPage;
  }

  it("is one self-contained page with the TLB hit rates, the access-cost histogram and the cycle breakdown", () => {
    const { report, html } = eptRunPage();
    // Nothing to fetch: no scripts, no external styles or images.
    expect(html).not.toMatch(/<script|<link|src=|https?:/);
    expect(html.match(/<svg/g)).toHaveLength(3);
    const [tlb, , cycles] = charts(html);
    expect(tlb.caption).toBe("TLB hit rate by level");
    const l1d = report.tlb.l1d;
    const rate = ((100 * l1d.hits) / (l1d.hits + l1d.misses)).toFixed(2);
    expect(tlb.values).toContain(`${rate}% of ${(l1d.hits + l1d.misses).toLocaleString("en-US")}`);
    expect(html).toContain("nested TLB");
    expect(tlb.ticks).toEqual(["0%", "20%", "40%", "60%", "80%", "100%"]);
    expect(cycles.caption).toMatch(/^Cycles by who spent them/);
    expect(cycles.values).toContain(
      `${report.cyclesByWho.translation.toLocaleString("en-US")} (${((100 * report.cyclesByWho.translation) / report.cycles).toFixed(1)}%)`,
    );
  });

  it("the access-cost histogram has its whole title, a log y-axis with tick values, and a label per bucket", () => {
    const { report, html } = eptRunPage();
    const histogram = report.histogram;
    const chart = charts(html)[1];
    // The title is the figure's caption (HTML wraps it), not SVG text cut off at the chart's edge.
    expect(chart.caption).toBe(
      "Access-cost histogram: accesses by cycles spent translating them (TLB hits fall in the lowest buckets, page walks above; log scale)",
    );
    expect(chart.axisTitles).toEqual(["accesses (log scale)", "cycles per access"]);
    // Ticks at 1, 10, 100, ... up to the first power of ten at or above the fullest bucket.
    const ticks = powersOfTen(chart.ticks);
    expect(ticks[0]).toBe(1);
    for (let i = 1; i < ticks.length; i++) expect(ticks[i]).toBe(10 * ticks[i - 1]);
    expect(ticks.at(-1)).toBeGreaterThanOrEqual(Math.max(...histogram));
    expect(ticks.at(-2)).toBeLessThan(Math.max(...histogram));
    // One column per bucket up to the last non-empty one: 0 cycles, then [2^(b-1), 2^b - 1].
    const last = histogram.findLastIndex((n) => n > 0);
    expect(last).toBeGreaterThan(3);
    expect(chart.labels).toEqual(
      histogram.slice(0, last + 1).map((_, b) => (b <= 1 ? String(b) : `${2 ** (b - 1)}–${2 ** b - 1}`)),
    );
    expect(chart.bars).toHaveLength(last + 1);
    expect(chart.bars[1]).toContain(`${histogram[1].toLocaleString("en-US")} accesses`);
    expect(chart.values).toHaveLength(last + 1);
  });

  it("a run's page shows the effective config that produced it, as JSON", () => {
    const blocks = configBlocks(eptRunPage().html);
    expect(blocks).toHaveLength(1);
    expect(blocks[0].summary).toBe("effective config (JSON)");
    // Every key, the defaults included, as the run resolved them, in the form --config reads back.
    expect(blocks[0].config).toEqual(configToJson(resolveConfig(ept)));
    expect(resolveConfig(blocks[0].config as never)).toEqual(resolveConfig(ept));
  });

  it("compare --report charts cycles per access and VM exits per million by mode and page-size pairing", () => {
    const path = join(temp, "compare.html");
    const result = memvirt([
      "compare",
      "--records",
      "20000",
      "--footprint",
      "16M",
      "--modes",
      "native,shadow",
      "--json",
      "--report",
      path,
    ]);
    expect(result.status).toBe(0);
    const rows: { mode: string; guestPageSize: string; hostPageSize: string | null; vmExits: number }[] =
      JSON.parse(result.stdout).rows;
    const html = readFileSync(path, "utf8");
    expect(html).toContain("translation techniques compared");
    expect(html.match(/<tr>/g)?.length).toBe(1 + rows.length);
    const [cycles, exits] = charts(html);
    expect(cycles.caption).toBe(
      "Cycles per access by mode and page-size pairing (guest pages / host backing)",
    );
    expect(exits.caption).toBe("VM exits per million accesses by mode and page-size pairing");
    for (const chart of [cycles, exits]) {
      // Grouped by mode, a bar per row, a legend of the pairings, a y-axis with tick values.
      expect(chart.labels).toEqual(["native", "shadow"]);
      expect(chart.bars).toHaveLength(rows.length);
      expect(chart.legend).toEqual([
        "guest/host 4K/-",
        "guest/host 2M/-",
        "guest/host 4K/4K",
        "guest/host 2M/2M",
      ]);
      expect(chart.ticks.length).toBeGreaterThanOrEqual(3);
      expect(chart.axisTitles[1]).toBe("translation technique");
    }
    expect(exits.bars[2]).toMatch(/^shadow, guest\/host 4K\/4K: /);
    expect(rows[2].vmExits).toBeGreaterThan(0);
    // The base config, which each row varies in mode and page sizes only.
    const [block] = configBlocks(html);
    expect(block.config).toEqual(configToJson(defaultConfig()));
    const run = JSON.parse(memvirt(["run", "--workload", "uniform", "--records", "5000", "--json"]).stdout);
    const sum = Object.values(run.cyclesByWho as Record<string, number>).reduce((a, b) => a + b, 0);
    expect(sum).toBe(run.cycles);
  });
});

function writeConfig(config: object): string {
  const path = join(temp, `config-${Math.random().toString(36).slice(2)}.json`);
  writeFileSync(path, JSON.stringify(config));
  return path;
}

describe("progress bar", () => {
  class FakeTerminal extends Writable {
    text = "";
    isTTY = true;
    columns = 120;
    _write(chunk: Buffer, _encoding: string, callback: () => void): void {
      this.text += chunk.toString();
      callback();
    }
    cursorTo(): boolean {
      return true;
    }
    clearLine(): boolean {
      return true;
    }
    moveCursor(): boolean {
      return true;
    }
  }

  it("on a terminal, shows percent, records/s and the ETA", async () => {
    const terminal = new FakeTerminal();
    const bar = new ProgressBar(fixture("ls.din"), false, terminal as unknown as NodeJS.WriteStream);
    await new Promise((resolve) => setTimeout(resolve, 250));
    bar.update(20000, 280000);
    bar.stop();
    // 280,000 of the file's 560,612 bytes.
    expect(terminal.text).toMatch(/49% \| 20,000 records \| [\d,]+ records\/s \| ETA \d+s/);
  });

  it("stays quiet with --quiet, and when stderr is not a terminal", () => {
    for (const [quiet, isTTY] of [
      [true, true],
      [false, false],
    ]) {
      const terminal = new FakeTerminal();
      terminal.isTTY = isTTY;
      const bar = new ProgressBar(fixture("ls.din"), quiet, terminal as unknown as NodeJS.WriteStream);
      bar.update(1, 1);
      bar.stop();
      expect(terminal.text).toBe("");
    }
    // The CLI's stderr here is a pipe: nothing but the report on stdout, nothing on stderr.
    const result = memvirt(["run", "--trace", fixture("ls.lk"), "--json"]);
    expect(result.stderr).toBe("");
  });
});
