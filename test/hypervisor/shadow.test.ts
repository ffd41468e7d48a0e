import fc from "fast-check";
import { describe, expect, it } from "vitest";
import { type ResolvedConfig, resolveConfig } from "../../src/config/config.js";
import type { PageSize } from "../../src/core/types.js";
import {
  ADDRESS_MASK,
  type Process,
  PTE_A,
  PTE_D,
  PTE_P,
  PTE_PS,
  PTE_RW,
  PTE_US,
} from "../../src/guest/os.js";
import type { ShadowMmu } from "../../src/hypervisor/shadow.js";
import { Simulation } from "../../src/runner/simulation.js";

const READ = 0;
const WRITE = 1;
const PF = 14;
const RW = { writable: true, user: true, executable: false };
const RO = { writable: false, user: true, executable: false };
const LA = 0x1000_0000n;

function simulation(change: (config: ResolvedConfig) => void = () => {}): Simulation {
  const config = resolveConfig({ mode: "shadow", guest: { memory: "4G" }, host: { memory: "16G" } });
  change(config);
  return new Simulation(config);
}

function shadowOf(sim: Simulation): ShadowMmu {
  return sim.technique as ShadowMmu;
}

/** One access as a record, with the simulation servicing its exits as a trace replay does. */
function touch(sim: Simulation, la: bigint, kind = READ, cpu = 0): void {
  const view = sim.recordView();
  view.setBigUint64(0, la, true);
  view.setUint8(8, kind);
  view.setUint16(10, cpu, true);
  sim.replayBuffer(1);
}

function exitCount(sim: Simulation, reason: string): number {
  return shadowOf(sim).exits()[reason] ?? 0;
}

function leafOf(
  sim: Simulation,
  process: Process,
  la: bigint,
): { address: bigint; entry: bigint; level: number } {
  const leaf = sim.os.lookup(process, la);
  if (!leaf) throw new Error(`0x${la.toString(16)} is not mapped by the guest`);
  return leaf;
}

/** The guest-physical address `la` translates to in the guest's own tables. */
function guestPhysical(sim: Simulation, process: Process, la: bigint): bigint | undefined {
  const leaf = sim.os.lookup(process, la);
  if (!leaf) return undefined;
  const size = 1n << BigInt(12 + 9 * (leaf.level - 1));
  return (leaf.entry & ADDRESS_MASK & ~(size - 1n)) | (la & (size - 1n));
}

