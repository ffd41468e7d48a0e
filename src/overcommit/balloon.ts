// virtio-balloon (docs/overcommit.md §virtio-balloon): the host sets num_pages, the guest driver allocates
// pages from its own allocator (shrinking its page cache and swapping if it must) and tells the host their
// PFNs, at most 256 per inflate message, each message a VM exit. The device unmaps those guest pages from the
// EPT, shoots down every vCPU's stale translations, and frees (scrubs) the host frames. Deflating
// gives PFNs back to the guest; the host backs them again on the next touch. The stats queue reports
// tags 0-9 on the host's polling interval; deflate-on-OOM gives 256 pages back per OOM notification.
import type { HostTimer } from "../host/hooks.js";
import type { GuestVm } from "./guest.js";
import type { Ksm } from "./ksm.js";
import type { OvercommitServices } from "./services.js";
import type { HostSwap, Zswap } from "./zswap.js";

/** The mechanisms whose pages an inflation gives up. */
export interface BalloonPeers {
  ksm?: Pick<Ksm, "isSharer" | "forget">;
  zswap?: Pick<Zswap, "discard">;
  swap?: Pick<HostSwap, "discard">;
}

/** PFNs per inflate/deflate message (VIRTIO_BALLOON_ARRAY_PFNS_MAX). */
export const PFNS_PER_MESSAGE = 256;
/** Pages an OOM notification releases with DEFLATE_ON_OOM (oom_pages). */
export const OOM_PAGES = 256;

export const STATS_TAGS = [
  "swap_in",
  "swap_out",
  "major_faults",
  "minor_faults",
  "free_memory",
  "total_memory",
  "available_memory",
  "disk_caches",
  "hugetlb_allocations",
  "hugetlb_failures",
] as const;

/** Free page reporting: blocks of order >= 9 (2 MiB), 32 per request, 2 s after pages were freed. */
export const REPORTING_ORDER = 9;
export const REPORTING_CAPACITY = 32;
export const REPORTING_DELAY_MS = 2000;

export interface BalloonCounters {
  inflate_messages: number;
  deflate_messages: number;
  pages_inflated: number;
  pages_deflated: number;
  frames_freed: number;
  stats_requests: number;
  oom_deflations: number;
  reporting_requests: number;
  reported_blocks: number;
  reported_frames_freed: number;
}

interface BalloonState {
  /** num_pages: the host's target. */
  target: number;
  /** The guest-physical pages in the balloon (`actual` is their count). */
  pages: bigint[];
  /** The last stats buffer the driver returned (tags 0-9, memory in bytes). */
  stats: Record<(typeof STATS_TAGS)[number], number>;
}

export class Balloon implements HostTimer {
  readonly counters: BalloonCounters = {
    inflate_messages: 0,
    deflate_messages: 0,
    pages_inflated: 0,
    pages_deflated: 0,
    frames_freed: 0,
    stats_requests: 0,
    oom_deflations: 0,
    reporting_requests: 0,
    reported_blocks: 0,
    reported_frames_freed: 0,
  };
  /** When each VM's delayed reporting work runs (Infinity: none pending). */
  private readonly reportAt: number[];
  private statsAt: number;
  private readonly state: BalloonState[];

  constructor(
    private readonly host: OvercommitServices,
    private readonly peers: BalloonPeers,
  ) {
    this.state = host.vms.map(() => ({
      target: 0,
      pages: [],
      stats: Object.fromEntries(STATS_TAGS.map((tag) => [tag, 0])) as BalloonState["stats"],
    }));
    const interval = host.oc.balloon.statsIntervalMs;
    this.statsAt = interval > 0 ? host.ms(interval) : Number.POSITIVE_INFINITY;
    this.reportAt = host.vms.map(() => Number.POSITIVE_INFINITY);
  }

  /** The next time the device or the driver has work: a stats poll or a reporting pass. */
  get nextAt(): number {
    return Math.min(this.statsAt, ...this.reportAt);
  }

  /** The guest freed pages: with reporting on, its reporting work runs 2 s later (if not pending). */
  noteFree(vm: GuestVm): void {
    if (!this.host.oc.balloon.freePageReporting || this.reportAt[vm.index] !== Number.POSITIVE_INFINITY)
      return;
    this.reportAt[vm.index] = this.host.now() + this.host.ms(REPORTING_DELAY_MS);
  }

  /**
   * page_reporting_process: every 2 MiB block whose 512 pages are all free in the guest allocator and
   * not yet reported goes to the device, 32 blocks per request (a VM exit); the device discards their
   * backing like an inflate, with one shootdown per request.
   */
  private report(vm: GuestVm): void {
    this.reportAt[vm.index] = Number.POSITIVE_INFINITY;
    const free = new Set(vm.os.frames.releasedFrames("4K"));
    const pagesPerBlock = 1n << BigInt(REPORTING_ORDER);
    const blocks = [...new Set([...vm.freedGpas].map((gpa) => gpa >> 21n))]
      .filter((block) => !vm.reportedBlocks.has(block))
      .filter((block) => {
        for (let page = 0n; page < pagesPerBlock; page++)
          if (!free.has((block << 21n) + page * 0x1000n)) return false;
        return true;
      })
      .sort((a, b) => (a < b ? -1 : a > b ? 1 : 0));
    for (let i = 0; i < blocks.length; i += REPORTING_CAPACITY) {
      const batch = blocks.slice(i, i + REPORTING_CAPACITY);
      this.counters.reporting_requests++;
      this.host.exit("balloon", vm, true);
      const gpas: bigint[] = [];
      for (const block of batch) {
        vm.reportedBlocks.add(block);
        for (let page = 0n; page < pagesPerBlock; page++) gpas.push((block << 21n) + page * 0x1000n);
      }
      this.counters.reported_blocks += batch.length;
      this.counters.reported_frames_freed += this.discard(vm, gpas, false);
    }
    this.host.check("free page reporting");
  }

