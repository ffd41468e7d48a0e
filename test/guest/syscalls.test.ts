// The guest kernel's address-space system calls and their TLB flushes, on bare metal (the techniques'
// side is test/hypervisor/shootdowns.test.ts).
import fc from "fast-check";
import { describe, expect, it } from "vitest";
import type { ResolvedConfig } from "../../src/config/config.js";
import { ADDRESS_MASK, type Process, PTE_RW } from "../../src/guest/os.js";
import type { Simulation } from "../../src/runner/simulation.js";
import { PAGE, PF, READ, RO, RW, running, simulation, touch, WRITE } from "./simulate.js";

function frameOf(sim: Simulation, process: Process, la: bigint): bigint | undefined {
  const leaf = sim.os.lookup(process, la);
  return leaf && leaf.entry & ADDRESS_MASK;
}

describe("guest kernel: munmap, madvise and mprotect", () => {
  it("munmap clears the leaves and frees every page table no VMA needs any more (free_pgtables)", () => {
    const sim = simulation();
    const process = running(sim);
    const at = sim.os.mmap(0, 4n * PAGE, RW);
    for (let i = 0n; i < 4n; i++) touch(sim, at + i * PAGE, WRITE);
    const frames = sim.os.frames.allocated["4K"];
    sim.os.munmap(0, at, 4n * PAGE);
    expect(sim.os.stats.pagesUnmapped).toBe(4);
    // Alone in its PML4 slot: its page table, directory and PDPT go, and the root's entry is cleared.
    expect(sim.os.stats.tablesFreed).toBe(3);
    expect(sim.os.frames.allocated["4K"]).toBe(frames - 4 - 3);
    expect(sim.os.cpu.readEntry(process.root + ((at >> 39n) & 0x1ffn) * 8n)).toBe(0n);
    expect(sim.machine.translate(0, at, READ).fault).toBe(PF);
    expect(process.vmas).toEqual([]);
  });

  it("munmap keeps a page table that another VMA still needs, and splits the VMA it cuts", () => {
    const sim = simulation();
    const process = running(sim);
    const at = sim.os.mmap(0, 8n * PAGE, RW);
    for (let i = 0n; i < 8n; i++) touch(sim, at + i * PAGE, WRITE);
    sim.os.munmap(0, at + 2n * PAGE, 2n * PAGE);
    expect(sim.os.stats.tablesFreed).toBe(0);
    expect(process.vmas.map((v) => [v.start - at, v.end - at])).toEqual([
      [0n, 2n * PAGE],
      [4n * PAGE, 8n * PAGE],
    ]);
    expect(sim.machine.translate(0, at + 2n * PAGE, READ).fault).toBe(PF);
    expect(sim.machine.translate(0, at + 4n * PAGE, READ).fault).toBe(0);
    touch(sim, at + 2n * PAGE);
    expect(sim.os.stats.segvs).toBe(1);
  });

  it("a flush of up to 33 pages is an INVLPG per page; of more, one CR3 reload without the no-flush bit", () => {
    const sim = simulation();
    running(sim);
    const small = sim.os.mmap(0, 33n * PAGE, RW);
    const large = sim.os.mmap(0, 34n * PAGE, RW);
    for (let i = 0n; i < 33n; i++) touch(sim, small + i * PAGE, WRITE);
    for (let i = 0n; i < 34n; i++) touch(sim, large + i * PAGE, WRITE);
    sim.os.munmap(0, small, 33n * PAGE);
    expect(sim.os.stats.tlbFlushes).toEqual({ invlpg: 33, full: 0 });
    const cr3 = sim.machine.getRegs(0).cr3;
    sim.os.munmap(0, large, 34n * PAGE);
    expect(sim.os.stats.tlbFlushes).toEqual({ invlpg: 33, full: 1 });
    expect(sim.machine.getRegs(0).cr3).toBe(cr3 & ~(1n << 63n));
    expect(sim.machine.translate(0, large + 33n * PAGE, READ).fault).toBe(PF);
  });

  it("madvise(MADV_DONTNEED) drops the pages but keeps the VMA: the next touch faults in a new page", () => {
    const sim = simulation();
    const process = running(sim);
    const at = sim.os.mmap(0, 2n * PAGE, RW);
    touch(sim, at, WRITE);
    sim.os.madviseDontNeed(0, at, 2n * PAGE);
    expect(sim.os.stats.pagesUnmapped).toBe(1);
    expect(process.vmas).toHaveLength(1);
    expect(sim.machine.translate(0, at, READ).fault).toBe(PF);
    touch(sim, at);
    expect(sim.os.stats.minorFaults).toBe(2);
    expect(sim.os.stats.segvs).toBe(0);
  });

  it("mprotect splits the VMA, narrows the mapped pages and flushes them; a write there is then a SIGSEGV", () => {
    const sim = simulation();
    const process = running(sim);
    const at = sim.os.mmap(0, 4n * PAGE, RW);
    for (let i = 0n; i < 4n; i++) touch(sim, at + i * PAGE, WRITE);
    sim.os.mprotect(0, at + PAGE, PAGE, RO);
    expect(process.vmas.map((v) => v.protection.writable)).toEqual([true, false, true]);
    expect(sim.os.stats.tlbFlushes.invlpg).toBe(1);
    expect(sim.machine.translate(0, at + PAGE, WRITE).fault).toBe(PF);
    touch(sim, at + PAGE, WRITE);
    expect(sim.os.stats.segvs).toBe(1);
    sim.os.mprotect(0, at + PAGE, PAGE, RW);
    touch(sim, at + PAGE, WRITE);
    expect(sim.os.stats.segvs).toBe(1);
  });
});

