// The hypervisor's view of a virtual machine, shaped like KVM's: memslots mapping guest-physical
// ranges onto host memory that is backed lazily (as a host process's anonymous memory is, with THP or
// hugetlbfs deciding the backing page size), a VPID/ASID, and the host frames it owns.
import { MemvirtError } from "../core/machine.js";
import { PAGE_SHIFT, type PageSize } from "../core/types.js";
import { FrameAllocator } from "../guest/frames.js";

export interface Memslot {
  id: number;
  /** First guest-physical address (page aligned). */
  base: bigint;
  size: bigint;
  readonly: boolean;
  /** Dirty logging: writes are tracked per 4 KiB page, and mappings stay 4K. */
  logDirty: boolean;
}

/** Host physical memory, shared by every VM and the hypervisor's own tables. */
export class HostMemory {
  readonly frames: FrameAllocator;
  /** Host frames (4K granules) holding hypervisor page tables. */
  readonly tableFrames = new Set<bigint>();

  /** `frames` replaces the default allocator (the overcommit host counts and caps its frames). */
  constructor(memoryBytes: number, seed: number, frames?: FrameAllocator) {
    this.frames = frames ?? new FrameAllocator(memoryBytes, "sequential", seed ^ 0x2545f491);
  }

  /** A zeroed 4 KiB host frame for a hypervisor page table (EPT, NPT or shadow). */
  table(): bigint {
    const frame = this.frames.alloc("4K");
    this.tableFrames.add(frame);
    return frame;
  }

  releaseTable(frame: bigint): void {
    this.tableFrames.delete(frame);
    this.frames.release(frame, "4K");
  }
}

/**
 * A source of 2 MiB host pages for a VM whose backing is 4K with THP-like large pages (the overcommit
 * host): `largeAvailable` says whether a 2M-aligned run of 512 free frames can be had without reclaim.
 */
export interface LargeBacking {
  /** Whether 512 frames plus `reserve` more are free. */
  largeAvailable(reserve: number): boolean;
  allocLarge(): bigint;
}

const LARGE_BYTES = 1n << 21n;

export class Vm {
  readonly memslots: Memslot[] = [];
  /**
   * With `largeBacking` (4K backing only): 2M guest-physical regions backed by one 2M-aligned host page
   * (region base -> host base) until they are split; the backing map lists their 512 frames one by one.
   */
  private readonly large = new Map<bigint, bigint>();
  /** 2M regions that have had backing, large or small: only a region's first touch may get a 2M page. */
  private readonly touched = new Set<bigint>();
  largeBacking?: LargeBacking;
  /** Backing: guest-physical base of each backed host page -> its host-physical base. */
  private readonly backing = new Map<bigint, bigint>();
  /** Dirty 4 KiB guest pages, while a slot logs dirty pages. */
  readonly dirty = new Set<bigint>();
  readonly backingSize: bigint;

  constructor(
    readonly id: number,
    readonly host: HostMemory,
    /** The host page size backing guest memory (THP/hugetlbfs: "2M"/"1G"; else "4K"). */
    readonly backingPageSize: PageSize,
    readonly vpid: number,
  ) {
    this.backingSize = 1n << BigInt(PAGE_SHIFT[backingPageSize]);
  }

  addMemslot(base: bigint, size: bigint, options: { readonly?: boolean; logDirty?: boolean } = {}): Memslot {
    const slot = {
      id: this.memslots.length,
      base,
      size,
      readonly: options.readonly ?? false,
      logDirty: options.logDirty ?? false,
    };
    this.memslots.push(slot);
    return slot;
  }

  memslotOf(gpa: bigint): Memslot | undefined {
    for (const slot of this.memslots) if (gpa >= slot.base && gpa < slot.base + slot.size) return slot;
    return undefined;
  }