describe("shadow paging (docs/kvm.md §Shadow paging): shadow faults", () => {
  it("a first touch is a guest #PF delivered to the guest kernel, then a shadow #PF that builds the SPTEs", () => {
    const sim = simulation();
    sim.start();
    const shadow = shadowOf(sim);
    const process = sim.processes[0];
    touch(sim, LA);
    expect(shadow.counters.pf_guest).toBe(1);
    expect(shadow.counters.pf_fixed).toBe(1);
    expect(exitCount(sim, "pageFault")).toBe(2);
    expect(sim.exits.pageFault).toBe(2);
    expect(sim.os.stats.minorFaults).toBe(1);
    expect(sim.stats().accesses).toBe(1);
    // The SPTE maps the guest-virtual page straight onto the VM's backing of the guest frame.
    const gpa = guestPhysical(sim, process, LA) ?? 0n;
    expect(shadow.shadowLeaf(0, LA)?.hpa).toBe(shadow.vm.hostAddress(gpa));
    // The hypervisor set the guest's accessed flag, as the hardware would have; a read leaves D clear.
    const leaf = leafOf(sim, process, LA);
    expect(leaf.entry & PTE_A).toBe(PTE_A);
    expect(leaf.entry & PTE_D).toBe(0n);
    // The hardware's CR3 is the shadow root; the guest's root only lives in the hypervisor's view.
    expect(sim.machine.getRegs(0).cr3 & ADDRESS_MASK).not.toBe(process.root);
    expect(shadow.guestCr3Of(0) & ADDRESS_MASK).toBe(process.root);
    // Again: the TLB or the shadow serves it, with no exit.
    touch(sim, LA);
    expect(exitCount(sim, "pageFault")).toBe(2);
  });

  it("an access the guest's own tables forbid is injected with the guest's error code (P=1, W=1), not the shadow's", () => {
    const sim = simulation();
    const process = sim.os.createProcess();
    sim.os.addVma(process, LA, LA + 0x1000n, RO, "4K");
    sim.os.switchTo(0, process);
    touch(sim, LA, READ);
    const shadow = shadowOf(sim);
    const guestFaults = shadow.counters.pf_guest;
    touch(sim, LA, WRITE);
    // The shadow SPTE is read-only too, but the decision and the error code come from the guest walk.
    expect(shadow.counters.pf_guest).toBe(guestFaults + 1);
    expect(sim.os.stats.segvs).toBe(1);
  });

  it("a read of a clean page maps it read-only; the first write faults and the hypervisor sets the guest's D (protect_clean_gpte)", () => {
    const sim = simulation();
    sim.start();
    const shadow = shadowOf(sim);
    const process = sim.processes[0];
    touch(sim, LA, READ);
    expect(leafOf(sim, process, LA).entry & PTE_RW).toBe(PTE_RW);
    expect(leafOf(sim, process, LA).entry & PTE_D).toBe(0n);
    expect((shadow.shadowLeaf(0, LA)?.spte ?? 0n) & PTE_RW).toBe(0n);
    const exits = exitCount(sim, "pageFault");
    const fixed = shadow.counters.pf_fixed;
    const guest = shadow.counters.pf_guest;
    touch(sim, LA, WRITE);
    expect(exitCount(sim, "pageFault")).toBe(exits + 1);
    expect(shadow.counters.pf_fixed).toBe(fixed + 1);
    expect(shadow.counters.pf_guest).toBe(guest);
    expect(leafOf(sim, process, LA).entry & PTE_D).toBe(PTE_D);
    expect((shadow.shadowLeaf(0, LA)?.spte ?? 0n) & PTE_RW).toBe(PTE_RW);
  });

  it("a guest entry pointing outside every memslot is MMIO: emulated, never given an SPTE", () => {
    const sim = simulation();
    const process = sim.os.createProcess();
    sim.os.switchTo(0, process);
    sim.os.mapRange(process, LA, 0x1000n, "4K", RW);
    const leaf = leafOf(sim, process, LA);
    sim.os.cpu.writeEntry(leaf.address, 0x40_0000_0000n | PTE_A | 7n, 1);
    touch(sim, LA);
    const shadow = shadowOf(sim);
    expect(shadow.counters.pf_mmio).toBe(1);
    expect(sim.stats().accesses).toBe(1);
    expect(shadow.shadowLeaf(0, LA)).toBeUndefined();
  });

  it("a guest 2M page is shadowed with 4K SPTEs on 4K host backing and with a 2M SPTE on 2M backing", () => {
    for (const [backing, level] of [
      ["4K", 1],
      ["2M", 2],
    ] as const) {
      const sim = simulation((c) => {
        c.guest.pageSize = "2M";
        c.host.pageSize = backing;
      });
      sim.start();
      const la = 0x4030_1234n;
      touch(sim, la);
      const shadow = shadowOf(sim);
      const leaf = shadow.shadowLeaf(0, la);
      expect(leaf?.level).toBe(level);
      expect(leaf?.hpa).toBe(shadow.vm.hostAddress(guestPhysical(sim, sim.processes[0], la) ?? 0n));
    }
  });

  it("the 4K pieces of one guest 2M page share one direct shadow page", () => {
    const sim = simulation((c) => {
      c.guest.pageSize = "2M";
    });
    sim.start();
    const shadow = shadowOf(sim);
    touch(sim, 0x4000_0000n);
    const pages = shadow.counters.mmu_cache_miss;
    for (let i = 1n; i < 16n; i++) touch(sim, 0x4000_0000n + i * 0x1_1000n, Number(i % 2n));
    expect(shadow.counters.mmu_cache_miss).toBe(pages);
    expect(shadow.counters.mmu_shadow_zapped).toBe(0);
    for (let i = 0n; i < 16n; i++) {
      const la = 0x4000_0000n + i * 0x1_1000n;
      expect(shadow.shadowLeaf(0, la)?.hpa).toBe(
        shadow.vm.hostAddress(guestPhysical(sim, sim.processes[0], la) ?? 0n),
      );
    }
  });

  it("a guest large page over a shadowed guest table maps 4K (disallow_lpage), read-only on the table, and a write there is emulated", () => {
    const sim = simulation((c) => {
      c.host.pageSize = "2M";
    });
    sim.start();
    const shadow = shadowOf(sim);
    const process = sim.processes[0];
    touch(sim, LA);
    // The guest maps a 2M page over the region holding its own root table (a direct-map alias), in
    // the page directory that already maps LA.
    const region = process.root & ~0x1f_ffffn;
    const la = 0x2000_0000n;
    const pdpt = sim.os.cpu.readEntry(process.root + ((LA >> 39n) & 0x1ffn) * 8n) & ADDRESS_MASK;
    const pd = sim.os.cpu.readEntry(pdpt + ((LA >> 30n) & 0x1ffn) * 8n) & ADDRESS_MASK;
    const pde = region | PTE_P | PTE_RW | PTE_US | PTE_PS | PTE_A | PTE_D;
    sim.os.cpu.writeEntry(pd + ((la >> 21n) & 0x1ffn) * 8n, pde, 2);
    const alias = la + (process.root - region);
    touch(sim, alias);
    const leaf = shadow.shadowLeaf(0, alias);
    expect(leaf?.level).toBe(1);
    expect(leaf?.hpa).toBe(shadow.vm.hostAddress(process.root));
    expect((leaf?.spte ?? 0n) & PTE_RW).toBe(0n);
    touch(sim, alias, WRITE);
    expect(shadow.counters.pf_emulate).toBe(1);
    expect(sim.stats().accesses).toBe(3);
  });

  it("a 5-level guest gets a 5-level shadow root", () => {
    const sim = simulation((c) => {
      c.guest.levels = 5;
    });
    sim.start();
    const la = 0x10_0000_0000_0000n;
    touch(sim, la, WRITE);
    const shadow = shadowOf(sim);
    expect(shadow.shadowLeaf(0, la)?.hpa).toBe(
      shadow.vm.hostAddress(guestPhysical(sim, sim.processes[0], la) ?? 0n),
    );
    expect(shadow.counters.mmu_cache_miss).toBe(5);
  });

  it("there is no nested dimension: a nested fault is an internal error", () => {
    const sim = simulation();
    expect(() =>
      shadowOf(sim).onNestedFault({
        reason: "eptViolation",
        cpu: 0,
        index: 0,
        kind: 0,
        linear: 0n,
        guestPhysical: 0n,
        qualification: 0n,
        refs: 0,
      }),
    ).toThrow(/no nested dimension/);
  });
});

