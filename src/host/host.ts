// One host: the machine, host memory, the guests on it (the bare-metal kernel, one VM or several),
// their vCPUs, and the one loop that feeds records to the core and dispatches its exits, the way a
// kernel services traps. Every source of records drives this loop: traces, synthetic and multi-VM
// workloads; the DMA devices run beside it on the same machine and memory.
//
// The loop reaches everything through hook tables (host/hooks.ts): each guest's technique (native,
// pv, shadow, ept, npt; KVM's kvm_x86_ops for memory) and its kernel's #PF handler, the nested-fault
// hooks of the host's memory management, hooks on completed records and timers on the simulated
// clock. Plug-ins are handed services; none of them imports this file.

import type { ResolvedConfig } from "../config/config.js";
import * as L from "../core/layout.js";
import { type ExitRecord, Machine, MemvirtError } from "../core/machine.js";
import { S_CYCLES } from "../core/stats-layout.js";
import {
  CR0_PG,
  CR0_WP,
  CR4_LA57,
  CR4_PCIDE,
  CR4_PGE,
  EFER_LMA,
  EFER_NXE,
  type PageSize,
} from "../core/types.js";
import type { BuildName, CoreExports, WasmSource } from "../core/wasm.js";
import type { GuestConfig } from "../guest/config.js";
import type { FrameAllocator } from "../guest/frames.js";
import { GuestOS } from "../guest/os.js";
import type { PagingCpu, TlbFlush } from "../guest/paging-cpu.js";
import type {
  ExitAction,
  PagingTechnique,
  TechniqueModule,
  TechniqueSettings,
} from "../hypervisor/technique.js";
import { HostMemory, type LargeBacking, Vm } from "../hypervisor/vm.js";
import { DemandPaging } from "./demand-paging.js";
import type { DmaSource, DmaUnit, GuestKernel, HostTimer, NestedFaultHook, RecordsHook } from "./hooks.js";

const CR0_PE = 1n;
const CR4_PAE = 1n << 5n;
const EFER_LME = 1n << 8n;
const PFEC_BITS = ["P", "W", "U", "RSVD", "ID", "PK", "SS"] as const;

export interface ExitCounts {
  pageFault: number;
  generalProtection: number;
  /** #PF exits by error-code bit. */
  pageFaultsByBit: Record<(typeof PFEC_BITS)[number], number>;
}

/** A record the core refused (a cpu beyond the configured ones, an unknown kind); `index` is its
 *  place in the batch, so a trace reader can name the file position. */
export class BadRecordError extends MemvirtError {
  constructor(
    readonly index: number,
    message: string,
  ) {
    super(message);
  }
}

/** A guest on the host: its technique, its kernel, its VM (none on bare metal) and its vCPUs. */
export interface Guest {
  readonly index: number;
  /** Its vCPUs run pinned on machine CPUs firstCpu .. firstCpu + cpus - 1, vCPU i on firstCpu + i. */
  readonly firstCpu: number;
  readonly cpus: number;
  readonly technique: PagingTechnique;
  readonly os: GuestOS;
  readonly vm?: Vm;
  /** The #PF handler: the guest OS's own, unless a plug-in models more of the guest. */
  kernel: GuestKernel;
}

/** How to boot one guest. */
export interface GuestPlan {
  technique: TechniqueModule;
  settings: TechniqueSettings;
  /** vCPUs, pinned to the next free machine CPUs. */
  cpus: number;
  /** The guest kernel's configuration (its memory is the allocator's, not necessarily the memslot's). */
  guest: GuestConfig;
  seed: number;
  /** A VM's memory: one memslot from 0 of this many bytes, backed with pages of `backing`. */
  memslotBytes: bigint;
  backing: PageSize;
  /** 2M host pages for the first touch of a region (THP-like 4K backing). */
  largeBacking?: LargeBacking;
  /** Where the guest kernel's page tables come from, when not from its own frames. */
  tableFrames?: FrameAllocator;
}

export interface HostOptions {
  build?: BuildName;
  /** The core to run, as `MachineOptions.wasm` takes it. */
  wasm?: WasmSource;
  /** An instance made by `instantiateCoreAsync` (what `Simulation.create` passes). */
  core?: CoreExports;
  /** Machine CPUs (default: the config's). */
  cpus?: number;
  /** Whether guests run in VMs: host memory exists, and the nested caches with it. */
  virtual: boolean;
  /** Host memory's frames, when not the default allocator over host.memory (the overcommit host's). */
  frames?: (machine: Machine) => FrameAllocator;
  /**
   * Whether the core may run the guest kernel's anonymous demand faults itself where the technique
   * allows it (default true; the results are the same either way, which tests check).
   */
  inCoreDemandPaging?: boolean;
}

