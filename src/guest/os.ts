// The guest OS model: a kernel that builds real x86-64 page tables in physical memory, runs
// processes in their own address spaces (tagged by PCID), pages memory in on demand, and changes its
// page tables the way Linux does: mmap, munmap (freeing page tables no VMA needs), mprotect,
// madvise(MADV_DONTNEED), fork with copy-on-write, exec and exit, each with Linux's TLB flushes (INVLPG
// up to 33 pages, else a flush of the whole address space; IPIs to the other CPUs running it; a flush
// at the next switch on CPUs that ran it before). It changes translation only through its PagingCpu,
// so it runs unchanged on bare metal or in a VM, and each technique pays what it pays for these.

import { MemvirtError } from "../core/machine.js";
import { PAGE_SHIFT, type PageSize } from "../core/types.js";
import type { GuestConfig } from "./config.js";
import { FrameAllocator } from "./frames.js";
import type { PagingCpu } from "./paging-cpu.js";

export const PTE_P = 1n;
export const PTE_RW = 1n << 1n;
export const PTE_US = 1n << 2n;
export const PTE_A = 1n << 5n;
export const PTE_D = 1n << 6n;
export const PTE_PS = 1n << 7n;
export const PTE_G = 1n << 8n;
export const PTE_XD = 1n << 63n;
export const ADDRESS_MASK = 0x000f_ffff_ffff_f000n;
const CR3_NOFLUSH = 1n << 63n;

/** #PF error-code bits the kernel reads. */
const PF_P = 1n;
const PF_W = 2n;
const PF_RSVD = 8n;
const PF_ID = 16n;

export interface Protection {
  writable: boolean;
  user: boolean;
  executable: boolean;
}

export interface Vma {
  start: bigint;
  end: bigint;
  protection: Protection;
  pageSize: PageSize;
}

export interface Process {
  pid: number;
  pcid: number;
  /** Physical address of the top-level table. */
  root: bigint;
  vmas: Vma[];
  /** CPUs whose TLBs may hold this address space's PCID-tagged entries. */
  cpusSeen: Set<number>;
  /**
   * CPUs that ran it and missed a flush since (they were running something else): their next switch
   * to it flushes its PCID instead of keeping its entries (Linux's per-CPU tlb_gen check).
   */
  staleOn: Set<number>;
  /** Frames mapped into this address space (base -> size): what it may reach, and nothing else. */
  frames: Map<bigint, PageSize>;
  /** Its page tables below the root, by tableKey(level, address). */
  tables: Map<bigint, bigint>;
  /** Told to the CPU (pinTables) before its first use. */
  pinned: boolean;
  alive: boolean;
}

export type FaultOutcome = "retry" | "segv";

export const SYSCALLS = ["mmap", "munmap", "mprotect", "madvise", "fork", "exec", "exit"] as const;
export type Syscall = (typeof SYSCALLS)[number];

export interface GuestStats {
  minorFaults: number;
  segvs: number;
  tablesAllocated: number;
  tablesFreed: number;
  contextSwitches: number;
  /** TLB shootdowns: flushes the kernel asked of other CPUs running the address space (IPIs). */
  shootdowns: number;
  /** CPUs those shootdowns reached. */
  shootdownTargets: number;
  pagesMapped: Record<PageSize, number>;
  /** Address-space system calls. */
  syscalls: Record<Syscall, number>;
  /** Leaves cleared by munmap, madvise(MADV_DONTNEED), exec and exit. */
  pagesUnmapped: number;
  /** Write faults on pages fork left read-only, and those of them that copied the page. */
  cowFaults: number;
  cowCopies: number;
  /** The kernel's TLB flushes on the CPUs running the address space: single pages, whole PCIDs. */
  tlbFlushes: { invlpg: number; full: number };
  /** Switches that flushed because the CPU had missed a flush of the address space. */
  deferredFlushes: number;
}

/** A region of a program image that exec maps (demand paged). */
export interface Segment {
  start: bigint;
  length: bigint;
  protection: Protection;
}

const LEVEL_OF: Record<PageSize, number> = { "4K": 1, "2M": 2, "1G": 3 };
const SIZE_AT_LEVEL: PageSize[] = ["4K", "4K", "2M", "1G"];
const USER_TOP = 1n << 47n;
const USER_TOP_LA57 = 1n << 56n;
/** Linux's tlb_single_page_flush_ceiling: above this many pages a flush takes the whole PCID. */
export const FLUSH_CEILING = 33;
/** Where mmap places mappings without an address, top down (Linux's mmap_base, without ASLR). */
export const MMAP_BASE = 0x7f00_0000_0000n;
const PCID_LIMIT = 4095;

/** Bytes a table of `level` spans (a level-1 table maps 2 MiB). */
function tableSpan(level: number): bigint {
  return 1n << BigInt(12 + 9 * level);
}

