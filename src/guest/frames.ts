// The guest kernel's physical-frame allocator. Memory is split into 1 GiB zones, each serving one
// page size, so 2M and 1G frames stay naturally aligned without compaction. Within a zone the order
// is sequential or a seeded permutation (a full-period LCG), which spreads pages the way a long-running
// kernel's free lists do and lets a user see what physical scattering does to the page-walk caches.

import { MemvirtError } from "../core/machine.js";
import type { PageSize } from "../core/types.js";
import { Rng } from "../util/random.js";
import type { FramePolicy } from "./config.js";

const ZONE_SHIFT = 30n;
const ZONE_BYTES = 1n << ZONE_SHIFT;
const SLOT_SHIFT: Record<PageSize, bigint> = { "4K": 12n, "2M": 21n, "1G": 30n };
/** The first 2 MiB stay unused, like the low memory firmware keeps. */
const RESERVED_LOW = 2n << 20n;

interface Zone {
  size: PageSize;
  index: number;
  /** Slots handed out so far in permutation order. */
  issued: number;
  slots: number;
  multiplier: number;
  increment: number;
  position: number;
}

export interface FrameAllocatorState {
  zoneOrder: number[];
  nextZone: number;
  zones: Zone[];
  free: Record<PageSize, string[]>;
  allocated: Record<PageSize, number>;
  rng: number;
}

export class FrameAllocator {
  private readonly zoneOrder: number[];
  private nextZone = 0;
  private readonly open: Partial<Record<PageSize, Zone>> = {};
  private readonly zones: Zone[] = [];
  private readonly free: Record<PageSize, bigint[]> = { "4K": [], "2M": [], "1G": [] };
  readonly allocated: Record<PageSize, number> = { "4K": 0, "2M": 0, "1G": 0 };
  private readonly rng: Rng;
  /** Advanced by every alloc and release of each size: frames `peek`ed are still the future while it holds. */
  readonly changes: Record<PageSize, number> = { "4K": 0, "2M": 0, "1G": 0 };

  constructor(
    readonly memoryBytes: number,
    readonly policy: FramePolicy,
    seed: number,
  ) {
    const zoneCount = Math.max(1, Math.floor(memoryBytes / 2 ** 30));
    this.rng = new Rng(seed ^ 0x5f3759df);
    this.zoneOrder = Array.from({ length: zoneCount }, (_, i) => i);
    if (policy === "random") {
      for (let i = zoneCount - 1; i > 0; i--) {
        const j = this.rng.below(i + 1);
        [this.zoneOrder[i], this.zoneOrder[j]] = [this.zoneOrder[j], this.zoneOrder[i]];
      }
    }
  }

  private openZone(size: PageSize): Zone {
    while (this.nextZone < this.zoneOrder.length) {
      const index = this.zoneOrder[this.nextZone++];
      // Zone 0 holds the reserved low memory, so it cannot be one whole 1 GiB frame.
      if (size === "1G" && index === 0) {
        this.zoneOrder.push(index);
        if (this.zoneOrder.length > 2 * this.zones.length + 64) break;
        continue;
      }
      const slots = Number(ZONE_BYTES >> SLOT_SHIFT[size]);
      const random = this.policy === "random" && slots > 1;
      const zone: Zone = {
        size,
        index,
        issued: 0,
        slots,
        // a = 4k+1 and odd c give an LCG of full period over a power-of-two slot count.
        multiplier: random ? (this.rng.below(slots / 4 || 1) * 4 + 1) % slots || 1 : 1,
        increment: random ? (this.rng.below(slots / 2 || 1) * 2 + 1) % slots : 1,
        position: random ? this.rng.below(slots) : 0,
      };
      if (!random) zone.position = -1;
      this.zones.push(zone);
      this.open[size] = zone;
      return zone;
    }
    throw new MemvirtError(
      `guest physical memory exhausted: no free ${size} frame in ${this.memoryBytes} bytes (raise guest.memory)`,
    );
  }

  /** Physical base of a free frame of `size`. */
  alloc(size: PageSize): bigint {
    this.changes[size]++;
    const reused = this.free[size].pop();
    if (reused !== undefined) {
      this.allocated[size]++;
      return reused;
    }
    while (true) {
      let zone = this.open[size];
      if (!zone || zone.issued >= zone.slots) zone = this.openZone(size);
      const base = this.nextSlot(zone);
      if (base < RESERVED_LOW) continue;
      this.allocated[size]++;
      return base;
    }
  }

  /** Issues the zone's next slot (its permutation's next position); returns its base. */
  private nextSlot(zone: Zone): bigint {
    zone.issued++;
    zone.position =
      zone.multiplier === 1 && zone.increment === 1 && this.policy === "sequential"
        ? zone.position + 1
        : (zone.multiplier * zone.position + zone.increment) % zone.slots;
    return (BigInt(zone.index) << ZONE_SHIFT) + (BigInt(zone.position) << SLOT_SHIFT[zone.size]);
  }

  /**
   * The next `count` (at most) frames `alloc(size)` would return, in order, without taking them: the
   * freed frames, then the open zone's, stopping where a new zone would open (opening one is shared by
   * every size, so it must happen in the allocations' true order). The core's demand paging takes
   * frames from such a list, and the host then allocates the ones it took.
   */
  peek(size: PageSize, count: number): bigint[] {
    const frames: bigint[] = [];
    const free = this.free[size];
    for (let i = free.length - 1; i >= 0 && frames.length < count; i--) frames.push(free[i]);
    const open = this.open[size];
    if (!open) return frames;
    const zone = { ...open };
    while (frames.length < count && zone.issued < zone.slots) {
      const base = this.nextSlot(zone);
      if (base >= RESERVED_LOW) frames.push(base);
    }
    return frames;
  }

  release(base: bigint, size: PageSize): void {
    this.changes[size]++;
    this.free[size].push(base);
    this.allocated[size]--;
  }

  /** The frames of `size` that were handed out and given back (free page reporting reads them). */
  releasedFrames(size: PageSize): readonly bigint[] {
    return this.free[size];
  }

  /** Plain data for checkpoints. */
  snapshot(): FrameAllocatorState {
    return {
      zoneOrder: [...this.zoneOrder],
      nextZone: this.nextZone,
      zones: this.zones.map((z) => ({ ...z })),
      free: {
        "4K": this.free["4K"].map(String),
        "2M": this.free["2M"].map(String),
        "1G": this.free["1G"].map(String),
      },
      allocated: { ...this.allocated },
      rng: this.rng.state,
    };
  }
}