export class Host {
  readonly machine: Machine;
  /** Host physical memory: the VMs' backing and the hypervisor's tables (none on bare metal). */
  readonly memory: HostMemory | undefined;
  readonly guests: Guest[] = [];
  readonly exits: ExitCounts = {
    pageFault: 0,
    generalProtection: 0,
    pageFaultsByBit: { P: 0, W: 0, U: 0, RSVD: 0, ID: 0, PK: 0, SS: 0 },
  };
  /** Simulated time the host idled with no vCPU running (after the accesses). */
  idleCycles = 0;
  private readonly guestOfCpu: number[] = [];
  private readonly timers: HostTimer[] = [];
  private readonly nestedHooks: NestedFaultHook[] = [];
  private readonly recordHooks: RecordsHook[] = [];
  private readonly inCoreDemandPaging: boolean;
  /** The core's demand paging, while it is on (see demandPaging()). */
  private demand: DemandPaging | undefined;

  constructor(
    readonly config: ResolvedConfig,
    options: HostOptions,
  ) {
    const machineConfig = { ...config.machine, cpus: options.cpus ?? config.machine.cpus };
    if (!options.virtual) {
      machineConfig.nestedTlb = null;
      machineConfig.nestedPsc = null;
    }
    this.machine = new Machine(machineConfig, {
      build: options.build,
      wasm: options.wasm,
      core: options.core,
      backedFramesLog2: config.memory.backedFramesLog2,
      memoryLimitMiB: config.memory.limitMiB,
    });
    this.memory = options.virtual
      ? new HostMemory(config.host.memory, config.seed, options.frames?.(this.machine))
      : undefined;
    this.inCoreDemandPaging = options.inCoreDemandPaging ?? true;
  }

  /** Machine CPUs. */
  get cpus(): number {
    return this.machine.config.cpus;
  }

  // --- guests and plug-ins --------------------------------------------------------------------------

  /**
   * Boots a guest on the next free CPUs: its VM and memslot, its technique, its kernel, VM entry, and
   * long mode with paging, NX, global pages and PCIDs as configured.
   */
  addGuest(plan: GuestPlan): Guest {
    const index = this.guests.length;
    const firstCpu = this.guestOfCpu.length;
    if (firstCpu + plan.cpus > this.cpus)
      throw new MemvirtError(`guest ${index + 1} needs CPUs beyond the machine's ${this.cpus}`, 1);
    const cpuIds = Array.from({ length: plan.cpus }, (_, i) => firstCpu + i);
    let technique: PagingTechnique;
    let vm: Vm | undefined;
    if (plan.technique.virtual) {
      const memory = this.memory;
      if (!memory) throw new MemvirtError("a VM on a host without host memory", 1);
      vm = new Vm(index + 1, memory, plan.backing, plan.settings.hypervisor.vpid ? index + 1 : 0);
      if (plan.largeBacking) vm.largeBacking = plan.largeBacking;
      vm.addMemslot(0n, plan.memslotBytes, { logDirty: plan.settings.hypervisor.dirtyLog !== "off" });
      technique = plan.technique.create({ machine: this.machine, vm, memory, cpuIds }, plan.settings);
    } else {
      technique = plan.technique.create({ machine: this.machine, cpuIds }, plan.settings);
    }
    const cpu = firstCpu === 0 ? technique.cpu : new PinnedCpu(technique.cpu, firstCpu);
    const os = new GuestOS(cpu, plan.guest, plan.cpus, plan.seed, plan.tableFrames);
    technique.boot(this.machine);
    const period = technique.periodCycles ?? 0;
    if (period > 0) this.addTimer(new TechniqueTimer(technique, period, this.now()));
    let cr4 = CR4_PAE;
    if (plan.guest.globalPages) cr4 |= CR4_PGE;
    if (plan.guest.pcid) cr4 |= CR4_PCIDE;
    if (plan.guest.levels === 5) cr4 |= CR4_LA57;
    for (const id of cpuIds) {
      this.machine.setRegs(id, {
        cr0: CR0_PG | CR0_WP | CR0_PE,
        cr4,
        efer: EFER_LME | EFER_LMA | EFER_NXE,
        cpl: 3,
      });
      this.guestOfCpu.push(index);
    }
    const guest: Guest = { index, firstCpu, cpus: plan.cpus, technique, os, vm, kernel: os };
    this.guests.push(guest);
    return guest;
  }