/** The key of the table of `level` covering `la` (Process.tables). */
function tableKey(level: number, la: bigint): bigint {
  return ((la >> BigInt(12 + 9 * level)) << 3n) | BigInt(level);
}

/** A leaf the kernel cleared: its page, and the frame to release once the TLBs are flushed. */
interface Cleared {
  page: bigint;
  frame: bigint;
  size: PageSize;
}

/** A page table the kernel unlinked, to release once the TLBs are flushed. */
interface TableRef {
  level: number;
  base: bigint;
  address: bigint;
}

export class GuestOS {
  readonly frames: FrameAllocator;
  readonly processes: Process[] = [];
  readonly running: (Process | undefined)[];
  readonly levels: number;
  readonly stats: GuestStats = {
    minorFaults: 0,
    segvs: 0,
    tablesAllocated: 0,
    tablesFreed: 0,
    contextSwitches: 0,
    shootdowns: 0,
    shootdownTargets: 0,
    pagesMapped: { "4K": 0, "2M": 0, "1G": 0 },
    syscalls: { mmap: 0, munmap: 0, mprotect: 0, madvise: 0, fork: 0, exec: 0, exit: 0 },
    pagesUnmapped: 0,
    cowFaults: 0,
    cowCopies: 0,
    tlbFlushes: { invlpg: 0, full: 0 },
    deferredFlushes: 0,
  };
  /** Top-level entries of the kernel half, copied into every new address space. */
  private readonly kernelRoot: bigint;
  /** Frames mapped by more than one address space (after fork), with how many map them. */
  private readonly sharedFrames = new Map<bigint, number>();
  /** PCIDs of exited address spaces, handed out again (a CPU's first load of a new one flushes it). */
  private readonly freePcids: number[] = [];
  private nextPid = 1;
  private nextPcid = 1;
  /**
   * Advanced whenever a CPU's view of memory a demand fault depends on changes: a VMA added, split,
   * removed or reprotected, an address space switched to or torn down. The host republishes the
   * core's copy (demandView) when it moves.
   */
  layoutGeneration = 0;

  constructor(
    readonly cpu: PagingCpu,
    readonly config: GuestConfig,
    readonly cpus: number,
    seed: number,
    /**
     * Where page tables come from, when not `frames`: Linux groups unmovable allocations such as page
     * tables into their own pageblocks, so freed application memory can form whole free blocks.
     */
    readonly tableFrames?: FrameAllocator,
  ) {
    this.levels = config.levels;
    this.frames = new FrameAllocator(config.memory, config.frames, seed);
    this.running = Array.from({ length: cpus }, () => undefined);
    this.kernelRoot = this.newTable();
  }

  /** Highest user address + 1 (the lower canonical half). */
  get userTop(): bigint {
    return this.levels === 5 ? USER_TOP_LA57 : USER_TOP;
  }

  private newTable(): bigint {
    this.stats.tablesAllocated++;
    return (this.tableFrames ?? this.frames).alloc("4K");
  }

  private entryAddress(table: bigint, la: bigint, level: number): bigint {
    return table + ((la >> BigInt(12 + 9 * (level - 1))) & 0x1ffn) * 8n;
  }

  createProcess(): Process {
    if (this.processes.length >= PCID_LIMIT)
      throw new MemvirtError(`the guest OS model supports at most ${PCID_LIMIT} processes (one PCID each)`);
    const pcid = this.freePcids.pop() ?? this.nextPcid++;
    const root = this.newTable();
    // The kernel half (top-level slots 256..511) is shared by every address space.
    const kernel = this.cpu.readEntries(this.kernelRoot + 256n * 8n, 256);
    for (let slot = 256; slot < 512; slot++) {
      const entry = kernel[slot - 256];
      if (entry !== 0n) this.cpu.writeEntry(root + BigInt(slot) * 8n, entry, this.levels);
    }
    const process: Process = {
      pid: this.nextPid++,
      pcid,
      root,
      vmas: [],
      cpusSeen: new Set(),
      staleOn: new Set(),
      frames: new Map(),
      tables: new Map(),
      pinned: false,
      alive: true,
    };
    this.processes.push(process);
    return process;
  }

  /** A region the kernel will page in on demand. */
  addVma(process: Process, start: bigint, end: bigint, protection: Protection, pageSize: PageSize): Vma {
    const align = 1n << BigInt(PAGE_SHIFT[pageSize]);
    const vma = {
      start: start & ~(align - 1n),
      end: (end + align - 1n) & ~(align - 1n),
      protection,
      pageSize,
    };
    process.vmas.push(vma);
    process.vmas.sort((a, b) => (a.start < b.start ? -1 : 1));
    this.layoutGeneration++;
    return vma;
  }

