// What every memory-virtualization technique provides to the host: the CPU interface its guest kernel
// runs on, VM entry for each vCPU, and handlers for the exits the hardware raises (the hook table the
// host's loop calls), and what the host hands it in return. The handlers charge their cycles to the
// machine clock, so each technique's cost comes out of the model.
import type { ExitRecord, Machine } from "../core/machine.js";
import type { PagingCpu, TlbFlush } from "../guest/paging-cpu.js";
import type { HostMemory, Vm } from "./vm.js";

/** Cycles of the hypervisor's work, configurable (`hypervisor` config section). */
export interface HypervisorCosts {
  /** A VM exit and the VM entry after it (the hardware round trip and the exit dispatch). */
  exit: number;
  /** KVM's TDP fault path on top of the exit: fault-in, hugepage adjust, installing the entry. */
  tdpFault: number;
  /** Emulating a guest instruction (an MMIO access, a trapped page-table write). */
  emulate: number;
  /** A paravirtual hypercall's work (validating and applying one page-table update). */
  hypercall: number;
  /** Shadow MMU work on a shadow page fault (walking the guest tables, building the SPTE). */
  shadowFault: number;
  /** Resynchronising one unsync shadow page (comparing its 512 entries). */
  shadowSync: number;
  /** Injecting an exception into the guest. */
  inject: number;
  /** Draining one page-modification log entry into the dirty bitmap (KVM's vmx_flush_pml_buffer, per GPA). */
  pmlEntry: number;
  /**
   * Visiting one nested leaf in a write-protect or D-flag dirty-log harvest (KVM's walk of the slot's
   * SPTEs under KVM_CLEAR_DIRTY_LOG: read, test, and clear where needed). PML has no such scan.
   */
  dirtyScanLeaf: number;
  /** Per-reason overrides of `exit`, e.g. {"eptViolation": 1500}. */
  exitByReason?: Partial<Record<string, number>>;
}

/**
 * How a guest IPI reaches another vCPU: "exit", the ICR write exits and the running target is kicked out
 * (an external-interrupt exit) to have the interrupt injected; "posted", APICv/AVIC posted interrupts:
 * the ICR write exits, the target takes the interrupt without exiting; "ipiv", IPI virtualization
 * (Intel IPIv, AMD AVIC to running vCPUs): neither side exits.
 */
export type IpiDelivery = "exit" | "posted" | "ipiv";
export const IPI_DELIVERIES: readonly IpiDelivery[] = ["exit", "posted", "ipiv"];

/**
 * How the VMM logs the guest's dirty pages: not at all, by write protection, by scanning and clearing
 * the nested D flags, or by page-modification logging (Intel PML: the CPU logs each page whose EPT D
 * flag it sets).
 */
export type DirtyLogMode = "off" | "wp" | "dbit" | "pml";
export const DIRTY_LOG_MODES = ["off", "wp", "dbit", "pml"] as const;

/** The "hypervisor" config section: what every technique is configured with. */
export interface HypervisorConfig {
  costs: HypervisorCosts;
  /** Tag guest TLB entries with a VPID/ASID; off, every VM exit and entry flushes them. */
  vpid: boolean;
  /** EPTP bit 6: the hardware keeps A/D flags in EPT entries. */
  eptAccessedDirty: boolean;
  dirtyLog: DirtyLogMode;
  /** Simulated cycles between dirty-log harvests (KVM_GET_DIRTY_LOG by the VMM), from budget exits. */
  dirtyLogIntervalCycles: number;
  /** Shadow MMU: pages before the oldest are zapped (KVM's n_max_mmu_pages; 0: 20 per mille of guest pages, min 64). */
  maxShadowPages: number;
  /** Shadow MMU: keep leaf shadow pages unsync instead of write-protecting their guest tables. */
  unsync: boolean;
  /** How guest IPIs (TLB shootdowns) reach other vCPUs under EPT, NPT and shadow paging. */
  ipi: IpiDelivery;
}