  addTimer(timer: HostTimer): void {
    this.timers.push(timer);
  }

  addNestedFaultHook(hook: NestedFaultHook): void {
    this.nestedHooks.push(hook);
  }

  addRecordsHook(hook: RecordsHook): void {
    this.recordHooks.push(hook);
  }

  /** Starts the clock's host work: the core stops every finest timer period (at least 1000 cycles). */
  arm(): void {
    const periods = this.timers.map((timer) => timer.period ?? 0).filter((period) => period > 0);
    if (periods.length > 0) this.machine.setBudget(Math.max(1000, Math.min(...periods)));
  }

  // --- the loop -------------------------------------------------------------------------------------

  /** Runs records [0, count) of the record region, servicing every exit. */
  replay(count: number): void {
    this.replayRange(0, count);
  }

  /** Runs records [start, end) of the record region, servicing every exit. */
  replayRange(start: number, end: number): void {
    let index = start;
    const demand = this.demandPaging();
    while (index < end) {
      demand?.publish();
      this.machine.replay(index, end);
      // The faults the core handled are accounted before any other software runs.
      demand?.drain((_cpu, error) => this.countPageFault(error));
      const exit = this.machine.exit();
      // Records before the exit completed (a budget exit's index is the record after the slice).
      if (this.recordHooks.length > 0) {
        const done = exit.reason === "none" ? end : exit.index;
        for (const hook of this.recordHooks) hook.recordsCompleted(index, done);
      }
      if (exit.reason === "none") return;
      index = this.handleExit(exit);
    }
  }

  /**
   * DMA traffic: the source fills a batch of requests, the unit translates them, the source completes
   * its operations, and the host drains the unit's fault log (its interrupt handler), to the end.
   */
  runDma(unit: DmaUnit, source: DmaSource): void {
    while (this.dmaBatch(unit, source) > 0);
  }

  /** One batch of `runDma`; returns its request count, 0 when the source has no more. */
  dmaBatch(unit: DmaUnit, source: DmaSource): number {
    const count = source.fill(() => unit.recordView());
    if (count === 0) return 0;
    unit.runRecords(count);
    source.results(unit.recordView(), count);
    unit.drainFaults();
    return count;
  }

  /** The exit dispatcher: services one exit; returns the record index to resume at. */
  private handleExit(exit: ExitRecord): number {
    switch (exit.reason) {
      case "pageFault": {
        this.countPageFault(exit.qualification);
        const guest = this.guestAt(exit.cpu);
        // Under shadow or paravirtual paging the hypervisor sees the #PF first.
        const action = guest.technique.onPageFault(exit);
        if (action === "retry") return exit.index;
        if (
          action === "deliver" &&
          guest.kernel.pageFault(exit.cpu - guest.firstCpu, exit.linear, exit.qualification) === "retry"
        ) {
          return exit.index;
        }
        this.machine.completePending();
        return exit.index + 1;
      }
      case "eptViolation":
      case "eptMisconfig":
      case "npf": {
        const guest = this.guestAt(exit.cpu);
        let action: ExitAction | undefined;
        for (const hook of this.nestedHooks) {
          action = hook.nestedFault(guest.index, exit);
          if (action) break;
        }
        if ((action ?? guest.technique.onNestedFault(exit)) === "retry") return exit.index;
        this.machine.completePending();
        return exit.index + 1;
      }
      case "pmlFull": {
        const technique = this.guestAt(exit.cpu).technique;
        if (!technique.onPmlFull) throw new MemvirtError(`cpu ${exit.cpu}: a PML-full exit without PML`, 1);
        // The access did not happen (SDM 29.3.6): once the log is drained it runs again.
        technique.onPmlFull(exit);
        return exit.index;
      }
      case "generalProtection":
        this.exits.generalProtection++;
        this.machine.completePending();
        return exit.index + 1;
      case "budget":
        this.runTimers();
        return exit.index;
      case "badRecord":
        throw new BadRecordError(
          exit.index,
          `cpu ${exit.cpu} or kind ${exit.kind} is out of range (cpus: ${this.cpus})`,
        );
      default:
        throw new MemvirtError(`the core stopped at record ${exit.index} without an exit`, 1);
    }
  }

  private countPageFault(errorCode: bigint): void {
    this.exits.pageFault++;
    PFEC_BITS.forEach((bit, i) => {
      if ((errorCode >> BigInt(i)) & 1n) this.exits.pageFaultsByBit[bit]++;
    });
  }

