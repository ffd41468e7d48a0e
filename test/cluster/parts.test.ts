// Sweeps in parts (issue 14): `--emit ranges`, `--cells I..J` and `--merge` as a plain shell loop uses
// them; the lock that keeps two sweeps off one output; outputs checked writable before any cell runs.
import { spawnSync } from "node:child_process";
import { existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { hostname, tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, describe, expect, it } from "vitest";
import { readRows } from "../../src/runner/sweep.js";

const temp = mkdtempSync(join(tmpdir(), "memvirt-parts-"));
const fixture = (name: string) => new URL(`../fixtures/${name}`, import.meta.url).pathname;
const cli = new URL("../../bin/memvirt.js", import.meta.url).pathname;

// `memvirt` on the PATH, as the README's shell loop calls it.
mkdirSync(join(temp, "bin"));
writeFileSync(join(temp, "bin", "memvirt"), `#!/bin/sh\nexec "${process.execPath}" "${cli}" "$@"\n`, {
  mode: 0o755,
});

function run(command: string, args: string[]) {
  const env = { ...process.env, PATH: `${join(temp, "bin")}:${process.env.PATH}` };
  const result = spawnSync(command, args, { cwd: temp, env });
  return { status: result.status, stdout: result.stdout.toString(), stderr: result.stderr.toString() };
}
const memvirt = (args: string[]) => run(process.execPath, [cli, ...args]);

const grid = join(temp, "grid.json");
writeFileSync(
  grid,
  JSON.stringify({
    configs: { native: {}, ept: { mode: "ept" }, typo: { tbl: {} } },
    traces: [fixture("ls-head.lk"), { file: fixture("ls-head.champsim.xz"), format: "champsim" }],
  }),
);

afterAll(() => rmSync(temp, { recursive: true, force: true }));

describe("sweeps in parts: --emit ranges, --cells, --merge", () => {
  it("a shell loop over --emit ranges with --cells, then --merge, writes every cell once in grid order; a missing part is exit 2", () => {
    const ranges = memvirt(["sweep", grid, "--emit", "ranges", "--cells-per-task", "4"]);
    expect(ranges.stdout).toBe("0..3\n4..5\n");
    // The README's loop: one background sweep per range, each into its own part.
    const loop = run("bash", [
      "-c",
      `set -e; mkdir -p parts
       for r in $(memvirt sweep grid.json --emit ranges --cells-per-task 4); do
         memvirt sweep grid.json --cells "$r" --out "parts/\${r%%..*}.jsonl" --quiet --workers 1 &
       done
       wait`,
    ]);
    // bash's `wait` without arguments is always 0; each part holds its own failures.
    expect(loop.status).toBe(0);
    expect(readRows(join(temp, "parts", "0.jsonl")).map((row) => row.cell)).toHaveLength(4);
    const merged = memvirt(["sweep", grid, "--merge", "parts", "--out", "rows.jsonl", "--csv", "rows.csv"]);
    expect(merged.stdout).toBe(
      "sweep: 6 cells, 6 merged, 0 already done, 2 failed; rows in rows.jsonl and rows.csv\n",
    );
    expect(merged.status).toBe(2);
    expect(readRows(join(temp, "rows.jsonl")).map((row) => row.cell)).toEqual([
      `native|${fixture("ls-head.lk")}`,
      `native|${fixture("ls-head.champsim.xz")}`,
      `ept|${fixture("ls-head.lk")}`,
      `ept|${fixture("ls-head.champsim.xz")}`,
      `typo|${fixture("ls-head.lk")}`,
      `typo|${fixture("ls-head.champsim.xz")}`,
    ]);
    expect(readFileSync(join(temp, "rows.csv"), "utf8").trim().split("\n")).toHaveLength(7);
    // Without the second part: what is there is merged, what is missing is counted, exit 2.
    rmSync(join(temp, "parts", "4.jsonl"));
    const partial = memvirt(["sweep", grid, "--merge", "parts", "--out", "partial.jsonl"]);
    expect(partial.stdout).toBe(
      "sweep: 6 cells, 4 merged, 0 already done, 0 failed, 2 missing; rows in partial.jsonl\n",
    );
    expect(partial.status).toBe(2);
  });

  it("--merge refuses a part holding a cell of another grid, naming the file and the cell", () => {
    writeFileSync(
      join(temp, "parts", "9.jsonl"),
      `${JSON.stringify({ cell: "other|x.din", status: "ok" })}\n`,
    );
    const merged = memvirt(["sweep", grid, "--merge", "parts", "--out", "foreign.jsonl"]);
    expect(merged.status).toBe(2);
    expect(merged.stderr).toBe(
      "memvirt: --merge parts/9.jsonl: cell other|x.din is not in the grid (a part of another sweep?)\n",
    );
    expect(readRows(join(temp, "foreign.jsonl"))).toEqual([]);
  });

  it("--cells outside the grid is refused with the grid's size", () => {
    const result = memvirt(["sweep", grid, "--cells", "4..6", "--out", "never.jsonl"]);
    expect(result.status).toBe(2);
    expect(result.stderr).toBe(
      "memvirt: --cells 4..6: expected I..J with 0 <= I <= J < 6 (the grid's cells, from 0)\n",
    );
  });
});

describe("the output of a local sweep", () => {
  it("a second sweep on the same --out refuses with exit 2 while the first holds the lock; a dead sweep's lock is taken over", () => {
    const out = join(temp, "locked.jsonl");
    // This test process stands for a sweep still running on this host.
    writeFileSync(`${out}.lock`, `${process.pid} ${hostname()}\n`);
    const refused = memvirt(["sweep", grid, "--out", out]);
    expect(refused.status).toBe(2);
    expect(refused.stderr).toBe(
      `memvirt: --out ${out}: another sweep is writing it (pid ${process.pid} on ${hostname()}, lock ${out}.lock); if that sweep is gone, remove the lock file\n`,
    );
    expect(readRows(out)).toEqual([]);
    // A sweep that died (SIGKILL, a reboot) left its lock: its pid is gone, the next sweep takes over.
    const dead = spawnSync("true").pid as number;
    writeFileSync(`${out}.lock`, `${dead} ${hostname()}\n`);
    const ran = memvirt(["sweep", grid, "--out", out, "--workers", "2"]);
    expect(ran.stdout).toContain("sweep: 6 cells, 6 run");
    expect(existsSync(`${out}.lock`)).toBe(false);
  });

  it("an output that cannot be written is an error before any cell runs", () => {
    const result = memvirt(["sweep", grid, "--out", "early.jsonl", "--csv", "no/such/folder/rows.csv"]);
    expect(result.status).toBe(2);
    expect(result.stderr).toMatch(/^memvirt: --csv no\/such\/folder\/rows\.csv: cannot write: ENOENT/);
    expect(readRows(join(temp, "early.jsonl"))).toEqual([]);
  });
});
