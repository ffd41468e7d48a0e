// Host-side reclaim of guest memory: zswap (a compressed pool in host memory, Documentation/admin-
// guide/mm/zswap.rst) in front of a swap device. Cold pages are found with the EPT accessed flags
// (clear A, reclaim a page whose A is still clear when the clock hand comes back, as KVM's page
// aging does, without a flush). Reclaiming a page unmaps it from the EPT, shoots down the VM's stale
// translations and frees (scrubs) the frame; touching it again is an EPT violation that decompresses
// it or reads it from the swap device, with readahead of its cluster.

import type { ExitRecord } from "../core/machine.js";
import type { NestedFaultHook } from "../host/hooks.js";
import type { ExitAction } from "../hypervisor/technique.js";
import { isSameFilled, PAGE_BYTES, type PageContent } from "./content.js";
import type { GuestVm } from "./guest.js";
import type { Ksm } from "./ksm.js";
import { CYCLES_DEVICE_WAIT, type OvercommitServices } from "./services.js";

/** KSM pages are not reclaimed here (they have their own rmap walk in Linux, not modelled). */
type Shared = Pick<Ksm, "isSharer"> | undefined;

export interface ZswapCounters {
  stored_pages: number;
  same_filled_pages: number;
  pool_total_size: number;
  pool_limit_hit: number;
  reject_compress_poor: number;
  reject_no_swap: number;
  written_back_pages: number;
  loads: number;
  stores: number;
  decompress_cycles: number;
}

export interface SwapCounters {
  swap_pages: number;
  pswpout: number;
  pswpin: number;
  readahead_pages: number;
  readahead_hits: number;
  double_paging: number;
  wait_cycles: number;
  full: number;
}

/**
 * The clock hand over every VM's application pages: a page whose EPT accessed flag is set gets a second
 * chance (the flag is cleared); one whose flag is still clear is cold.
 */
export class ColdPages {
  private list: bigint[] = [];
  private hand = 0;

  constructor(private readonly host: OvercommitServices) {}

  /** Up to `count` cold pages, in clock order; at most two sweeps. */
  take(count: number, skip: (key: bigint) => boolean): bigint[] {
    const host = this.host;
    // A set: the hand may wrap and meet a page twice in one call.
    const found = new Set<bigint>();
    let steps = 0;
    const rebuild = () => {
      this.list = [];
      for (const vm of host.vms)
        for (const gpa of [...vm.gpaToGva.keys()].sort((a, b) => (a < b ? -1 : a > b ? 1 : 0)))
          this.list.push(host.key(vm, gpa));
      this.hand = 0;
    };
    if (this.hand >= this.list.length) rebuild();
    let limit = 2 * this.list.length;
    while (found.size < count && steps < limit) {
      if (this.hand >= this.list.length) {
        rebuild();
        if (this.list.length === 0) break;
        limit = Math.max(limit, 2 * this.list.length);
      }
      const key = this.list[this.hand++];
      steps++;
      const vm = host.vmOfKey(key);
      const gpa = host.gpaOfKey(key);
      if (found.has(key) || !vm.gpaToGva.has(gpa) || host.frameOf(vm, gpa) === undefined || skip(key))
        continue;
      if (vm.tdp.testAndClearAccessed(gpa)) continue;
      found.add(key);
    }
    return [...found];
  }
}

export class HostSwap implements NestedFaultHook {
  readonly counters: SwapCounters = {
    swap_pages: 0,
    pswpout: 0,
    pswpin: 0,
    readahead_pages: 0,
    readahead_hits: 0,
    double_paging: 0,
    wait_cycles: 0,
    full: 0,
  };
  private readonly slots = new Map<bigint, PageContent>();
  /** Pages brought in by readahead and not touched yet (the swap cache). */
  private readonly readahead = new Set<bigint>();
  readonly cold: ColdPages;

  constructor(
    private readonly host: OvercommitServices,
    private readonly ksm: Shared,
  ) {
    this.cold = new ColdPages(host);
  }

  /** A fault on a swapped page reads it back; a fault on a readahead page is a plain fill. */
  nestedFault(guest: number, exit: ExitRecord): ExitAction | undefined {
    const vm = this.host.vms[guest];
    const key = this.host.key(vm, exit.guestPhysical);
    if (!this.holds(key)) {
      this.touched(key);
      return undefined;
    }
    this.swapIn(vm, exit.guestPhysical, true);
    this.host.check("swap fault");
    return "retry";
  }

  holds(key: bigint): boolean {
    return this.slots.has(key);
  }

  contentOf(key: bigint): PageContent | undefined {
    return this.slots.get(key);
  }

  get hasRoom(): boolean {
    return this.slots.size < this.host.oc.swap.sizePages;
  }

  /** Device time for `pages` contiguous pages: one request's latency plus the transfer. */
  deviceCycles(pages: number): number {
    const oc = this.host.oc.swap;
    const transferUs = (pages * PAGE_BYTES) / oc.bandwidthMBps; // bytes / (MB/s) = microseconds
    return this.host.us(oc.latencyUs + transferUs);
  }