describe("guest kernel: fork with copy-on-write, exec and exit", () => {
  it("fork shares every page read-only in both address spaces and flushes the parent's TLB", () => {
    const sim = simulation();
    const parent = running(sim);
    const at = sim.os.mmap(0, 2n * PAGE, RW);
    touch(sim, at, WRITE);
    touch(sim, at + PAGE, WRITE);
    const child = sim.os.fork(0);
    expect(sim.os.stats.tlbFlushes.full).toBe(1);
    for (const la of [at, at + PAGE]) {
      expect(frameOf(sim, child, la)).toBe(frameOf(sim, parent, la));
      for (const process of [parent, child])
        expect((sim.os.lookup(process, la)?.entry ?? 0n) & PTE_RW).toBe(0n);
    }
    expect(child.vmas).toEqual(parent.vmas);
    expect(sim.machine.translate(0, at, WRITE).fault).toBe(PF);
  });

  it("the first write to a shared page copies it; the last mapper's write makes the page its own again", () => {
    const sim = simulation();
    const parent = running(sim);
    const at = sim.os.mmap(0, 2n * PAGE, RW);
    touch(sim, at, WRITE);
    touch(sim, at + PAGE, WRITE);
    const original = frameOf(sim, parent, at);
    const child = sim.os.fork(0);
    sim.os.switchTo(0, child);
    touch(sim, at, WRITE);
    expect(sim.os.stats).toMatchObject({ cowFaults: 1, cowCopies: 1 });
    expect(frameOf(sim, child, at)).not.toBe(original);
    expect(child.frames.has(original ?? 0n)).toBe(false);
    sim.os.switchTo(0, parent);
    touch(sim, at, WRITE);
    // The child has its copy: the parent is the last mapper of the original and keeps it.
    expect(sim.os.stats).toMatchObject({ cowFaults: 2, cowCopies: 1 });
    expect(frameOf(sim, parent, at)).toBe(original);
    touch(sim, at + PAGE, WRITE);
    expect(sim.os.stats).toMatchObject({ cowFaults: 3, cowCopies: 2 });
    expect(sim.os.stats.segvs).toBe(0);
  });

  it("exec switches the CPU to a new address space and tears the old one down, tables, frames and PCID", () => {
    const sim = simulation();
    const old = running(sim);
    const at = sim.os.mmap(0, 4n * PAGE, RW);
    for (let i = 0n; i < 4n; i++) touch(sim, at + i * PAGE, WRITE);
    const frames = sim.os.frames.allocated["4K"];
    const next = sim.os.exec(0, [{ start: 0x40_0000n, length: 4n * PAGE, protection: RW }]);
    expect(sim.os.running[0]).toBe(next);
    expect(old.alive).toBe(false);
    // The old space's 4 pages, 3 tables and root went back; the new one has only its root so far.
    expect(sim.os.frames.allocated["4K"]).toBe(frames - 4 - 3 - 1 + 1);
    expect(sim.os.processes).not.toContain(old);
    expect(sim.machine.translate(0, at, READ).fault).toBe(PF);
    touch(sim, 0x40_0000n, WRITE);
    expect(sim.os.stats.segvs).toBe(0);
  });

  it("an exited process's PCID is handed out again, and the new owner's first load flushes it", () => {
    const sim = simulation();
    const idle = running(sim);
    const first = sim.os.createProcess();
    sim.os.switchTo(0, first);
    const at = 0x40_0000n;
    sim.os.mmap(0, PAGE, RW, { address: at });
    touch(sim, at, WRITE);
    const stale = sim.machine.translate(0, at, READ).pa;
    sim.os.exit(0, idle);
    const second = sim.os.createProcess();
    expect(second.pcid).toBe(first.pcid);
    sim.os.switchTo(0, second);
    expect(sim.machine.getRegs(0).cr3 >> 63n).toBe(0n);
    sim.os.mmap(0, PAGE, RW, { address: at });
    sim.os.frames.alloc("4K");
    touch(sim, at, WRITE);
    expect(sim.machine.translate(0, at, READ).pa).not.toBe(stale);
  });
});