export const DEFAULT_COSTS: HypervisorCosts = {
  exit: 1200,
  tdpFault: 3000,
  emulate: 2000,
  hypercall: 600,
  shadowFault: 2500,
  shadowSync: 1500,
  inject: 300,
  pmlEntry: 20,
  dirtyScanLeaf: 10,
};

/** Handler-cycle categories of the core's clock (Machine.chargeCycles). */
export const CYCLES_GUEST_KERNEL = 0;
export const CYCLES_VM_EXIT = 1;
export const CYCLES_TDP = 2;
export const CYCLES_SHADOW = 3;
export const CYCLES_HYPERCALL = 4;
export const CYCLES_EMULATION = 5;

/** What the simulation does after a technique handled an exit. */
export type ExitAction =
  /** The fault is fixed: run the record again. */
  | "retry"
  /** It is the guest kernel's fault to handle (inject/deliver it). */
  | "deliver"
  /** The access was emulated or dropped: the record is complete. */
  | "complete";

/**
 * A technique as the host's loop sees it: kvm_x86_ops for memory. The loop calls these hooks and
 * nothing else; a technique never reaches back into the loop.
 */
export interface PagingTechnique {
  readonly name: string;
  /** The CPU interface the guest kernel uses. */
  readonly cpu: PagingCpu;
  /** VM entry on every vCPU (bare metal: nothing to enter). */
  boot(machine: Machine): void;
  /**
   * A guest-mode #PF from the core. A technique that injects a fault with another error code than the
   * hardware's (shadow paging reports the guest's own) rewrites `exit.qualification` before returning
   * "deliver"; the guest kernel's handler then sees that code.
   */
  onPageFault(exit: ExitRecord): ExitAction;
  /** An EPT violation or misconfiguration, or a #NPF. */
  onNestedFault(exit: ExitRecord): ExitAction;
  /** A page-modification-log-full exit (only a technique that enables PML gets one). */
  onPmlFull?(exit: ExitRecord): ExitAction;
  /** Counters for the report, named after KVM's where KVM has one. */
  stats(): Record<string, number>;
  /** Exits taken, by reason. */
  exits(): Record<string, number>;
  /** Periodic host work on the simulated clock (dirty-log harvests), if the technique has any. */
  periodic?(): void;
  /** Cycles between periodic() calls, or 0 for none. */
  readonly periodCycles?: number;
  /** What the guest's TLB shootdowns cost the technique (IPI exits, posted interrupts, hypercalls). */
  shootdownStats?(): Record<string, number>;
  /**
   * The guest kernel's page-table stores land in memory as they are, and its #PFs reach it untouched
   * (bare metal): the core may then run the kernel's anonymous demand faults itself.
   */
  readonly plainKernelStores?: boolean;
}

/** A technique that runs its guest in a VM on host memory. */
export interface VirtualizationTechnique extends PagingTechnique {
  readonly vm: Vm;
}

/**
 * The nested tables a TDP technique fills, as the host's memory management edits them (KSM, the
 * balloon, reclaim, large-page splits): change a leaf, read its accessed flag, flush every vCPU.
 */
export interface NestedTables {
  readonly name: "ept" | "npt";
  /** Host-physical address of the top-level table. */
  readonly root: bigint;
  /** The machine CPUs running the VM's vCPUs. */
  readonly cpuIds: readonly number[];
  leafOf(gpa: bigint): { address: bigint; entry: bigint; level: number } | undefined;
  mapPage(gpa: bigint, hpa: bigint, writable: boolean): void;
  unmapPage(gpa: bigint): boolean;
  splitLarge(gpa: bigint): boolean;
  testAndClearAccessed(gpa: bigint): boolean;
  flushRemoteTlbs(): void;
}

/** What a technique is handed: the hardware and the machine CPUs its vCPUs run on. */
export interface TechniqueServices {
  readonly machine: Machine;
  readonly cpuIds: readonly number[];
}