describe("shadow paging: write protection of guest tables", () => {
  it("a store to a write-protected guest table traps (wpWrite, mmu_pte_write) and the SPTE follows the new gpte without another fault", () => {
    const sim = simulation((c) => {
      c.hypervisor.unsync = false;
    });
    sim.start();
    const shadow = shadowOf(sim);
    const process = sim.processes[0];
    touch(sim, LA, WRITE);
    const leaf = leafOf(sim, process, LA);
    const frame = sim.os.frames.alloc("4K");
    const wpWrites = exitCount(sim, "wpWrite");
    const pteWrites = shadow.counters.mmu_pte_write;
    sim.os.cpu.writeEntry(leaf.address, (leaf.entry & ~ADDRESS_MASK) | frame, 1);
    expect(exitCount(sim, "wpWrite")).toBe(wpWrites + 1);
    expect(shadow.counters.mmu_pte_write).toBe(pteWrites + 1);
    expect(shadow.counters.mmu_pte_updated).toBe(1);
    // The store reached guest memory.
    expect(leafOf(sim, process, LA).entry & ADDRESS_MASK).toBe(frame);
    // The kernel's own shootdown is trapped too.
    sim.os.cpu.invlpg(0, LA);
    expect(exitCount(sim, "invlpg")).toBe(1);
    const faults = exitCount(sim, "pageFault");
    touch(sim, LA, WRITE);
    expect(exitCount(sim, "pageFault")).toBe(faults);
    expect(sim.machine.translate(0, LA, READ).pa).toBe(shadow.vm.hostAddress(frame));
  });

  it("a new gpte the guest has not accessed yet is not prefetched: the SPTE is dropped and the next access takes a shadow fault", () => {
    const sim = simulation((c) => {
      c.hypervisor.unsync = false;
    });
    sim.start();
    const shadow = shadowOf(sim);
    const process = sim.processes[0];
    touch(sim, LA);
    const leaf = leafOf(sim, process, LA);
    const frame = sim.os.frames.alloc("4K");
    sim.os.cpu.writeEntry(leaf.address, frame | PTE_P | PTE_RW | PTE_US, 1);
    expect(shadow.shadowLeaf(0, LA)).toBeUndefined();
    const fixed = shadow.counters.pf_fixed;
    const guest = shadow.counters.pf_guest;
    touch(sim, LA);
    expect(shadow.counters.pf_fixed).toBe(fixed + 1);
    expect(shadow.counters.pf_guest).toBe(guest);
    expect(shadow.shadowLeaf(0, LA)?.hpa).toBe(shadow.vm.hostAddress(frame));
  });

  it("stores to guest tables that have no shadow page land without an exit", () => {
    const sim = simulation();
    sim.start();
    const other = sim.os.createProcess();
    const before = { ...shadowOf(sim).exits() };
    sim.os.mapRange(other, LA, 0x4000n, "4K", RW);
    expect(shadowOf(sim).exits()).toEqual(before);
  });

  it("write flooding: a non-leaf shadow page written 3 times without a use in between is zapped (mmu_flooded)", () => {
    const sim = simulation();
    sim.start();
    const shadow = shadowOf(sim);
    const process = sim.processes[0];
    touch(sim, 0x4000_0000n);
    // Each mapping in a new 2 MiB region writes one PDE into the shadowed page directory.
    sim.os.mapRange(process, 0x4020_0000n, 0x1000n, "4K", RW);
    sim.os.mapRange(process, 0x4040_0000n, 0x1000n, "4K", RW);
    expect(shadow.counters.mmu_flooded).toBe(0);
    const zapped = shadow.counters.mmu_shadow_zapped;
    sim.os.mapRange(process, 0x4060_0000n, 0x1000n, "4K", RW);
    expect(shadow.counters.mmu_flooded).toBe(1);
    expect(shadow.counters.mmu_shadow_zapped).toBeGreaterThan(zapped);
    // The page directory is shadowed again on the next fault through it, and everything still translates.
    for (const la of [0x4000_0000n, 0x4020_0000n, 0x4040_0000n, 0x4060_0000n]) {
      touch(sim, la);
      expect(sim.machine.translate(0, la, READ).pa).toBe(
        shadow.vm.hostAddress(guestPhysical(sim, process, la) ?? 0n),
      );
    }
  });

  it("write flooding needs writes without use: a shadow fault through the page in between resets the count", () => {
    const sim = simulation();
    sim.start();
    const shadow = shadowOf(sim);
    const process = sim.processes[0];
    touch(sim, 0x4000_0000n);
    sim.os.mapRange(process, 0x4020_0000n, 0x1000n, "4K", RW);
    sim.os.mapRange(process, 0x4040_0000n, 0x1000n, "4K", RW);
    touch(sim, 0x4040_0000n);
    sim.os.mapRange(process, 0x4060_0000n, 0x1000n, "4K", RW);
    expect(shadow.counters.mmu_flooded).toBe(0);
  });
});

