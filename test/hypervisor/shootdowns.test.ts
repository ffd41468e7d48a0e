// What page-table churn costs each technique: the IPIs of a shootdown under EPT/NPT and shadow paging
// (hypervisor.ipi), the shadow MMU's trapped flushes, Xen-PV's batched updates, pins and flush
// hypercalls, and nothing but the guest's own work under EPT.
import { describe, expect, it } from "vitest";
import type { Mode } from "../../src/config/config.js";
import type { Process } from "../../src/guest/os.js";
import { MULTICALL_BATCH, type ParavirtualPaging } from "../../src/hypervisor/pv.js";
import type { ShadowMmu } from "../../src/hypervisor/shadow.js";
import type { IpiDelivery } from "../../src/hypervisor/technique.js";
import type { Simulation } from "../../src/runner/simulation.js";
import { PAGE, PF, READ, RO, RW, running, simulation, touch, WRITE } from "../guest/simulate.js";

function exits(sim: Simulation): Record<string, number> {
  return sim.technique?.exits() ?? {};
}

function delta(after: Record<string, number>, before: Record<string, number>): Record<string, number> {
  const out: Record<string, number> = {};
  for (const [key, n] of Object.entries(after))
    if (n !== (before[key] ?? 0)) out[key] = n - (before[key] ?? 0);
  return out;
}

/** A 2-vCPU guest whose process runs on both, with one page touched by vCPU 1; munmap it from vCPU 0. */
function shootdown(mode: Mode, ipi: IpiDelivery = "exit") {
  const sim = simulation(mode, (c) => {
    c.machine.cpus = 2;
    c.hypervisor.ipi = ipi;
  });
  running(sim, [0, 1]);
  const at = sim.os.mmap(0, 2n * PAGE, RW);
  touch(sim, at, WRITE, 0);
  touch(sim, at + PAGE, WRITE, 0);
  touch(sim, at, WRITE, 1);
  const before = exits(sim);
  sim.os.munmap(0, at, PAGE);
  return { sim, at, exits: delta(exits(sim), before) };
}

describe("shootdowns under EPT and NPT: the IPI is the cost (hypervisor.ipi)", () => {
  for (const mode of ["ept", "npt"] as const) {
    it(`${mode}, "exit": the ICR write exits (WRMSR) and the running target is kicked out (external interrupt)`, () => {
      const { sim, at, exits } = shootdown(mode);
      expect(exits).toEqual({ msrWrite: 1, externalInterrupt: 1 });
      expect(sim.technique?.shootdownStats?.()).toEqual({ ipis: 1, exits: 2, postedInterrupts: 0 });
      expect(sim.machine.translate(1, at, READ).fault).toBe(PF);
    });
  }

  it('"posted": only the ICR write exits; the target takes a posted interrupt', () => {
    const { sim, at, exits } = shootdown("ept", "posted");
    expect(exits).toEqual({ msrWrite: 1 });
    expect(sim.technique?.shootdownStats?.()).toEqual({ ipis: 1, exits: 1, postedInterrupts: 1 });
    expect(sim.machine.translate(1, at, READ).fault).toBe(PF);
  });

  it('"ipiv": IPI virtualization delivers it with no exit on either side', () => {
    const { sim, at, exits } = shootdown("ept", "ipiv");
    expect(exits).toEqual({});
    expect(sim.machine.translate(1, at, READ).fault).toBe(PF);
  });

  for (const mode of ["ept", "npt"] as const)
    it(`${mode}: once guest memory is backed, mmap, munmap, mprotect, madvise, fork, exec and exit take no VM exit at all`, () => {
      const sim = simulation(mode);
      const idle = running(sim, [0]);
      const cycle = () => {
        const process = sim.os.createProcess();
        sim.os.switchTo(0, process);
        const at = sim.os.mmap(0, 16n * PAGE, RW);
        for (let i = 0n; i < 16n; i++) touch(sim, at + i * PAGE, WRITE);
        sim.os.mprotect(0, at, 4n * PAGE, { ...RW, writable: false });
        sim.os.madviseDontNeed(0, at + 4n * PAGE, 4n * PAGE);
        const child = sim.os.fork(0);
        sim.os.switchTo(0, child);
        touch(sim, at + 8n * PAGE, WRITE);
        sim.os.exit(0, process);
        sim.os.munmap(0, at, 16n * PAGE);
        sim.os.exec(0, [{ start: 0x40_0000n, length: 4n * PAGE, protection: RW }]);
        touch(sim, 0x40_0000n, WRITE);
        sim.os.exit(0, idle);
      };
      cycle();
      const before = exits(sim);
      cycle();
      expect(delta(exits(sim), before)).toEqual({});
      expect(sim.os.stats.syscalls).toMatchObject({ fork: 2, exec: 2, exit: 4, munmap: 2 });
    });
});