describe("guest kernel: TLB shootdowns between CPUs", () => {
  const twoCpus = (c: ResolvedConfig) => {
    c.machine.cpus = 2;
  };

  it("munmap by one thread sends the other CPU running the address space an IPI, whose handler flushes it", () => {
    const sim = simulation("native", twoCpus);
    running(sim, [0, 1]);
    const at = sim.os.mmap(0, PAGE, RW);
    touch(sim, at, WRITE, 1);
    expect(sim.machine.translate(1, at, READ).refs).toBe(0);
    const kernel = sim.machine.handlerCycles(0);
    sim.os.munmap(0, at, PAGE);
    expect(sim.os.stats).toMatchObject({ shootdowns: 1, shootdownTargets: 1 });
    // The local INVLPG and the target's: both CPUs lost the entry.
    expect(sim.os.stats.tlbFlushes.invlpg).toBe(2);
    expect(sim.machine.translate(1, at, READ).fault).toBe(PF);
    expect(sim.machine.handlerCycles(0) - kernel).toBe(
      sim.config.guest.ipiCycles + sim.config.guest.syscallCycles,
    );
  });

  it("a CPU that ran the address space but runs another now gets no IPI: its next switch back flushes", () => {
    const sim = simulation("native", twoCpus);
    const a = running(sim, [0, 1]);
    const at = sim.os.mmap(0, PAGE, RW);
    touch(sim, at, WRITE, 1);
    const b = sim.os.createProcess();
    sim.os.switchTo(1, b);
    sim.os.munmap(0, at, PAGE);
    expect(sim.os.stats.shootdowns).toBe(0);
    expect(a.staleOn.has(1)).toBe(true);
    sim.os.switchTo(1, a);
    expect(sim.machine.getRegs(1).cr3 >> 63n).toBe(0n);
    expect(sim.os.stats.deferredFlushes).toBe(1);
    expect(sim.machine.translate(1, at, READ).fault).toBe(PF);
  });
});

