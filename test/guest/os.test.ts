import fc from "fast-check";
import { describe, expect, it } from "vitest";
import { defaultConfig, type ResolvedConfig } from "../../src/config/config.js";
import { MemvirtError } from "../../src/core/machine.js";
import { PAGE_SHIFT, type PageSize } from "../../src/core/types.js";
import { FrameAllocator } from "../../src/guest/frames.js";
import { ADDRESS_MASK, PTE_PS } from "../../src/guest/os.js";
import { Simulation } from "../../src/runner/simulation.js";

const RW = { writable: true, user: true, executable: false };
const RO = { writable: false, user: true, executable: false };
const READ = 0;
const WRITE = 1;
const PF = 14;

function simulation(change: (config: ResolvedConfig) => void = () => {}): Simulation {
  const config = defaultConfig();
  config.guest.memory = 4 * 2 ** 30;
  change(config);
  return new Simulation(config);
}

/** One access as a record, with the simulation servicing its exits as a trace replay does. */
function touch(sim: Simulation, la: bigint, kind = READ, cpu = 0): void {
  const view = sim.recordView();
  view.setBigUint64(0, la, true);
  view.setUint8(8, kind);
  view.setUint16(10, cpu, true);
  sim.replayBuffer(1);
}

describe("guest OS model: demand paging", () => {
  it("a first touch faults, the kernel maps a frame, and the access retries and completes once", () => {
    const sim = simulation();
    sim.start();
    touch(sim, 0x1234_5678n);
    const stats = sim.stats();
    expect(stats.accesses).toBe(1);
    expect(sim.os.stats.minorFaults).toBe(1);
    expect(stats.faults.notPresent).toBe(1);
    // The record's TLB lookups count once, although it ran twice.
    expect(stats.tlb.l1d).toEqual({ hits: 0, misses: 1 });
    expect(stats.walks).toBe(1);
    expect(stats.faultedWalks).toBe(1);
    // The fault handler's cycles are on the clock too.
    expect(sim.machine.handlerCycles(0)).toBe(sim.config.guest.faultCycles);
  });

  it("with 2M pages the kernel installs a PS=1 PDE whose frame is 2 MiB aligned", () => {
    const sim = simulation((c) => {
      c.guest.pageSize = "2M";
    });
    sim.start();
    touch(sim, 0x4030_1234n);
    const leaf = sim.os.lookup(sim.processes[0], 0x4030_1234n);
    expect(leaf?.level).toBe(2);
    expect((leaf?.entry ?? 0n) & PTE_PS).toBe(PTE_PS);
    expect((leaf?.entry ?? 0n) & ADDRESS_MASK & 0x1f_f000n).toBe(0n);
    touch(sim, 0x4030_1234n + 0x8_0000n);
    expect(sim.os.stats.minorFaults).toBe(1);
    // The second access, in the same 2 MiB page, hits the TLB: one successful walk in all.
    expect(sim.stats().pages["2M"]).toBe(1);
    expect(sim.stats().tlb.l1d.hits).toBe(1);
  });

  it("an access outside every VMA is a SIGSEGV: the record completes and the run goes on", () => {
    const sim = simulation();
    const process = sim.os.createProcess();
    sim.os.addVma(process, 0x1000_0000n, 0x1001_0000n, RW, "4K");
    sim.os.switchTo(0, process);
    touch(sim, 0x2000_0000n);
    expect(sim.os.stats.segvs).toBe(1);
    expect(sim.stats().accesses).toBe(1);
    expect(sim.exits.pageFault).toBe(1);
  });

  it("a write to a read-only VMA page is a protection fault with P=1 and W=1, then a SIGSEGV", () => {
    const sim = simulation();
    const process = sim.os.createProcess();
    sim.os.addVma(process, 0x1000_0000n, 0x1001_0000n, RO, "4K");
    sim.os.switchTo(0, process);
    touch(sim, 0x1000_0000n, READ);
    touch(sim, 0x1000_0000n, WRITE);
    expect(sim.exits.pageFaultsByBit.P).toBe(1);
    expect(sim.exits.pageFaultsByBit.W).toBe(1);
    expect(sim.os.stats.segvs).toBe(1);
  });

  it("unmapping shoots down the TLB entry: the next access faults instead of using the stale one", () => {
    const sim = simulation();
    const process = sim.os.createProcess();
    sim.os.switchTo(0, process);
    sim.os.mapRange(process, 0x1000_0000n, 0x1000n, "4K", RW);
    const pa = sim.machine.translate(0, 0x1000_0000n, READ).pa;
    expect(sim.machine.translate(0, 0x1000_0000n, READ).refs).toBe(0);
    sim.os.unmapRange(process, 0x1000_0000n, 0x1000n);
    expect(sim.os.stats.shootdowns).toBe(1);
    const after = sim.machine.translate(0, 0x1000_0000n, READ);
    expect(after.fault).toBe(PF);
    expect(pa).not.toBe(0n);
  });

  it("mprotect to read-only makes a cached writable translation fault on the next write", () => {
    const sim = simulation();
    const process = sim.os.createProcess();
    sim.os.switchTo(0, process);
    sim.os.mapRange(process, 0x1000_0000n, 0x1000n, "4K", RW);
    expect(sim.machine.translate(0, 0x1000_0000n, WRITE).fault).toBe(0);
    sim.os.protectRange(process, 0x1000_0000n, 0x1000n, RO);
    const result = sim.machine.translate(0, 0x1000_0000n, WRITE);
    expect(result.fault).toBe(PF);
    expect(result.errorCode & 0b11).toBe(0b11);
  });
});