describe("shootdowns and churn under shadow paging", () => {
  it("the target vCPU's INVLPG traps too and resyncs the shadow; its exits count with the IPI's", () => {
    const { sim, at, exits } = shootdown("shadow");
    expect(exits.msrWrite).toBe(1);
    expect(exits.externalInterrupt).toBe(1);
    expect(exits.invlpg).toBe(2);
    const paid = sim.technique?.shootdownStats?.() ?? {};
    expect(paid.exits).toBe(3);
    expect(paid.ipis).toBe(1);
    expect(sim.machine.translate(1, at, READ).fault).toBe(PF);
    expect(sim.machine.translate(1, at + PAGE, READ).fault).toBe(0);
  });

  it("a data store emulated on a freed upper-level table counts as write flooding: the third zaps its shadow page", () => {
    const sim = simulation("shadow");
    running(sim, [0]);
    const shadow = sim.technique as ShadowMmu;
    const near = 0x1000_0000n;
    sim.os.mmap(0, 16n * PAGE, RW, { address: near });
    touch(sim, near, WRITE);
    // A mapping in a PML4 slot of its own: munmap frees its page table, directory and PDPT, the PDPT
    // last, so the next frame the guest allocates is the PDPT's, still shadowed and write-tracked.
    const at = sim.os.mmap(0, PAGE, RW);
    touch(sim, at, WRITE);
    sim.os.munmap(0, at, PAGE);
    expect(sim.os.stats.tablesFreed).toBe(3);
    touch(sim, near + PAGE, WRITE);
    const emulated = shadow.counters.pf_emulate;
    const flooded = shadow.counters.mmu_flooded;
    for (let i = 0n; i < 10n; i++) touch(sim, near + PAGE + i * 8n, WRITE);
    expect(shadow.counters.mmu_flooded).toBe(flooded + 1);
    expect(shadow.counters.pf_emulate - emulated).toBeLessThanOrEqual(3);
  });
});

