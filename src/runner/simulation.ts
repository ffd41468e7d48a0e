// A simulation: one machine, the guest OS booted on it, and the loop that feeds records to the core
// and services its exits the way a kernel services traps. Sources of records (synthetic workloads,
// trace files) only fill the record buffer; everything else happens here.

import type { ResolvedConfig } from "../config/config.js";
import * as L from "../core/layout.js";
import { type ExitRecord, Machine, MemvirtError } from "../core/machine.js";
import {
  CR0_PG,
  CR0_WP,
  CR4_LA57,
  CR4_PCIDE,
  CR4_PGE,
  EFER_LMA,
  EFER_NXE,
  type Stats,
} from "../core/types.js";
import { type BuildName, type CoreExports, instantiateCoreAsync, type WasmSource } from "../core/wasm.js";
import { GuestOS, type Process } from "../guest/os.js";
import { NativeCpu } from "../guest/paging-cpu.js";
import { createVirtualMachine } from "../hypervisor/index.js";
import type { VirtualizationTechnique } from "../hypervisor/technique.js";

const CR0_PE = 1n;
const CR4_PAE = 1n << 5n;
const EFER_LME = 1n << 8n;
const PFEC_BITS = ["P", "W", "U", "RSVD", "ID", "PK", "SS"] as const;

export interface SimulationOptions {
  build?: BuildName;
  /** The core to run, as `MachineOptions.wasm` takes it. */
  wasm?: WasmSource;
  /** An instance made by `instantiateCoreAsync` (what `Simulation.create` passes). */
  core?: CoreExports;
}

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

export class Simulation {
  readonly machine: Machine;
  readonly os: GuestOS;
  readonly processes: Process[] = [];
  readonly exits: ExitCounts = {
    pageFault: 0,
    generalProtection: 0,
    pageFaultsByBit: { P: 0, W: 0, U: 0, RSVD: 0, ID: 0, PK: 0, SS: 0 },
  };

  /** A simulation on every host, a browser's main thread included (see `Machine.create`). */
  static async create(config: ResolvedConfig, options: SimulationOptions = {}): Promise<Simulation> {
    const core = options.core ?? (await instantiateCoreAsync(options.build, options.wasm));
    return new Simulation(config, { ...options, core });
  }