describe("shadow paging: unsync leaf pages", () => {
  it("a store to a shadowed leaf table unsyncs it (one #PF exit, no emulation); a flushing CR3 load resyncs it", () => {
    const sim = simulation((c) => {
      c.guest.pcid = false;
    });
    const a = sim.spawnDemandPagedProcess();
    const b = sim.spawnDemandPagedProcess();
    sim.os.switchTo(0, a);
    const shadow = shadowOf(sim);
    touch(sim, LA);
    const wpWrites = exitCount(sim, "wpWrite");
    // The next page in the same page table: the guest kernel's store goes to a write-protected leaf table.
    touch(sim, LA + 0x1000n);
    expect(shadow.counters.mmu_unsync).toBe(1);
    expect(shadow.counters.unsync_marked).toBe(1);
    expect(exitCount(sim, "wpWrite")).toBe(wpWrites);
    // Further stores to the unsync table land without exits.
    const exits = { ...shadow.exits() };
    sim.os.mapRange(a, LA + 0x2000n, 0x1000n, "4K", RW);
    expect(shadow.exits()).toEqual(exits);
    // B's root does not reach A's page table: nothing to sync.
    sim.os.switchTo(0, b);
    expect(shadow.counters.synced_pages).toBe(0);
    // Back to A without PCIDs: a flushing CR3 load, served from the root cache, syncs A's unsync pages.
    sim.os.switchTo(0, a);
    expect(shadow.counters.root_hit).toBe(1);
    expect(shadow.counters.synced_pages).toBe(1);
    expect(shadow.counters.mmu_unsync).toBe(0);
    // Synced means write-protected again: the next store unsyncs it again.
    touch(sim, LA + 0x3000n);
    expect(shadow.counters.unsync_marked).toBe(2);
  });

  it("with PCIDs a no-flush CR3 load skips the sync: the page stays unsync", () => {
    const sim = simulation();
    const a = sim.spawnDemandPagedProcess();
    const b = sim.spawnDemandPagedProcess();
    sim.os.switchTo(0, a);
    const shadow = shadowOf(sim);
    touch(sim, LA);
    sim.os.switchTo(0, b);
    sim.os.switchTo(0, a);
    touch(sim, LA + 0x1000n);
    expect(shadow.counters.mmu_unsync).toBe(1);
    sim.os.switchTo(0, b);
    sim.os.switchTo(0, a);
    expect(shadow.counters.synced_pages).toBe(0);
    expect(shadow.counters.mmu_unsync).toBe(1);
  });

  it("INVLPG resyncs the address's SPTE in an unsync page: a repointed gpte drops the stale SPTE", () => {
    const sim = simulation();
    sim.start();
    const shadow = shadowOf(sim);
    const process = sim.processes[0];
    touch(sim, LA, WRITE);
    touch(sim, LA + 0x1000n);
    expect(shadow.counters.mmu_unsync).toBe(1);
    const leaf = leafOf(sim, process, LA);
    const old = leaf.entry & ADDRESS_MASK;
    const frame = sim.os.frames.alloc("4K");
    const exits = { ...shadow.exits() };
    sim.os.cpu.writeEntry(leaf.address, (leaf.entry & ~ADDRESS_MASK) | frame, 1);
    expect(shadow.exits()).toEqual(exits);
    // Until the guest invalidates, the old translation stands (as a stale TLB entry would).
    expect(sim.machine.translate(0, LA, READ).pa).toBe(shadow.vm.hostAddress(old));
    sim.os.cpu.invlpg(0, LA);
    expect(exitCount(sim, "invlpg")).toBe(1);
    expect(shadow.counters.sync_spte).toBeGreaterThan(0);
    expect(shadow.shadowLeaf(0, LA)).toBeUndefined();
    expect(sim.machine.translate(0, LA, READ).fault).toBe(PF);
    const guest = shadow.counters.pf_guest;
    touch(sim, LA);
    expect(shadow.counters.pf_guest).toBe(guest);
    expect(sim.machine.translate(0, LA, READ).pa).toBe(shadow.vm.hostAddress(frame));
    // INVLPG resyncs one SPTE; the page stays unsync.
    expect(shadow.counters.mmu_unsync).toBe(1);
  });

  it("mprotect on an unsync page: the guest's INVLPG narrows the SPTE in place and the next write is the guest's fault", () => {
    const sim = simulation();
    sim.start();
    const shadow = shadowOf(sim);
    const process = sim.processes[0];
    touch(sim, LA, WRITE);
    touch(sim, LA + 0x1000n, WRITE);
    expect(shadow.counters.mmu_unsync).toBe(1);
    sim.os.protectRange(process, LA, 0x1000n, RO);
    const spte = shadow.shadowLeaf(0, LA)?.spte ?? 0n;
    expect(spte & PTE_P).toBe(PTE_P);
    expect(spte & PTE_RW).toBe(0n);
    const guest = shadow.counters.pf_guest;
    touch(sim, LA, WRITE);
    expect(shadow.counters.pf_guest).toBe(guest + 1);
    expect(sim.os.stats.segvs).toBe(1);
  });

  it("a shootdown for a process that is not running (INVPCID, one address) resyncs the SPTE under its cached root", () => {
    const sim = simulation();
    const a = sim.spawnDemandPagedProcess();
    const b = sim.spawnDemandPagedProcess();
    sim.os.switchTo(0, a);
    touch(sim, LA);
    touch(sim, LA + 0x1000n);
    const shadow = shadowOf(sim);
    expect(shadow.counters.mmu_unsync).toBe(1);
    sim.os.switchTo(0, b);
    // A's page table is unsync, so the kernel's store lands; its shootdown for A is an INVPCID on CPU 0.
    sim.os.unmapRange(a, LA, 0x1000n);
    expect(exitCount(sim, "invpcid")).toBe(1);
    // Back to A with the no-flush bit: no sync, yet the unmapped page must not translate.
    sim.os.switchTo(0, a);
    expect(shadow.counters.synced_pages).toBe(0);
    expect(sim.machine.translate(0, LA, READ).fault).toBe(PF);
    expect(sim.machine.translate(0, LA + 0x1000n, READ).fault).toBe(0);
  });

  it("a root that left the previous-roots cache is synced when it is loaded again (kvm_mmu_load)", () => {
    const sim = simulation();
    const list = Array.from({ length: 5 }, () => sim.spawnDemandPagedProcess());
    const [a] = list;
    sim.os.switchTo(0, a);
    touch(sim, LA);
    touch(sim, LA + 0x1000n);
    const shadow = shadowOf(sim);
    expect(shadow.counters.mmu_unsync).toBe(1);
    for (const process of list.slice(1)) sim.os.switchTo(0, process);
    // A's root is out of the cache: the shootdown's INVPCID finds no root of A's PCID to resync.
    sim.os.unmapRange(a, LA, 0x1000n);
    const misses = shadow.counters.root_miss;
    sim.os.switchTo(0, a);
    expect(shadow.counters.root_miss).toBe(misses + 1);
    expect(shadow.counters.synced_pages).toBe(1);
    expect(shadow.counters.mmu_unsync).toBe(0);
    expect(sim.machine.translate(0, LA, READ).fault).toBe(PF);
  });

  it("with unsync off, stores to leaf tables are emulated instead", () => {
    const sim = simulation((c) => {
      c.hypervisor.unsync = false;
    });
    sim.start();
    const shadow = shadowOf(sim);
    touch(sim, LA);
    const wpWrites = exitCount(sim, "wpWrite");
    touch(sim, LA + 0x1000n);
    expect(exitCount(sim, "wpWrite")).toBe(wpWrites + 1);
    expect(shadow.counters.mmu_unsync).toBe(0);
    expect(shadow.counters.unsync_marked).toBe(0);
  });
});

