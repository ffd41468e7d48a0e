// The host's half of in-core demand paging (assembly/demand.ts). Before each replay call it publishes
// what the guest kernel's demand path reads, when that changed: each CPU's address space and VMAs,
// and, per page size, the frames the kernel's allocator would hand out next. After the call it drains
// the core's log of the faults it handled, and the kernel accounts each one (allocating the same
// frames in the same order) before any other software runs. The kernel is handed in; this module
// knows nothing of the host loop that calls it.
import * as L from "../core/layout.js";
import type { Machine } from "../core/machine.js";
import type { PageSize } from "../core/types.js";
import type { FrameAllocator } from "../guest/frames.js";
import type { GuestOS } from "../guest/os.js";

const SIZES: PageSize[] = ["4K", "2M", "1G"];
/** The fewest frames a pool is published with. */
const MIN_POOL = 64;

export class DemandPaging {
  /** The kernel's layout generation the core's copy of the VMAs was made from (-1: none yet). */
  private publishedLayout = -1;
  /** The page sizes (bit per size code) of the VMAs published. */
  private sizesPublished = 0;
  /** Per pool: the allocator's change count for its size when the pool was published (-1: none). */
  private readonly publishedFrames: number[] = [-1, -1, -1, -1];

  constructor(
    private readonly machine: Machine,
    private readonly os: GuestOS,
  ) {}

  /** Turns the core's demand paging on, with the kernel's state as it is now. */
  publish(): void {
    const region = this.machine.demandRegion();
    const os = this.os;
    if (region.getUint32(L.DM_ENABLED, true) === 0) {
      region.setUint32(L.DM_FAULT_CYCLES, os.config.faultCycles, true);
      region.setUint32(L.DM_LEVELS, os.levels, true);
      region.setUint32(L.DM_TABLE_POOL, os.tableFrames ? L.DemandPool.Tables : L.DemandPool.Small, true);
      region.setUint32(L.DM_ENABLED, 1, true);
    }
    if (this.publishedLayout !== os.layoutGeneration) this.publishLayout(region);
    // Leaves of each size the VMAs use; page tables from the 4K pool, or from their own allocator.
    for (let code = 0; code < SIZES.length; code++)
      if (code === 0 || (this.sizesPublished & (1 << code)) !== 0)
        this.publishPool(region, code, os.frames, SIZES[code]);
    if (os.tableFrames) this.publishPool(region, L.DemandPool.Tables, os.tableFrames, "4K");
  }

  /** Turns the core's demand paging off (every #PF exits again). */
  withdraw(): void {
    const region = this.machine.demandRegion();
    region.setUint32(L.DM_ENABLED, 0, true);
    this.publishedLayout = -1;
    this.publishedFrames.fill(-1);
  }

  /**
   * Has the kernel account every fault the core handled since the last drain, in order; `visit` sees
   * each one's CPU and error code (the host counts them as the exits they are).
   */
  drain(visit: (cpu: number, error: bigint) => void): void {
    const region = this.machine.demandRegion();
    const count = region.getUint32(L.DM_LOG_COUNT, true);
    if (count === 0) return;
    for (let i = 0; i < count; i++) {
      const at = L.DM_LOG + i * L.DEMAND_LOG_SIZE;
      const cpu = region.getUint32(at + L.DL_CPU, true);
      const tables: bigint[] = [];
      for (let t = 0; t < region.getUint32(at + L.DL_TABLE_COUNT, true); t++)
        tables.push(region.getBigUint64(at + L.DL_TABLES + t * 8, true));
      this.os.demandFaultHandled(
        cpu,
        region.getBigUint64(at + L.DL_LINEAR, true),
        SIZES[region.getUint32(at + L.DL_SIZE_CODE, true)],
        region.getBigUint64(at + L.DL_FRAME, true),
        region.getUint32(at + L.DL_TOP_LEVEL, true),
        tables,
      );
      visit(cpu, region.getBigUint64(at + L.DL_ERROR, true));
    }
    region.setUint32(L.DM_LOG_COUNT, 0, true);
    // The allocations just made are the frames the pools gave out: what is left in them still comes next.
    for (let pool = 0; pool < this.publishedFrames.length; pool++) {
      const tables = pool === L.DemandPool.Tables;
      const allocator = tables ? this.os.tableFrames : this.os.frames;
      if (allocator && this.publishedFrames[pool] >= 0)
        this.publishedFrames[pool] = allocator.changes[tables ? "4K" : SIZES[pool]];
    }
  }

  private cpuBlock(cpu: number): number {
    return L.DM_CPUS + cpu * L.DEMAND_CPU_SIZE;
  }

  private vmaAt(cpu: number, index: number): number {
    return L.DM_VMAS + (cpu * L.DEMAND_VMAS + index) * L.DEMAND_VMA_SIZE;
  }

  /** Each CPU's running address space and VMAs; none (every fault exits) past DEMAND_VMAS of them. */
  private publishLayout(region: DataView): void {
    this.sizesPublished = 0;
    for (let cpu = 0; cpu < this.os.cpus; cpu++) {
      const view = this.os.demandView(cpu);
      const block = this.cpuBlock(cpu);
      if (!view || view.vmas.length > L.DEMAND_VMAS) {
        region.setUint32(block + L.DC_VMA_COUNT, 0, true);
        continue;
      }
      region.setBigUint64(block + L.DC_ROOT, view.root, true);
      view.vmas.forEach((vma, v) => {
        const at = this.vmaAt(cpu, v);
        region.setBigUint64(at + L.DV_START, vma.start, true);
        region.setBigUint64(at + L.DV_END, vma.end, true);
        region.setBigUint64(at + L.DV_FLAGS, vma.flags, true);
        region.setUint32(at + L.DV_SIZE_CODE, vma.sizeCode, true);
        this.sizesPublished |= 1 << vma.sizeCode;
      });
      region.setUint32(block + L.DC_VMA_COUNT, view.vmas.length, true);
    }
    this.publishedLayout = this.os.layoutGeneration;
  }

  /**
   * The pool's frames, when the allocator moved since they were published or few are left. A pool
   * holds twice what the last one gave out (at least MIN_POOL, at most the capacity): peeking costs
   * host time per frame, and a run that faults little should not pay for a thousand.
   */
  private publishPool(region: DataView, pool: number, allocator: FrameAllocator, size: PageSize): void {
    const at = L.DM_POOLS + pool * 8;
    const taken = region.getUint32(at + 4, true);
    const left = region.getUint32(at, true) - taken;
    const want = Math.min(L.DEMAND_POOL_CAPACITY, Math.max(MIN_POOL, 2 * taken));
    if (this.publishedFrames[pool] === allocator.changes[size] && 2 * left >= want) return;
    const frames = allocator.peek(size, want);
    const base = L.DM_POOL_FRAMES + pool * L.DEMAND_POOL_CAPACITY * 8;
    for (const [i, frame] of frames.entries()) region.setBigUint64(base + i * 8, frame, true);
    region.setUint32(at, frames.length, true);
    region.setUint32(at + 4, 0, true);
    this.publishedFrames[pool] = allocator.changes[size];
  }
}