  constructor(
    readonly config: ResolvedConfig,
    options: SimulationOptions = {},
  ) {
    const machineConfig = { ...config.machine };
    if (config.mode === "native") {
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
    this.technique = config.mode === "native" ? undefined : createVirtualMachine(this.machine, config);
    const cpu = this.technique ? this.technique.cpu : new NativeCpu(this.machine);
    this.os = new GuestOS(cpu, config.guest, config.machine.cpus, config.seed);
    this.boot();
  }

  /** The hypervisor's technique, or undefined on bare metal. */
  readonly technique: VirtualizationTechnique | undefined;

  /** Firmware and early kernel: long mode with paging, NX, global pages and PCIDs as configured. */
  private boot(): void {
    this.technique?.boot(this.machine);
    // Host work on the simulated clock: the core stops with a budget exit every period.
    const period = this.technique?.periodCycles ?? 0;
    if (period > 0) this.machine.setBudget(period);
    const guest = this.config.guest;
    let cr4 = CR4_PAE;
    if (guest.globalPages) cr4 |= CR4_PGE;
    if (guest.pcid) cr4 |= CR4_PCIDE;
    if (guest.levels === 5) cr4 |= CR4_LA57;
    for (let cpu = 0; cpu < this.config.machine.cpus; cpu++) {
      this.machine.setRegs(cpu, {
        cr0: CR0_PG | CR0_WP | CR0_PE,
        cr4,
        efer: EFER_LME | EFER_LMA | EFER_NXE,
        cpl: 3,
      });
    }
  }

  /** A process whose whole user half pages in on demand with the configured page size. */
  spawnDemandPagedProcess(): Process {
    const process = this.os.createProcess();
    this.os.addVma(
      process,
      0n,
      this.os.userTop,
      { writable: true, user: true, executable: true },
      this.config.guest.pageSize,
    );
    this.processes.push(process);
    return process;
  }

  /**
   * Boots the configured processes (guest.processes), each demand-paged over the whole user half, and
   * schedules the first on every CPU.
   */
  start(): void {
    while (this.processes.length < this.config.guest.processes) this.spawnDemandPagedProcess();
    for (let cpu = 0; cpu < this.config.machine.cpus; cpu++) this.os.switchTo(cpu, this.processes[0]);
  }

  /** Records left in the current process's time slice (guest.quantum). */
  private sliceLeft = -1;
  private current = 0;

  /** Runs records [0, count) of the record buffer, servicing every exit and the scheduler's switches. */
  replayBuffer(count: number): void {
    const quantum = this.config.guest.quantum;
    if (quantum === 0 || this.processes.length < 2) {
      this.replayRange(0, count);
      return;
    }
    let index = 0;
    while (index < count) {
      if (this.sliceLeft < 0) this.sliceLeft = quantum;
      if (this.sliceLeft === 0) {
        // Round-robin context switch on every CPU: a MOV to CR3 each, with PCIDs if configured.
        this.current = (this.current + 1) % this.processes.length;
        for (let cpu = 0; cpu < this.config.machine.cpus; cpu++)
          this.os.switchTo(cpu, this.processes[this.current]);
        this.sliceLeft = quantum;
      }
      const end = Math.min(count, index + this.sliceLeft);
      this.replayRange(index, end);
      this.sliceLeft -= end - index;
      index = end;
    }
  }

  private replayRange(start: number, end: number): void {
    let index = start;
    while (index < end) {
      const stop = this.machine.replay(index, end);
      if (stop >= end) {
        // A slice can end on the batch's last record: its budget exit still wants the host's work.
        if (this.machine.exitPending("budget")) this.handleExit(this.machine.exit());
        return;
      }
      index = this.handleExit(this.machine.exit());
    }
  }

  /** Services one exit; returns the record index to resume at. */
  private handleExit(exit: ExitRecord): number {
    switch (exit.reason) {
      case "pageFault": {
        this.exits.pageFault++;
        PFEC_BITS.forEach((bit, i) => {
          if ((exit.qualification >> BigInt(i)) & 1n) this.exits.pageFaultsByBit[bit]++;
        });
        // Under shadow or paravirtual paging the hypervisor sees the #PF first.
        const action = this.technique ? this.technique.onPageFault(exit) : "deliver";
        if (action === "retry") return exit.index;
        if (
          action === "deliver" &&
          this.os.pageFault(exit.cpu, exit.linear, exit.qualification) === "retry"
        ) {
          return exit.index;
        }
        this.machine.completePending();
        return exit.index + 1;
      }
      case "eptViolation":
      case "eptMisconfig":
      case "npf": {
        if (!this.technique) throw new MemvirtError(`a ${exit.reason} exit on bare metal`, 1);
        if (this.technique.onNestedFault(exit) === "retry") return exit.index;
        this.machine.completePending();
        return exit.index + 1;
      }
      case "generalProtection":
        this.exits.generalProtection++;
        this.machine.completePending();
        return exit.index + 1;
      case "budget":
        this.technique?.periodic?.();
        return exit.index;
      case "badRecord":
        throw new BadRecordError(
          exit.index,
          `cpu ${exit.cpu} or kind ${exit.kind} is out of range (cpus: ${this.config.machine.cpus})`,
        );
      default:
        throw new MemvirtError(`the core stopped at record ${exit.index} without an exit`, 1);
    }
  }

  stats(): Stats {
    return this.machine.stats();
  }

  recordView(): DataView {
    return this.machine.recordView();
  }

  get recordCapacity(): number {
    return L.RECORD_CAPACITY;
  }
}