describe("shadow paging: CR3 loads and the previous-roots cache", () => {
  it("switching between 2 processes hits the root cache; 5 processes round-robin always miss (3 previous roots)", () => {
    const run = (processes: number, switches: number) => {
      const sim = simulation();
      const list = Array.from({ length: processes }, () => sim.spawnDemandPagedProcess());
      for (let i = 0; i < switches; i++) sim.os.switchTo(0, list[i % processes]);
      const shadow = shadowOf(sim);
      expect(exitCount(sim, "cr3Write")).toBe(switches);
      return shadow.counters;
    };
    const two = run(2, 10);
    expect(two.root_miss).toBe(2);
    expect(two.root_hit).toBe(8);
    const four = run(4, 12);
    expect(four.root_miss).toBe(4);
    expect(four.root_hit).toBe(8);
    const five = run(5, 10);
    expect(five.root_miss).toBe(10);
    expect(five.root_hit).toBe(0);
    // A root that left the cache stays in the shadow page cache: it is found again, not rebuilt.
    expect(five.mmu_cache_miss).toBe(5);
  });

  it("the shadow root keeps the guest's PCID: a no-flush switch keeps the other process's TLB entries", () => {
    const sim = simulation();
    const a = sim.spawnDemandPagedProcess();
    const b = sim.spawnDemandPagedProcess();
    sim.os.switchTo(0, a);
    touch(sim, LA);
    sim.os.switchTo(0, b);
    touch(sim, LA);
    sim.os.switchTo(0, a);
    expect(sim.machine.getRegs(0).cr3 & 0xfffn).toBe(BigInt(a.pcid));
    const again = sim.machine.translate(0, LA, READ);
    expect(again.refs).toBe(0);
    expect(again.pa).toBe(shadowOf(sim).vm.hostAddress(guestPhysical(sim, a, LA) ?? 0n));
  });
});