  /** Writes a page's content to the swap device (asynchronously: the writer does not wait). */
  store(key: bigint, content: PageContent): boolean {
    if (!this.hasRoom) {
      this.counters.full++;
      return false;
    }
    this.slots.set(key, content);
    this.counters.pswpout++;
    this.counters.swap_pages = this.slots.size;
    return true;
  }

  /** Reclaims `pages` cold pages straight to swap (zswap off, or it refused them). */
  reclaim(pages: number, direct: boolean): number {
    const host = this.host;
    let freed = 0;
    for (const key of this.cold.take(pages, (k) => this.ksm?.isSharer(k) ?? false)) {
      if (!this.hasRoom) break;
      const vm = host.vmOfKey(key);
      const gpa = host.gpaOfKey(key);
      const content = evict(host, vm, gpa, "swap");
      this.store(key, content);
      if (direct) host.charge("swap", this.deviceCycles(1), CYCLES_DEVICE_WAIT);
      freed++;
    }
    return freed;
  }

  /**
   * A fault on a swapped page: read its cluster (2^page-cluster aligned slots around it) in one request,
   * map the faulting page and keep the others in the swap cache for their own (minor) faults.
   */
  swapIn(vm: GuestVm, gpa: bigint, fault: boolean): void {
    const host = this.host;
    const key = host.key(vm, gpa);
    if (fault) host.exit("swap", vm, false);
    const cluster = 1n << BigInt(host.oc.swap.pageCluster);
    const first = (gpa >> 12n) & ~(cluster - 1n);
    // The faulting page comes in last, so reclaim triggered by the readahead allocations cannot take
    // it again before the access is retried.
    const keys: bigint[] = [];
    for (let page = first; page < first + cluster; page++) {
      const other = host.key(vm, page << 12n);
      if (other !== key && this.slots.has(other)) keys.push(other);
    }
    keys.push(key);
    const wait = this.deviceCycles(keys.length);
    host.charge("swap", wait, CYCLES_DEVICE_WAIT);
    this.counters.wait_cycles += wait;
    for (const k of keys) {
      const content = this.slots.get(k) as PageContent;
      this.slots.delete(k);
      const page = host.gpaOfKey(k);
      const hpa = host.frames.alloc("4K");
      host.frames.setContent(hpa, content);
      vm.vm.setBacking(page, hpa);
      this.counters.pswpin++;
      if (k === key) {
        if (fault) vm.tdp.mapPage(page, hpa, true);
      } else {
        this.counters.readahead_pages++;
        this.readahead.add(k);
      }
    }
    if (this.readahead.delete(key)) this.counters.readahead_hits++;
    this.counters.swap_pages = this.slots.size;
  }

  /** A readahead page was touched: its EPT fault is a plain fill (counted as a readahead hit). */
  touched(key: bigint): void {
    if (this.readahead.delete(key)) this.counters.readahead_hits++;
  }

  /** The guest gave the page up (balloon): its slot is freed without being read. */
  discard(key: bigint): void {
    this.slots.delete(key);
    this.readahead.delete(key);
    this.counters.swap_pages = this.slots.size;
  }
}

/** Unmaps a guest page from its VM, shoots down stale translations and frees the frame. */
export function evict(
  host: OvercommitServices,
  vm: GuestVm,
  gpa: bigint,
  mechanism: "zswap" | "swap",
): PageContent {
  // A page of a 2M mapping goes alone: the mapping is split first (as reclaim splits a THP).
  host.breakLargePage(vm, gpa, mechanism);
  const hpa = host.frameOf(vm, gpa) as bigint;
  const content = host.frames.contentOf(hpa);
  vm.tdp.unmapPage(gpa);
  vm.vm.dropBacking(gpa & ~0xfffn);
  host.flush(vm, mechanism);
  host.frames.release(hpa, "4K");
  return content;
}

interface PoolEntry {
  content: PageContent;
  /** Bytes it takes in the pool (0 for a same-filled page: only its value is kept). */
  bytes: number;
}

export class Zswap implements NestedFaultHook {
  readonly counters: ZswapCounters = {
    stored_pages: 0,
    same_filled_pages: 0,
    pool_total_size: 0,
    pool_limit_hit: 0,
    reject_compress_poor: 0,
    reject_no_swap: 0,
    written_back_pages: 0,
    loads: 0,
    stores: 0,
    decompress_cycles: 0,
  };
  /** Insertion order is LRU order: writeback takes the oldest first. */
  private readonly pool = new Map<bigint, PoolEntry>();
  /** After hitting the limit, zswap refuses stores until the pool is below the accept threshold. */
  private refusing = false;

  constructor(
    private readonly host: OvercommitServices,
    /** Where rejected and written-back pages go. */
    private readonly swap: HostSwap | undefined,
    private readonly ksm: Shared,
  ) {}

