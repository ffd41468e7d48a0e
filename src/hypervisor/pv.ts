// Paravirtual direct paging, the Xen-PV form: the guest's page tables hold host (machine) frames and
// the hardware walks them directly, with no second dimension. A table the hypervisor has validated
// (typed, "pinned") is read-only to the guest: every update to it is an mmu_update the hypervisor
// checks, so a guest can only map frames it owns. The guest kernel keeps thinking in its own
// pseudo-physical frames; this CPU translates them (the p2m and m2p tables) on the way in and out.
// As Linux on Xen does:
// - an address space is pinned (its tables validated) before it is first used (dup_mmap, activate_mm)
//   and unpinned at exit_mmap, so tearing it down writes plain memory;
// - a table linked into a pinned one is validated first (alloc_pte's write protection and pin), and
//   unpinned when it is freed (release_pte);
// - in lazy MMU mode the updates go into the per-CPU multicall buffer, whose 512 bytes of arguments
//   hold 32 mmu_update requests, and are issued a buffer at a time;
// - flush_tlb_multi is one MMUEXT_TLB_FLUSH_MULTI (or INVLPG_MULTI for one page) hypercall: the
//   guest sends no IPIs, Xen flushes the other CPUs itself.
import { type ExitRecord, type Machine, MemvirtError } from "../core/machine.js";
import { CR4_LA57 } from "../core/types.js";
import { type PagingCpu, readRange, type TlbFlush } from "../guest/paging-cpu.js";
import {
  CYCLES_HYPERCALL,
  type ExitAction,
  ExitCounter,
  GuestCpu,
  type HypervisorCosts,
  type TechniqueModule,
  type VirtualizationTechnique,
} from "./technique.js";
import type { Vm } from "./vm.js";

/** mmu_update requests one multicall buffer holds (arch/x86/xen/multicalls.c: MC_ARGS / 16 bytes). */
export const MULTICALL_BATCH = 32;
const ADDRESS_MASK = 0x000f_ffff_ffff_f000n;
const P = 1n;
const PS = 1n << 7n;

/** Bytes an entry of `level` maps or references: its page when it is a large leaf, else one table. */
function entryBytes(value: bigint, level: number): bigint {
  if ((level === 2 || level === 3) && (value & PS) !== 0n) return level === 2 ? 0x20_0000n : 0x4000_0000n;
  return 0x1000n;
}

export interface PvStats {
  hypercalls: number;
  /** Single mmu_update hypercalls (outside lazy MMU mode). */
  mmu_update: number;
  /** Single mmuext_op hypercalls (CR3 loads, INVLPG, INVPCID, TLB_FLUSH_MULTI). */
  mmuext_op: number;
  /** Batched hypercalls: lazy-mode buffers, pins and unpins. */
  multicall: number;
  /** Entry updates the hypervisor validated and applied, batched or not. */
  update_requests: number;
  rejected_updates: number;
  bounced_page_faults: number;
  /** Tables validated (pinned) and released. */
  pinned_tables: number;
  unpinned_tables: number;
  /** Stores to tables no pinned address space holds: plain memory, no hypercall. */
  direct_writes: number;
  /** MMUEXT_TLB_FLUSH_MULTI and INVLPG_MULTI hypercalls (the guest's shootdowns). */
  tlb_flush_multi: number;
}

export class ParavirtualPaging implements VirtualizationTechnique {
  readonly name = "pv" as const;
  readonly cpu: PagingCpu;
  readonly counters: PvStats = {
    hypercalls: 0,
    mmu_update: 0,
    mmuext_op: 0,
    multicall: 0,
    update_requests: 0,
    rejected_updates: 0,
    bounced_page_faults: 0,
    pinned_tables: 0,
    unpinned_tables: 0,
    direct_writes: 0,
    tlb_flush_multi: 0,
  };
  private readonly exitCounter: ExitCounter;
  /** Machine frame -> pseudo-physical frame, for the frames this VM's tables reference (Xen's m2p). */
  private readonly machineToGuest = new Map<bigint, bigint>();
  /** Guest frames (pseudo-physical) of validated page tables: read-only to the guest. */
  private readonly typed = new Set<bigint>();
  private lazy = false;
  /** Requests in the multicall buffer, not yet issued. */
  private pending = 0;
  /** CPUs a guest TLB_FLUSH_MULTI reached (Xen's own IPIs). */
  private flushTargets = 0;