describe("shadow paging: capacity", () => {
  it("n_max_mmu_pages is 20 per mille of guest pages, at least 64", () => {
    expect(shadowOf(simulation()).counters.max_mmu_pages).toBe(Math.floor((2 ** 20 * 20) / 1000));
    const tiny = simulation((c) => {
      c.hypervisor.maxShadowPages = 10;
    });
    expect(shadowOf(tiny).counters.max_mmu_pages).toBe(64);
  });

  it("with a tiny cache the oldest shadow pages are recycled (mmu_recycled) and every page still translates right", () => {
    const sim = simulation((c) => {
      c.hypervisor.maxShadowPages = 64;
    });
    sim.start();
    const shadow = shadowOf(sim);
    const process = sim.processes[0];
    const pages = Array.from({ length: 100 }, (_, i) => 0x1_0000_0000n + BigInt(i) * 0x20_0000n);
    for (const la of pages) touch(sim, la);
    expect(shadow.counters.mmu_recycled).toBeGreaterThan(0);
    expect(shadow.counters.shadow_pages).toBeLessThanOrEqual(64);
    expect(shadow.counters.remote_tlb_flush).toBeGreaterThan(0);
    for (const la of pages) {
      touch(sim, la);
      expect(sim.machine.translate(0, la, READ).pa).toBe(
        shadow.vm.hostAddress(guestPhysical(sim, process, la) ?? 0n),
      );
    }
  });

  it("zapping shadow pages flushes every vCPU's TLB (remote TLB flush)", () => {
    const sim = simulation((c) => {
      c.machine.cpus = 2;
      c.hypervisor.unsync = false;
    });
    sim.start();
    const shadow = shadowOf(sim);
    const process = sim.processes[0];
    touch(sim, LA, WRITE, 1);
    expect(sim.machine.translate(1, LA, READ).refs).toBe(0);
    const flushes = shadow.counters.remote_tlb_flush;
    // The kernel on CPU 0 changes the entry; the emulated store zaps the SPTE and flushes both vCPUs.
    const leaf = leafOf(sim, process, LA);
    sim.os.cpu.writeEntry(leaf.address, leaf.entry & ~PTE_RW, 1);
    expect(shadow.counters.remote_tlb_flush).toBe(flushes + 1);
    expect(sim.machine.translate(1, LA, WRITE).fault).toBe(PF);
  });
});