/** What a virtualizing technique is handed besides: its VM and the host memory its tables come from. */
export interface VmServices extends TechniqueServices {
  readonly vm: Vm;
  readonly memory: HostMemory;
}

/** The configuration a technique is built from. */
export interface TechniqueSettings {
  readonly hypervisor: HypervisorConfig;
  /** Paging levels of the nested tables. */
  readonly hostLevels: 4 | 5;
  /** Bytes of guest memory (the shadow MMU sizes its page cache from it). */
  readonly guestMemory: number;
}

/**
 * One entry of the technique table (hypervisor/techniques.ts): how to build the technique, and what
 * the host may do with it. A new mode is a module exporting one of these plus its registration line.
 */
export type TechniqueModule =
  | {
      /** Bare metal: the guest kernel owns the machine. */
      readonly virtual: false;
      readonly nestedTables: false;
      create(services: TechniqueServices, settings: TechniqueSettings): PagingTechnique;
    }
  | {
      readonly virtual: true;
      /** The technique fills nested tables (NestedTables): overcommit can act on them, and each VM
       *  can sit on its own CPUs beside others. */
      readonly nestedTables: boolean;
      create(services: VmServices, settings: TechniqueSettings): VirtualizationTechnique;
    };

/** Exit reasons the techniques raise (the keys of `exitCyclesByReason`). */
export const EXIT_REASON_NAMES = [
  "eptViolation",
  "eptMisconfig",
  "npf",
  "pmlFull",
  "pageFault",
  "wpWrite",
  "cr3Write",
  "invlpg",
  "invpcid",
  "hypercall",
  "msrWrite",
  "externalInterrupt",
] as const;

/** Counts exits by reason and charges the round trip (per reason when configured, else `exit`). */
export class ExitCounter {
  readonly byReason: Record<string, number> = {};
  /** Exits taken, all reasons. */
  total = 0;

  constructor(
    private readonly machine: Machine,
    private readonly costs: HypervisorCosts,
  ) {}

  private charge(reason: string): void {
    this.byReason[reason] = (this.byReason[reason] ?? 0) + 1;
    this.total++;
    this.machine.chargeCycles(this.costs.exitByReason?.[reason] ?? this.costs.exit, CYCLES_VM_EXIT);
  }

  /** A VM exit for `reason` on `cpu`: the hardware round trip, and the VPID-0 flush if VPIDs are off. */
  take(reason: string, cpu: number): void {
    this.charge(reason);
    this.machine.vmExitEntry(cpu);
  }

  /** An exit the core already flushed for (nested faults): count and charge only. */
  counted(reason: string): void {
    this.charge(reason);
  }
}

/**
 * KVM's local-APIC side of a guest IPI to running vCPUs of the VM, as `hypervisor.ipi` configures it:
 * the exits it takes and the delivery work (charged as APIC emulation).
 */
export class VirtualIpis {
  /** IPIs (one per target), the exits they took, and those delivered as posted interrupts. */
  readonly counters = { ipis: 0, exits: 0, postedInterrupts: 0 };

  constructor(
    private readonly machine: Machine,
    private readonly exits: ExitCounter,
    private readonly costs: HypervisorCosts,
    private readonly delivery: IpiDelivery,
  ) {}

  /**
   * One IPI from vCPU `from` to `targets` (a multicast, as x2APIC cluster mode and KVM's PV send-IPI
   * make it: one ICR write).
   */
  send(from: number, targets: readonly number[]): void {
    this.counters.ipis += targets.length;
    if (this.delivery === "ipiv" || targets.length === 0) return;
    // The ICR write (WRMSR 0x830) exits; KVM delivers to each target.
    this.exits.take("msrWrite", from);
    this.counters.exits++;
    for (const target of targets) {
      this.machine.chargeCycles(this.costs.inject, CYCLES_EMULATION);
      if (this.delivery === "posted") {
        this.counters.postedInterrupts++;
        continue;
      }
      // The target runs in guest mode: a host IPI kicks it out, and the interrupt is injected on entry.
      this.exits.take("externalInterrupt", target);
      this.counters.exits++;
    }
  }

