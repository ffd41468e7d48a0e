// The churn workloads (pt-churn, mmap-churn, threads-shootdown): seeded, the same guest behaviour under
// every technique, and what `memvirt compare` and `run` show of them.
import { describe, expect, it } from "vitest";
import { dmaOperations } from "../../src/cli/options.js";
import { type Mode, type ResolvedConfig, resolveConfig } from "../../src/config/config.js";
import { buildReport } from "../../src/report/report.js";
import { Simulation } from "../../src/runner/simulation.js";
import { DEFAULT_DMA_OPERATIONS } from "../../src/workload/catalog.js";
import { type ChurnSpec, runChurnWorkload } from "../../src/workload/churn.js";
import { runMemvirt, scratch } from "../cli/in-process.js";

function run(mode: Mode, spec: ChurnSpec, change: (config: ResolvedConfig) => void = () => {}) {
  const config = resolveConfig({ mode, guest: { memory: "4G" }, host: { memory: "16G" } });
  change(config);
  const sim = new Simulation(config);
  sim.start();
  const done = runChurnWorkload(sim, spec);
  return { sim, done, report: buildReport(sim, { kind: "workload", ...spec }) };
}

const PT_CHURN: ChurnSpec = { name: "pt-churn", records: 6000, footprint: 256 * 1024, seed: 7 };

describe("churn workloads", () => {
  it("pt-churn runs exactly its records, forking, execing and exiting short-lived programs", () => {
    const { done, report } = run("native", PT_CHURN);
    expect(done).toBe(6000);
    expect(report.accesses).toBe(6000);
    const calls = report.syscalls?.calls ?? {};
    expect(calls.fork).toBeGreaterThan(3);
    expect(calls.exec).toBe(calls.fork);
    expect(calls.exit).toBe(calls.fork);
    expect(report.syscalls?.cowCopies).toBeGreaterThan(0);
    expect(report.syscalls?.tablesFreed).toBeGreaterThan(0);
    expect(report.guestOs.segvs).toBe(0);
  });

  it("is seeded: the same spec gives the same statistics, another seed others", () => {
    const a = run("shadow", PT_CHURN).report;
    const b = run("shadow", PT_CHURN).report;
    const c = run("shadow", { ...PT_CHURN, seed: 8 }).report;
    expect(b).toEqual(a);
    expect(c.cycles).not.toBe(a.cycles);
  });

  it("the technique changes what it costs, never what the guest kernel does", () => {
    const guest = (mode: Mode) => {
      const { report } = run(mode, PT_CHURN);
      return { guestOs: report.guestOs, syscalls: report.syscalls, accesses: report.accesses };
    };
    const native = guest("native");
    for (const mode of ["pv", "shadow", "ept", "npt"] as const) expect(guest(mode), mode).toEqual(native);
  });

  it("mmap-churn makes every kind of address-space call: mmap, munmap, mprotect, madvise", () => {
    const { report } = run(
      "native",
      { name: "mmap-churn", records: 20_000, footprint: 1 << 20, seed: 1 },
      (c) => {
        c.machine.cpus = 2;
      },
    );
    const calls = report.syscalls?.calls ?? {};
    for (const name of ["mmap", "munmap", "mprotect", "madvise"])
      expect(calls[name], name).toBeGreaterThan(0);
    expect(calls.mmap).toBe(calls.munmap);
    // Two threads: every munmap of a buffer shoots down the other vCPU.
    expect(report.shootdowns?.shootdowns).toBeGreaterThanOrEqual(calls.munmap);
  });

  it("threads-shootdown on 4 vCPUs: every unmap shoots down the 3 other threads' TLBs", () => {
    const { report } = run(
      "ept",
      { name: "threads-shootdown", records: 8000, footprint: 1 << 20, seed: 1 },
      (c) => {
        c.machine.cpus = 4;
      },
    );
    const shootdowns = report.shootdowns?.shootdowns ?? 0;
    // An unmap of pages no thread touched since the last one clears nothing and flushes nothing.
    expect(shootdowns).toBeGreaterThan(0);
    expect(shootdowns).toBeLessThanOrEqual(report.syscalls?.calls.munmap ?? 0);
    expect(report.shootdowns?.targets).toBe(3 * shootdowns);
    // hypervisor.ipi "exit": one WRMSR exit per shootdown and a kick exit per target.
    expect(report.shootdowns?.technique).toEqual({
      ipis: 3 * shootdowns,
      exits: 4 * shootdowns,
      postedInterrupts: 0,
    });
  });

  it("threads-shootdown with one vCPU is refused, naming the cpus key", () => {
    expect(() =>
      run("native", { name: "threads-shootdown", records: 100, footprint: 1 << 20, seed: 1 }),
    ).toThrow(/"cpus"/);
  });
});

describe("memvirt compare and run on churn workloads", () => {
  it("compare --workload pt-churn: shadow and PV take more exits per million accesses than EPT", async () => {
    const { code, output } = await runMemvirt([
      "compare",
      "--workload",
      "pt-churn",
      "--records",
      "6000",
      "--footprint",
      "256K",
      "--modes",
      "pv,shadow,ept",
      "--json",
    ]);
    expect(code).toBe(0);
    const rows = JSON.parse(output).rows as {
      mode: string;
      guestPageSize: string;
      exitsPerMillionAccesses: number;
    }[];
    const at = (mode: string) => rows.find((r) => r.mode === mode && r.guestPageSize === "4K");
    const ept = at("ept")?.exitsPerMillionAccesses ?? Number.POSITIVE_INFINITY;
    expect(at("pv")?.exitsPerMillionAccesses).toBeGreaterThan(ept);
    expect(at("shadow")?.exitsPerMillionAccesses).toBeGreaterThan(ept);
    expect(JSON.parse(output).workload).toMatchObject({ name: "pt-churn", footprint: 256 * 1024 });
  });

  it("run --workload threads-shootdown prints the system calls and the shootdowns with what they cost", async () => {
    const { config } = scratch("memvirt-churn-");
    const file = config("smp.json", { mode: "shadow", cpus: 4 });
    const { code, output } = await runMemvirt([
      "run",
      "--config",
      file,
      "--workload",
      "threads-shootdown",
      "--records",
      "4000",
    ]);
    expect(code).toBe(0);
    expect(output).toMatch(/system calls\s+mmap \d/);
    expect(output).toMatch(/TLB shootdowns\s+\d+ to \d+ CPUs \(ipis \d+, exits \d+/);
  });

  it("a DMA workload without --records runs the documented default number of operations", () => {
    expect(dmaOperations({})).toBe(DEFAULT_DMA_OPERATIONS);
    expect(DEFAULT_DMA_OPERATIONS).toBe(100_000);
    expect(dmaOperations({ records: "300" })).toBe(300);
  });
});