describe("shadow paging: properties", () => {
  it("isolation: random guest tables (entries pointing anywhere) never translate outside the VM (property)", () => {
    fc.assert(
      fc.property(
        fc.constantFrom<PageSize>("4K", "2M"),
        fc.boolean(),
        fc.array(
          fc.record({
            page: fc.nat(31),
            kind: fc.constantFrom(READ, WRITE),
            corrupt: fc.option(fc.bigInt({ min: 0n, max: (1n << 46n) - 1n }), { nil: undefined }),
          }),
          { minLength: 5, maxLength: 40 },
        ),
        (pageSize, unsync, steps) => {
          const sim = simulation((c) => {
            c.guest.pageSize = pageSize;
            c.hypervisor.unsync = unsync;
          });
          sim.start();
          const shadow = shadowOf(sim);
          const process = sim.processes[0];
          for (const step of steps) {
            const la = 0x4000_0000n + BigInt(step.page) * 0x1000n;
            touch(sim, la, step.kind);
            if (step.corrupt !== undefined) {
              const leaf = sim.os.lookup(process, la);
              if (leaf) {
                const flags = leaf.level === 1 ? 0x27n : 0xa7n;
                sim.os.cpu.writeEntry(leaf.address, (step.corrupt & ~0xfffn) | flags, leaf.level);
                sim.os.cpu.invlpg(0, la);
              }
            }
            const result = sim.machine.translate(0, la, step.kind);
            if (result.fault === 0) expect(shadow.vm.ownsHostAddress(result.pa)).toBe(true);
          }
          for (const frame of shadow.mappedHostFrames()) expect(shadow.vm.ownsHostAddress(frame)).toBe(true);
        },
      ),
      { numRuns: 25, seed: 4242 },
    );
  });

  it("the shadow agrees with the guest: every translation is the VM's backing of the guest walk's address, with no more rights (property)", () => {
    const op = fc.oneof(
      fc.record({ op: fc.constant("touch" as const), page: fc.nat(11), kind: fc.constantFrom(READ, WRITE) }),
      fc.record({ op: fc.constant("unmap" as const), page: fc.nat(11), process: fc.nat(2) }),
      fc.record({
        op: fc.constant("protect" as const),
        page: fc.nat(11),
        process: fc.nat(2),
        writable: fc.boolean(),
      }),
      fc.record({ op: fc.constant("switch" as const), process: fc.nat(2) }),
    );
    fc.assert(
      fc.property(
        fc.boolean(),
        fc.boolean(),
        fc.array(op, { minLength: 5, maxLength: 60 }),
        (pcid, unsync, steps) => {
          const sim = simulation((c) => {
            c.guest.pcid = pcid;
            c.hypervisor.unsync = unsync;
            c.hypervisor.maxShadowPages = 64;
          });
          const processes = [0, 1, 2].map(() => sim.spawnDemandPagedProcess());
          let current = processes[0];
          sim.os.switchTo(0, current);
          const shadow = shadowOf(sim);
          // Pages in three page tables, 2 MiB apart, so page tables and directories are shared and written.
          const address = (page: number) =>
            0x4000_0000n + BigInt(page % 3) * 0x20_0000n + BigInt(page) * 0x1000n;
          for (const step of steps) {
            if (step.op === "touch") touch(sim, address(step.page), step.kind);
            else if (step.op === "unmap")
              sim.os.unmapRange(processes[step.process], address(step.page), 0x1000n);
            else if (step.op === "protect") {
              sim.os.protectRange(
                processes[step.process],
                address(step.page),
                0x1000n,
                step.writable ? RW : RO,
              );
            } else {
              current = processes[step.process];
              sim.os.switchTo(0, current);
            }
            for (let page = 0; page < 12; page++) {
              const la = address(page);
              const gpa = guestPhysical(sim, current, la);
              const leaf = sim.os.lookup(current, la);
              const read = sim.machine.translate(0, la, READ);
              if (read.fault === 0) {
                expect(gpa).toBeDefined();
                expect(read.pa).toBe(shadow.vm.hostAddress(gpa ?? 0n));
              } else if (gpa === undefined) {
                expect(read.fault).toBe(PF);
              }
              const write = sim.machine.translate(0, la, WRITE);
              if (write.fault === 0) {
                // A writable SPTE means the guest allows the write and has already marked the page dirty.
                expect((leaf?.entry ?? 0n) & PTE_RW).toBe(PTE_RW);
                expect((leaf?.entry ?? 0n) & PTE_D).toBe(PTE_D);
              }
            }
          }
        },
      ),
      { numRuns: 30, seed: 77 },
    );
  });
});

