// Paravirtual direct paging, the Xen-PV form: the guest's page tables hold host (machine) frames and
// the hardware walks them directly, with no second dimension. The guest never writes them itself:
// every update is a hypercall (mmu_update, mmuext_op) that the hypervisor validates, so a guest can only
// map frames it owns. The guest kernel keeps thinking in its own pseudo-physical frames; this CPU
// translates them (the p2m and m2p tables) on the way in and out.
import { type ExitRecord, type Machine, MemvirtError } from "../core/machine.js";
import type { PagingCpu } from "../guest/paging-cpu.js";
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
  mmu_update: number;
  mmuext_op: number;
  rejected_updates: number;
  bounced_page_faults: number;
}

export class ParavirtualPaging implements VirtualizationTechnique {
  readonly name = "pv" as const;
  readonly cpu: PagingCpu;
  readonly counters: PvStats = {
    hypercalls: 0,
    mmu_update: 0,
    mmuext_op: 0,
    rejected_updates: 0,
    bounced_page_faults: 0,
  };
  private readonly exitCounter: ExitCounter;
  /** Machine frame -> pseudo-physical frame, for the frames this VM's tables reference (Xen's m2p). */
  private readonly machineToGuest = new Map<bigint, bigint>();

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

  /** One hypercall: the exit, the hypervisor's work. */
  private hypercall(kind: "mmu_update" | "mmuext_op", cpu = 0): void {
    this.exitCounter.take("hypercall", cpu);
    this.counters.hypercalls++;
    this.counters[kind]++;
    this.machine.chargeCycles(this.costs.hypercall, CYCLES_HYPERCALL);
  }

  /** Pseudo-physical frame -> machine frame (Xen's p2m), for a frame of `bytes` that must be contiguous. */
  private machineFrame(guestFrame: bigint, bytes: bigint): bigint | undefined {
    if (!this.vm.memslotOf(guestFrame)) return undefined;
    if (bytes > this.vm.backingSize) return undefined;
    const machineFrame = this.vm.hostAddress(guestFrame);
    this.machineToGuest.set(machineFrame, guestFrame);
    return machineFrame;
  }

  /**
   * mmu_update: validates the new entry (its frame must be the VM's own, and contiguous in machine
   * memory when it maps a large page), rewrites its frame to the machine frame and stores it.
   */
  guestStore(entryGpa: bigint, value: bigint, level: number): void {
    this.hypercall("mmu_update");
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
    }
    this.machine.writePhys64(this.vm.hostAddress(entryGpa), stored);
  }

  /** Reads an entry back in the guest's pseudo-physical terms (through the m2p table). */
  guestLoad(entryGpa: bigint): bigint {
    if (!this.vm.memslotOf(entryGpa)) return 0n;
    const value = this.machine.readPhys64(this.vm.hostAddress(entryGpa));
    if ((value & P) === 0n) return value;
    // Reads do not know the level; only the frame matters, and a large frame is also a 4K-aligned one.
    const bytes = 0x1000n;
    const machineFrame = value & ADDRESS_MASK & ~(bytes - 1n);
    const guestFrame = this.machineToGuest.get(machineFrame);
    if (guestFrame === undefined) return 0n;
    return (value & ~(ADDRESS_MASK & ~(bytes - 1n))) | guestFrame;
  }

  /** mmuext_op NEW_BASEPTR: the hypervisor loads the machine address of the guest's root. */
  guestLoadCr3(cpu: number, value: bigint): void {
    this.hypercall("mmuext_op", cpu);
    const root = value & ADDRESS_MASK;
    if (!this.vm.memslotOf(root)) {
      this.counters.rejected_updates++;
      return;
    }
    const machineRoot = this.vm.hostAddress(root);
    this.machine.movCr3(cpu, (value & ~ADDRESS_MASK) | machineRoot);
  }

  guestInvlpg(cpu: number, la: bigint): void {
    this.hypercall("mmuext_op", cpu);
    this.machine.invlpg(cpu, la);
  }

  guestInvpcid(cpu: number, type: number, pcid: number, la: bigint): void {
    this.hypercall("mmuext_op", cpu);
    this.machine.invpcid(cpu, type, pcid, la);
  }

  stats(): Record<string, number> {
    return { ...this.counters };
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