  /**
   * The core's demand paging (assembly/demand.ts), when the kernel's demand faults need no software
   * but the kernel's own: one guest, whose technique lets its page-table stores land as they are, its
   * own #PF handler, and no hook that must see records one exit at a time. Off otherwise.
   */
  private demandPaging(): DemandPaging | undefined {
    const guest = this.guests.length === 1 ? this.guests[0] : undefined;
    const allowed =
      this.inCoreDemandPaging &&
      guest !== undefined &&
      guest.technique.plainKernelStores === true &&
      guest.kernel === guest.os &&
      this.recordHooks.length === 0;
    if (allowed) this.demand ??= new DemandPaging(this.machine, guest.os);
    else if (this.demand) {
      this.demand.withdraw();
      this.demand = undefined;
    }
    return this.demand;
  }

  private guestAt(cpu: number): Guest {
    return this.guests[this.guestOfCpu[cpu]];
  }

  // --- time -----------------------------------------------------------------------------------------

  /** Simulated time in cycles: everything the machine charged, plus idle time. */
  now(): number {
    return this.machine.counter(S_CYCLES) + this.idleCycles;
  }

  /** Fires every timer that is due, earlier registrations first, until none is. */
  runTimers(): void {
    for (let guard = 0; guard < 1_000_000; guard++) {
      const now = this.now();
      const due = this.timers.find((timer) => timer.nextAt <= now);
      if (!due) return;
      due.fire(now);
    }
    throw new MemvirtError("host timers did not settle", 1);
  }

  /** Lets simulated time pass with no vCPU running, firing the timers on the way. */
  idleUntil(target: number): void {
    while (this.now() < target) {
      const next = Math.min(target, ...this.timers.map((timer) => timer.nextAt));
      if (next > this.now()) this.idleCycles += next - this.now();
      this.runTimers();
    }
  }

  // --- records --------------------------------------------------------------------------------------

  recordView(): DataView {
    return this.machine.recordView();
  }

  get recordCapacity(): number {
    return L.RECORD_CAPACITY;
  }
}

/** A guest's paging operations on its own vCPU numbers, sent to the machine CPUs they are pinned to. */
class PinnedCpu implements PagingCpu {
  constructor(
    private readonly inner: PagingCpu,
    private readonly firstCpu: number,
  ) {}
  writeEntry(pa: bigint, value: bigint, level: number): void {
    this.inner.writeEntry(pa, value, level);
  }
  readEntry(pa: bigint): bigint {
    return this.inner.readEntry(pa);
  }
  readEntries(pa: bigint, count: number): bigint[] {
    return this.inner.readEntries(pa, count);
  }
  loadCr3(cpu: number, value: bigint): void {
    this.inner.loadCr3(this.firstCpu + cpu, value);
  }
  invlpg(cpu: number, la: bigint): void {
    this.inner.invlpg(this.firstCpu + cpu, la);
  }
  invpcid(cpu: number, type: number, pcid: number, la: bigint): void {
    this.inner.invpcid(this.firstCpu + cpu, type, pcid, la);
  }
  charge(cycles: number): void {
    this.inner.charge(cycles);
  }
  releaseTable(pa: bigint): void {
    this.inner.releaseTable(pa);
  }
  lazyMmu(on: boolean): void {
    this.inner.lazyMmu(on);
  }
  flushTlbOthers(
    from: number,
    targets: readonly number[],
    flush: TlbFlush,
    handler: (cpu: number) => void,
  ): void {
    const first = this.firstCpu;
    const pinned = targets.map((target) => first + target);
    this.inner.flushTlbOthers(first + from, pinned, flush, (cpu) => handler(cpu - first));
  }
  pinTables(root: bigint): void {
    this.inner.pinTables(root);
  }
  unpinTables(root: bigint): void {
    this.inner.unpinTables(root);
  }
}

/**
 * A technique's periodic work (the VMM's dirty-log harvest): once at each budget stop at or past its
 * next period boundary, as the core's own deadline moves.
 */
class TechniqueTimer implements HostTimer {
  nextAt: number;

  constructor(
    private readonly technique: PagingTechnique,
    readonly period: number,
    now: number,
  ) {
    this.nextAt = (Math.floor(now / period) + 1) * period;
  }

  fire(now: number): void {
    this.nextAt = (Math.floor(now / this.period) + 1) * this.period;
    this.technique.periodic?.();
  }
}

export const HOST_CLASSES = { PinnedCpu, TechniqueTimer, DemandPaging };
