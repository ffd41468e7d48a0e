// The guest OS model: a kernel that builds real x86-64 page tables in physical memory, runs
// processes in their own address spaces (tagged by PCID), and pages memory in on demand. It changes
// translation only through its PagingCpu, so it runs unchanged on bare metal or in a VM.

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
  /** Frames mapped into this address space (base -> size): what it may reach, and nothing else. */
  frames: Map<bigint, PageSize>;
}

export type FaultOutcome = "retry" | "segv";

export interface GuestStats {
  minorFaults: number;
  segvs: number;
  tablesAllocated: number;
  tablesFreed: number;
  contextSwitches: number;
  shootdowns: number;
  pagesMapped: Record<PageSize, number>;
}

const LEVEL_OF: Record<PageSize, number> = { "4K": 1, "2M": 2, "1G": 3 };
const USER_TOP = 1n << 47n;
const USER_TOP_LA57 = 1n << 56n;

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
    pagesMapped: { "4K": 0, "2M": 0, "1G": 0 },
  };
  /** Top-level entries of the kernel half, copied into every new address space. */
  private readonly kernelRoot: bigint;

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
    const pid = this.processes.length + 1;
    if (pid > 4095)
      throw new MemvirtError("the guest OS model supports at most 4095 processes (one PCID each)");
    const root = this.newTable();
    // The kernel half (top-level slots 256..511) is shared by every address space.
    for (let slot = 256n; slot < 512n; slot++) {
      const entry = this.cpu.readEntry(this.kernelRoot + slot * 8n);
      if (entry !== 0n) this.cpu.writeEntry(root + slot * 8n, entry, this.levels);
    }
    const process: Process = { pid, pcid: pid, root, vmas: [], cpusSeen: new Set(), frames: new Map() };
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
   * Installs one leaf for `la` at `pageSize`, creating the tables above it. Intermediate entries
   * grant everything (P, RW, US) so the leaf alone decides, as Linux does for user tables.
   */
  private installLeaf(root: bigint, la: bigint, frame: bigint, pageSize: PageSize, flags: bigint): void {
    const leafLevel = LEVEL_OF[pageSize];
    let table = root;
    for (let level = this.levels; level > leafLevel; level--) {
      const address = this.entryAddress(table, la, level);
      const entry = this.cpu.readEntry(address);
      if ((entry & PTE_P) === 0n) {
        const child = this.newTable();
        this.cpu.writeEntry(address, child | PTE_P | PTE_RW | PTE_US, level);
        table = child;
      } else if ((entry & PTE_PS) !== 0n) {
        throw new MemvirtError(`0x${la.toString(16)} is already mapped by a larger page`);
      } else {
        table = entry & ADDRESS_MASK;
      }
    }
    this.cpu.writeEntry(this.entryAddress(table, la, leafLevel), frame | flags, leafLevel);
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
    for (let la = start & ~(step - 1n); la < start + length; la += step) {
      const frame = this.frames.alloc(pageSize);
      this.installLeaf(process.root, la, frame, pageSize, flags);
      process.frames.set(frame, pageSize);
    }
  }

  /** Maps kernel memory into the shared kernel half (before processes are created). */
  mapKernel(start: bigint, length: bigint, pageSize: PageSize): void {
    const step = 1n << BigInt(PAGE_SHIFT[pageSize]);
    const flags = this.leafFlags({ writable: true, user: false, executable: true }, pageSize, true);
    for (let la = start & ~(step - 1n); la < start + length; la += step) {
      this.installLeaf(this.kernelRoot, la, this.frames.alloc(pageSize), pageSize, flags);
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

  /** Calls `visit` for each mapped page overlapping [start, start+length), with its leaf and size. */
  private forEachMappedPage(
    process: Process,
    start: bigint,
    length: bigint,
    visit: (
      leaf: { address: bigint; entry: bigint; level: number },
      size: PageSize,
      pageBase: bigint,
      frame: bigint,
    ) => void,
  ): void {
    let la = start;
    while (la < start + length) {
      const leaf = this.lookup(process, la);
      if (!leaf) {
        la = (la & ~0xfffn) + 0x1000n;
        continue;
      }
      const size: PageSize = leaf.level === 1 ? "4K" : leaf.level === 2 ? "2M" : "1G";
      const pageMask = (1n << BigInt(PAGE_SHIFT[size])) - 1n;
      const pageBase = la & ~pageMask;
      visit(leaf, size, pageBase, leaf.entry & ADDRESS_MASK & ~pageMask);
      la = pageBase + pageMask + 1n;
    }
  }

  /** Unmaps the pages in [start, start+length), frees their frames, and shoots down stale TLB entries. */
  unmapRange(process: Process, start: bigint, length: bigint): void {
    this.forEachMappedPage(process, start, length, (leaf, size, pageBase, frame) => {
      this.cpu.writeEntry(leaf.address, 0n, leaf.level);
      // Stale translations go before the frame can be handed to anyone else.
      this.shootdown(process, pageBase);
      process.frames.delete(frame);
      this.frames.release(frame, size);
    });
  }

  /** Changes the rights of the mapped pages in [start, start+length). */
  protectRange(process: Process, start: bigint, length: bigint, protection: Protection): void {
    this.forEachMappedPage(process, start, length, (leaf, size, pageBase, frame) => {
      const keep = leaf.entry & (PTE_A | PTE_D);
      this.cpu.writeEntry(leaf.address, frame | keep | this.leafFlags(protection, size, false), leaf.level);
      this.shootdown(process, pageBase);
    });
    for (const vma of process.vmas) {
      if (vma.start >= start && vma.end <= start + length) vma.protection = protection;
    }
  }

  /**
   * After changing an entry: INVLPG where the address space runs, and INVPCID (the IPI handler's work)
   * on other CPUs that may still cache its PCID-tagged entries.
   */
  private shootdown(process: Process, la: bigint): void {
    for (const cpu of process.cpusSeen) {
      if (this.running[cpu] === process) this.cpu.invlpg(cpu, la);
      else if (this.config.pcid) this.cpu.invpcid(cpu, 0, process.pcid, la);
      else continue;
      this.stats.shootdowns++;
    }
  }

  /** Context switch: MOV to CR3, with the PCID and the no-flush hint once this CPU has seen it. */
  switchTo(cpu: number, process: Process): void {
    if (this.running[cpu] === process) return;
    let value = process.root;
    if (this.config.pcid) {
      value |= BigInt(process.pcid);
      if (process.cpusSeen.has(cpu)) value |= CR3_NOFLUSH;
    }
    this.cpu.loadCr3(cpu, value);
    process.cpusSeen.add(cpu);
    this.running[cpu] = process;
    this.stats.contextSwitches++;
  }

  /** The kernel's #PF handler: demand paging, or a SIGSEGV for the process. */
  pageFault(cpu: number, la: bigint, errorCode: bigint): FaultOutcome {
    const process = this.running[cpu];
    const vma = process && (errorCode & PF_RSVD) === 0n ? this.findVma(process, la) : undefined;
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
    const frame = this.frames.alloc(size);
    this.installLeaf(process.root, base, frame, size, this.leafFlags(vma.protection, size, false));
    process.frames.set(frame, size);
    this.stats.minorFaults++;
    this.cpu.charge(this.config.faultCycles);
    return "retry";
  }
}
