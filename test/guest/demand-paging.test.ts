// The guest kernel's anonymous demand faults run in the core (assembly/demand.ts) where nothing but the
// kernel's own handler would see them: bare metal. The kernel's handler in src/guest/os.ts stays the
// reference: every run must leave the same statistics, page tables, frames and exits either way.
import { describe, expect, it } from "vitest";
import { type Json, resolveConfig } from "../../src/config/config.js";
import { Simulation } from "../../src/runner/simulation.js";
import { type HostWorkloadSpec, runWorkload } from "../../src/workload/run.js";

const build = process.env.MEMVIRT_BUILD === "debug" ? "debug" : "release";

/** Everything a run leaves that a demand fault touches. */
function outcome(sim: Simulation) {
  return {
    stats: sim.machine.stats(),
    guest: sim.os.stats,
    exits: sim.exits,
    allocated: sim.os.frames.allocated,
    processes: sim.os.processes.map((p) => ({
      root: p.root,
      frames: [...p.frames].sort(([a], [b]) => (a < b ? -1 : 1)),
      tables: [...p.tables].sort(([a], [b]) => (a < b ? -1 : 1)),
    })),
  };
}

/** The run with the core's demand paging on and off, and how often the host's loop entered the core. */
function both(config: Json, spec: HostWorkloadSpec) {
  return [true, false].map((inCoreDemandPaging) => {
    const sim = new Simulation(resolveConfig(config), { build, inCoreDemandPaging });
    let calls = 0;
    const replay = sim.machine.replay.bind(sim.machine);
    sim.machine.replay = (start: number, end: number) => {
      calls++;
      return replay(start, end);
    };
    if (!spec.name.includes("churn") && spec.name !== "threads-shootdown") sim.start();
    runWorkload(sim, spec);
    return { result: outcome(sim), calls };
  });
}

const CASES: [string, Json, HostWorkloadSpec][] = [
  [
    "uniform, 4K pages",
    { mode: "native" },
    { name: "uniform", records: 60_000, footprint: 64 << 20, seed: 3 },
  ],
  [
    "zipf, 2M pages, random frames",
    { mode: "native", guest: { pageSize: "2M", frames: "random" } },
    { name: "zipf", records: 60_000, footprint: 512 << 20, seed: 4 },
  ],
  [
    "pointer-chase, 5-level paging",
    { mode: "native", guest: { levels: 5 } },
    { name: "pointer-chase", records: 40_000, footprint: 32 << 20, seed: 5 },
  ],
  [
    "pt-churn (munmap, mprotect, fork, exec, exit)",
    { mode: "native" },
    { name: "pt-churn", records: 40_000, footprint: 8 << 20, seed: 6 },
  ],
  ["mmap-churn", { mode: "native" }, { name: "mmap-churn", records: 40_000, footprint: 8 << 20, seed: 7 }],
  [
    "threads-shootdown on 4 CPUs",
    { mode: "native", cpus: 4 },
    { name: "threads-shootdown", records: 40_000, footprint: 8 << 20, seed: 8 },
  ],
];

describe("anonymous demand faults handled in the core", () => {
  for (const [name, config, spec] of CASES) {
    it(`leave the statistics, tables, frames and exits the kernel's own handler leaves: ${name}`, () => {
      const [core, host] = both(config, spec);
      expect(core.result).toEqual(host.result);
      expect(core.result.guest.minorFaults).toBeGreaterThan(0);
    });
  }

  it("take the host's loop out of the fault path: far fewer calls into the core than demand faults", () => {
    const [core, host] = both(
      { mode: "native" },
      { name: "uniform", records: 60_000, footprint: 64 << 20, seed: 3 },
    );
    const faults = core.result.guest.minorFaults;
    expect(host.calls).toBeGreaterThan(faults);
    expect(core.calls).toBeLessThan(faults / 100);
  });

  it("leave a fault the kernel answers with SIGSEGV (a write to a read-only VMA) to the kernel", () => {
    for (const inCoreDemandPaging of [true, false]) {
      const sim = new Simulation(resolveConfig({ mode: "native" }), { build, inCoreDemandPaging });
      const process = sim.os.createProcess();
      sim.os.addVma(
        process,
        0x40_0000n,
        0x50_0000n,
        { writable: false, user: true, executable: false },
        "4K",
      );
      sim.os.switchTo(0, process);
      const view = sim.recordView();
      for (const [i, kind] of [1, 0, 1].entries()) {
        view.setBigUint64(i * 16, 0x40_0000n + BigInt(i) * 0x1000n, true);
        view.setUint8(i * 16 + 8, kind);
        view.setUint8(i * 16 + 9, 8);
        view.setUint16(i * 16 + 10, 0, true);
      }
      sim.replay(3);
      expect(sim.os.stats.segvs).toBe(2);
      expect(sim.os.stats.minorFaults).toBe(1);
      expect(sim.exits.pageFaultsByBit.W).toBe(2);
    }
  });

  it("stay off under a hypervisor: shadow and EPT guests' #PFs all reach the host", () => {
    for (const mode of ["shadow", "ept"] as const) {
      const [core, host] = both({ mode }, { name: "uniform", records: 20_000, footprint: 16 << 20, seed: 9 });
      expect(core.calls).toBe(host.calls);
      expect(core.result).toEqual(host.result);
    }
  });
});
