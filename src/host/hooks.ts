// The host's hook table, as plug-ins see it. The host's loop calls these and nothing else: a guest's
// kernel for its #PFs (the guest's technique sits in front of it, see hypervisor/technique.ts), the
// nested-fault hooks before the guest's technique (overcommit's COW breaks and swap-ins), the hooks on
// completed records (what a store leaves in a page) and the timers that run host work on the
// simulated clock (dirty-log harvests, ksmd, the balloon, the controller). A plug-in implements the
// hooks it needs and is handed the services it needs; it never imports the host.
import type { ExitRecord } from "../core/machine.js";
import type { FaultOutcome } from "../guest/os.js";
import type { ExitAction } from "../hypervisor/technique.js";

/** A guest kernel's #PF handler, called with the guest's own CPU number. */
export interface GuestKernel {
  pageFault(cpu: number, la: bigint, errorCode: bigint): FaultOutcome;
}

/**
 * Sees a nested fault (EPT violation, misconfiguration, #NPF) of guest `guest` before the guest's
 * technique does; returns what to do with the record, or undefined to pass it on.
 */
export interface NestedFaultHook {
  nestedFault(guest: number, exit: ExitRecord): ExitAction | undefined;
}

/** Told which records of the record region completed, [start, end), before any exit is handled. */
export interface RecordsHook {
  recordsCompleted(start: number, end: number): void;
}

/** A DMA engine on the host (the IOMMU): it translates batches of requests from its record region. */
export interface DmaUnit {
  recordView(): DataView;
  runRecords(count: number): void;
  /** Empties the fault log, as the host's interrupt handler does after every batch. */
  drainFaults(): void;
}

/** DMA traffic (the devices of the dma-* workloads): batches of requests, and what became of them. */
export interface DmaSource {
  /**
   * Writes the next batch into the unit's record region; returns its request count, 0 at the end.
   * `records` gives the region's view once the batch's buffers are mapped (mapping may grow memory).
   */
  fill(records: () => DataView): number;
  /** The batch's requests ran (each record holds its status): the operations complete. */
  results(view: DataView, count: number): void;
}

/** Host work on the simulated clock: fired when `nextAt` (host cycles) has come. */
export interface HostTimer {
  readonly nextAt: number;
  /** Cycles between firings when the timer is regular; the core stops at the finest period. */
  readonly period?: number;
  fire(now: number): void;
}
