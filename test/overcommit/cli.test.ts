// memvirt run with the overcommit section and the multi-VM workloads: the JSON keys, the timeline CSV
// and the errors (docs/overcommit.md).
import { readFileSync } from "node:fs";
import { join } from "node:path";
import { describe, expect, it } from "vitest";
import { runMemvirt as run, scratch } from "../cli/in-process.js";

const { dir: temp, config } = scratch("memvirt-oc-");

describe("memvirt run --workload identical-vms|cloud-mix|memory-hog", () => {
  it("identical-vms reports memory, ksm, balloon, zswap, swap, controller and the exits and invalidations per mechanism", async () => {
    const path = config("ok.json", {
      mode: "ept",
      host: { memory: "64M" },
      overcommit: { controller: false },
    });
    const { code, output } = await run([
      "run",
      "--config",
      path,
      "--workload",
      "identical-vms",
      "--vms",
      "2",
      "--pages-per-vm",
      "400",
      "--seconds",
      "1",
      "--json",
    ]);
    expect(code).toBe(0);
    const report = JSON.parse(output);
    for (const key of [
      "memory",
      "ksm",
      "balloon",
      "zswap",
      "swap",
      "exitsByMechanism",
      "invalidationsByMechanism",
    ])
      expect(report).toHaveProperty(key);
    expect(report.memory.hostTotalPages).toBe(16384);
    expect(report.memory.saved.ksm).toBe(200);
    expect(report.ksm.pages_sharing).toBe(200);
    expect(report.invalidationsByMechanism.ksm).toBeGreaterThan(0);
    expect(report.balloon.statsTags).toHaveLength(10);
  });

  it("--timeline writes the memory time series as CSV, one row per interval", async () => {
    const path = config("tl.json", {
      mode: "ept",
      host: { memory: "24M" },
      overcommit: { timelineIntervalMs: 50 },
    });
    const csv = join(temp, "timeline.csv");
    const { code } = await run([
      "run",
      "--config",
      path,
      "--workload",
      "memory-hog",
      "--pages-per-vm",
      "1024",
      "--records",
      "40000",
      "--seconds",
      "2",
      "--timeline",
      csv,
    ]);
    expect(code).toBe(0);
    const lines = readFileSync(csv, "utf8").trim().split("\n");
    expect(lines[0].split(",")).toContain("host_free_pages");
    expect(lines[0].split(",")).toContain("controller_state");
    // One sample per 50 ms interval boundary up to 2 s (each taken at the first host stop after it),
    // and one at the end.
    const seconds = lines.slice(1).map((line) => Number(line.split(",")[0]));
    expect(seconds.length).toBe(42);
    for (let k = 1; k <= 40; k++) {
      expect(seconds[k]).toBeGreaterThanOrEqual(k * 0.05 - 1e-9);
      expect(seconds[k]).toBeLessThan(k * 0.05 + 0.02);
    }
  });

  it('with host.pageSize "2M" the JSON reports the large pages, the splits and controller.largePagesBroken', async () => {
    const path = config("large.json", {
      mode: "ept",
      host: { memory: "24M", pageSize: "2M" },
      overcommit: { controller: { intervalMs: 10 } },
    });
    const { code, output } = await run([
      "run",
      "--config",
      path,
      "--workload",
      "memory-hog",
      "--pages-per-vm",
      "1024",
      "--records",
      "20000",
      "--seconds",
      "0.5",
      "--check-invariants",
      "--json",
    ]);
    expect(code).toBe(0);
    const report = JSON.parse(output);
    expect(report.controller).toHaveProperty("largePagesBroken");
    expect(report.controller).toHaveProperty("largePageInvalidations");
    expect(report.controller).toHaveProperty("largePageExits");
    expect(report.controller.largePagesBroken).toBeGreaterThan(0);
    expect(report.memory).toHaveProperty("largePages");
    expect(report.memory.largePagesSplit.controller).toBe(report.controller.largePagesBroken);
    expect(report.invalidationsByMechanism.split).toBeGreaterThanOrEqual(
      report.controller.largePageInvalidations,
    );
    expect(report.exitsByMechanism).toHaveProperty("split");
    expect(report.invariantChecks).toBeGreaterThan(0);
  });

  it('host.pageSize "1G" under overcommit is an error naming host.pageSize, with exit code 2', async () => {
    const path = config("gb.json", { mode: "ept", host: { pageSize: "1G" }, overcommit: {} });
    const { code, stderr } = await run(["run", "--config", path, "--workload", "identical-vms"]);
    expect(code).toBe(2);
    expect(stderr).toMatch(/host\.pageSize/);
  });

  it("a bad overcommit key is an error naming the key, with exit code 2", async () => {
    const path = config("bad.json", { mode: "ept", overcommit: { ksm: { pagesToScan: 0 } } });
    const { code, stderr } = await run(["run", "--config", path, "--workload", "identical-vms"]);
    expect(code).toBe(2);
    expect(stderr).toMatch(/overcommit\.ksm\.pagesToScan/);
  });

  it("admission control refuses VMs beyond the overcommit ratio, naming the key", async () => {
    const path = config("admit.json", {
      mode: "ept",
      host: { memory: "16M" },
      overcommit: { admissionRatio: 1.5 },
    });
    const { code, stderr } = await run([
      "run",
      "--config",
      path,
      "--workload",
      "identical-vms",
      "--pages-per-vm",
      "4096",
    ]);
    expect(code).toBe(2);
    expect(stderr).toMatch(/overcommit\.admissionRatio/);
  });

  it("when the host runs out of memory with nothing to reclaim, the run stops with exit code 2 and the statistics so far", async () => {
    const path = config("oom.json", {
      mode: "ept",
      host: { memory: "16M" },
      overcommit: {
        admissionRatio: 0,
        controller: false,
        zswap: false,
        swap: false,
        balloon: false,
        ksm: false,
      },
    });
    const { code, output, stderr } = await run([
      "run",
      "--config",
      path,
      "--workload",
      "memory-hog",
      "--pages-per-vm",
      "2048",
      "--json",
    ]);
    expect(code).toBe(2);
    expect(stderr).toMatch(/host memory exhausted/);
    const report = JSON.parse(output);
    expect(report.error).toMatch(/host memory exhausted/);
    expect(report.accesses).toBeGreaterThan(0);
  });

  it("multi-VM workloads need ept or npt: a config asking for another mode is refused naming the key", async () => {
    const path = config("native.json", { mode: "native" });
    const { code, stderr } = await run(["run", "--config", path, "--workload", "identical-vms"]);
    expect(code).toBe(2);
    expect(stderr).toMatch(/"mode"/);
  });

  it("without a config file, a multi-VM workload runs under EPT", async () => {
    const { code, output } = await run(["run", "--workload", "identical-vms", "--records", "2000", "--json"]);
    expect(code).toBe(0);
    expect(JSON.parse(output).mode).toBe("ept");
  });
});

