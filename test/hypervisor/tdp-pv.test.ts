import fc from "fast-check";
import { describe, expect, it } from "vitest";
import { type Mode, type ResolvedConfig, resolveConfig } from "../../src/config/config.js";
import type { PageSize } from "../../src/core/types.js";
import type { ParavirtualPaging } from "../../src/hypervisor/pv.js";
import type { TdpMmu } from "../../src/hypervisor/tdp.js";
import { Simulation } from "../../src/runner/simulation.js";

const READ = 0;
const WRITE = 1;
const RW = { writable: true, user: true, executable: false };

function simulation(mode: Mode, change: (config: ResolvedConfig) => void = () => {}): Simulation {
  const config = resolveConfig({ mode, guest: { memory: "4G" }, host: { memory: "16G" } });
  change(config);
  return new Simulation(config);
}

function touch(sim: Simulation, la: bigint, kind = READ): void {
  const view = sim.recordView();
  view.setBigUint64(0, la, true);
  view.setUint8(8, kind);
  view.setUint16(10, 0, true);
  sim.replayBuffer(1);
}

describe("TDP MMU (EPT and NPT, docs/kvm.md §TDP faults)", () => {
  for (const mode of ["ept", "npt"] as const) {
    it(`${mode}: a first touch is a guest #PF (no exit), then the guest kernel's table writes and the data access each take a ${mode === "ept" ? "EPT violation" : "#NPF"} that the TDP MMU fixes`, () => {
      const sim = simulation(mode);
      sim.start();
      const exitsAfterBoot = sim.technique?.exits() ?? {};
      touch(sim, 0x1000_0000n);
      const tdp = sim.technique as TdpMmu;
      expect(sim.os.stats.minorFaults).toBe(1);
      expect(sim.stats().accesses).toBe(1);
      const reason = mode === "ept" ? "eptViolation" : "npf";
      expect((tdp.exits()[reason] ?? 0) - (exitsAfterBoot[reason] ?? 0)).toBeGreaterThanOrEqual(2);
      expect(tdp.counters.pf_fixed).toBe(tdp.counters.pf_taken);
      // The page resolves to the VM's backing of the guest frame.
      const pa = sim.machine.translate(0, 0x1000_0000n, READ).pa;
      expect(tdp.vm.ownsHostAddress(pa)).toBe(true);
    });
  }

  it("with 2M host backing the TDP MMU maps 2M leaves (kvm_mmu_hugepage_adjust), with 4K backing 4K leaves", () => {
    for (const [backing, key] of [
      ["2M", "pages_2m"],
      ["4K", "pages_4k"],
    ] as const) {
      const sim = simulation("ept", (c) => {
        c.host.pageSize = backing;
      });
      sim.start();
      touch(sim, 0x1000_0000n);
      const tdp = sim.technique as TdpMmu;
      expect(tdp.counters[key]).toBeGreaterThan(0);
      expect(tdp.counters[backing === "2M" ? "pages_4k" : "pages_2m"]).toBe(0);
    }
  });

  it("dirty logging by write protection maps 4K, write-faults once per page (fast page fault) and harvests the pages", () => {
    const sim = simulation("ept", (c) => {
      c.host.pageSize = "2M";
      c.hypervisor.dirtyLog = "wp";
    });
    sim.start();
    const tdp = sim.technique as TdpMmu;
    touch(sim, 0x1000_0000n, WRITE);
    expect(tdp.counters.pages_2m).toBe(0);
    tdp.harvestDirty();
    touch(sim, 0x1000_0000n, WRITE);
    // The data page and, with EPT A/D on, the guest page-table pages whose A/D bits the walk sets
    // (guest paging-structure accesses count as writes) each take one fast write fault.
    expect(tdp.counters.pf_fast).toBeGreaterThanOrEqual(1);
    const dirty = tdp.harvestDirty();
    const page = sim.os.lookup(sim.processes[0], 0x1000_0000n);
    expect(dirty).toContain((page?.entry ?? 0n) & 0x000f_ffff_ffff_f000n);
    expect(tdp.counters.remote_tlb_flush).toBe(2);
  });

  it("dirty logging by the EPT dirty flag harvests written pages and clears D", () => {
    const sim = simulation("ept", (c) => {
      c.hypervisor.dirtyLog = "dbit";
    });
    sim.start();
    const tdp = sim.technique as TdpMmu;
    touch(sim, 0x1000_0000n, WRITE);
    const first = tdp.harvestDirty();
    expect(first.length).toBeGreaterThan(0);
    touch(sim, 0x1000_0000n, READ);
    // A read dirties no data page (only guest page-table pages, whose A/D updates count as writes).
    const page = (sim.os.lookup(sim.processes[0], 0x1000_0000n)?.entry ?? 0n) & 0x000f_ffff_ffff_f000n;
    expect(first).toContain(page);
    expect(tdp.harvestDirty()).not.toContain(page);
  });

  it("dirty-log harvests run on the simulated clock: one per dirtyLogIntervalCycles, from budget exits", () => {
    const sim = simulation("ept", (c) => {
      c.hypervisor.dirtyLog = "dbit";
      c.hypervisor.dirtyLogIntervalCycles = 1_000_000;
    });
    sim.start();
    for (let i = 0n; i < 200n; i++) touch(sim, 0x1000_0000n + i * 0x1000n, WRITE);
    const tdp = sim.technique as TdpMmu;
    // One harvest per multiple of the interval the clock crossed (a record that crosses two counts once).
    const periods = Math.floor(sim.stats().cycles / 1_000_000);
    expect(periods).toBeGreaterThan(0);
    expect(tdp.counters.dirty_log_harvests).toBeGreaterThanOrEqual(periods - 1);
    expect(tdp.counters.dirty_log_harvests).toBeLessThanOrEqual(periods);
  });

  it("a guest entry pointing outside every memslot is MMIO: the access is emulated, never mapped", () => {
    const sim = simulation("ept");
    const process = sim.os.createProcess();
    sim.os.switchTo(0, process);
    sim.os.mapRange(process, 0x1000_0000n, 0x1000n, "4K", RW);
    const leaf = sim.os.lookup(process, 0x1000_0000n);
    expect(leaf).toBeDefined();
    if (!leaf) return;
    sim.os.cpu.writeEntry(leaf.address, 0x40_0000_0000n | 7n, 1);
    sim.machine.invlpg(0, 0x1000_0000n);
    touch(sim, 0x1000_0000n);
    const tdp = sim.technique as TdpMmu;
    expect(tdp.counters.pf_mmio).toBe(1);
    expect(sim.stats().accesses).toBe(1);
  });

  it("without VPIDs every exit flushes the guest's TLB: the same workload misses more", () => {
    const run = (vpid: boolean) => {
      const sim = simulation("ept", (c) => {
        c.hypervisor.vpid = vpid;
      });
      sim.start();
      for (let i = 0n; i < 64n; i++) touch(sim, 0x1000_0000n + i * 0x1000n);
      for (let i = 0n; i < 64n; i++) touch(sim, 0x1000_0000n + i * 0x1000n);
      return sim.stats().tlb.l1d.misses;
    };
    expect(run(false)).toBeGreaterThan(run(true));
  });
});