  findVma(process: Process, la: bigint): Vma | undefined {
    for (const vma of process.vmas) if (la >= vma.start && la < vma.end) return vma;
    return undefined;
  }

  private leafFlags(protection: Protection, pageSize: PageSize, global: boolean): bigint {
    let flags = PTE_P;
    if (protection.writable) flags |= PTE_RW;
    if (protection.user) flags |= PTE_US;
    if (!protection.executable) flags |= PTE_XD;
    if (pageSize !== "4K") flags |= PTE_PS;
    if (global && this.config.globalPages) flags |= PTE_G;
    return flags;
  }

  /**
   * Installs one leaf for `la` at `pageSize`, creating the tables above it (registered in `tables`
   * for a process's address space). Intermediate entries grant everything (P, RW, US) so the leaf
   * alone decides, as Linux does for user tables.
   */
  private installLeaf(
    root: bigint,
    la: bigint,
    frame: bigint,
    pageSize: PageSize,
    flags: bigint,
    tables?: Map<bigint, bigint>,
  ): void {
    const leafLevel = LEVEL_OF[pageSize];
    let table = root;
    for (let level = this.levels; level > leafLevel; level--) {
      const address = this.entryAddress(table, la, level);
      const entry = this.cpu.readEntry(address);
      if ((entry & PTE_P) === 0n) {
        const child = this.newTable();
        this.cpu.writeEntry(address, child | PTE_P | PTE_RW | PTE_US, level);
        tables?.set(tableKey(level - 1, la), child);
        table = child;
      } else if ((entry & PTE_PS) !== 0n) {
        throw new MemvirtError(`0x${la.toString(16)} is already mapped by a larger page`);
      } else {
        table = entry & ADDRESS_MASK;
      }
    }
    this.cpu.writeEntry(this.entryAddress(table, la, leafLevel), frame | flags, leafLevel);
  }

  /** A fresh frame mapped at `la` in `process` (demand paging and eager mapping). */
  private mapFresh(process: Process, la: bigint, pageSize: PageSize, flags: bigint): void {
    const frame = this.frames.alloc(pageSize);
    this.installLeaf(process.root, la, frame, pageSize, flags, process.tables);
    process.frames.set(frame, pageSize);
    this.stats.pagesMapped[pageSize]++;
  }

  /** Maps [start, start+length) eagerly with fresh frames. */
  mapRange(
    process: Process,
    start: bigint,
    length: bigint,
    pageSize: PageSize,
    protection: Protection,
  ): void {
    const step = 1n << BigInt(PAGE_SHIFT[pageSize]);
    const flags = this.leafFlags(protection, pageSize, false);
    for (let la = start & ~(step - 1n); la < start + length; la += step)
      this.mapFresh(process, la, pageSize, flags);
  }

  /** Maps kernel memory into the shared kernel half (before processes are created). */
  mapKernel(start: bigint, length: bigint, pageSize: PageSize): void {
    const step = 1n << BigInt(PAGE_SHIFT[pageSize]);
    const flags = this.leafFlags({ writable: true, user: false, executable: true }, pageSize, true);
    for (let la = start & ~(step - 1n); la < start + length; la += step) {
      this.installLeaf(this.kernelRoot, la, this.frames.alloc(pageSize), pageSize, flags);
      this.stats.pagesMapped[pageSize]++;
    }
  }

  /** The leaf entry translating `la`, with its address and level, or undefined. */
  lookup(process: Process, la: bigint): { address: bigint; entry: bigint; level: number } | undefined {
    let table = process.root;
    for (let level = this.levels; level >= 1; level--) {
      const address = this.entryAddress(table, la, level);
      const entry = this.cpu.readEntry(address);
      if ((entry & PTE_P) === 0n) return undefined;
      if (level === 1 || (entry & PTE_PS) !== 0n) return { address, entry, level };
      table = entry & ADDRESS_MASK;
    }
    return undefined;
  }

  // --- walking a process's own tables ---------------------------------------------------------------

  /** The process's tables of `level` and below overlapping [start, end), lowest level first. */
  private tablesIn(process: Process, start: bigint, end: bigint, maxLevel = 3): TableRef[] {
    const found: TableRef[] = [];
    for (const [key, address] of process.tables) {
      const level = Number(key & 7n);
      if (level > maxLevel) continue;
      const base = (key >> 3n) << BigInt(12 + 9 * level);
      if (base < end && base + tableSpan(level) > start) found.push({ level, base, address });
    }
    return found.sort((a, b) => a.level - b.level || (a.base < b.base ? -1 : a.base > b.base ? 1 : 0));
  }