  constructor(
    readonly machine: Machine,
    readonly vm: Vm,
    readonly costs: HypervisorCosts,
    readonly cpus: number,
  ) {
    this.exitCounter = new ExitCounter(machine, costs);
    this.cpu = new GuestCpu(this);
  }

  boot(machine: Machine): void {
    for (let cpu = 0; cpu < this.cpus; cpu++) machine.vmEnter(cpu, { nested: "none", vpid: this.vm.vpid });
  }

  /** Xen takes every guest #PF first and bounces it to the guest kernel: an exit and an injection. */
  onPageFault(exit: ExitRecord): ExitAction {
    this.exitCounter.take("pageFault", exit.cpu);
    this.counters.bounced_page_faults++;
    this.machine.chargeCycles(this.costs.inject, CYCLES_HYPERCALL);
    return "deliver";
  }

  onNestedFault(_exit: ExitRecord): ExitAction {
    throw new MemvirtError("paravirtual paging has no nested dimension, yet a nested fault was raised", 1);
  }

  /** One hypercall: the exit round trip. */
  private hypercall(kind: "mmu_update" | "mmuext_op" | "multicall", cpu = 0): void {
    this.exitCounter.take("hypercall", cpu);
    this.counters.hypercalls++;
    this.counters[kind]++;
  }

  /** The hypervisor's work on `requests` requests (validating and applying each). */
  private work(requests: number): void {
    this.machine.chargeCycles(this.costs.hypercall * requests, CYCLES_HYPERCALL);
  }

  /** A request: into the multicall buffer in lazy mode (issued when full), else a hypercall of its own. */
  private request(kind: "mmu_update" | "mmuext_op"): void {
    this.work(1);
    if (!this.lazy) {
      this.hypercall(kind);
      return;
    }
    this.pending++;
    if (this.pending === MULTICALL_BATCH) this.issue();
  }

  /** xen_mc_flush: the buffered requests go to the hypervisor in one hypercall. */
  private issue(): void {
    if (this.pending === 0) return;
    this.pending = 0;
    this.hypercall("multicall");
  }

  /** `requests` requests issued at once (a pin or unpin walk), a multicall per full buffer. */
  private batch(requests: number): void {
    this.work(requests);
    this.pending += requests;
    while (this.pending >= MULTICALL_BATCH) {
      this.pending -= MULTICALL_BATCH;
      this.hypercall("multicall");
    }
    if (!this.lazy) this.issue();
  }

  guestLazyMmu(on: boolean): void {
    if (!on) this.issue();
    this.lazy = on;
  }

  /** Pseudo-physical frame -> machine frame (Xen's p2m), for a frame of `bytes` that must be contiguous. */
  private machineFrame(guestFrame: bigint, bytes: bigint): bigint | undefined {
    if (!this.vm.memslotOf(guestFrame)) return undefined;
    if (bytes > this.vm.backingSize) return undefined;
    const machineFrame = this.vm.hostAddress(guestFrame);
    this.machineToGuest.set(machineFrame, guestFrame);
    return machineFrame;
  }

  /** The guest frames of the tables `table` (at `level`) links to, from slot `first` on. */
  private children(table: bigint, level: number, first = 0, last = 512): bigint[] {
    if (level === 1) return [];
    const found: bigint[] = [];
    const base = this.vm.hostAddress(table);
    for (let slot = first; slot < last; slot++) {
      const value = this.machine.readPhys64(base + BigInt(slot) * 8n);
      if ((value & P) === 0n || ((level === 2 || level === 3) && (value & PS) !== 0n)) continue;
      const child = this.machineToGuest.get(value & ADDRESS_MASK);
      if (child !== undefined) found.push(child);
    }
    return found;
  }