describe("paravirtual direct paging", () => {
  it("every guest page-table update is a validated hypercall and a VM exit; the hardware walks machine frames", () => {
    const sim = simulation("pv");
    sim.start();
    touch(sim, 0x1000_0000n);
    const pv = sim.technique as ParavirtualPaging;
    expect(pv.counters.mmu_update).toBeGreaterThan(0);
    expect(pv.exits().hypercall).toBe(pv.counters.hypercalls);
    // Xen bounces the guest #PF: an exit, then the guest handles it.
    expect(pv.counters.bounced_page_faults).toBe(1);
    // One dimension only: a walk reads 4 host entries.
    expect(sim.machine.nestedStats().nestedRefs).toBe(0);
    expect(pv.vm.ownsHostAddress(sim.machine.translate(0, 0x1000_0000n, READ).pa)).toBe(true);
  });

  it("a hypercall mapping a frame the VM does not own is rejected", () => {
    const sim = simulation("pv");
    const process = sim.os.createProcess();
    sim.os.switchTo(0, process);
    sim.os.mapRange(process, 0x1000_0000n, 0x1000n, "4K", RW);
    const leaf = sim.os.lookup(process, 0x1000_0000n);
    if (!leaf) throw new Error("no leaf");
    sim.os.cpu.writeEntry(leaf.address, 0x40_0000_0000n | 7n, 1);
    const pv = sim.technique as ParavirtualPaging;
    expect(pv.counters.rejected_updates).toBe(1);
    // The entry was not written: it still maps the old frame.
    expect(sim.os.cpu.readEntry(leaf.address)).toBe(leaf.entry);
  });

  it("a 2M guest page needs 2M machine backing (config check)", () => {
    expect(() => resolveConfig({ mode: "pv", guest: { pageSize: "2M" }, host: { pageSize: "4K" } })).toThrow(
      /guest.pageSize/,
    );
  });
});

describe("isolation: no vCPU reaches a host frame that does not back its VM", () => {
  for (const mode of ["ept", "npt", "pv"] as const) {
    it(`${mode}: random guest page tables (including entries pointing anywhere) never translate outside the VM (property)`, () => {
      fc.assert(
        fc.property(
          fc.constantFrom<PageSize>("4K", "2M"),
          fc.array(
            fc.record({
              page: fc.nat(31),
              kind: fc.constantFrom(READ, WRITE),
              corrupt: fc.option(fc.bigInt({ min: 0n, max: (1n << 46n) - 1n }), { nil: undefined }),
            }),
            { minLength: 5, maxLength: 40 },
          ),
          (pageSize, steps) => {
            const sim = simulation(mode, (c) => {
              c.guest.pageSize = mode === "pv" ? "4K" : pageSize;
            });
            sim.start();
            const vm = sim.technique?.vm;
            if (!vm) throw new Error("no VM");
            const process = sim.processes[0];
            for (const step of steps) {
              const la = 0x4000_0000n + BigInt(step.page) * 0x1000n;
              touch(sim, la, step.kind);
              if (step.corrupt !== undefined) {
                const leaf = sim.os.lookup(process, la);
                if (leaf) {
                  sim.os.cpu.writeEntry(leaf.address, (step.corrupt & ~0xfffn) | 7n, leaf.level);
                  sim.machine.invlpg(0, la);
                }
              }
              const result = sim.machine.translate(0, la, step.kind);
              if (result.fault === 0) expect(vm.ownsHostAddress(result.pa)).toBe(true);
            }
          },
        ),
        { numRuns: 25, seed: 4242 },
      );
    });
  }
});
