// A VM as the host's memory management sees it: the guest kernel's view of its memory (which
// guest-virtual page sits in which guest-physical frame, what the guest dropped, swapped, freed and
// reported), its nested tables, and the guest-side statistics the balloon's stats queue reports.
import type { PageSize } from "../core/types.js";
import { FrameAllocator } from "../guest/frames.js";
import type { FaultOutcome, GuestOS, Process } from "../guest/os.js";
import type { GuestKernel } from "../host/hooks.js";
import type { NestedTables } from "../hypervisor/technique.js";
import type { Vm } from "../hypervisor/vm.js";
import type { PageContent } from "./content.js";

const PAGE = 0x1000n;

/** A region of a VM's address space and what its pages hold. */
export interface GuestRegion {
  start: bigint;
  pages: number;
  /** File pages (the OS image) sit in the guest's page cache: clean, droppable, re-read from disk. */
  file: boolean;
  /** The guest fetches instructions from it (a trace's address space); default false. */
  executable?: boolean;
}

export interface GuestStats {
  /** The balloon stats tags 0-9 (docs/overcommit.md §virtio-balloon), kept by the guest. */
  swapIn: number;
  swapOut: number;
  majorFaults: number;
  minorFaults: number;
  pageCacheDropped: number;
  oomKills: number;
  oomDeflations: number;
}

/** The guest kernel's memory model beyond demand paging: page cache, guest swap, OOM (host.ts). */
export interface GuestMemoryModel {
  guestPageFault(vm: GuestVm, la: bigint, errorCode: bigint): FaultOutcome;
}

/** One VM on the host, with its guest kernel's view of its memory. */
export class GuestVm implements GuestKernel {
  readonly gvaToGpa = new Map<bigint, bigint>();
  readonly gpaToGva = new Map<bigint, bigint>();
  /** Anonymous pages the guest swapped out (guest-virtual page -> content). */
  readonly guestSwap = new Map<bigint, PageContent>();
  /** Page-cache pages the guest dropped (re-read from disk on the next touch). */
  readonly droppedFile = new Set<bigint>();
  /** Guest-physical pages the guest freed and has not reused (candidates for free page reporting). */
  readonly freedGpas = new Set<bigint>();
  /** 2 MiB blocks already reported free (PageReported), until the guest uses one of their pages. */
  readonly reportedBlocks = new Set<bigint>();
  alive = true;
  readonly stats: GuestStats = {
    swapIn: 0,
    swapOut: 0,
    majorFaults: 0,
    minorFaults: 0,
    pageCacheDropped: 0,
    oomKills: 0,
    oomDeflations: 0,
  };

  constructor(
    readonly index: number,
    /** The machine CPU its one vCPU is pinned to. */
    readonly cpu: number,
    readonly vm: Vm,
    readonly tdp: NestedTables,
    readonly os: GuestOS,
    readonly process: Process,
    readonly memoryPages: number,
    readonly regions: GuestRegion[],
    private readonly model: GuestMemoryModel,
  ) {}

  /** The guest kernel's #PF handler, as the host's loop calls it. */
  pageFault(_cpu: number, la: bigint, errorCode: bigint): FaultOutcome {
    return this.model.guestPageFault(this, la, errorCode);
  }

  /** Guest frames in use: the application's pages, page tables and pages held by the balloon. */
  get usedPages(): number {
    return this.os.frames.allocated["4K"] + (this.os.tableFrames?.allocated["4K"] ?? 0);
  }

  get freePages(): number {
    return Math.max(0, this.memoryPages - this.usedPages);
  }

  regionOf(gva: bigint): GuestRegion | undefined {
    for (const region of this.regions)
      if (gva >= region.start && gva < region.start + BigInt(region.pages) * PAGE) return region;
    return undefined;
  }
}

/**
 * The guest's page-table frames, from the gigabyte above its application memory (a separate pageblock
 * group, as Linux keeps unmovable allocations apart), so freed application memory forms whole blocks.
 */
export class TableFrames extends FrameAllocator {
  constructor(
    private readonly offset: bigint,
    seed: number,
  ) {
    super(2 ** 30, "sequential", seed);
  }
  alloc(size: PageSize): bigint {
    return super.alloc(size) + this.offset;
  }
  release(base: bigint, size: PageSize): void {
    super.release(base - this.offset, size);
  }
}