describe("page-table churn under Xen-style paravirtual paging", () => {
  it("a shootdown is one TLB_FLUSH_MULTI or INVLPG_MULTI hypercall: the guest sends no IPI", () => {
    const { sim, at, exits } = shootdown("pv");
    const pv = sim.technique as ParavirtualPaging;
    expect(exits.msrWrite).toBeUndefined();
    expect(pv.counters.tlb_flush_multi).toBe(1);
    expect(pv.shootdownStats()).toEqual({ ipis: 1, exits: 1 });
    expect(sim.machine.translate(1, at, READ).fault).toBe(PF);
  });

  it("in lazy MMU mode updates go 32 to a multicall: fork's copy is a handful of hypercalls, not one per entry", () => {
    const sim = simulation("pv");
    running(sim, [0]);
    const pv = sim.technique as ParavirtualPaging;
    const at = sim.os.mmap(0, 100n * PAGE, RW);
    for (let i = 0n; i < 100n; i++) touch(sim, at + i * PAGE, WRITE);
    const before = { ...pv.counters };
    sim.os.fork(0);
    const updates = pv.counters.update_requests - before.update_requests;
    // Each of the 100 pages: the parent's entry made read-only, the child's written; plus 3 links.
    expect(updates).toBe(203);
    expect(pv.counters.mmu_update - before.mmu_update).toBe(0);
    // The child's root is pinned first (one multicall); in lazy mode the 204 updates and the 3 new
    // tables' pins share buffers of 32; then the parent's flush reloads CR3 (one mmuext_op).
    expect(pv.counters.multicall - before.multicall).toBe(1 + Math.ceil((updates + 3) / MULTICALL_BATCH));
    expect(pv.counters.mmuext_op - before.mmuext_op).toBe(1);
  });

  it("outside lazy mode every update to a pinned table is a hypercall of its own, and a new table is pinned first", () => {
    const sim = simulation("pv");
    running(sim, [0]);
    const pv = sim.technique as ParavirtualPaging;
    sim.os.mmap(0, PAGE, RW, { address: 0x1000_0000n });
    const before = { ...pv.counters };
    touch(sim, 0x1000_0000n, WRITE);
    // A demand fault under an empty root: three tables linked (each pinned, then the update), one leaf.
    expect(pv.counters.mmu_update - before.mmu_update).toBe(4);
    expect(pv.counters.pinned_tables - before.pinned_tables).toBe(3);
    expect(pv.counters.mmuext_op - before.mmuext_op).toBe(3);
  });

  it("exit unpins the address space first, so tearing it down is plain stores, no mmu_update", () => {
    const sim = simulation("pv");
    const idle = running(sim, [0]);
    const process = sim.os.createProcess();
    sim.os.switchTo(0, process);
    const at = sim.os.mmap(0, 40n * PAGE, RW);
    for (let i = 0n; i < 40n; i++) touch(sim, at + i * PAGE, WRITE);
    const pv = sim.technique as ParavirtualPaging;
    const before = { ...pv.counters };
    sim.os.exit(0, idle);
    expect(pv.counters.update_requests - before.update_requests).toBe(0);
    // 40 leaves and 3 links (the root's entry among them).
    expect(pv.counters.direct_writes - before.direct_writes).toBe(40 + 3);
    expect(pv.counters.unpinned_tables - before.unpinned_tables).toBe(4);
    // The unpin walk: 4 tables and the UNPIN request in one multicall.
    expect(pv.counters.multicall - before.multicall).toBe(1);
  });
});

/** A process on 4 vCPUs, one page used by all of them and one more by vCPU 0; munmap the first from vCPU 0. */
function shootdownOn4(mode: Mode) {
  const sim = simulation(mode, (c) => {
    c.machine.cpus = 4;
  });
  running(sim, [0, 1, 2, 3]);
  const at = sim.os.mmap(0, 2n * PAGE, RW);
  touch(sim, at, WRITE, 0);
  touch(sim, at + PAGE, WRITE, 0);
  for (const cpu of [1, 2, 3]) touch(sim, at, READ, cpu);
  const before = exits(sim);
  const counters = { ...(sim.technique?.stats?.() ?? {}) };
  const invlpgs = sim.os.stats.tlbFlushes.invlpg;
  sim.os.munmap(0, at, PAGE);
  return {
    sim,
    at,
    exits: delta(exits(sim), before),
    counters: delta({ ...(sim.technique?.stats?.() ?? {}) }, counters),
    guestInvlpgs: sim.os.stats.tlbFlushes.invlpg - invlpgs,
  };
}

