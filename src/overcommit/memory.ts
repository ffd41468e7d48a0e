// Host physical memory with a capacity: the frames the VMs' backing, the hypervisor's tables and the
// zswap pool draw from. It keeps what each frame holds (a content descriptor; no entry = zeros), scrubs
// every frame it takes back, and, when no frame is free, asks the host to reclaim before it fails.
import { type Machine, MemvirtError } from "../core/machine.js";
import type { PageSize } from "../core/types.js";
import { FrameAllocator } from "../guest/frames.js";
import { PAGE_BYTES, type PageContent, ZERO_CONTENT } from "./content.js";

export class HostFrames extends FrameAllocator {
  /** Frames handed out (4 KiB each). */
  used = 0;
  /** Frames the zswap pool occupies (its compressed data, packed). */
  poolFrames = 0;
  /** Frames zeroed when they came back (balloon, COW break, swap-out, reporting). */
  scrubbed = 0;
  /** Page contents by host frame; a frame with no entry holds zeros. */
  private readonly contents = new Map<bigint, PageContent>();
  /** Set by the host: frees memory when an allocation finds none (direct reclaim). */
  reclaim: (pages: number) => number = () => 0;
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

  alloc(size: PageSize): bigint {
    if (size !== "4K") throw new MemvirtError(`the overcommit host backs memory with 4K frames, not ${size}`);
    if (this.freeFrames === 0) {
      this.directReclaims++;
      this.reclaim(1);
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