  /** `actual`: pages the guest has given the balloon. */
  actual(vm: GuestVm): number {
    return this.state[vm.index].pages.length;
  }

  target(vm: GuestVm): number {
    return this.state[vm.index].target;
  }

  guestStats(vm: GuestVm): BalloonState["stats"] {
    return { ...this.state[vm.index].stats };
  }

  /** The host writes num_pages; the driver inflates or deflates toward it. Returns the new `actual`. */
  setTarget(vm: GuestVm, pages: number): number {
    const state = this.state[vm.index];
    state.target = Math.max(0, Math.floor(pages));
    if (!vm.alive) return state.pages.length;
    if (state.target > state.pages.length) this.inflate(vm, state.target - state.pages.length);
    else if (state.target < state.pages.length) this.deflate(vm, state.pages.length - state.target);
    this.host.check("balloon");
    return state.pages.length;
  }

  /** The driver's fill_balloon, message by message. */
  private inflate(vm: GuestVm, pages: number): void {
    const host = this.host;
    const state = this.state[vm.index];
    let left = pages;
    while (left > 0) {
      const batch: bigint[] = [];
      while (batch.length < Math.min(PFNS_PER_MESSAGE, left)) {
        // The driver's allocation may make the guest reclaim (page cache, swap) but never OOM-kill.
        if (vm.freePages === 0 && host.guestReclaim(vm, 1, false) === 0) break;
        if (vm.freePages === 0) break;
        const gpa = vm.os.frames.alloc("4K");
        vm.freedGpas.delete(gpa);
        vm.reportedBlocks.delete(gpa >> 21n);
        batch.push(gpa);
      }
      if (batch.length === 0) break;
      left -= batch.length;
      state.pages.push(...batch);
      this.counters.inflate_messages++;
      this.counters.pages_inflated += batch.length;
      host.exit("balloon", vm, true);
      this.counters.frames_freed += this.discard(vm, batch, true);
      if (batch.length < PFNS_PER_MESSAGE && left > 0) break;
    }
  }

  /** The device's handling of one inflate message: unmap, one shootdown, free the frames. */
  private discard(vm: GuestVm, gpas: bigint[], perPfnCost: boolean): number {
    const host = this.host;
    const frames: bigint[] = [];
    for (const gpa of gpas) {
      const key = host.key(vm, gpa);
      if (perPfnCost) host.charge("balloon", host.oc.balloon.pfnCycles);
      this.peers.zswap?.discard(key);
      this.peers.swap?.discard(key);
      const hpa = host.frameOf(vm, gpa);
      if (hpa === undefined) continue;
      // Discarding one page of a 2M mapping splits it (as MADV_DONTNEED on part of a THP does).
      host.breakLargePage(vm, gpa, "balloon");
      vm.tdp.unmapPage(gpa);
      vm.vm.dropBacking(gpa);
      if (this.peers.ksm?.isSharer(key)) this.peers.ksm.forget(key);
      else frames.push(hpa);
    }
    host.flush(vm, "balloon");
    for (const hpa of frames) host.frames.release(hpa, "4K");
    return frames.length;
  }

  /** The driver's leak_balloon: PFNs go back to the guest allocator, one message per 256. */
  private deflate(vm: GuestVm, pages: number): number {
    const state = this.state[vm.index];
    let done = 0;
    while (done < pages && state.pages.length > 0) {
      const batch = state.pages.splice(-Math.min(PFNS_PER_MESSAGE, pages - done));
      for (const gpa of batch) vm.os.frames.release(gpa, "4K");
      done += batch.length;
      this.counters.deflate_messages++;
      this.counters.pages_deflated += batch.length;
      this.host.exit("balloon", vm, true);
    }
    return done;
  }

  /** The OOM notifier with DEFLATE_ON_OOM: 256 pages back to the guest, target lowered to match. */
  deflateOnOom(vm: GuestVm): number {
    this.counters.oom_deflations++;
    const freed = this.deflate(vm, OOM_PAGES);
    const state = this.state[vm.index];
    state.target = Math.min(state.target, state.pages.length);
    return freed;
  }

  /** The stats-queue poll sets the host's clock when it is on; reporting runs at its own times. */
  get period(): number | undefined {
    const interval = this.host.oc.balloon.statsIntervalMs;
    return interval > 0 ? this.host.ms(interval) : undefined;
  }

  /** Reporting work that is due, and the stats queue: the host returns the buffer, the driver refills
   *  it (one exit per VM). */
  fire(): void {
    const host = this.host;
    for (const vm of host.vms) if (this.reportAt[vm.index] <= host.now()) this.report(vm);
    if (this.statsAt > host.now()) return;
    this.statsAt += host.ms(host.oc.balloon.statsIntervalMs);
    for (const vm of host.vms) {
      this.counters.stats_requests++;
      host.exit("balloon", vm, true);
      const s = this.state[vm.index].stats;
      const g = vm.stats;
      const fileCached = [...vm.gvaToGpa.keys()].filter((gva) => host.fileContent(vm.index, gva)).length;
      s.swap_in = g.swapIn;
      s.swap_out = g.swapOut;
      s.major_faults = g.majorFaults;
      s.minor_faults = g.minorFaults;
      s.free_memory = vm.freePages * 4096;
      s.total_memory = (vm.memoryPages - this.actual(vm)) * 4096;
      s.available_memory = (vm.freePages + fileCached) * 4096;
      s.disk_caches = fileCached * 4096;
      s.hugetlb_allocations = 0;
      s.hugetlb_failures = 0;
    }
  }
}