  /** A fault on a compressed page decompresses it. */
  nestedFault(guest: number, exit: ExitRecord): ExitAction | undefined {
    const vm = this.host.vms[guest];
    if (!this.holds(this.host.key(vm, exit.guestPhysical))) return undefined;
    this.load(vm, exit.guestPhysical, true);
    this.host.check("zswap fault");
    return "retry";
  }

  holds(key: bigint): boolean {
    return this.pool.has(key);
  }

  contentOf(key: bigint): PageContent | undefined {
    return this.pool.get(key)?.content;
  }

  get maxPoolBytes(): number {
    return (this.host.frames.capacity * PAGE_BYTES * this.host.oc.zswap.maxPoolPercent) / 100;
  }

  /** Reclaims `pages` cold pages into the pool (and to swap when the pool refuses them). */
  reclaim(pages: number, direct: boolean): number {
    const host = this.host;
    const swap = this.swap;
    let freed = 0;
    const cold = swap?.cold ?? this.cold;
    for (const key of cold.take(pages, (k) => this.ksm?.isSharer(k) ?? false)) {
      const vm = host.vmOfKey(key);
      const gpa = host.gpaOfKey(key);
      const content = host.frames.contentOf(host.frameOf(vm, gpa) as bigint);
      const sameFilled = isSameFilled(content);
      const bytes = sameFilled ? 0 : content.compressedSize;
      if (!sameFilled && bytes > host.oc.zswap.maxCompressedBytes) {
        // Compresses too poorly to be worth keeping: straight to swap, or it stays.
        this.counters.reject_compress_poor++;
        if (!swap?.hasRoom) continue;
        swap.store(key, evict(host, vm, gpa, "swap"));
        freed++;
        continue;
      }
      if (!this.makeRoom(bytes)) {
        if (!swap?.hasRoom) {
          this.counters.reject_no_swap++;
          continue;
        }
        swap.store(key, evict(host, vm, gpa, "swap"));
        freed++;
        continue;
      }
      host.charge("zswap", host.us(host.oc.zswap.compressUs[host.oc.zswap.compressor]));
      evict(host, vm, gpa, "zswap");
      this.pool.set(key, { content, bytes });
      this.counters.stores++;
      if (sameFilled) this.counters.same_filled_pages++;
      this.account();
      freed++;
    }
    if (direct) host.check("direct reclaim");
    return freed;
  }

  private coldScanner: ColdPages | undefined;
  private get cold(): ColdPages {
    this.coldScanner ??= new ColdPages(this.host);
    return this.coldScanner;
  }

  /** Room for `bytes` more: at the limit, the oldest entries are written back to swap. */
  private makeRoom(bytes: number): boolean {
    const limit = this.maxPoolBytes;
    const accept = (limit * this.host.oc.zswap.acceptThresholdPercent) / 100;
    if (this.refusing && this.counters.pool_total_size <= accept) this.refusing = false;
    if (!this.refusing && this.counters.pool_total_size + bytes <= limit) return true;
    if (!this.refusing) this.counters.pool_limit_hit++;
    this.refusing = true;
    const swap = this.swap;
    // Write back the oldest pages until the pool is below the accept threshold again.
    while (swap?.hasRoom && this.counters.pool_total_size > accept - bytes && this.pool.size > 0) {
      const [oldest, entry] = this.pool.entries().next().value as [bigint, PoolEntry];
      this.pool.delete(oldest);
      swap.store(oldest, entry.content);
      this.counters.written_back_pages++;
      this.account();
    }
    if (this.counters.pool_total_size <= accept - bytes) {
      this.refusing = false;
      return this.counters.pool_total_size + bytes <= limit;
    }
    return false;
  }

  private account(): void {
    let bytes = 0;
    let same = 0;
    for (const entry of this.pool.values()) {
      bytes += entry.bytes;
      if (entry.bytes === 0) same++;
    }
    this.counters.pool_total_size = bytes;
    this.counters.stored_pages = this.pool.size;
    this.counters.same_filled_pages = same;
    this.host.frames.setPoolBytes(bytes);
  }

  /** A fault on a compressed page: decompress into a fresh frame and map it. */
  load(vm: GuestVm, gpa: bigint, fault: boolean): void {
    const host = this.host;
    const key = host.key(vm, gpa);
    const entry = this.pool.get(key) as PoolEntry;
    this.pool.delete(key);
    this.account();
    if (fault) host.exit("zswap", vm, false);
    const cycles = entry.bytes === 0 ? 0 : host.us(host.oc.zswap.decompressUs[host.oc.zswap.compressor]);
    host.charge("zswap", cycles);
    this.counters.decompress_cycles += cycles;
    this.counters.loads++;
    const hpa = host.frames.alloc("4K");
    host.frames.setContent(hpa, entry.content);
    vm.vm.setBacking(gpa & ~0xfffn, hpa);
    if (fault) vm.tdp.mapPage(gpa, hpa, true);
  }

  /** The guest gave the page up (balloon): its entry is dropped. */
  discard(key: bigint): void {
    if (this.pool.delete(key)) this.account();
  }
}