  /** The untyped tables of the tree at `table`, which validating it types. */
  private untypedTree(table: bigint, level: number, out: bigint[] = []): bigint[] {
    if (this.typed.has(table)) return out;
    out.push(table);
    for (const child of this.children(table, level)) this.untypedTree(child, level - 1, out);
    return out;
  }

  private get levels(): number {
    return (this.machine.getRegs(0).cr4 & CR4_LA57) !== 0n ? 5 : 4;
  }

  /**
   * xen_pgd_pin: the guest write-protects every table of the address space and pins its root
   * (MMUEXT_PIN_L4_TABLE); Xen validates each. One multicall per 32 requests.
   */
  guestPinTables(root: bigint): void {
    const tables = this.untypedTree(root, this.levels);
    if (tables.length === 0) return;
    for (const table of tables) this.typed.add(table);
    this.counters.pinned_tables += tables.length;
    this.batch(tables.length + 1);
  }

  /**
   * xen_pgd_unpin at exit_mmap: the root and the user half's tables become plain writable memory (the
   * kernel half's tables stay pinned, shared by every address space).
   */
  guestUnpinTables(root: bigint): void {
    if (!this.typed.has(root)) return;
    const levels = this.levels;
    const tables = [root];
    const walk = (table: bigint, level: number): void => {
      for (const child of this.children(table, level)) {
        if (!this.typed.has(child)) continue;
        tables.push(child);
        walk(child, level - 1);
      }
    };
    for (const child of this.children(root, levels, 0, 256)) {
      if (!this.typed.has(child)) continue;
      tables.push(child);
      walk(child, levels - 1);
    }
    for (const table of tables) this.typed.delete(table);
    this.counters.unpinned_tables += tables.length;
    this.batch(tables.length + 1);
  }

  /** xen_release_ptpage: a freed table of a pinned address space is unpinned and writable again. */
  guestReleaseTable(pa: bigint): void {
    const table = pa & ~0xfffn;
    if (!this.typed.delete(table)) return;
    this.counters.unpinned_tables++;
    this.request("mmuext_op");
  }

  /**
   * A store to a page-table entry. To a validated table it is an mmu_update: the new entry is checked
   * (its frame must be the VM's own, and contiguous in machine memory when it maps a large page), a
   * table it links is validated first, and the frame is rewritten to the machine frame. To a table no
   * pinned address space holds it is a plain store (of a machine frame all the same).
   */
  guestStore(entryGpa: bigint, value: bigint, level: number): void {
    const table = entryGpa & ~0xfffn;
    const typed = this.typed.has(table);
    if (typed) {
      this.counters.update_requests++;
      this.request("mmu_update");
    } else this.counters.direct_writes++;
    // The table itself must be the VM's own memory.
    if (!this.vm.memslotOf(entryGpa)) {
      this.counters.rejected_updates++;
      return;
    }
    let stored = 0n;
    if ((value & P) !== 0n) {
      const bytes = entryBytes(value, level);
      const frame = value & ADDRESS_MASK & ~(bytes - 1n);
      const machineFrame = this.machineFrame(frame, bytes);
      if (machineFrame === undefined) {
        this.counters.rejected_updates++;
        return;
      }
      stored = (value & ~(ADDRESS_MASK & ~(bytes - 1n))) | machineFrame;
      if (typed && level > 1 && bytes === 0x1000n && !this.typed.has(frame)) {
        // alloc_pte/alloc_pmd: the new table is write-protected and pinned before it is linked.
        const tables = this.untypedTree(frame, level - 1);
        for (const child of tables) this.typed.add(child);
        this.counters.pinned_tables += tables.length;
        this.request("mmuext_op");
      }
    }
    this.machine.writePhys64(this.vm.hostAddress(entryGpa), stored);
  }
  /** Reads an entry back in the guest's pseudo-physical terms (through the m2p table). */
  guestLoad(entryGpa: bigint): bigint {
    if (!this.vm.memslotOf(entryGpa)) return 0n;
    return this.pseudoPhysical(this.machine.readPhys64(this.vm.hostAddress(entryGpa)));
  }