  /** Calls `visit` for each present leaf in [start, end), with its entry's address, value and page. */
  private forEachLeaf(
    process: Process,
    start: bigint,
    end: bigint,
    visit: (address: bigint, entry: bigint, level: number, page: bigint) => void,
  ): void {
    for (const table of this.tablesIn(process, start, end)) {
      const shift = BigInt(12 + 9 * (table.level - 1));
      const first = start > table.base ? Number((start - table.base) >> shift) : 0;
      // Slots [first, last) hold the pages below `end` (a slot's page starts below it).
      const last = end - table.base >= 512n << shift ? 512 : Number((end - table.base - 1n) >> shift) + 1;
      if (last <= first) continue;
      // One scan of the slots: a visit changes only its own entry (or another process's tables).
      const entries = this.cpu.readEntries(table.address + BigInt(first) * 8n, last - first);
      for (let index = first; index < last; index++) {
        const entry = entries[index - first];
        if ((entry & PTE_P) === 0n) continue;
        if (table.level !== 1 && (entry & PTE_PS) === 0n) continue;
        visit(table.address + BigInt(index) * 8n, entry, table.level, table.base + (BigInt(index) << shift));
      }
    }
  }

  /** Clears the leaves in [start, end); their frames are released after the flush (Linux's mmu_gather). */
  private zap(process: Process, start: bigint, end: bigint): Cleared[] {
    const cleared: Cleared[] = [];
    this.forEachLeaf(process, start, end, (address, entry, level, page) => {
      const size = SIZE_AT_LEVEL[level];
      const frame = entry & ADDRESS_MASK & ~((1n << BigInt(PAGE_SHIFT[size])) - 1n);
      this.cpu.writeEntry(address, 0n, level);
      process.frames.delete(frame);
      cleared.push({ page, frame, size });
      this.stats.pagesUnmapped++;
    });
    return cleared;
  }

  /**
   * free_pgtables: unlinks the process's tables over [start, end) whose whole span no VMA needs any
   * more, lowest level first. They are released after the flush.
   */
  private freeTables(process: Process, start: bigint, end: bigint): TableRef[] {
    const freed: TableRef[] = [];
    for (const table of this.tablesIn(process, start, end, this.levels - 1)) {
      const spanEnd = table.base + tableSpan(table.level);
      if (process.vmas.some((vma) => vma.start < spanEnd && vma.end > table.base)) continue;
      const parentLevel = table.level + 1;
      const parent =
        parentLevel === this.levels ? process.root : process.tables.get(tableKey(parentLevel, table.base));
      if (parent === undefined) throw new MemvirtError("a page table without its parent", 1);
      this.cpu.writeEntry(this.entryAddress(parent, table.base, parentLevel), 0n, parentLevel);
      process.tables.delete(tableKey(table.level, table.base));
      freed.push(table);
    }
    return freed;
  }

  private releaseTables(tables: readonly { address: bigint }[]): void {
    for (const table of tables) {
      this.cpu.releaseTable(table.address);
      (this.tableFrames ?? this.frames).release(table.address, "4K");
      this.stats.tablesFreed++;
    }
  }

  /** One mapper less for `frame`; the last one gives it back to the allocator. */
  private unref(frame: bigint, size: PageSize): void {
    const mappers = this.sharedFrames.get(frame);
    if (mappers === undefined) this.frames.release(frame, size);
    else if (mappers <= 2) this.sharedFrames.delete(frame);
    else this.sharedFrames.set(frame, mappers - 1);
  }

  private releaseFrames(cleared: readonly Cleared[]): void {
    for (const { frame, size } of cleared) this.unref(frame, size);
  }

  // --- TLB flushes ------------------------------------------------------------------------------------

  private cr3Of(process: Process, noFlush: boolean): bigint {
    if (!this.config.pcid) return process.root;
    return process.root | BigInt(process.pcid) | (noFlush ? CR3_NOFLUSH : 0n);
  }

  /** The flush on one CPU (Linux's flush_tlb_func): INVLPG per page, or a CR3 reload for all of it. */
  private flushLocal(cpu: number, process: Process, pages: readonly bigint[] | undefined): void {
    if (this.running[cpu] !== process) {
      process.staleOn.add(cpu);
      return;
    }
    if (pages === undefined) {
      this.cpu.loadCr3(cpu, this.cr3Of(process, false));
      this.stats.tlbFlushes.full++;
      return;
    }
    for (const page of pages) this.cpu.invlpg(cpu, page);
    this.stats.tlbFlushes.invlpg += pages.length;
  }