describe("munmap on a thread sharing 4 vCPUs sends 3 IPIs and each remote vCPU flushes the page", () => {
  const cases: {
    mode: Mode;
    rule: string;
    exits: Record<string, number>;
    paid: Record<string, number> | undefined;
    guestInvlpgs: number;
  }[] = [
    {
      mode: "native",
      rule: "each target's handler runs INVLPG (4 in all), nothing traps",
      exits: {},
      paid: undefined,
      guestInvlpgs: 4,
    },
    {
      mode: "ept",
      rule: "one ICR write exits, and each of the 3 running targets is kicked out",
      exits: { msrWrite: 1, externalInterrupt: 3 },
      paid: { ipis: 3, exits: 4, postedInterrupts: 0 },
      guestInvlpgs: 4,
    },
    {
      mode: "npt",
      rule: "one ICR write exits, and each of the 3 running targets is kicked out",
      exits: { msrWrite: 1, externalInterrupt: 3 },
      paid: { ipis: 3, exits: 4, postedInterrupts: 0 },
      guestInvlpgs: 4,
    },
    {
      mode: "shadow",
      rule: "the IPI's exits, and every vCPU's INVLPG traps and resyncs its shadow entry",
      exits: { msrWrite: 1, externalInterrupt: 3, invlpg: 4 },
      paid: { ipis: 3, exits: 7, postedInterrupts: 0, remoteTlbFlushes: 1 },
      guestInvlpgs: 4,
    },
    {
      mode: "pv",
      rule: "the guest sends no IPI: one INVLPG_MULTI hypercall, and Xen flushes the 3 others",
      // The zap's update (one multicall), the local INVLPG, the INVLPG_MULTI.
      exits: { hypercall: 3 },
      paid: { ipis: 3, exits: 1 },
      guestInvlpgs: 1,
    },
  ];
  for (const c of cases)
    it(`${c.mode}: ${c.rule}`, () => {
      const { sim, at, exits, counters, guestInvlpgs } = shootdownOn4(c.mode);
      expect(sim.os.stats).toMatchObject({ shootdowns: 1, shootdownTargets: 3 });
      expect(exits).toEqual(c.exits);
      expect(sim.technique?.shootdownStats?.()).toEqual(c.paid);
      expect(guestInvlpgs).toBe(c.guestInvlpgs);
      for (const cpu of [0, 1, 2, 3])
        expect(sim.machine.translate(cpu, at, READ).fault, `vCPU ${cpu}`).toBe(PF);
      if (c.mode === "shadow") {
        // Each INVLPG resynced one SPTE; dropping it flushed every vCPU (kvm_flush_remote_tlbs).
        expect(counters).toMatchObject({ sync_spte: 4, remote_tlb_flush: 1 });
        expect(sim.machine.translate(0, at + PAGE, READ).refs).toBeGreaterThan(0);
      } else {
        // A single-page flush: vCPU 0 keeps its other page's TLB entry.
        expect(sim.machine.translate(0, at + PAGE, READ).refs).toBe(0);
      }
      if (c.mode === "pv") expect(counters).toMatchObject({ tlb_flush_multi: 1, multicall: 1, mmuext_op: 2 });
    });
});

/** One process (and an idle one to switch to) with 40 pages written on vCPU 0; what `op` costs. */
function afterTouching40(mode: Mode, op: (sim: Simulation, at: bigint, idle: Process) => void) {
  const sim = simulation(mode);
  const idle = running(sim, [0]);
  running(sim, [0]);
  const at = sim.os.mmap(0, 40n * PAGE, RW);
  for (let i = 0n; i < 40n; i++) touch(sim, at + i * PAGE, WRITE);
  const before = exits(sim);
  const counters = { ...(sim.technique?.stats?.() ?? {}) };
  op(sim, at, idle);
  return {
    exits: delta(exits(sim), before),
    counters: delta({ ...(sim.technique?.stats?.() ?? {}) }, counters),
  };
}

