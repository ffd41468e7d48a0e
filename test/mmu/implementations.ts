// The two implementations of docs/MODEL.md behind one interface, so a single rule suite can run every
// test against each: the TypeScript reference model (RefMachine) and the WebAssembly core (Machine,
// built by `asc`, release or debug as MEMVIRT_BUILD picks).

import { RefMachine } from "../../reference/machine.js";
import { Machine } from "../../src/core/machine.js";
import type { AccessResult, MachineConfig, Regs, Stats } from "../../src/core/types.js";

/** The MMU operations the rule tests drive: physical memory, registers, instructions, accesses, stats. */
export interface Mmu {
  readonly config: MachineConfig;
  writePhys64(pa: bigint, value: bigint): void;
  readPhys64(pa: bigint): bigint;
  /** Raw register load, without the flushes the instructions that write these registers imply. */
  setRegs(cpu: number, regs: Partial<Regs>): void;
  getRegs(cpu: number): Regs;
  movCr3(cpu: number, value: bigint): void;
  /** false: #GP, nothing changed. */
  movCr4(cpu: number, value: bigint): boolean;
  invlpg(cpu: number, la: bigint): void;
  /** false: #GP, nothing changed. */
  invpcid(cpu: number, type: number, pcid: number, la?: bigint): boolean;
  flushAll(cpu: number): void;
  /** One access (MODEL.md §4); `retry` marks the retry of a faulted record (§11). */
  access(cpu: number, la: bigint, kind: number, flags?: number, retry?: boolean): AccessResult;
  countAccess(n?: number): void;
  stats(): Stats;
  resetStats(): void;
  chargeCycles(cycles: number): void;
}

export interface Implementation {
  name: string;
  create(cfg: MachineConfig): Mmu;
}

/**
 * Registers of a CPU that has just entered long mode with paging on: CR0 = PG|WP|PE, CR4 = PAE,
 * EFER = LMA|LME, RFLAGS = 2 (bit 1 always reads 1). RefMachine starts every CPU so; the core starts
 * with zeroed registers, so its adapter loads these on every CPU.
 */
export const INITIAL_REGS: Readonly<Regs> = {
  cr0: 0x8001_0001n,
  cr3: 0n,
  cr4: 0x20n,
  efer: 0x500n,
  pkru: 0,
  pkrs: 0,
  rflags: 0x2n,
  cpl: 0,
};

class ReferenceMmu implements Mmu {
  private readonly machine: RefMachine;

  constructor(cfg: MachineConfig) {
    this.machine = new RefMachine(cfg);
  }

  get config(): MachineConfig {
    return this.machine.config;
  }

  writePhys64(pa: bigint, value: bigint): void {
    this.machine.writePhys64(pa, value);
  }

  readPhys64(pa: bigint): bigint {
    return this.machine.readPhys64(pa);
  }

  setRegs(cpu: number, regs: Partial<Regs>): void {
    this.machine.setRegs(cpu, regs);
  }

  getRegs(cpu: number): Regs {
    return this.machine.getRegs(cpu);
  }

  movCr3(cpu: number, value: bigint): void {
    this.machine.movCr3(cpu, value);
  }

  movCr4(cpu: number, value: bigint): boolean {
    return this.machine.movCr4(cpu, value);
  }

  invlpg(cpu: number, la: bigint): void {
    this.machine.invlpg(cpu, la);
  }

  invpcid(cpu: number, type: number, pcid: number, la = 0n): boolean {
    return this.machine.invpcid(cpu, type, pcid, la);
  }

  flushAll(cpu: number): void {
    this.machine.flushAll(cpu);
  }

  access(cpu: number, la: bigint, kind: number, flags = 0, retry = false): AccessResult {
    return this.machine.access(cpu, la, kind, flags, retry);
  }

  countAccess(n = 1): void {
    this.machine.countAccess(n);
  }

  stats(): Stats {
    return this.machine.stats();
  }

  resetStats(): void {
    this.machine.resetStats();
  }

  chargeCycles(cycles: number): void {
    this.machine.chargeCycles(cycles);
  }
}

class CoreMmu implements Mmu {
  private readonly machine: Machine;

  constructor(cfg: MachineConfig) {
    // The build comes from MEMVIRT_BUILD (src/core/wasm.ts defaultBuild).
    this.machine = new Machine(cfg);
    for (let cpu = 0; cpu < cfg.cpus; cpu++) this.machine.setRegs(cpu, INITIAL_REGS);
  }

  get config(): MachineConfig {
    return this.machine.config;
  }

  writePhys64(pa: bigint, value: bigint): void {
    this.machine.writePhys64(pa, value);
  }

  readPhys64(pa: bigint): bigint {
    return this.machine.readPhys64(pa);
  }

  setRegs(cpu: number, regs: Partial<Regs>): void {
    this.machine.setRegs(cpu, regs);
  }

  getRegs(cpu: number): Regs {
    return this.machine.getRegs(cpu);
  }

  movCr3(cpu: number, value: bigint): void {
    this.machine.movCr3(cpu, value);
  }

  movCr4(cpu: number, value: bigint): boolean {
    return this.machine.movCr4(cpu, value);
  }

  invlpg(cpu: number, la: bigint): void {
    this.machine.invlpg(cpu, la);
  }

  invpcid(cpu: number, type: number, pcid: number, la = 0n): boolean {
    return this.machine.invpcid(cpu, type, pcid, la);
  }

  flushAll(cpu: number): void {
    this.machine.flushAll(cpu);
  }

  access(cpu: number, la: bigint, kind: number, flags = 0, retry = false): AccessResult {
    return this.machine.translate(cpu, la, kind, flags, retry);
  }

  countAccess(n = 1): void {
    this.machine.countAccess(n);
  }

  stats(): Stats {
    return this.machine.stats();
  }

  resetStats(): void {
    this.machine.resetStats();
  }

  chargeCycles(cycles: number): void {
    this.machine.chargeCycles(cycles);
  }
}

export const IMPLEMENTATIONS: readonly Implementation[] = [
  { name: "reference", create: (cfg) => new ReferenceMmu(cfg) },
  { name: "core", create: (cfg) => new CoreMmu(cfg) },
];