  /**
   * flush_tlb_mm_range, from `cpu`: up to 33 pages one by one, else the whole address space; here and,
   * by IPI, on every other CPU running it now; CPUs that ran it before flush when they next switch to it.
   */
  private flushTlb(cpu: number, process: Process, pages: readonly bigint[] | undefined): void {
    const list = pages !== undefined && pages.length <= FLUSH_CEILING ? pages : undefined;
    const targets: number[] = [];
    for (const other of process.cpusSeen) {
      if (this.running[other] !== process) process.staleOn.add(other);
      else if (other === cpu) this.flushLocal(cpu, process, list);
      else targets.push(other);
    }
    if (targets.length === 0) return;
    this.stats.shootdowns++;
    this.stats.shootdownTargets += targets.length;
    const flush = {
      pcid: this.config.pcid ? process.pcid : 0,
      pages: list,
      ipiCycles: this.config.ipiCycles,
    };
    this.cpu.flushTlbOthers(cpu, targets, flush, (target) => this.flushLocal(target, process, list));
  }

  /** The pages of [start, end) by the stride of the mappings there (what a range flush invalidates). */
  private pagesOf(start: bigint, end: bigint, stride: bigint): bigint[] | undefined {
    if ((end - start) / stride > BigInt(FLUSH_CEILING)) return undefined;
    const pages: bigint[] = [];
    for (let page = start; page < end; page += stride) pages.push(page);
    return pages;
  }

  /**
   * The flush after clearing leaves (and maybe freeing tables): the range from the first cleared page to
   * the last, as mmu_gather tracks it. Freed tables alone still need one INVLPG, which drops the
   * paging-structure caches of the PCID.
   */
  private flushCleared(
    cpu: number,
    process: Process,
    cleared: readonly Cleared[],
    freed: readonly TableRef[],
  ): void {
    if (cleared.length === 0) {
      if (freed.length > 0) this.flushTlb(cpu, process, [freed[0].base]);
      return;
    }
    let low = cleared[0].page;
    let high = cleared[0].page;
    let stride = 1n << BigInt(PAGE_SHIFT[cleared[0].size]);
    for (const { page, size } of cleared) {
      if (page < low) low = page;
      if (page > high) high = page;
      const bytes = 1n << BigInt(PAGE_SHIFT[size]);
      if (bytes < stride) stride = bytes;
    }
    this.flushTlb(cpu, process, this.pagesOf(low, high + stride, stride));
  }

  /** The CPU the kernel acts from for `process`: one running it, else CPU 0. */
  private cpuFor(process: Process): number {
    return Math.max(this.running.indexOf(process), 0);
  }

  private current(cpu: number): Process {
    const process = this.running[cpu];
    if (!process) throw new MemvirtError(`no process runs on guest CPU ${cpu}`, 1);
    return process;
  }

  private syscall(name: Syscall): void {
    this.stats.syscalls[name]++;
    this.cpu.charge(this.config.syscallCycles);
  }

  // --- the kernel's own changes (reclaim, KSM's tests) --------------------------------------------------

  /** Unmaps the pages in [start, start+length), frees their frames, and shoots down stale TLB entries. */
  unmapRange(process: Process, start: bigint, length: bigint): void {
    this.dontNeed(this.cpuFor(process), process, start, start + length);
  }

  /** Changes the rights of [start, start+length): its VMAs and mapped pages, with the flushes. */
  protectRange(process: Process, start: bigint, length: bigint, protection: Protection): void {
    this.changeProtection(this.cpuFor(process), process, start, start + length, protection);
  }

  private dontNeed(cpu: number, process: Process, start: bigint, end: bigint): void {
    this.cpu.lazyMmu(true);
    const cleared = this.zap(process, start, end);
    this.cpu.lazyMmu(false);
    this.flushCleared(cpu, process, cleared, []);
    this.releaseFrames(cleared);
  }

  /** Splits the VMAs that straddle `at`, so [start, end) is whole VMAs. */
  private splitAt(process: Process, at: bigint): void {
    const vma = this.findVma(process, at);
    if (!vma || vma.start === at) return;
    const align = 1n << BigInt(PAGE_SHIFT[vma.pageSize]);
    if ((at & (align - 1n)) !== 0n)
      throw new MemvirtError(`0x${at.toString(16)} splits a ${vma.pageSize} page`);
    process.vmas.push({ ...vma, protection: { ...vma.protection }, start: at });
    vma.end = at;
    process.vmas.sort((a, b) => (a.start < b.start ? -1 : 1));
    this.layoutGeneration++;
  }

  private changeProtection(
    cpu: number,
    process: Process,
    start: bigint,
    end: bigint,
    protection: Protection,
  ): void {
    this.splitAt(process, start);
    this.splitAt(process, end);
    for (const vma of process.vmas)
      if (vma.start >= start && vma.end <= end) vma.protection = { ...protection };
    this.layoutGeneration++;
    let changed = 0;
    this.cpu.lazyMmu(true);
    this.forEachLeaf(process, start, end, (address, entry, level) => {
      const size = SIZE_AT_LEVEL[level];
      const frame = entry & ADDRESS_MASK & ~((1n << BigInt(PAGE_SHIFT[size])) - 1n);
      let flags = this.leafFlags(protection, size, false);
      // A page fork shares stays read-only: its first write copies it.
      if (this.sharedFrames.has(frame)) flags &= ~PTE_RW;
      const value = frame | (entry & (PTE_A | PTE_D)) | flags;
      if (value === entry) return;
      this.cpu.writeEntry(address, value, level);
      changed++;
    });
    this.cpu.lazyMmu(false);
    // change_protection_range flushes the whole range once any entry changed.
    if (changed > 0)
      this.flushTlb(cpu, process, this.pagesOf(start, end, this.strideIn(process, start, end, true)));
  }