  /**
   * The guest's flush_tlb_multi through the local APIC: its own IPI work, the IPIs, then each target's
   * handler, which runs on the target with what the technique makes of its flush.
   */
  shootdown(from: number, targets: readonly number[], flush: TlbFlush, handler: (cpu: number) => void): void {
    this.machine.chargeCycles(flush.ipiCycles * targets.length, CYCLES_GUEST_KERNEL);
    this.send(from, targets);
    for (const target of targets) handler(target);
  }
}

/**
 * What a technique does with the guest kernel's paging operations: the stores and loads of its page
 * tables, CR3 loads and invalidations, and the paravirtual hooks around them. Each technique decides
 * which of them trap.
 */
export interface GuestPagingHandlers {
  readonly machine: Machine;
  guestStore(gpa: bigint, value: bigint, level: number): void;
  guestLoad(gpa: bigint): bigint;
  /** `count` consecutive entries from `gpa`, all in one guest page (guestLoad of each). */
  guestLoadRange(gpa: bigint, count: number): bigint[];
  guestLoadCr3(cpu: number, value: bigint): void;
  guestInvlpg(cpu: number, la: bigint): void;
  guestInvpcid(cpu: number, type: number, pcid: number, la: bigint): void;
  /** flush_tlb_multi: the guest's IPIs (or a paravirtual hypercall), and the targets' flushes. */
  guestFlushOthers(
    from: number,
    targets: readonly number[],
    flush: TlbFlush,
    handler: (cpu: number) => void,
  ): void;
  /** Paravirtual hooks; a technique the guest does not tell about them leaves them out. */
  guestLazyMmu?(on: boolean): void;
  guestPinTables?(root: bigint): void;
  guestUnpinTables?(root: bigint): void;
  guestReleaseTable?(pa: bigint): void;
}

/** The guest kernel's CPU inside a VM: every paging operation goes to the technique's handlers. */
export class GuestCpu implements PagingCpu {
  constructor(private readonly handlers: GuestPagingHandlers) {}

  writeEntry(pa: bigint, value: bigint, level: number): void {
    this.handlers.guestStore(pa, value, level);
  }

  readEntry(pa: bigint): bigint {
    return this.handlers.guestLoad(pa);
  }

  readEntries(pa: bigint, count: number): bigint[] {
    return this.handlers.guestLoadRange(pa, count);
  }

  loadCr3(cpu: number, value: bigint): void {
    this.handlers.guestLoadCr3(cpu, value);
  }

  invlpg(cpu: number, la: bigint): void {
    this.handlers.guestInvlpg(cpu, la);
  }

  invpcid(cpu: number, type: number, pcid: number, la: bigint): void {
    this.handlers.guestInvpcid(cpu, type, pcid, la);
  }

  charge(cycles: number): void {
    this.handlers.machine.chargeCycles(cycles, CYCLES_GUEST_KERNEL);
  }

  /** Only a paravirtual hypervisor is told when the guest frees a page-table page (KVM is not). */
  releaseTable(pa: bigint): void {
    this.handlers.guestReleaseTable?.(pa);
  }

  lazyMmu(on: boolean): void {
    this.handlers.guestLazyMmu?.(on);
  }

  flushTlbOthers(
    from: number,
    targets: readonly number[],
    flush: TlbFlush,
    handler: (cpu: number) => void,
  ): void {
    this.handlers.guestFlushOthers(from, targets, flush, handler);
  }

  pinTables(root: bigint): void {
    this.handlers.guestPinTables?.(root);
  }

  unpinTables(root: bigint): void {
    this.handlers.guestUnpinTables?.(root);
  }
}