describe("memvirt compare --seed-table", () => {
  it("measures one row each for EPT/NPT, ballooning, KSM, huge pages, the IOMMU, compression and swap", async () => {
    const { code, output } = await run(["compare", "--seed-table", "--json"]);
    expect(code).toBe(0);
    const table = JSON.parse(output);
    expect(table.rows.map((r: { technique: string }) => r.technique)).toEqual([
      "EPT/NPT",
      "ballooning",
      "KSM",
      "huge pages",
      "IOMMU",
      "compression",
      "swap",
    ]);
    const row = (name: string) => table.rows.find((r: { technique: string }) => r.technique === name);
    expect(row("EPT/NPT").slowdown).toBeGreaterThan(1);
    expect(row("KSM").pagesSaved).toBe(3072);
    expect(row("ballooning").pagesSaved).toBeGreaterThan(0);
    expect(row("ballooning").exitsPerMillionAccesses).toBeGreaterThan(0);
    // Strict dma_map/dma_unmap costs cycles per request where no IOMMU costs none, and its tables take
    // host frames.
    expect(row("IOMMU").baselineCyclesPerAccess).toBe(0);
    expect(row("IOMMU").cyclesPerAccess).toBeGreaterThan(0);
    expect(row("IOMMU").slowdown).toBeNull();
    expect(row("IOMMU").pagesSaved).toBeLessThan(0);
    expect(table.absent).toEqual({});
  });
});

describe("determinism and the invariant flag", () => {
  it("the same config and seed give the same JSON; --check-invariants runs the checker", async () => {
    const path = config("det.json", { mode: "ept", host: { memory: "24M" } });
    const args = [
      "run",
      "--config",
      path,
      "--workload",
      "cloud-mix",
      "--pages-per-vm",
      "512",
      "--records",
      "30000",
      "--seconds",
      "1",
      "--json",
    ];
    const first = await run(args);
    const second = await run(args);
    expect(first.code).toBe(0);
    expect(second.output).toBe(first.output);
    const checked = JSON.parse((await run([...args, "--check-invariants"])).output);
    expect(checked.invariantChecks).toBeGreaterThan(0);
    expect(JSON.parse(first.output).invariantChecks).toBe(0);
  });
});