  /** Removes [start, end) from the VMAs (splitting the ones it cuts). */
  private removeVmas(process: Process, start: bigint, end: bigint): void {
    this.splitAt(process, start);
    this.splitAt(process, end);
    process.vmas = process.vmas.filter((vma) => vma.start < start || vma.end > end);
    this.layoutGeneration++;
  }

  /** munmap's work on `process` from `cpu`: VMAs, leaves, page tables, flush, then the frames. */
  private unmapRegion(cpu: number, process: Process, start: bigint, end: bigint): void {
    this.removeVmas(process, start, end);
    this.cpu.lazyMmu(true);
    const cleared = this.zap(process, start, end);
    const freed = this.freeTables(process, start, end);
    this.cpu.lazyMmu(false);
    this.flushCleared(cpu, process, cleared, freed);
    this.releaseFrames(cleared);
    this.releaseTables(freed);
  }

  // --- system calls, on the process running on `cpu` ----------------------------------------------------

  /** The range [start, start+length) rounded out to the largest page of the VMAs it falls in. */
  private pageRange(process: Process, start: bigint, length: bigint): [bigint, bigint] {
    const align = this.strideIn(process, start, start + length, false);
    return [start & ~(align - 1n), (start + length + align - 1n) & ~(align - 1n)];
  }

  /** The smallest (or largest) page size of the VMAs overlapping [start, end), in bytes; 4 KiB if none. */
  private strideIn(process: Process, start: bigint, end: bigint, smallest: boolean): bigint {
    let stride: bigint | undefined;
    for (const vma of process.vmas) {
      if (vma.start >= end || vma.end <= start) continue;
      const bytes = 1n << BigInt(PAGE_SHIFT[vma.pageSize]);
      if (stride === undefined || (smallest ? bytes < stride : bytes > stride)) stride = bytes;
    }
    return stride ?? 1n << 12n;
  }

  /** The highest gap of `length` bytes below MMAP_BASE, aligned to `align` (top-down mmap). */
  private findGap(process: Process, length: bigint, align: bigint): bigint {
    let top = MMAP_BASE;
    const below = process.vmas
      .filter((vma) => vma.start < MMAP_BASE)
      .sort((a, b) => (a.start > b.start ? -1 : 1));
    for (const vma of below) {
      const start = (top - length) & ~(align - 1n);
      if (vma.end <= start) return start;
      if (vma.start < top) top = vma.start;
    }
    const start = (top - length) & ~(align - 1n);
    if (start < 0x1_0000n) throw new MemvirtError("mmap: no room left below the mmap base", 1);
    return start;
  }

  /** mmap of anonymous private memory, demand paged; at `address` (MAP_FIXED) or the highest gap. */
  mmap(
    cpu: number,
    length: bigint,
    protection: Protection,
    options: { address?: bigint; pageSize?: PageSize } = {},
  ): bigint {
    const process = this.current(cpu);
    const pageSize = options.pageSize ?? this.config.pageSize;
    const align = 1n << BigInt(PAGE_SHIFT[pageSize]);
    const bytes = (length + align - 1n) & ~(align - 1n);
    let start: bigint;
    if (options.address !== undefined) {
      start = options.address & ~(align - 1n);
      // MAP_FIXED replaces whatever was there.
      if (process.vmas.some((vma) => vma.start < start + bytes && vma.end > start))
        this.unmapRegion(cpu, process, start, start + bytes);
    } else {
      start = this.findGap(process, bytes, align);
    }
    this.addVma(process, start, start + bytes, { ...protection }, pageSize);
    this.syscall("mmap");
    return start;
  }

  munmap(cpu: number, start: bigint, length: bigint): void {
    const process = this.current(cpu);
    const [from, to] = this.pageRange(process, start, length);
    this.unmapRegion(cpu, process, from, to);
    this.syscall("munmap");
  }

  mprotect(cpu: number, start: bigint, length: bigint, protection: Protection): void {
    const process = this.current(cpu);
    const [from, to] = this.pageRange(process, start, length);
    this.changeProtection(cpu, process, from, to, protection);
    this.syscall("mprotect");
  }

