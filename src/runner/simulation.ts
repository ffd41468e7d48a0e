// A simulation: the host with one guest, the configured mode's technique under it (bare metal for
// "native"), its processes and their scheduler. Sources of records (synthetic workloads, trace files)
// only fill the record region; the host's loop does the rest.

import type { ResolvedConfig } from "../config/config.js";
import type { Stats } from "../core/types.js";
import { type BuildName, type CoreExports, instantiateCoreAsync, type WasmSource } from "../core/wasm.js";
import type { GuestOS, Process } from "../guest/os.js";
import { type Guest, Host } from "../host/host.js";
import type { VirtualizationTechnique } from "../hypervisor/technique.js";
import { TECHNIQUES } from "../hypervisor/techniques.js";

export { BadRecordError, type ExitCounts } from "../host/host.js";

export interface SimulationOptions {
  build?: BuildName;
  /** The core to run, as `MachineOptions.wasm` takes it. */
  wasm?: WasmSource;
  /** An instance made by `instantiateCoreAsync` (what `Simulation.create` passes). */
  core?: CoreExports;
  /** See HostOptions.inCoreDemandPaging. */
  inCoreDemandPaging?: boolean;
}

export class Simulation extends Host {
  readonly processes: Process[] = [];
  /** Records left in the current process's time slice (guest.quantum). */
  private sliceLeft = -1;
  private current = 0;

  /** A simulation on every host, a browser's main thread included (see `Machine.create`). */
  static async create(config: ResolvedConfig, options: SimulationOptions = {}): Promise<Simulation> {
    const core = options.core ?? (await instantiateCoreAsync(options.build, options.wasm));
    return new Simulation(config, { ...options, core });
  }

  constructor(config: ResolvedConfig, options: SimulationOptions = {}) {
    const technique = TECHNIQUES[config.mode];
    super(config, { ...options, virtual: technique.virtual });
    this.addGuest({
      technique,
      settings: {
        hypervisor: config.hypervisor,
        hostLevels: config.host.levels,
        guestMemory: config.guest.memory,
      },
      cpus: config.machine.cpus,
      guest: config.guest,
      seed: config.seed,
      memslotBytes: BigInt(config.guest.memory),
      backing: config.host.pageSize,
    });
    this.arm();
  }

  /** The one guest. */
  get guest(): Guest {
    return this.guests[0];
  }

  get os(): GuestOS {
    return this.guests[0].os;
  }

  /** The hypervisor's technique, or undefined on bare metal. */
  get technique(): VirtualizationTechnique | undefined {
    const guest = this.guests[0];
    return guest.vm ? (guest.technique as VirtualizationTechnique) : undefined;
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

  /** Runs records [0, count) of the record buffer, servicing every exit and the scheduler's switches. */
  replay(count: number): void {
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

  /** `replay`, by the name it had before the host. */
  replayBuffer(count: number): void {
    this.replay(count);
  }

  stats(): Stats {
    return this.machine.stats();
  }
}
