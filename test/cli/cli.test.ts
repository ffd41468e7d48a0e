import { execFileSync, spawn, spawnSync } from "node:child_process";
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

  it("compare refuses a multi-VM workload with exit code 2 and says where it runs", async () => {
    const stderr: string[] = [];
    const original = process.stderr.write.bind(process.stderr);
    process.stderr.write = ((text: string) => stderr.push(text)) as typeof process.stderr.write;
    try {
      const { code } = await run(["compare", "--workload", "identical-vms"]);
      expect(code).toBe(2);
      expect(stderr.join("")).toMatch(/--workload identical-vms: .*memvirt run --workload identical-vms/);
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

  it("when stdout's reader has gone, the bin ends with the run's exit code and prints nothing", async () => {
    const child = spawn(process.execPath, [
      new URL("../../bin/memvirt.js", import.meta.url).pathname,
      "run",
      "--trace",
      fixture("ls-head.lk"),
      "--json",
    ]);
    // Closed before the child writes: its report meets EPIPE.
    child.stdout.destroy();
    let stderr = "";
    child.stderr.on("data", (chunk) => {
      stderr += chunk;
    });
    const code = await new Promise((resolve) => child.on("close", resolve));
    expect(code).toBe(0);
    expect(stderr).toBe("");
  });
});

describe("memvirt run under virtualization, and memvirt compare", () => {
  it("mode ept reports walks and walkRefs as totals, their split by dimension, exits by reason and every cache", async () => {
    const path = join(temp, "ept.json");
    writeFileSync(
      path,
      JSON.stringify({ mode: "ept", host: { levels: 4, pageSize: "2M" }, nestedTlb: null }),
    );
    const { code, output } = await run(["run", "--config", path, "--trace", fixture("ls.din"), "--json"]);
    expect(code).toBe(0);
    const report = JSON.parse(output);
    const v = report.virtualization;
    expect(v.technique).toBe("ept");
    expect(v.walkRefsByDimension.guest + v.walkRefsByDimension.nested).toBe(report.walkRefs);
    expect(v.exits.eptViolation).toBeGreaterThan(0);
    expect(v.nestedTlb).toEqual({ hits: 0, misses: 0 });
    expect(v.hypervisor.pages_2m).toBeGreaterThan(0);
    expect(report.accesses).toBe(47234);
  });

  it('"psc": false switches off the paging-structure caches of both dimensions', async () => {
    const path = join(temp, "nopsc.json");
    writeFileSync(path, JSON.stringify({ mode: "npt", psc: false }));
    const report = JSON.parse(
      (await run(["run", "--config", path, "--trace", fixture("ls.din"), "--json"])).output,
    );
    expect(report.psc.pde).toEqual({ hits: 0, misses: 0 });
    expect(Object.values(report.virtualization.nestedPsc)).toEqual(Array(4).fill({ hits: 0, misses: 0 }));
  });

  it("compare prints one row per technique and page-size pairing, with slowdown against native", async () => {
    const { code, output } = await run([
      "compare",
      "--workload",
      "uniform",
      "--records",
      "20000",
      "--footprint",
      "16M",
      "--modes",
      "native,pv,ept,npt",
      "--json",
    ]);
    expect(code).toBe(0);
    const result = JSON.parse(output);
    const modes = result.rows.map(
      (r: { mode: string; guestPageSize: string; hostPageSize: string }) =>
        `${r.mode} ${r.guestPageSize}/${r.hostPageSize}`,
    );
    expect(modes).toEqual([
      "native 4K/null",
      "native 2M/null",
      "pv 4K/4K",
      "pv 2M/2M",
      "ept 4K/4K",
      "ept 4K/2M",
      "ept 2M/4K",
      "ept 2M/2M",
      "npt 4K/4K",
      "npt 4K/2M",
      "npt 2M/4K",
      "npt 2M/2M",
    ]);
    const ept44 = result.rows.find(
      (r: { mode: string; guestPageSize: string; hostPageSize: string }) =>
        r.mode === "ept" && r.hostPageSize === "4K" && r.guestPageSize === "4K",
    );
    expect(ept44.slowdown).toBeGreaterThan(1);
    expect(ept44.nestedRefs).toBeGreaterThan(0);
  });
});