  /** madvise(MADV_DONTNEED): the pages go, the VMAs stay; the next touch faults in a zeroed page. */
  madviseDontNeed(cpu: number, start: bigint, length: bigint): void {
    const process = this.current(cpu);
    const [from, to] = this.pageRange(process, start, length);
    this.dontNeed(cpu, process, from, to);
    this.syscall("madvise");
  }

  /**
   * fork: a child address space with the parent's VMAs and every mapped page shared; writable pages
   * become read-only in both (copy-on-write), then the parent's TLBs are flushed (dup_mmap's
   * flush_tlb_mm). The child is told to the CPU first, as Xen's dup_mmap pins it before the copy.
   */
  fork(cpu: number): Process {
    const parent = this.current(cpu);
    const child = this.createProcess();
    this.cpu.pinTables(child.root);
    child.pinned = true;
    child.vmas = parent.vmas.map((vma) => ({ ...vma, protection: { ...vma.protection } }));
    this.layoutGeneration++;
    this.cpu.lazyMmu(true);
    this.forEachLeaf(parent, 0n, this.userTop, (address, entry, level, page) => {
      const size = SIZE_AT_LEVEL[level];
      const frame = entry & ADDRESS_MASK & ~((1n << BigInt(PAGE_SHIFT[size])) - 1n);
      const shared = entry & ~PTE_RW;
      if (shared !== entry) this.cpu.writeEntry(address, shared, level);
      // The child's copy is old (A clear), as copy_present_pte makes it.
      this.installLeaf(child.root, page, frame, size, shared & ~ADDRESS_MASK & ~PTE_A, child.tables);
      child.frames.set(frame, size);
      this.sharedFrames.set(frame, (this.sharedFrames.get(frame) ?? 1) + 1);
    });
    this.cpu.lazyMmu(false);
    this.flushTlb(cpu, parent, undefined);
    this.syscall("fork");
    return child;
  }

  /**
   * exec: the process on `cpu` gets a new address space with `segments` (demand paged), switches to
   * it, and its old one is torn down. Returns the new address space.
   */
  exec(cpu: number, segments: readonly Segment[], pageSize = this.config.pageSize): Process {
    const old = this.current(cpu);
    const next = this.createProcess();
    for (const segment of segments)
      this.addVma(next, segment.start, segment.start + segment.length, { ...segment.protection }, pageSize);
    this.switchTo(cpu, next);
    this.teardown(old);
    this.syscall("exec");
    return next;
  }

  /** exit: the process on `cpu` ends and `next` runs there; its address space is torn down. */
  exit(cpu: number, next: Process): void {
    const old = this.current(cpu);
    this.switchTo(cpu, next);
    this.teardown(old);
    this.syscall("exit");
  }

  /**
   * exit_mmap, once no CPU runs the address space: every page and page table goes, and the root's
   * entries are cleared so its frame can be a page table again. No TLB flush: the PCID is free again
   * and a CPU's first load of it for another address space flushes it.
   */
  private teardown(process: Process): void {
    if (this.running.includes(process))
      throw new MemvirtError(`pid ${process.pid} still runs: it cannot be torn down`, 1);
    this.cpu.unpinTables(process.root);
    process.pinned = false;
    process.vmas = [];
    this.layoutGeneration++;
    this.cpu.lazyMmu(true);
    const cleared = this.zap(process, 0n, this.userTop);
    const freed = this.freeTables(process, 0n, this.userTop);
    const slots = this.cpu.readEntries(process.root, 512);
    for (let slot = 0; slot < 512; slot++)
      if (slots[slot] !== 0n) this.cpu.writeEntry(process.root + BigInt(slot) * 8n, 0n, this.levels);
    this.cpu.lazyMmu(false);
    this.releaseFrames(cleared);
    this.releaseTables([...freed, { address: process.root }]);
    process.alive = false;
    process.cpusSeen.clear();
    process.staleOn.clear();
    this.processes.splice(this.processes.indexOf(process), 1);
    this.freePcids.push(process.pcid);
  }

  /** Context switch: MOV to CR3, with the PCID and the no-flush hint once this CPU has seen it. */
  switchTo(cpu: number, process: Process): void {
    if (this.running[cpu] === process) return;
    if (!process.alive) throw new MemvirtError(`pid ${process.pid} has exited`, 1);
    if (!process.pinned) {
      this.cpu.pinTables(process.root);
      process.pinned = true;
    }
    const keep = process.cpusSeen.has(cpu) && !process.staleOn.has(cpu);
    if (this.config.pcid && process.staleOn.has(cpu)) this.stats.deferredFlushes++;
    this.cpu.loadCr3(cpu, this.cr3Of(process, keep));
    process.cpusSeen.add(cpu);
    process.staleOn.delete(cpu);
    this.running[cpu] = process;
    this.layoutGeneration++;
    this.stats.contextSwitches++;
  }