describe("each system call under shadow paging: unsync leaf tables, write-protected upper levels, trapped flushes", () => {
  it("madvise(DONTNEED) of 8 pages: the leaves' table is unsync, so only the 8 INVLPGs trap, each resyncing its SPTE", () => {
    const { exits, counters } = afterTouching40("shadow", (sim, at) =>
      sim.os.madviseDontNeed(0, at, 8n * PAGE),
    );
    expect(exits).toEqual({ invlpg: 8 });
    expect(counters.sync_spte).toBe(8);
  });

  it("mprotect of 8 pages read-only: 8 trapped INVLPGs narrow the 8 SPTEs", () => {
    const { exits, counters } = afterTouching40("shadow", (sim, at) => sim.os.mprotect(0, at, 8n * PAGE, RO));
    expect(exits).toEqual({ invlpg: 8 });
    expect(counters.sync_spte).toBe(8);
  });

  it("munmap of 40 pages (over the 33-page ceiling): one trapped CR3 reload, and a write-protection exit per freed upper-level table", () => {
    const { exits, counters } = afterTouching40("shadow", (sim, at) => sim.os.munmap(0, at, 40n * PAGE));
    expect(exits).toEqual({ cr3Write: 1, wpWrite: 3 });
    expect(counters.mmu_pte_write).toBe(3);
  });

  it("fork write-protects the parent's pages in its unsync leaf table without an exit; the flushing CR3 reload resyncs it", () => {
    const { exits, counters } = afterTouching40("shadow", (sim) => sim.os.fork(0));
    expect(exits).toEqual({ cr3Write: 1 });
    expect(counters.synced_pages).toBe(1);
  });

  it("exit: the switch is a trapped CR3 load (a previous root), and tearing down the 3 shadowed upper-level tables traps 3 times", () => {
    const { exits, counters } = afterTouching40("shadow", (sim, _at, idle) => sim.os.exit(0, idle));
    expect(exits).toEqual({ cr3Write: 1, wpWrite: 3 });
    expect(counters).toMatchObject({ root_hit: 1, mmu_pte_write: 3 });
  });

  it("exec: the new address space's root misses the root cache and gets a shadow page of its own", () => {
    const { exits, counters } = afterTouching40("shadow", (sim) =>
      sim.os.exec(0, [{ start: 0x40_0000n, length: 4n * PAGE, protection: RW }]),
    );
    expect(exits).toEqual({ cr3Write: 1, wpWrite: 3 });
    expect(counters).toMatchObject({ root_miss: 1, shadow_pages: 1 });
  });
});

describe("each system call under Xen-style PV: updates validated in multicalls of 32, flushes as hypercalls", () => {
  it("munmap of 40 pages: 43 updates (40 leaves, 3 unlinks) in 2 multicalls, a CR3-reload flush, an unpin per freed table", () => {
    const { exits, counters } = afterTouching40("pv", (sim, at) => sim.os.munmap(0, at, 40n * PAGE));
    expect(counters).toMatchObject({ update_requests: 43, multicall: 2, mmuext_op: 4, unpinned_tables: 3 });
    expect(counters.mmu_update).toBeUndefined();
    expect(exits).toEqual({ hypercall: 6 });
  });

  for (const [call, op] of [
    ["madvise(DONTNEED)", (sim: Simulation, at: bigint) => sim.os.madviseDontNeed(0, at, 8n * PAGE)],
    ["mprotect", (sim: Simulation, at: bigint) => sim.os.mprotect(0, at, 8n * PAGE, RO)],
  ] as const)
    it(`${call} of 8 pages: the 8 updates in one multicall, then one INVLPG hypercall per page`, () => {
      const { exits, counters } = afterTouching40("pv", op);
      expect(counters).toMatchObject({ update_requests: 8, multicall: 1, mmuext_op: 8 });
      expect(exits).toEqual({ hypercall: 9 });
    });

  it("exec pins the new address space at its first CR3 load and unpins the old one, whose teardown is plain stores", () => {
    const { counters } = afterTouching40("pv", (sim) =>
      sim.os.exec(0, [{ start: 0x40_0000n, length: 4n * PAGE, protection: RW }]),
    );
    expect(counters).toMatchObject({ pinned_tables: 1, unpinned_tables: 4, direct_writes: 43 });
    expect(counters.update_requests).toBeUndefined();
  });
});