describe("guest OS model: address spaces and PCIDs", () => {
  it("with PCIDs a context switch keeps the other process's TLB entries (MOV to CR3 with the no-flush bit)", () => {
    const sim = simulation();
    const a = sim.os.createProcess();
    const b = sim.os.createProcess();
    sim.os.mapRange(a, 0x1000_0000n, 0x1000n, "4K", RW);
    sim.os.mapRange(b, 0x1000_0000n, 0x1000n, "4K", RW);
    sim.os.switchTo(0, a);
    const inA = sim.machine.translate(0, 0x1000_0000n, READ);
    sim.os.switchTo(0, b);
    const inB = sim.machine.translate(0, 0x1000_0000n, READ);
    expect(inB.pa).not.toBe(inA.pa);
    sim.os.switchTo(0, a);
    expect(sim.machine.getRegs(0).cr3 & 0xfffn).toBe(BigInt(a.pcid));
    const again = sim.machine.translate(0, 0x1000_0000n, READ);
    expect(again).toMatchObject({ pa: inA.pa, refs: 0 });
  });

  it("without PCIDs every context switch flushes the non-global TLB entries", () => {
    const sim = simulation((c) => {
      c.guest.pcid = false;
    });
    const a = sim.os.createProcess();
    const b = sim.os.createProcess();
    sim.os.mapRange(a, 0x1000_0000n, 0x1000n, "4K", RW);
    sim.os.mapRange(b, 0x1000_0000n, 0x1000n, "4K", RW);
    sim.os.switchTo(0, a);
    sim.machine.translate(0, 0x1000_0000n, READ);
    sim.os.switchTo(0, b);
    sim.os.switchTo(0, a);
    expect(sim.machine.translate(0, 0x1000_0000n, READ).refs).toBeGreaterThan(0);
  });

  it("kernel pages are global and supervisor-only: a user access to them is a protection fault", () => {
    const sim = simulation();
    sim.os.mapKernel(0xffff_8000_0000_0000n, 0x20_0000n, "2M");
    const process = sim.os.createProcess();
    sim.os.switchTo(0, process);
    const result = sim.machine.translate(0, 0xffff_8000_0000_1000n, READ);
    expect(result.fault).toBe(PF);
    expect(result.errorCode).toBe(0b101);
    sim.machine.setRegs(0, { cpl: 0 });
    expect(sim.machine.translate(0, 0xffff_8000_0000_1000n, READ).fault).toBe(0);
  });
});