describe("shadow paging: dirty logging by write protection (KVM's shadow MMU)", () => {
  function logging(): Simulation {
    return simulation((c) => {
      c.host.pageSize = "2M";
      c.hypervisor.dirtyLog = "wp";
    });
  }

  it("a written page is in the dirty log; a page only read is not", () => {
    const sim = logging();
    sim.start();
    const shadow = shadowOf(sim);
    const process = sim.processes[0];
    touch(sim, LA, WRITE);
    touch(sim, LA + 0x1000n, READ);
    const dirty = shadow.harvestDirty();
    const written = (guestPhysical(sim, process, LA) ?? 0n) & ~0xfffn;
    const read = (guestPhysical(sim, process, LA + 0x1000n) ?? 0n) & ~0xfffn;
    expect(dirty).toContain(written);
    expect(dirty).not.toContain(read);
  });

  it("logging maps 4K SPTEs even on 2M backing, so each page is logged on its own", () => {
    const sim = logging();
    sim.start();
    touch(sim, LA, WRITE);
    expect(shadowOf(sim).shadowLeaf(0, LA)?.level).toBe(1);
  });

  it("a harvest write-protects the dirty pages' SPTEs and flushes: the next write faults once and logs the page again", () => {
    const sim = logging();
    sim.start();
    const shadow = shadowOf(sim);
    const process = sim.processes[0];
    touch(sim, LA, WRITE);
    const flushes = shadow.counters.remote_tlb_flush;
    shadow.harvestDirty();
    expect((shadowOf(sim).shadowLeaf(0, LA)?.spte ?? 0n) & PTE_RW).toBe(0n);
    expect(shadow.counters.remote_tlb_flush).toBe(flushes + 1);
    const fixed = shadow.counters.pf_fixed;
    touch(sim, LA, READ);
    // Reads still go through the write-protected SPTE without an exit.
    expect(shadow.counters.pf_fixed).toBe(fixed);
    touch(sim, LA, WRITE);
    expect(shadow.counters.pf_fixed).toBe(fixed + 1);
    touch(sim, LA, WRITE);
    expect(shadow.counters.pf_fixed).toBe(fixed + 1);
    const again = shadow.harvestDirty();
    expect(again).toEqual([(guestPhysical(sim, process, LA) ?? 0n) & ~0xfffn]);
    expect(shadow.counters.dirty_log_harvests).toBe(2);
  });

  it("harvests run on the simulated clock, one per dirtyLogIntervalCycles", () => {
    const sim = simulation((c) => {
      c.hypervisor.dirtyLog = "wp";
      c.hypervisor.dirtyLogIntervalCycles = 1_000_000;
    });
    sim.start();
    for (let i = 0n; i < 200n; i++) touch(sim, LA + i * 0x1000n, WRITE);
    const periods = Math.floor(sim.stats().cycles / 1_000_000);
    expect(periods).toBeGreaterThan(0);
    expect(shadowOf(sim).counters.dirty_log_harvests).toBeGreaterThanOrEqual(periods - 1);
    expect(shadowOf(sim).counters.dirty_log_harvests).toBeLessThanOrEqual(periods);
  });
});