  /** Host page backing `gpa`'s region, allocated on first touch (like a host page fault). */
  backingOf(gpa: bigint): { base: bigint; hpa: bigint; fresh: boolean } {
    const base = gpa & ~(this.backingSize - 1n);
    let hpa = this.backing.get(base);
    let fresh = false;
    if (hpa === undefined) {
      if (!this.memslotOf(gpa))
        throw new MemvirtError(`VM ${this.id}: 0x${gpa.toString(16)} is in no memslot`, 1);
      if (this.largeBacking && this.canBackLarge(gpa)) {
        // THP: the region's first touch takes a whole 2M host page, listed frame by frame.
        const region = gpa & ~(LARGE_BYTES - 1n);
        const large = this.largeBacking.allocLarge();
        this.large.set(region, large);
        for (let offset = 0n; offset < LARGE_BYTES; offset += 0x1000n)
          this.backing.set(region + offset, large + offset);
        hpa = large + (base - region);
      } else {
        hpa = this.host.frames.alloc(this.backingPageSize);
        this.backing.set(base, hpa);
      }
      if (this.largeBacking) this.touched.add(gpa & ~(LARGE_BYTES - 1n));
      fresh = true;
    }
    return { base, hpa, fresh };
  }

  /**
   * Whether the first touch of `gpa` would back its 2M region with one 2M host page: the region never
   * had backing, lies wholly in one memslot that does not log dirty pages, and a 2M run is free (with
   * `reserve` frames to spare, for the tables mapping it).
   */
  canBackLarge(gpa: bigint, reserve = 0): boolean {
    if (!this.largeBacking || this.backingPageSize !== "4K") return false;
    const region = gpa & ~(LARGE_BYTES - 1n);
    if (this.touched.has(region)) return false;
    const slot = this.memslotOf(gpa);
    if (!slot || slot.logDirty || region < slot.base || region + LARGE_BYTES > slot.base + slot.size)
      return false;
    return this.largeBacking.largeAvailable(reserve);
  }

  /** The 2M host page backing `gpa`'s region while it is one (not split), or undefined. */
  largeAt(gpa: bigint): bigint | undefined {
    return this.large.get(gpa & ~(LARGE_BYTES - 1n));
  }

  /** The 2M-backed regions (base -> host base), in the order they were backed. */
  largeRegions(): IterableIterator<[bigint, bigint]> {
    return this.large.entries();
  }

  get largeCount(): number {
    return this.large.size;
  }

  /**
   * Splits the 2M backing of `gpa`'s region: from now on its 512 frames are individual 4K backing
   * pages (each can be remapped or freed). Returns the host base of the former 2M page.
   */
  splitLarge(gpa: bigint): bigint | undefined {
    const region = gpa & ~(LARGE_BYTES - 1n);
    const hpa = this.large.get(region);
    this.large.delete(region);
    return hpa;
  }

  /** Host-physical address of guest-physical `gpa` (backing it if needed). */
  hostAddress(gpa: bigint): bigint {
    // Backed already (nearly always): no allocation on the way, as this runs per guest table access.
    const base = gpa & ~(this.backingSize - 1n);
    const hpa = this.backing.get(base);
    if (hpa !== undefined) return hpa + (gpa - base);
    const backed = this.backingOf(gpa);
    return backed.hpa + (gpa - backed.base);
  }

  /** The host page backing the region at `base`, without allocating. */
  backingAt(base: bigint): bigint | undefined {
    return this.backing.get(base);
  }

  /**
   * Points the region at `base` at another host page (a KSM merge or COW break, a swap-in), as the
   * host's own page table for the VM's memory changes. The caller owns freeing the old page.
   */
  setBacking(base: bigint, hpa: bigint): void {
    if (this.largeAt(base) !== undefined)
      throw new MemvirtError(
        `VM ${this.id}: 0x${base.toString(16)} is backed by a 2M page (split it first)`,
        1,
      );
    this.backing.set(base, hpa);
  }

  /** Drops the backing of the region at `base` (balloon inflation, swap-out); returns the old page. */
  dropBacking(base: bigint): bigint | undefined {
    if (this.largeAt(base) !== undefined)
      throw new MemvirtError(
        `VM ${this.id}: 0x${base.toString(16)} is backed by a 2M page (split it first)`,
        1,
      );
    const hpa = this.backing.get(base);
    this.backing.delete(base);
    return hpa;
  }

  /** The host frames this VM owns: its backing pages (isolation checks use this). */
  ownsHostAddress(hpa: bigint): boolean {
    for (const [, base] of this.backing) if (hpa >= base && hpa < base + this.backingSize) return true;
    return false;
  }

  get backedBytes(): bigint {
    return BigInt(this.backing.size) * this.backingSize;
  }
}