  guestLoadRange(gpa: bigint, count: number): bigint[] {
    if (!this.vm.memslotOf(gpa)) return new Array<bigint>(count).fill(0n);
    return readRange(this.machine, this.vm.hostAddress(gpa), count).map((value) =>
      this.pseudoPhysical(value),
    );
  }

  /** An entry as the guest reads it: its machine frame back to the pseudo-physical one (m2p). */
  private pseudoPhysical(value: bigint): bigint {
    if ((value & P) === 0n) return value;
    // Reads do not know the level; only the frame matters, and a large frame is also a 4K-aligned one.
    const bytes = 0x1000n;
    const machineFrame = value & ADDRESS_MASK & ~(bytes - 1n);
    const guestFrame = this.machineToGuest.get(machineFrame);
    if (guestFrame === undefined) return 0n;
    return (value & ~(ADDRESS_MASK & ~(bytes - 1n))) | guestFrame;
  }

  /**
   * mmuext_op NEW_BASEPTR: the hypervisor loads the machine address of the guest's root, validating
   * the address space first if nothing pinned it.
   */
  guestLoadCr3(cpu: number, value: bigint): void {
    this.issue();
    const root = value & ADDRESS_MASK;
    if (!this.vm.memslotOf(root)) {
      this.hypercall("mmuext_op", cpu);
      this.work(1);
      this.counters.rejected_updates++;
      return;
    }
    if (!this.typed.has(root)) this.guestPinTables(root);
    this.hypercall("mmuext_op", cpu);
    this.work(1);
    const machineRoot = this.vm.hostAddress(root);
    this.machine.movCr3(cpu, (value & ~ADDRESS_MASK) | machineRoot);
  }

  guestInvlpg(cpu: number, la: bigint): void {
    this.issue();
    this.hypercall("mmuext_op", cpu);
    this.work(1);
    this.machine.invlpg(cpu, la);
  }

  guestInvpcid(cpu: number, type: number, pcid: number, la: bigint): void {
    this.issue();
    this.hypercall("mmuext_op", cpu);
    this.work(1);
    this.machine.invpcid(cpu, type, pcid, la);
  }

  /**
   * xen_flush_tlb_multi: one hypercall, INVLPG_MULTI for a single page, else TLB_FLUSH_MULTI; Xen
   * interrupts the targets' CPUs itself (the IPIs are its cost) and flushes them.
   */
  guestFlushOthers(
    from: number,
    targets: readonly number[],
    flush: TlbFlush,
    _handler: (cpu: number) => void,
  ): void {
    this.issue();
    this.hypercall("mmuext_op", from);
    this.work(1);
    this.counters.tlb_flush_multi++;
    this.flushTargets += targets.length;
    this.machine.chargeCycles(flush.ipiCycles * targets.length, CYCLES_HYPERCALL);
    const page = flush.pages?.length === 1 ? flush.pages[0] : undefined;
    for (const target of targets) {
      if (page !== undefined) this.machine.invlpg(target, page);
      else this.machine.invpcid(target, 3, 0, 0n);
    }
  }

  stats(): Record<string, number> {
    return { ...this.counters };
  }

  shootdownStats(): Record<string, number> {
    return { ipis: this.flushTargets, exits: this.counters.tlb_flush_multi };
  }

  exits(): Record<string, number> {
    return { ...this.exitCounter.byReason };
  }
}

export const pvTechnique: TechniqueModule = {
  virtual: true,
  nestedTables: false,
  create: ({ machine, vm, cpuIds }, { hypervisor }) =>
    new ParavirtualPaging(machine, vm, hypervisor.costs, cpuIds.length),
};
