// Host physical memory with a capacity: the frames the VMs' backing, the hypervisor's tables and the
// zswap pool draw from. It keeps what each frame holds (a content descriptor; no entry = zeros), scrubs
// every frame it takes back, and, when no frame is free, asks the host to reclaim before it fails.
import { type Machine, MemvirtError } from "../core/machine.js";
import type { PageSize } from "../core/types.js";
import { FrameAllocator } from "../guest/frames.js";
import type { LargeBacking } from "../hypervisor/vm.js";
import { PAGE_BYTES, type PageContent, ZERO_CONTENT } from "./content.js";

/** 4 KiB frames in a 2M page. */
export const LARGE_FRAMES = 512;

export class HostFrames extends FrameAllocator implements LargeBacking {
  /** Frames handed out (4 KiB each). */
  used = 0;
  /** Frames the zswap pool occupies (its compressed data, packed). */
  poolFrames = 0;
  /** Frames zeroed when they came back (balloon, COW break, swap-out, reporting). */
  scrubbed = 0;
  /** Page contents by host frame; a frame with no entry holds zeros. */
  private readonly contents = new Map<bigint, PageContent>();
  /** Set by the host: frees memory when an allocation finds none (direct reclaim). */
  reclaimer?: { directReclaim(pages: number): number };
  /** Allocations that waited for reclaim, and those that found no memory at all. */
  directReclaims = 0;

  constructor(
    readonly capacity: number,
    private readonly machine: Machine,
    seed: number,
  ) {
    // Addresses come from a large sparse space; the capacity is enforced here, in frames.
    super(2 ** 40, "sequential", seed ^ 0x2545f491);
  }

  get freeFrames(): number {
    return Math.max(0, this.capacity - this.used - this.poolFrames);
  }

  /**
   * THP's allocation of a 2M page: it needs a 2M-aligned run of 512 free frames (with `reserve` more
   * to spare) and never waits for reclaim; without one the region is backed with 4K frames. Host
   * physical addresses come from a sparse space with 2M-aligned runs, so the run is there whenever
   * 512 frames of capacity are free (fragmentation is not modelled).
   */
  largeAvailable(reserve: number): boolean {
    return this.freeFrames >= LARGE_FRAMES + reserve;
  }

  /** A 2M host page: 512 frames of capacity, 2M aligned. */
  allocLarge(): bigint {
    if (!this.largeAvailable(0)) throw new MemvirtError("no 2M run free for a large page", 1);
    this.used += LARGE_FRAMES;
    this.largePages++;
    return super.alloc("2M");
  }

  /**
   * A 2M page becomes 512 4K frames (its mapping was split): each is released on its own from now on.
   */
  splitLarge(_base: bigint): void {
    this.largePages--;
    this.allocated["2M"]--;
    this.allocated["4K"] += LARGE_FRAMES;
  }

  /** 2M pages handed out and not split. */
  largePages = 0;

  alloc(size: PageSize): bigint {
    if (size !== "4K")
      throw new MemvirtError(`the overcommit host backs memory with 4K frames or 2M pages, not ${size}`);
    if (this.freeFrames === 0) {
      this.directReclaims++;
      this.reclaimer?.directReclaim(1);
      if (this.freeFrames === 0) {
        throw new MemvirtError(
          `host memory exhausted: all ${this.capacity} frames in use and nothing left to reclaim (raise host.memory, or enable overcommit.zswap/swap)`,
        );
      }
    }
    this.used++;
    return super.alloc(size);
  }

  /** Takes a frame back; it is zeroed before anyone else can get it. */
  release(base: bigint, size: PageSize): void {
    this.used--;
    this.contents.delete(base);
    // Bytes the core may hold for the frame (a page table's) go too: it reads as zeros from now on.
    this.machine.releaseFrame(base >> 12n);
    this.scrubbed++;
    super.release(base, size);
  }

  contentOf(hpa: bigint): PageContent {
    return this.contents.get(hpa & ~0xfffn) ?? ZERO_CONTENT;
  }

  setContent(hpa: bigint, content: PageContent): void {
    const frame = hpa & ~0xfffn;
    if (content.cls === "zero") this.contents.delete(frame);
    else this.contents.set(frame, content);
  }

  /** The zswap pool's footprint in frames, from its compressed bytes (zsmalloc packs densely). */
  setPoolBytes(bytes: number): void {
    this.poolFrames = Math.ceil(bytes / PAGE_BYTES);
  }
}