describe("guest frame allocator", () => {
  it("sequential allocation hands out ascending frames above the reserved low 2 MiB", () => {
    const frames = new FrameAllocator(4 * 2 ** 30, "sequential", 1);
    const first = frames.alloc("4K");
    expect(first).toBe(0x20_0000n);
    expect(frames.alloc("4K")).toBe(first + 0x1000n);
  });

  it("random allocation is a seeded permutation: distinct frames, the same for a seed, aligned to the size", () => {
    const draw = (seed: number, size: PageSize) => {
      const frames = new FrameAllocator(8 * 2 ** 30, "random", seed);
      return Array.from({ length: 300 }, () => frames.alloc(size));
    };
    for (const size of ["4K", "2M"] as const) {
      const a = draw(5, size);
      expect(new Set(a).size).toBe(a.length);
      expect(draw(5, size)).toEqual(a);
      expect(draw(6, size)).not.toEqual(a);
      for (const frame of a) expect(frame & ((1n << BigInt(PAGE_SHIFT[size])) - 1n)).toBe(0n);
    }
  });

  it("running out of guest memory is a clear error", () => {
    const frames = new FrameAllocator(2 ** 30, "sequential", 1);
    expect(() => {
      for (let i = 0; i < 600; i++) frames.alloc("2M");
    }).toThrow(MemvirtError);
  });
});

describe("isolation: no process reaches a frame that is not its own", () => {
  it("every translation by a process lands in a frame mapped into that process (property)", () => {
    fc.assert(
      fc.property(
        fc.integer({ min: 2, max: 4 }),
        fc.constantFrom<PageSize>("4K", "2M"),
        fc.constantFrom<"sequential" | "random">("sequential", "random"),
        fc.boolean(),
        fc.array(
          fc.record({
            process: fc.nat(3),
            page: fc.nat(63),
            offset: fc.nat(4095),
            kind: fc.constantFrom(READ, WRITE),
            unmap: fc.boolean(),
          }),
          { minLength: 10, maxLength: 120 },
        ),
        fc.integer({ min: 0, max: 1000 }),
        (count, pageSize, policy, pcid, steps, seed) => {
          const sim = simulation((c) => {
            c.guest.frames = policy;
            c.guest.pcid = pcid;
            c.seed = seed;
          });
          const processes = Array.from({ length: count }, () => {
            const process = sim.os.createProcess();
            sim.os.addVma(process, 0x4000_0000n, 0x4000_0000n + (64n << 21n), RW, pageSize);
            return process;
          });
          const step = 1n << BigInt(PAGE_SHIFT[pageSize]);
          for (const action of steps) {
            const process = processes[action.process % count];
            sim.os.switchTo(0, process);
            const la = 0x4000_0000n + BigInt(action.page) * step + BigInt(action.offset);
            if (action.unmap) {
              sim.os.unmapRange(process, la & ~(step - 1n), step);
              continue;
            }
            touch(sim, la, action.kind);
            const result = sim.machine.translate(0, la, action.kind);
            if (result.fault !== 0) continue;
            const frame = result.pa & ~(step - 1n);
            expect(process.frames.get(frame), `pid ${process.pid} reached 0x${result.pa.toString(16)}`).toBe(
              pageSize,
            );
            for (const other of processes) if (other !== process) expect(other.frames.has(frame)).toBe(false);
          }
        },
      ),
      { numRuns: 60, seed: 20261125 },
    );
  });
});

describe("host physical memory", () => {
  it("running out of WebAssembly memory is a clear error, and what was written stays readable", () => {
    const sim = simulation((c) => {
      c.memory.limitMiB = 16;
    });
    let failure: unknown;
    let written = 0n;
    try {
      for (let frame = 0n; frame < 10_000n; frame++) {
        sim.machine.writePhys64(0x100_0000n + frame * 0x1000n, frame + 1n);
        written = frame + 1n;
      }
    } catch (error) {
      failure = error;
    }
    expect(failure).toBeInstanceOf(MemvirtError);
    expect((failure as Error).message).toMatch(/out of WebAssembly memory/);
    expect(sim.machine.readPhys64(0x100_0000n + (written - 1n) * 0x1000n)).toBe(written);
  });

  it("an unbacked frame reads as zeros and a terabyte-scale address costs no backing until written", () => {
    const sim = simulation();
    const before = sim.machine.backedFrames();
    expect(sim.machine.readPhys64(0x3f_ffff_f000n)).toBe(0n);
    sim.machine.writePhys64(0x3f_ffff_f000n, 0n);
    expect(sim.machine.backedFrames()).toBe(before);
    sim.machine.writePhys64(0x3f_ffff_f008n, 42n);
    expect(sim.machine.backedFrames()).toBe(before + 1);
    expect(sim.machine.readPhys64(0x3f_ffff_f008n)).toBe(42n);
  });
});