describe("isolation under page-table churn: no CPU reaches a frame its process does not map", () => {
  const op = fc.oneof(
    fc.record({ op: fc.constant("touch" as const), cpu: fc.nat(1), page: fc.nat(23), write: fc.boolean() }),
    fc.record({
      op: fc.constant("munmap" as const),
      cpu: fc.nat(1),
      page: fc.nat(23),
      pages: fc.integer({ min: 1, max: 40 }),
    }),
    fc.record({
      op: fc.constant("madvise" as const),
      cpu: fc.nat(1),
      page: fc.nat(23),
      pages: fc.integer({ min: 1, max: 8 }),
    }),
    fc.record({
      op: fc.constant("mprotect" as const),
      cpu: fc.nat(1),
      page: fc.nat(23),
      write: fc.boolean(),
    }),
    fc.record({ op: fc.constant("fork" as const), cpu: fc.nat(1) }),
    fc.record({ op: fc.constant("exit" as const), cpu: fc.nat(1) }),
  );

  for (const mode of ["native", "shadow", "pv", "ept"] as const) {
    it(`${mode}: every translation on every CPU lands in a frame of the process running there (property)`, () => {
      fc.assert(
        fc.property(fc.array(op, { minLength: 5, maxLength: 40 }), (steps) => {
          const sim = simulation(mode, (c) => {
            c.machine.cpus = 2;
          });
          const base = 0x4000_0000n;
          const first = running(sim, [0, 1]);
          sim.os.mmap(0, 24n * PAGE, RW, { address: base });
          const live: Process[] = [first];
          for (const step of steps) {
            const current = sim.os.running[step.cpu] as Process;
            const la = step.op === "fork" || step.op === "exit" ? 0n : base + BigInt(step.page) * PAGE;
            if (step.op === "touch") touch(sim, la, step.write ? WRITE : READ, step.cpu);
            else if (step.op === "munmap") {
              sim.os.munmap(step.cpu, la, BigInt(step.pages) * PAGE);
              sim.os.mmap(step.cpu, BigInt(step.pages) * PAGE, RW, { address: la });
            } else if (step.op === "madvise") sim.os.madviseDontNeed(step.cpu, la, BigInt(step.pages) * PAGE);
            else if (step.op === "mprotect") sim.os.mprotect(step.cpu, la, PAGE, step.write ? RW : RO);
            else if (step.op === "fork") {
              const child = sim.os.fork(step.cpu);
              live.push(child);
              sim.os.switchTo(step.cpu, child);
            } else if (live.length > 1 && sim.os.running[1 - step.cpu] !== current) {
              const others = live.filter((p) => p !== current);
              sim.os.exit(step.cpu, others[0]);
              live.splice(live.indexOf(current), 1);
            }
            for (const cpu of [0, 1]) {
              const process = sim.os.running[cpu] as Process;
              for (let page = 0n; page < 24n; page++) {
                for (const kind of [READ, WRITE]) {
                  const result = sim.machine.translate(cpu, base + page * PAGE, kind);
                  if (result.fault !== 0) continue;
                  const frame = sim.os.lookup(process, base + page * PAGE);
                  expect(frame, `cpu ${cpu} page ${page}`).toBeDefined();
                  const guestFrame = (frame?.entry ?? 0n) & ADDRESS_MASK;
                  expect(process.frames.has(guestFrame)).toBe(true);
                  const host = sim.technique ? sim.technique.vm.hostAddress(guestFrame) : guestFrame;
                  expect(result.pa & ~0xfffn).toBe(host);
                  if (kind === WRITE) expect((frame?.entry ?? 0n) & PTE_RW).toBe(PTE_RW);
                }
              }
            }
          }
        }),
        { numRuns: mode === "native" ? 25 : 12, seed: 1212 },
      );
    });
  }
});
