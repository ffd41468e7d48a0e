// Slurm job arrays (issue 14): the script `memvirt sweep --emit slurm` writes, submitted with
// `sbatch --wait` to a real single-node Slurm cluster brought up for the test, then `--merge`, gives
// the rows a local sweep gives. Where Slurm cannot start here, the test says so and runs the array
// tasks itself, with SLURM_ARRAY_TASK_ID set as Slurm would.
import { spawnSync } from "node:child_process";
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { readGrid, readRows, type SweepRow } from "../../src/runner/sweep.js";
import { type SlurmCluster, startSlurm } from "./servers.js";

const temp = mkdtempSync(join(tmpdir(), "memvirt-slurm-"));
/** The cluster's state; every folder on its path must be open to the munge and slurm users. */
const slurmDir = mkdtempSync(join(tmpdir(), "memvirt-slurm-cluster-"));
const fixture = (name: string) => new URL(`../fixtures/${name}`, import.meta.url).pathname;
const cli = new URL("../../bin/memvirt.js", import.meta.url).pathname;

function memvirt(args: string[]) {
  const result = spawnSync(process.execPath, [cli, ...args], { cwd: temp });
  return { status: result.status, stdout: result.stdout.toString(), stderr: result.stderr.toString() };
}

let cluster: SlurmCluster | undefined;
let unavailable = "";

beforeAll(async () => {
  try {
    cluster = await startSlurm(slurmDir);
  } catch (error) {
    unavailable = (error as Error).message;
  }
});

afterAll(async () => {
  await cluster?.stop();
  rmSync(temp, { recursive: true, force: true });
  rmSync(slurmDir, { recursive: true, force: true });
});

describe("memvirt sweep --emit slurm", () => {
  it("the job-array script, run by single-node Slurm with sbatch --wait, and --merge give the local sweep's rows in grid order", () => {
    const grid = join(temp, "grid.json");
    writeFileSync(
      grid,
      JSON.stringify({
        configs: { native: {}, ept2m: { mode: "ept", host: { pageSize: "2M" } }, shadow: { mode: "shadow" } },
        traces: [fixture("ls.din"), { file: fixture("ls-head.champsim.xz"), format: "champsim" }],
      }),
    );
    const emitted = memvirt(["sweep", grid, "--emit", "slurm", "--cells-per-task", "3", "--parts", "parts"]);
    expect(emitted.status).toBe(0);
    const script = join(temp, "sweep.sbatch");
    writeFileSync(script, emitted.stdout);
    // Six cells, three a task: two tasks, both at once.
    expect(emitted.stdout).toContain("#SBATCH --array=0-1%2\n");
    expect(emitted.stdout).toContain(`--cells "$first..$last" --out ${join(temp, "parts")}/"$first".jsonl`);

    if (cluster) {
      const submitted = spawnSync("sbatch", ["--wait", script], { cwd: temp, env: cluster.env });
      expect(submitted.stderr.toString()).toBe("");
      expect(submitted.status).toBe(0);
      expect(submitted.stdout.toString()).toMatch(/^Submitted batch job \d+/);
    } else {
      console.warn(
        `Slurm could not start here (${unavailable}): running the array tasks with SLURM_ARRAY_TASK_ID set`,
      );
      for (const task of ["0", "1"]) {
        const ran = spawnSync("bash", [script], {
          cwd: temp,
          env: { ...process.env, SLURM_ARRAY_TASK_ID: task },
        });
        expect(ran.status).toBe(0);
      }
    }
    expect(readRows(join(temp, "parts", "0.jsonl"))).toHaveLength(3);
    expect(readRows(join(temp, "parts", "3.jsonl"))).toHaveLength(3);

    const merged = memvirt(["sweep", grid, "--merge", "parts", "--out", "merged.jsonl"]);
    expect(merged.stdout).toBe("sweep: 6 cells, 6 merged, 0 already done, 0 failed; rows in merged.jsonl\n");
    expect(merged.status).toBe(0);
    const local = memvirt(["sweep", grid, "--out", "local.jsonl", "--workers", "2"]);
    expect(local.status).toBe(0);
    const order = readGrid(grid, "release").cells.map((cell) => cell.id);
    const withoutTime = ({ seconds: _, ...row }: SweepRow) => row;
    const localRows = new Map(readRows(join(temp, "local.jsonl")).map((row) => [row.cell, withoutTime(row)]));
    const mergedRows = readRows(join(temp, "merged.jsonl"));
    expect(mergedRows.map((row) => row.cell)).toEqual(order);
    expect(mergedRows.map(withoutTime)).toEqual(order.map((cell) => localRows.get(cell)));
    expect(readFileSync(join(temp, "merged.jsonl"), "utf8").split("\n")).toHaveLength(7);
  });
});
