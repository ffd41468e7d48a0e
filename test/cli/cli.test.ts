import { execFileSync, spawnSync } from "node:child_process";
import { mkdtempSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { describe, expect, it } from "vitest";
import { main } from "../../src/cli/main.js";

const fixture = (name: string) => new URL(`../fixtures/${name}`, import.meta.url).pathname;
const temp = mkdtempSync(join(tmpdir(), "memvirt-cli-"));
const build = process.env.MEMVIRT_BUILD === "debug" ? "debug" : "release";

async function run(args: string[]): Promise<{ code: number; output: string }> {
  const lines: string[] = [];
  const code = await main(["node", "memvirt", ...args, "--build", build], (text) => lines.push(text));
  return { code, output: lines.join("\n") };
}

describe("memvirt run", () => {
  it("replays the real ls din trace and reports the contract's JSON keys", async () => {
    const { code, output } = await run(["run", "--trace", fixture("ls.din"), "--json"]);
    expect(code).toBe(0);
    const report = JSON.parse(output);
    expect(report.accesses).toBe(47234);
    for (const key of ["cycles", "walks", "walkRefs", "faultedWalks", "faultedWalkRefs", "faults"]) {
      expect(report).toHaveProperty(key);
    }
    for (const level of ["l1d", "l1i", "l2"]) {
      expect(report.tlb[level]).toEqual({ hits: expect.any(Number), misses: expect.any(Number) });
    }
    expect(report.tlb.l1d.hits + report.tlb.l1d.misses).toBe(47234);
    expect(report.source.format).toBe("din");
  });

  it("auto-detects lackey and counts every I, L, S and M record once", async () => {
    const { output } = await run(["run", "--trace", fixture("ls-head.lk"), "--json"]);
    const report = JSON.parse(output);
    expect(report.source.format).toBe("lackey");
    // Lines of the fixture that are records (not `==` messages).
    expect(report.accesses).toBe(19994);
    expect(report.tlb.l1i.hits + report.tlb.l1i.misses + report.tlb.l1d.hits + report.tlb.l1d.misses).toBe(
      19994,
    );
  });

  it("a malformed trace line stops the run with FILE:LINE, exit code 2, and the statistics so far in JSON", async () => {
    const path = join(temp, "bad.din");
    writeFileSync(path, "0 1000\n1 2000\n0 3000\n7 4000\n0 5000\n");
    const stderr: string[] = [];
    const original = process.stderr.write.bind(process.stderr);
    process.stderr.write = ((text: string) => stderr.push(text)) as typeof process.stderr.write;
    try {
      const { code, output } = await run(["run", "--trace", path, "--format", "din", "--json"]);
      expect(code).toBe(2);
      const report = JSON.parse(output);
      expect(report.accesses).toBe(3);
      expect(report.error).toMatch(/bad\.din:4: /);
      expect(stderr.join("")).toContain(`${path}:4: `);
    } finally {
      process.stderr.write = original;
    }
  });

  it("a config with an unknown key exits 2 naming the key", async () => {
    const path = join(temp, "bad.json");
    writeFileSync(path, JSON.stringify({ tlb: { l1d: { entries: 64, ways: 4, size: 3 } } }));
    const result = spawnSync(process.execPath, [
      new URL("../../bin/memvirt.js", import.meta.url).pathname,
      "run",
      "--config",
      path,
      "--workload",
      "sequential",
    ]);
    expect(result.status).toBe(2);
    expect(result.stderr.toString()).toContain('"tlb.l1d.size"');
  });

  it("runs each synthetic workload, and the same seed gives identical statistics", async () => {
    for (const workload of ["sequential", "strided", "uniform", "zipf", "pointer-chase"]) {
      const args = [
        "run",
        "--workload",
        workload,
        "--records",
        "20000",
        "--footprint",
        "8M",
        "--seed",
        "7",
        "--json",
      ];
      const first = await run(args);
      const second = await run(args);
      expect(first.code).toBe(0);
      expect(JSON.parse(first.output)).toEqual(JSON.parse(second.output));
      expect(JSON.parse(first.output).accesses).toBe(20000);
    }
  });

  it("the installed bin prints the table for people", () => {
    const output = execFileSync(process.execPath, [
      new URL("../../bin/memvirt.js", import.meta.url).pathname,
      "run",
      "--trace",
      fixture("ls.din"),
    ]).toString();
    expect(output).toMatch(/TLB l1d\s+47,\d{3} hits/);
  });
});