  /**
   * A write to a page fork left read-only in a writable VMA: the last mapper makes it writable again,
   * the others get a copy (do_wp_page). False when the fault is not copy-on-write.
   */
  private copyOnWrite(cpu: number, process: Process, la: bigint): boolean {
    const leaf = this.lookup(process, la);
    if (!leaf || (leaf.entry & PTE_US) === 0n || (leaf.entry & PTE_RW) !== 0n) return false;
    const size = SIZE_AT_LEVEL[leaf.level];
    const mask = (1n << BigInt(PAGE_SHIFT[size])) - 1n;
    const frame = leaf.entry & ADDRESS_MASK & ~mask;
    const flags = (leaf.entry & ~ADDRESS_MASK) | PTE_RW | PTE_A | PTE_D;
    this.stats.cowFaults++;
    if (!this.sharedFrames.has(frame)) {
      // The others are gone: reuse it. Widening rights needs no flush (a stale entry only faults).
      this.cpu.writeEntry(leaf.address, frame | flags, leaf.level);
    } else {
      const copy = this.frames.alloc(size);
      this.cpu.writeEntry(leaf.address, copy | flags, leaf.level);
      process.frames.delete(frame);
      process.frames.set(copy, size);
      this.unref(frame, size);
      this.stats.cowCopies++;
      this.cpu.charge(this.config.copyCycles * Number((mask + 1n) >> 12n));
      this.flushTlb(cpu, process, [la & ~mask]);
    }
    this.cpu.charge(this.config.faultCycles);
    return true;
  }

  /**
   * What an anonymous demand fault on `cpu` depends on, for the core to run `pageFault`'s demand path
   * itself (assembly/demand.ts): the running address space's root and its VMAs in order, each with
   * the leaf bits `mapFresh` installs and its page-size code. Undefined when nothing runs there.
   */
  demandView(
    cpu: number,
  ): { root: bigint; vmas: { start: bigint; end: bigint; flags: bigint; sizeCode: number }[] } | undefined {
    const process = this.running[cpu];
    if (!process) return undefined;
    return {
      root: process.root,
      vmas: process.vmas.map((vma) => ({
        start: vma.start,
        end: vma.end,
        flags: this.leafFlags(vma.protection, vma.pageSize, false),
        sizeCode: LEVEL_OF[vma.pageSize] - 1,
      })),
    };
  }

  /**
   * Accounts a demand fault the core handled (assembly/demand.ts) as `pageFault` does its own: the
   * leaf's frame and then each new table (from `topLevel`'s entry down) are allocated in the same
   * order, which hands out the very frames the core was given; the address space and the statistics
   * record them.
   */
  demandFaultHandled(
    cpu: number,
    la: bigint,
    size: PageSize,
    frame: bigint,
    topLevel: number,
    tables: bigint[],
  ): void {
    const process = this.running[cpu];
    const leaf = this.frames.alloc(size);
    if (!process || leaf !== frame)
      throw new MemvirtError(
        `cpu ${cpu}: the core's demand fault at 0x${la.toString(16)} took frame 0x${frame.toString(16)}, the kernel's next is 0x${leaf.toString(16)}`,
        1,
      );
    let level = topLevel;
    for (const table of tables) {
      const taken = this.newTable();
      if (taken !== table)
        throw new MemvirtError(
          `cpu ${cpu}: the core's demand fault at 0x${la.toString(16)} took table 0x${table.toString(16)}, the kernel's next is 0x${taken.toString(16)}`,
          1,
        );
      process.tables.set(tableKey(level - 1, la), table);
      level--;
    }
    process.frames.set(frame, size);
    this.stats.pagesMapped[size]++;
    this.stats.minorFaults++;
  }

  /** The kernel's #PF handler: demand paging, copy-on-write, or a SIGSEGV for the process. */
  pageFault(cpu: number, la: bigint, errorCode: bigint): FaultOutcome {
    const process = this.running[cpu];
    const vma = process && (errorCode & PF_RSVD) === 0n ? this.findVma(process, la) : undefined;
    if (
      process &&
      vma &&
      (errorCode & (PF_P | PF_W)) === (PF_P | PF_W) &&
      vma.protection.writable &&
      this.copyOnWrite(cpu, process, la)
    )
      return "retry";
    const allowed =
      vma &&
      (errorCode & PF_P) === 0n &&
      ((errorCode & PF_W) === 0n || vma.protection.writable) &&
      ((errorCode & PF_ID) === 0n || vma.protection.executable);
    if (!process || !vma || !allowed) {
      this.stats.segvs++;
      return "segv";
    }
    const size = vma.pageSize;
    const base = la & ~((1n << BigInt(PAGE_SHIFT[size])) - 1n);
    this.mapFresh(process, base, size, this.leafFlags(vma.protection, size, false));
    this.stats.minorFaults++;
    this.cpu.charge(this.config.faultCycles);
    return "retry";
  }
}
