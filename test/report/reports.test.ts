// Report forms of issue 5: CSV (`--csv`), the self-contained HTML report (`--report out.html`) with
// its charts, and the progress bar, which draws only on a terminal and never with --quiet.
import { spawnSync } from "node:child_process";
import { mkdtempSync, readFileSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { Writable } from "node:stream";
import { describe, expect, it } from "vitest";
import { ProgressBar } from "../../src/cli/progress.js";
import { flatten, formatCsv } from "../../src/report/csv.js";

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
    const json = JSON.parse(memvirt(["run", "--trace", fixture("ls.din"), "--json"]).stdout);
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

describe("HTML report", () => {
  it("is one self-contained page with the TLB hit rates, the access-cost histogram and the cycle breakdown", () => {
    const path = join(temp, "run.html");
    const result = memvirt([
      "run",
      "--config",
      writeConfig({ mode: "ept" }),
      "--trace",
      fixture("ls.lk"),
      "--json",
      "--report",
      path,
    ]);
    expect(result.status).toBe(0);
    const report = JSON.parse(result.stdout);
    const html = readFileSync(path, "utf8");
    // Nothing to fetch: no scripts, no external styles or images.
    expect(html).not.toMatch(/<script|<link|src=|https?:/);
    expect(html.match(/<svg/g)).toHaveLength(3);
    expect(html).toContain("TLB hit rate by level");
    const l1d = report.tlb.l1d;
    const rate = ((100 * l1d.hits) / (l1d.hits + l1d.misses)).toFixed(2);
    expect(html).toContain(`${rate}% of ${(l1d.hits + l1d.misses).toLocaleString("en-US")}`);
    expect(html).toContain("nested TLB");
    expect(html).toContain("accesses by cycles");
    expect(html).toContain("cycles by who spent them");
    expect(html).toContain(`${report.cyclesByWho.translation.toLocaleString("en-US")} (`);
  });

  it("compare --report adds the techniques' table, and its cycle breakdown sums to the cycles", () => {
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
    const html = readFileSync(path, "utf8");
    expect(html).toContain("translation techniques compared");
    expect(html.match(/<tr>/g)?.length).toBe(1 + JSON.parse(result.stdout).rows.length);
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
