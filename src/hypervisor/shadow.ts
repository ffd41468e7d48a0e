// KVM's shadow MMU (docs/kvm.md §Shadow paging): the hardware runs without a nested dimension, its CR3
// holding a shadow root the hypervisor builds, an x86-64 table mapping guest-virtual addresses straight onto
// host frames. The guest's own tables live in guest memory and the hardware never reads them. The hypervisor
// keeps the two in step the way KVM does:
// - the shadow is filled lazily, on the #PF exits the hardware raises (shadow faults), by walking the
//   guest tables in software;
// - guest pages holding shadowed tables are write-protected, so the guest's stores to them trap and are
//   emulated (kvm_mmu_pte_write), unless a leaf table goes "unsync" and is reconciled later, on CR3
//   loads, INVLPG and INVPCID;
// - MOV to CR3 is trapped and served from a small cache of previous roots;
// - the shadow page cache has a fixed capacity and recycles its oldest pages.
// Every exit and every piece of hypervisor work is charged to the machine clock, so the costs of shadow
// paging come out of the model.
import { type ExitRecord, type Machine, MemvirtError } from "../core/machine.js";
import { S_ACCESSES } from "../core/stats-layout.js";
import {
  CR0_WP,
  CR4_LA57,
  CR4_PCIDE,
  CR4_SMAP,
  CR4_SMEP,
  EFER_NXE,
  type PageSize,
  type Regs,
  RFLAGS_AC,
} from "../core/types.js";
import { type PagingCpu, readRange, type TlbFlush } from "../guest/paging-cpu.js";
import {
  CYCLES_EMULATION,
  CYCLES_SHADOW,
  type ExitAction,
  ExitCounter,
  GuestCpu,
  type HypervisorCosts,
  type IpiDelivery,
  type TechniqueModule,
  VirtualIpis,
  type VirtualizationTechnique,
} from "./technique.js";
import type { HostMemory, Vm } from "./vm.js";

const ADDRESS_MASK = 0x000f_ffff_ffff_f000n;
const P = 1n;
const RW = 1n << 1n;
const US = 1n << 2n;
const A = 1n << 5n;
const D = 1n << 6n;
const PS = 1n << 7n;
const XD = 1n << 63n;
const CR3_NOFLUSH = 1n << 63n;

/** #PF error-code bits. */
const PF_P = 1n;
const PF_W = 2n;
const PF_U = 4n;
const PF_RSVD = 8n;
const PF_ID = 16n;
/** The bits that describe the access itself (W, U, ID, PK, SS), kept when the error code is rebuilt. */
const PF_ACCESS_BITS = PF_W | PF_U | PF_ID | (1n << 6n);

/** KVM's ACC_* rights, the AND of a walk's entries. */
const ACC_EXEC = 1;
const ACC_WRITE = 2;
const ACC_USER = 4;
const ACC_ALL = 7;

/** KVM_MIN_FREE_MMU_PAGES, KVM_REFILL_PAGES, KVM_MIN_ALLOC_MMU_PAGES. */
const MIN_FREE_PAGES = 5;
const REFILL_PAGES = 25;
const MIN_ALLOC_PAGES = 64;
/** KVM_MMU_NUM_PREV_ROOTS. */
const PREV_ROOTS = 3;
/** Writes to a non-leaf shadow page without a use in between before it is zapped. */
const FLOOD_LIMIT = 3;
/** mmu_sync_children gathers this many unsync pages per batch (one flush per batch). */
const SYNC_BATCH = 16;
/** The same record faulting this often in a row means the shadow never converges: an internal error. */
const FAULT_LOOP_LIMIT = 16;

const LEVEL_OF: Record<PageSize, number> = { "4K": 1, "2M": 2, "1G": 3 };

function levelShift(level: number): bigint {
  return BigInt(12 + 9 * (level - 1));
}

function levelBytes(level: number): bigint {
  return 1n << levelShift(level);
}

function indexOf(la: bigint, level: number): number {
  return Number((la >> levelShift(level)) & 0x1ffn);
}

/** The rights one guest entry grants (KVM's gpte_access): XD only counts with EFER.NXE. */
function gpteAccess(entry: bigint, nxe: boolean): number {
  return (
    ((entry & RW) !== 0n ? ACC_WRITE : 0) |
    ((entry & US) !== 0n ? ACC_USER : 0) |
    (nxe && (entry & XD) !== 0n ? 0 : ACC_EXEC)
  );
}

export interface ShadowOptions {
  costs: HypervisorCosts;
  cpus: number;
  /** Let leaf shadow pages go unsync instead of trapping every store to their guest tables. */
  unsync: boolean;
  /** KVM's n_max_mmu_pages (0: 20 per mille of guest pages); never below 64 (KVM_MIN_ALLOC_MMU_PAGES). */
  maxShadowPages: number;
  /** Guest memory in bytes, for the default capacity. */
  guestMemory: number;
  /**
   * Dirty logging by write protection, the only kind KVM's shadow MMU has: a writable SPTE marks its
   * page dirty, and each harvest write-protects the pages it returns. 0 cycles: no harvests.
   */
  dirtyLogIntervalCycles?: number;
  /** How guest IPIs reach the other vCPUs (default "exit"). */
  ipi?: IpiDelivery;
}

export interface ShadowStats {
  /**
   * Shadow faults fixed by building or upgrading SPTEs (KVM's pf_fixed), including the write faults that
   * let a leaf table go unsync.
   */
  pf_fixed: number;
  /** #PFs that the guest's own tables explain, injected into the guest (pf_guest). */
  pf_guest: number;
  /** Accesses emulated because they write a write-protected guest page-table page (pf_emulate). */
  pf_emulate: number;
  /** Accesses to guest-physical addresses outside every memslot, emulated as MMIO. */
  pf_mmio: number;
  /** Shadow faults that found the shadow already right (a stale TLB entry elsewhere). */
  pf_spurious: number;
  /** Trapped guest stores to write-protected page tables (kvm_mmu_pte_write). */
  mmu_pte_write: number;
  /** Leaf SPTEs refreshed from the new gpte after a trapped store. */
  mmu_pte_updated: number;
  /** Trapped stores of a nonzero gpte into a non-leaf table: its SPTE is zapped, not refilled. */
  mmu_pde_zapped: number;
  /** Shadow pages zapped for write flooding (or misaligned writes). */
  mmu_flooded: number;
  /** Shadow pages unsync now (a gauge, as KVM keeps it). */
  mmu_unsync: number;
  /** Times a shadow page went unsync. */
  unsync_marked: number;
  /** Unsync pages compared with their guest tables (kvm_sync_page). */
  synced_pages: number;
  /** Single SPTEs resynchronised for INVLPG and INVPCID (sync_spte). */
  sync_spte: number;
  mmu_shadow_zapped: number;
  mmu_cache_miss: number;
  mmu_recycled: number;
  /** MOV to CR3 served from the current or a previous root (fast_pgd_switch). */
  root_hit: number;
  root_miss: number;
  /** Shadow pages in use (a gauge). */
  shadow_pages: number;
  /** n_max_mmu_pages. */
  max_mmu_pages: number;
  remote_tlb_flush: number;
  /** Pages marked dirty in the dirty log (each counted once per harvest interval). */
  dirty_pages: number;
  dirty_log_harvests: number;
}

/** One shadow page (KVM's kvm_mmu_page): a host table shadowing one guest table under one role. */
interface ShadowPage {
  readonly id: number;
  /** Guest frame number of the guest table (indirect), or of the first page it maps (direct). */
  readonly gfn: bigint;
  readonly role: number;
  readonly level: number;
  /** Direct pages split a guest large page into smaller SPTEs; they shadow no guest table. */
  readonly direct: boolean;
  /** Rights of the guest entries above this table (role.access). */
  readonly access: number;
  /** Host frame holding the 512 SPTEs. */
  readonly hpa: bigint;
  /** Host addresses of the SPTEs that point at this page (parent_ptes). */
  readonly parents: Set<bigint>;
  /** Indices of SPTEs leading to unsync pages (unsync_child_bitmap). */
  readonly unsyncChildren: Set<number>;
  /** Guest frame each leaf SPTE maps, by index (sp->gfns). */
  readonly gfns: Map<number, bigint>;
  unsync: boolean;
  invalid: boolean;
  /** References from vCPU roots and previous-root caches. */
  rootCount: number;
  writeFlooding: number;
}

interface Root {
  sp: ShadowPage;
  /** The guest CR3 it was loaded for (without the no-flush bit), KVM's root.pgd. */
  pgd: bigint;
}

/** The guest's own translation of one address, as the hypervisor's software walk finds it. */
interface GuestWalk {
  fault: boolean;
  /** The #PF error code to inject when `fault`. */
  errorCode: bigint;
  levels: number;
  leafLevel: number;
  /** Guest-physical base of the table read at each level (index = level). */
  tables: bigint[];
  entryAddresses: bigint[];
  entries: bigint[];
  /** Rights granted by the entries above each level's table: the role.access of its shadow page. */
  accessAbove: number[];
  /** Rights of the whole walk. */
  access: number;
  /** The guest-physical address `la` translates to. */
  gpa: bigint;
}

export class ShadowMmu implements VirtualizationTechnique {
  readonly name = "shadow" as const;
  readonly cpu: PagingCpu;
  readonly counters: ShadowStats = {
    pf_fixed: 0,
    pf_guest: 0,
    pf_emulate: 0,
    pf_mmio: 0,
    pf_spurious: 0,
    mmu_pte_write: 0,
    mmu_pte_updated: 0,
    mmu_pde_zapped: 0,
    mmu_flooded: 0,
    mmu_unsync: 0,
    unsync_marked: 0,
    synced_pages: 0,
    sync_spte: 0,
    mmu_shadow_zapped: 0,
    mmu_cache_miss: 0,
    mmu_recycled: 0,
    root_hit: 0,
    root_miss: 0,
    shadow_pages: 0,
    max_mmu_pages: 0,
    remote_tlb_flush: 0,
    dirty_pages: 0,
    dirty_log_harvests: 0,
  };
  private readonly exitCounter: ExitCounter;
  private readonly ipis: VirtualIpis;
  /** Exits the targets of guest shootdowns took for their INVLPGs and CR3 reloads. */
  private targetFlushExits = 0;
  private readonly maxPages: number;
  /** The shadow page cache (mmu_page_hash), keyed by gfn and role. */
  private readonly hash = new Map<bigint, ShadowPage>();
  /** Every valid page in creation order (active_mmu_pages): recycling takes the oldest first. */
  private readonly active = new Map<number, ShadowPage>();
  /** Host table frame -> its shadow page, to go from an SPTE's address to its page. */
  private readonly byFrame = new Map<bigint, ShadowPage>();
  /** Indirect shadow pages of each guest frame. */
  private readonly gfnPages = new Map<bigint, Set<ShadowPage>>();
  /** Write tracking of guest frames holding upper-level tables (gfn_write_track). */
  private readonly writeTrack = new Map<bigint, number>();
  /** Large mappings disallowed per (level, region) because a shadowed table lies inside (disallow_lpage). */
  private readonly disallowLpage = new Map<bigint, number>();
  /** Reverse map: leaf SPTE addresses by (gfn, level) they map (rmap). */
  private readonly rmap = new Map<bigint, Set<bigint>>();
  private readonly roots: (Root | undefined)[];
  private readonly prevRoots: (Root | undefined)[][];
  /** The guest's CR3 on each vCPU (without the no-flush bit): the hardware holds the shadow root instead. */
  private readonly guestCr3: bigint[];
  private nextId = 0;
  private needFlush = false;
  private readonly pendingFree: ShadowPage[] = [];
  /** The vCPU the guest kernel last ran on: its page-table stores trap there. */
  private currentCpu = 0;
  private nullRoot = 0n;
  private lastFault = { key: "", accesses: -1, count: 0 };

  constructor(
    readonly machine: Machine,
    readonly vm: Vm,
    readonly host: HostMemory,
    readonly options: ShadowOptions,
  ) {
    this.exitCounter = new ExitCounter(machine, options.costs);
    this.ipis = new VirtualIpis(machine, this.exitCounter, options.costs, options.ipi ?? "exit");
    this.cpu = new GuestCpu(this);
    const guestPages = Math.floor(options.guestMemory / 4096);
    const configured = options.maxShadowPages || Math.floor((guestPages * 20) / 1000);
    this.maxPages = Math.max(MIN_ALLOC_PAGES, configured);
    this.counters.max_mmu_pages = this.maxPages;
    this.roots = Array.from({ length: options.cpus }, () => undefined);
    this.prevRoots = Array.from({ length: options.cpus }, () =>
      Array.from({ length: PREV_ROOTS }, () => undefined),
    );
    this.guestCr3 = Array.from({ length: options.cpus }, () => 0n);
  }

  get costs(): HypervisorCosts {
    return this.options.costs;
  }

  /**
   * VM entry without a nested dimension. Until the guest loads CR3 the hardware holds an empty table,
   * so nothing it walks can be a host frame the guest does not own.
   */
  boot(machine: Machine): void {
    this.nullRoot = this.host.table();
    for (let cpu = 0; cpu < this.options.cpus; cpu++) {
      machine.vmEnter(cpu, { nested: "none", vpid: this.vm.vpid });
      machine.movCr3(cpu, this.nullRoot);
    }
  }

  onNestedFault(_exit: ExitRecord): ExitAction {
    throw new MemvirtError("shadow paging has no nested dimension, yet a nested fault was raised", 1);
  }

  stats(): Record<string, number> {
    return { ...this.counters };
  }

  exits(): Record<string, number> {
    return { ...this.exitCounter.byReason };
  }

  /**
   * The IPIs, the targets' trapped flushes (their exits count with the IPIs'), and the hypervisor's own
   * flushes of every vCPU when it zaps or narrows SPTEs.
   */
  shootdownStats(): Record<string, number> {
    const { ipis, exits, postedInterrupts } = this.ipis.counters;
    return {
      ipis,
      exits: exits + this.targetFlushExits,
      postedInterrupts,
      remoteTlbFlushes: this.counters.remote_tlb_flush,
    };
  }

  // --- guest memory ------------------------------------------------------------------------------

  guestLoad(gpa: bigint): bigint {
    return this.machine.readPhys64(this.vm.hostAddress(gpa));
  }

  guestLoadRange(gpa: bigint, count: number): bigint[] {
    return readRange(this.machine, this.vm.hostAddress(gpa), count);
  }

  private writeGuest(gpa: bigint, value: bigint): void {
    this.machine.writePhys64(this.vm.hostAddress(gpa), value);
  }

  // --- the guest's registers ---------------------------------------------------------------------

  private roleOf(level: number, direct: boolean, access: number, regs: Regs): number {
    const wp = (regs.cr0 & CR0_WP) !== 0n;
    return (
      level |
      (direct ? 1 << 3 : 0) |
      (access << 4) |
      (wp ? 1 << 7 : 0) |
      ((regs.efer & EFER_NXE) !== 0n ? 1 << 8 : 0) |
      (!wp && (regs.cr4 & CR4_SMEP) !== 0n ? 1 << 9 : 0) |
      (!wp && (regs.cr4 & CR4_SMAP) !== 0n ? 1 << 10 : 0)
    );
  }

  private guestLevels(regs: Regs): number {
    return (regs.cr4 & CR4_LA57) !== 0n ? 5 : 4;
  }

  /** The PCID the guest runs under (0 without CR4.PCIDE). */
  private activePcid(cpu: number): number {
    const regs = this.machine.getRegs(cpu);
    return (regs.cr4 & CR4_PCIDE) !== 0n ? Number(this.guestCr3[cpu] & 0xfffn) : 0;
  }

  // --- the guest walk (FNAME(walk_addr_generic)) -------------------------------------------------

  /** True when `entry` at `level` sets a bit x86 reserves (the fault then has RSVD set). */
  private reserved(entry: bigint, level: number, nxe: boolean): boolean {
    if (!nxe && (entry & XD) !== 0n) return true;
    const maxPhy = BigInt(this.machine.config.maxPhyAddr);
    if ((entry & ADDRESS_MASK & ~((1n << maxPhy) - 1n)) !== 0n) return true;
    if ((entry & PS) === 0n) return false;
    if (level >= 4) return true;
    if (level === 3 && !this.machine.config.gbPages) return true;
    if (level === 3 || level === 2) {
      // A large leaf's frame is aligned: bits 12 (PAT) and up to its size are all that may be set.
      const low = (levelBytes(level) - 1n) & ~0x1fffn;
      return (entry & low) !== 0n;
    }
    return false;
  }

  /** Walks the guest's tables for `la` and checks the access described by `errorCode`, as x86 would. */
  walkGuest(cpu: number, la: bigint, errorCode: bigint): GuestWalk {
    const regs = this.machine.getRegs(cpu);
    const levels = this.guestLevels(regs);
    const nxe = (regs.efer & EFER_NXE) !== 0n;
    const write = (errorCode & PF_W) !== 0n;
    const user = (errorCode & PF_U) !== 0n;
    const fetch = (errorCode & PF_ID) !== 0n;
    const accessBits = errorCode & PF_ACCESS_BITS;
    const walk: GuestWalk = {
      fault: false,
      errorCode: 0n,
      levels,
      leafLevel: 0,
      tables: [],
      entryAddresses: [],
      entries: [],
      accessAbove: [],
      access: ACC_ALL,
      gpa: 0n,
    };
    const fail = (code: bigint): GuestWalk => {
      walk.fault = true;
      walk.errorCode = code;
      return walk;
    };
    let table = this.guestCr3[cpu] & ADDRESS_MASK;
    let access = ACC_ALL;
    for (let level = levels; level >= 1; level--) {
      walk.tables[level] = table;
      walk.accessAbove[level] = access;
      const address = table + BigInt(indexOf(la, level)) * 8n;
      // A table outside every memslot cannot be read: the walk fails as for a missing entry.
      if (!this.vm.memslotOf(address)) return fail(accessBits);
      const entry = this.guestLoad(address);
      walk.entryAddresses[level] = address;
      walk.entries[level] = entry;
      if ((entry & P) === 0n) return fail(accessBits);
      if (this.reserved(entry, level, nxe)) return fail(accessBits | PF_P | PF_RSVD);
      access &= gpteAccess(entry, nxe);
      if (level === 1 || (entry & PS) !== 0n) {
        walk.leafLevel = level;
        break;
      }
      table = entry & ADDRESS_MASK;
    }
    walk.access = access;
    // permission_fault(): U, W (CR0.WP lets supervisor writes through), XD, SMEP and SMAP.
    const wp = (regs.cr0 & CR0_WP) !== 0n;
    const userPage = (access & ACC_USER) !== 0;
    const denied =
      (user && !userPage) ||
      (write && (access & ACC_WRITE) === 0 && (user || wp)) ||
      (fetch && (access & ACC_EXEC) === 0) ||
      (fetch && !user && userPage && (regs.cr4 & CR4_SMEP) !== 0n) ||
      (!fetch && !user && userPage && (regs.cr4 & CR4_SMAP) !== 0n && (regs.rflags & RFLAGS_AC) === 0n);
    if (denied) return fail(accessBits | PF_P);
    const size = levelBytes(walk.leafLevel);
    walk.gpa = (walk.entries[walk.leafLevel] & ADDRESS_MASK & ~(size - 1n)) | (la & (size - 1n));
    return walk;
  }

  // --- shadow pages ------------------------------------------------------------------------------

  private hashKey(gfn: bigint, role: number): bigint {
    return (gfn << 12n) | BigInt(role);
  }

  private lpageKey(level: number, gfn: bigint): bigint {
    return ((gfn >> BigInt(9 * (level - 1))) << 2n) | BigInt(level);
  }

  private rmapKey(gfn: bigint, level: number): bigint {
    return (gfn << 2n) | BigInt(level);
  }

  private pageOfSpte(sptep: bigint): ShadowPage {
    const sp = this.byFrame.get(sptep & ~0xfffn);
    if (!sp) throw new MemvirtError(`no shadow page holds SPTE 0x${sptep.toString(16)}`, 1);
    return sp;
  }

  private sptep(sp: ShadowPage, index: number): bigint {
    return sp.hpa + BigInt(index) * 8n;
  }

  private isLeafSpte(sp: ShadowPage, spte: bigint): boolean {
    return sp.level === 1 || (spte & PS) !== 0n;
  }

  /** A guest frame is write-protected while one of its shadow pages is in sync with it. */
  isWriteProtected(gfn: bigint): boolean {
    const pages = this.gfnPages.get(gfn);
    if (!pages) return false;
    for (const sp of pages) if (!sp.unsync) return true;
    return false;
  }

  private isWriteTracked(gfn: bigint): boolean {
    return (this.writeTrack.get(gfn) ?? 0) > 0;
  }

  /** Only leaf tables may go unsync: upper-level tables are write-tracked for good (mmu_try_to_unsync_pages). */
  private canUnsync(gfn: bigint): boolean {
    return this.options.unsync && !this.isWriteTracked(gfn);
  }

  /**
   * KVM's kvm_mmu_get_shadow_page: the page for (gfn, role) from the cache, brought up to date if it is
   * unsync; or a new one, whose guest table then becomes write-protected.
   */
  private getShadowPage(gfn: bigint, level: number, direct: boolean, access: number, regs: Regs): ShadowPage {
    const role = this.roleOf(level, direct, access, regs);
    const found = this.hash.get(this.hashKey(gfn, role));
    if (!direct && level > 1) {
      // A guest frame now holding an upper-level table cannot keep unsync leaf shadows of its old use.
      for (const sp of [...(this.gfnPages.get(gfn) ?? [])]) if (sp.unsync) this.zapPage(sp);
    }
    if (found) {
      if (found.unsync) {
        // The page is stale but good: its entries follow the guest's again, it stays unsync.
        if (this.syncPage(found)) this.needFlush = true;
      }
      found.writeFlooding = 0;
      return found;
    }
    this.counters.mmu_cache_miss++;
    const hpa = this.host.table();
    const sp: ShadowPage = {
      id: this.nextId++,
      gfn,
      role,
      level,
      direct,
      access,
      hpa,
      parents: new Set(),
      unsyncChildren: new Set(),
      gfns: new Map(),
      unsync: false,
      invalid: false,
      rootCount: 0,
      writeFlooding: 0,
    };
    this.hash.set(this.hashKey(gfn, role), sp);
    this.active.set(sp.id, sp);
    this.byFrame.set(hpa, sp);
    this.counters.shadow_pages++;
    if (!direct) this.accountShadowed(sp);
    return sp;
  }

  /** A guest table gets a shadow: write-track it (upper levels), forbid large mappings over it, write-protect it. */
  private accountShadowed(sp: ShadowPage): void {
    let pages = this.gfnPages.get(sp.gfn);
    if (!pages) {
      pages = new Set();
      this.gfnPages.set(sp.gfn, pages);
    }
    pages.add(sp);
    if (sp.level > 1) this.writeTrack.set(sp.gfn, (this.writeTrack.get(sp.gfn) ?? 0) + 1);
    for (const level of [2, 3]) {
      const key = this.lpageKey(level, sp.gfn);
      this.disallowLpage.set(key, (this.disallowLpage.get(key) ?? 0) + 1);
    }
    this.writeProtectGfn(sp.gfn);
  }

  private unaccountShadowed(sp: ShadowPage): void {
    const pages = this.gfnPages.get(sp.gfn);
    pages?.delete(sp);
    if (pages && pages.size === 0) this.gfnPages.delete(sp.gfn);
    if (sp.level > 1) {
      const count = (this.writeTrack.get(sp.gfn) ?? 1) - 1;
      if (count > 0) this.writeTrack.set(sp.gfn, count);
      else this.writeTrack.delete(sp.gfn);
    }
    for (const level of [2, 3]) {
      const key = this.lpageKey(level, sp.gfn);
      const count = (this.disallowLpage.get(key) ?? 1) - 1;
      if (count > 0) this.disallowLpage.set(key, count);
      else this.disallowLpage.delete(key);
    }
  }

  /**
   * rmap_write_protect: no SPTE may let the guest write `gfn` behind the hypervisor's back. 4K SPTEs
   * lose W; large SPTEs covering it are dropped (a refault maps 4K, the large page being disallowed).
   */
  private writeProtectGfn(gfn: bigint): void {
    for (const sptep of [...(this.rmap.get(this.rmapKey(gfn, 1)) ?? [])]) {
      const spte = this.machine.readPhys64(sptep);
      if ((spte & RW) === 0n) continue;
      this.machine.writePhys64(sptep, spte & ~(RW | D));
      this.needFlush = true;
    }
    for (const level of [2, 3]) {
      const base = (gfn >> BigInt(9 * (level - 1))) << BigInt(9 * (level - 1));
      for (const sptep of [...(this.rmap.get(this.rmapKey(base, level)) ?? [])]) {
        const sp = this.pageOfSpte(sptep);
        if (this.zapSpte(sp, Number((sptep & 0xfffn) >> 3n))) this.needFlush = true;
      }
    }
  }

  private rmapAdd(gfn: bigint, level: number, sptep: bigint): void {
    const key = this.rmapKey(gfn, level);
    let set = this.rmap.get(key);
    if (!set) {
      set = new Set();
      this.rmap.set(key, set);
    }
    set.add(sptep);
  }

  private rmapRemove(gfn: bigint, level: number, sptep: bigint): void {
    const key = this.rmapKey(gfn, level);
    const set = this.rmap.get(key);
    set?.delete(sptep);
    if (set && set.size === 0) this.rmap.delete(key);
  }

  /** link_shadow_page: points `parent`'s entry `index` at `child`, with every right (the leaf decides). */
  private link(parent: ShadowPage, index: number, child: ShadowPage): void {
    const sptep = this.sptep(parent, index);
    this.machine.writePhys64(sptep, child.hpa | P | RW | US | A);
    child.parents.add(sptep);
    if (child.unsync || child.unsyncChildren.size > 0) this.markUnsyncAt(sptep);
  }

  /** mmu_page_zap_pte: clears one SPTE, unlinking a child page or dropping a leaf. True if it was present. */
  private zapSpte(sp: ShadowPage, index: number): boolean {
    const sptep = this.sptep(sp, index);
    const spte = this.machine.readPhys64(sptep);
    if ((spte & P) === 0n) return false;
    if (this.isLeafSpte(sp, spte)) {
      const gfn = sp.gfns.get(index);
      if (gfn !== undefined) this.rmapRemove(gfn, sp.level, sptep);
      sp.gfns.delete(index);
    } else {
      this.byFrame.get(spte & ADDRESS_MASK)?.parents.delete(sptep);
      this.clearUnsyncBit(sp, index);
    }
    this.machine.writePhys64(sptep, 0n);
    return true;
  }

  /**
   * kvm_mmu_prepare_zap_page: unlinks the page from its parents and children (its unsync descendants
   * go with it), and drops it from the cache. Its frame is freed at the next commit, after the TLB
   * flush; a root still loaded somewhere waits until no vCPU holds it. Returns the pages zapped.
   */
  private zapPage(sp: ShadowPage): number {
    if (sp.invalid) return 0;
    let zapped = 0;
    if (sp.level > 1 && sp.unsyncChildren.size > 0) {
      for (const child of this.collectUnsync(sp)) zapped += this.zapPage(child);
    }
    for (let index = 0; index < 512; index++) if (this.zapSpte(sp, index)) this.needFlush = true;
    for (const sptep of [...sp.parents]) {
      this.machine.writePhys64(sptep, 0n);
      const parent = this.byFrame.get(sptep & ~0xfffn);
      if (parent) this.clearUnsyncBit(parent, Number((sptep & 0xfffn) >> 3n));
      this.needFlush = true;
    }
    sp.parents.clear();
    if (!sp.direct) this.unaccountShadowed(sp);
    if (sp.unsync) {
      sp.unsync = false;
      this.counters.mmu_unsync--;
    }
    sp.unsyncChildren.clear();
    this.hash.delete(this.hashKey(sp.gfn, sp.role));
    this.active.delete(sp.id);
    sp.invalid = true;
    this.pendingFree.push(sp);
    this.counters.mmu_shadow_zapped++;
    return zapped + 1;
  }

  /**
   * Ends a batch of changes to the shadow (kvm_mmu_commit_zap_page and kvm_flush_remote_tlbs): vCPUs
   * whose root was zapped load a fresh one, every vCPU's stale translations go, and zapped pages that no
   * root holds any more are freed.
   */
  private commit(): void {
    this.reloadInvalidRoots();
    if (this.needFlush) {
      this.needFlush = false;
      this.flushRemoteTlbs();
    }
    for (let i = this.pendingFree.length - 1; i >= 0; i--) {
      const sp = this.pendingFree[i];
      if (sp.rootCount > 0) continue;
      this.pendingFree.splice(i, 1);
      this.byFrame.delete(sp.hpa);
      // Scrubbed before reuse: a host table frame may next back guest memory or another table.
      this.machine.releaseFrame(sp.hpa >> 12n);
      this.host.releaseTable(sp.hpa);
      this.counters.shadow_pages--;
    }
  }

  /**
   * kvm_flush_remote_tlbs: every vCPU drops what it caches for this VM (its VPID, every PCID and the
   * global entries), since SPTEs in shared shadow pages may be cached under any PCID.
   */
  flushRemoteTlbs(): void {
    this.counters.remote_tlb_flush++;
    for (let cpu = 0; cpu < this.options.cpus; cpu++) this.machine.invpcid(cpu, 2, 0, 0n);
  }

  /**
   * make_mmu_pages_available: when fewer than 5 pages are left, the oldest pages that no root holds are
   * zapped until 25 are free.
   */
  private makePagesAvailable(): void {
    const available = this.maxPages - this.counters.shadow_pages;
    if (available >= MIN_FREE_PAGES) return;
    const target = REFILL_PAGES - available;
    let zapped = 0;
    for (const sp of [...this.active.values()]) {
      if (zapped >= target) break;
      if (sp.rootCount > 0 || sp.invalid) continue;
      zapped += this.zapPage(sp);
    }
    this.counters.mmu_recycled += zapped;
    this.commit();
  }

  // --- unsync pages ------------------------------------------------------------------------------

  /** mark_unsync: sets the bit for `sptep` in its page and, the first time, in that page's parents. */
  private markUnsyncAt(sptep: bigint): void {
    const parent = this.byFrame.get(sptep & ~0xfffn);
    if (!parent) return;
    const index = Number((sptep & 0xfffn) >> 3n);
    if (parent.unsyncChildren.has(index)) return;
    parent.unsyncChildren.add(index);
    if (parent.unsyncChildren.size === 1) for (const up of parent.parents) this.markUnsyncAt(up);
  }

  /** Clears `sp`'s bit for `index`, and its parents' bits when nothing below `sp` is unsync any more. */
  private clearUnsyncBit(sp: ShadowPage, index: number): void {
    if (!sp.unsyncChildren.delete(index)) return;
    if (sp.unsyncChildren.size > 0 || sp.unsync) return;
    for (const up of sp.parents) {
      const parent = this.byFrame.get(up & ~0xfffn);
      if (parent) this.clearUnsyncBit(parent, Number((up & 0xfffn) >> 3n));
    }
  }

  private clearUnsyncInParents(sp: ShadowPage): void {
    for (const up of [...sp.parents]) {
      const parent = this.byFrame.get(up & ~0xfffn);
      if (parent) this.clearUnsyncBit(parent, Number((up & 0xfffn) >> 3n));
    }
  }

  /** kvm_unsync_page for every synced shadow of `gfn`: their guest table takes stores without trapping. */
  private unsyncGfn(gfn: bigint): void {
    for (const sp of this.gfnPages.get(gfn) ?? []) {
      if (sp.unsync) continue;
      if (sp.level !== 1)
        throw new MemvirtError(`an upper-level shadow page of gfn 0x${gfn.toString(16)} cannot go unsync`, 1);
      sp.unsync = true;
      this.counters.mmu_unsync++;
      this.counters.unsync_marked++;
      for (const up of sp.parents) this.markUnsyncAt(up);
    }
  }

  /** The unsync pages reachable below `sp`, found through the unsync_child bitmaps (__mmu_unsync_walk). */
  private collectUnsync(sp: ShadowPage, out = new Set<ShadowPage>()): Set<ShadowPage> {
    for (const index of [...sp.unsyncChildren]) {
      const spte = this.machine.readPhys64(this.sptep(sp, index));
      const child =
        (spte & P) !== 0n && !this.isLeafSpte(sp, spte) ? this.byFrame.get(spte & ADDRESS_MASK) : undefined;
      if (!child || (!child.unsync && child.unsyncChildren.size === 0)) {
        this.clearUnsyncBit(sp, index);
        continue;
      }
      if (child.unsync) out.add(child);
      if (child.unsyncChildren.size > 0) this.collectUnsync(child, out);
    }
    return out;
  }

  /**
   * sync_spte: brings one SPTE of an unsync page in line with its gpte. A gpte that is gone, was never
   * accessed, or now names another frame drops the SPTE; otherwise the rights follow the gpte. True when
   * a translation was lost or narrowed, so TLBs must be flushed.
   */
  private syncSpte(sp: ShadowPage, index: number): boolean {
    const sptep = this.sptep(sp, index);
    const spte = this.machine.readPhys64(sptep);
    if ((spte & P) === 0n) return false;
    const regs = this.machine.getRegs(this.currentCpu);
    const nxe = (regs.efer & EFER_NXE) !== 0n;
    const gpte = this.guestLoad((sp.gfn << 12n) + BigInt(index) * 8n);
    const gfn = (gpte & ADDRESS_MASK) >> 12n;
    if (
      (gpte & P) === 0n ||
      (gpte & A) === 0n ||
      this.reserved(gpte, 1, nxe) ||
      gfn !== sp.gfns.get(index) ||
      !this.vm.memslotOf(gfn << 12n)
    ) {
      this.zapSpte(sp, index);
      return true;
    }
    let access = sp.access & gpteAccess(gpte, nxe);
    if ((gpte & D) === 0n) access &= ~ACC_WRITE;
    const before = spte & (RW | US | XD);
    this.setSpte(sp, index, gfn, 1, access, false, true, regs);
    const after = this.machine.readPhys64(sptep) & (RW | US | XD);
    // Widened rights need no flush (a stale narrower entry only faults); anything else does.
    return (before & ~after & (RW | US)) !== 0n || (after & ~before & XD) !== 0n;
  }

  /** kvm_sync_page: compares every present SPTE of an unsync page with its gpte. True if TLBs need a flush. */
  private syncPage(sp: ShadowPage): boolean {
    let flush = false;
    for (const index of [...sp.gfns.keys()]) if (this.syncSpte(sp, index)) flush = true;
    this.counters.synced_pages++;
    this.machine.chargeCycles(this.costs.shadowSync, CYCLES_SHADOW);
    return flush;
  }

  /**
   * mmu_sync_children: every unsync page below `sp` is write-protected again, marked in sync and compared
   * with its guest table, in batches of 16 with one flush per batch.
   */
  private syncChildren(sp: ShadowPage): void {
    if (sp.invalid || sp.unsyncChildren.size === 0) return;
    const pages = [...this.collectUnsync(sp)];
    for (let start = 0; start < pages.length; start += SYNC_BATCH) {
      const batch = pages.slice(start, start + SYNC_BATCH).filter((page) => page.unsync && !page.invalid);
      for (const page of batch) {
        page.unsync = false;
        this.counters.mmu_unsync--;
        this.clearUnsyncInParents(page);
        this.writeProtectGfn(page.gfn);
      }
      for (const page of batch) if (this.syncPage(page)) this.needFlush = true;
      this.commit();
    }
  }

  /** kvm_mmu_sync_roots: the current root's unsync pages. */
  private syncRoots(cpu: number): void {
    const root = this.roots[cpu];
    if (root) this.syncChildren(root.sp);
  }

  private syncPrevRoots(cpu: number): void {
    for (const root of this.prevRoots[cpu]) if (root) this.syncChildren(root.sp);
  }

  /**
   * __kvm_mmu_invalidate_addr: follows `la` down from `root`, resynchronising its SPTE in every unsync
   * page on the way. True if TLBs need a flush.
   */
  private invalidateAddress(root: ShadowPage, la: bigint): boolean {
    let flush = false;
    let sp = root;
    for (let level = root.level; level >= 1; level--) {
      const index = indexOf(la, level);
      if (sp.unsync) {
        this.counters.sync_spte++;
        if (this.syncSpte(sp, index)) flush = true;
      }
      if (sp.unsyncChildren.size === 0) break;
      const spte = this.machine.readPhys64(this.sptep(sp, index));
      if ((spte & P) === 0n || this.isLeafSpte(sp, spte)) break;
      const child = this.byFrame.get(spte & ADDRESS_MASK);
      if (!child) break;
      sp = child;
    }
    return flush;
  }

  // --- roots -------------------------------------------------------------------------------------

  private isRootUsable(root: Root | undefined, pgd: bigint, role: number): root is Root {
    return root !== undefined && !root.sp.invalid && root.pgd === pgd && root.sp.role === role;
  }

  /**
   * fast_pgd_switch: the current root and the 3 previous ones form an LRU; a hit rotates the wanted root
   * to the front, a miss frees the least recently used one.
   */
  private fastSwitch(cpu: number, pgd: bigint, role: number): boolean {
    let current = this.roots[cpu];
    if (this.isRootUsable(current, pgd, role)) return true;
    const prev = this.prevRoots[cpu];
    for (let i = 0; i < PREV_ROOTS; i++) {
      [current, prev[i]] = [prev[i], current];
      if (this.isRootUsable(current, pgd, role)) {
        this.roots[cpu] = current;
        return true;
      }
    }
    this.roots[cpu] = undefined;
    if (current) this.freeRoot(current);
    return false;
  }

  private freeRoot(root: Root): void {
    root.sp.rootCount--;
  }

  /** mmu_alloc_shadow_roots: the shadow page of the guest's top-level table becomes this vCPU's root. */
  private loadNewRoot(cpu: number, pgd: bigint): Root {
    const regs = this.machine.getRegs(cpu);
    const levels = this.guestLevels(regs);
    const sp = this.getShadowPage((pgd & ADDRESS_MASK) >> 12n, levels, false, ACC_ALL, regs);
    sp.rootCount++;
    const root = { sp, pgd };
    this.roots[cpu] = root;
    return root;
  }

  /** The value the hardware's CR3 gets: the shadow root, with the guest's PCID so tagging still works. */
  private hardwareCr3(cpu: number, noFlush: boolean): bigint {
    const root = this.roots[cpu];
    const base = root ? root.sp.hpa : this.nullRoot;
    return base | (this.guestCr3[cpu] & 0xfffn) | (noFlush ? CR3_NOFLUSH : 0n);
  }

  /** A vCPU needs a root before its first shadow fault (kvm_mmu_load on VM entry). */
  private ensureRoot(cpu: number): void {
    if (this.roots[cpu]) return;
    this.makePagesAvailable();
    this.loadNewRoot(cpu, this.guestCr3[cpu]);
    this.syncRoots(cpu);
    this.commit();
    this.machine.movCr3(cpu, this.hardwareCr3(cpu, false));
  }

  /**
   * Zapped roots (KVM marks them invalid and makes every vCPU reload): previous roots that are invalid
   * are dropped; a vCPU whose current root is invalid gets a fresh one at once. Its old translations
   * are flushed by the same commit.
   */
  private reloadInvalidRoots(): void {
    for (let cpu = 0; cpu < this.options.cpus; cpu++) {
      const prev = this.prevRoots[cpu];
      for (let i = 0; i < PREV_ROOTS; i++) {
        const root = prev[i];
        if (root?.sp.invalid) {
          this.freeRoot(root);
          prev[i] = undefined;
        }
      }
      const root = this.roots[cpu];
      if (!root?.sp.invalid) continue;
      this.freeRoot(root);
      this.roots[cpu] = undefined;
      this.loadNewRoot(cpu, root.pgd);
      this.needFlush = true;
      const pcide = (this.machine.getRegs(cpu).cr4 & CR4_PCIDE) !== 0n;
      this.machine.movCr3(cpu, this.hardwareCr3(cpu, pcide));
    }
  }

  // --- the guest's trapped instructions ----------------------------------------------------------

  /**
   * A trapped MOV to CR3 (kvm_set_cr3): the root comes from the previous-roots cache or is built; unless
   * the guest asked for no flush (PCID no-flush bit), unsync pages under the root are resynchronised.
   * Then the hardware loads the shadow root with the guest's PCID and flush hint.
   */
  guestLoadCr3(cpu: number, value: bigint): void {
    this.currentCpu = cpu;
    this.exitCounter.take("cr3Write", cpu);
    const regs = this.machine.getRegs(cpu);
    const noFlush = (regs.cr4 & CR4_PCIDE) !== 0n && (value & CR3_NOFLUSH) !== 0n;
    const pgd = value & ~CR3_NOFLUSH;
    let synced = false;
    if (pgd !== this.guestCr3[cpu] || !this.roots[cpu]) {
      this.guestCr3[cpu] = pgd;
      const role = this.roleOf(this.guestLevels(regs), false, ACC_ALL, regs);
      if (this.fastSwitch(cpu, pgd, role)) {
        this.counters.root_hit++;
        const root = this.roots[cpu];
        if (root) root.sp.writeFlooding = 0;
      } else {
        this.counters.root_miss++;
        this.makePagesAvailable();
        this.loadNewRoot(cpu, pgd);
        this.syncRoots(cpu);
        synced = true;
      }
    }
    if (!noFlush && !synced) this.syncRoots(cpu);
    this.commit();
    this.machine.movCr3(cpu, this.hardwareCr3(cpu, noFlush));
  }

  /** A trapped INVLPG: the address's SPTEs in unsync pages are resynchronised under every root, then the hardware INVLPG. */
  guestInvlpg(cpu: number, la: bigint): void {
    this.currentCpu = cpu;
    this.exitCounter.take("invlpg", cpu);
    const roots = [this.roots[cpu], ...this.prevRoots[cpu]];
    for (const root of roots) if (root && this.invalidateAddress(root.sp, la)) this.needFlush = true;
    this.commit();
    this.machine.invlpg(cpu, la);
  }

  /**
   * A trapped INVPCID (handle_invpcid): type 0 resyncs the address under the roots of that PCID; type 1
   * resyncs the current root if it is that PCID's, else forgets cached roots of it; types 2 and 3 resync
   * every cached root. Then the hardware INVPCID.
   */
  guestInvpcid(cpu: number, type: number, pcid: number, la: bigint): void {
    this.currentCpu = cpu;
    this.exitCounter.take("invpcid", cpu);
    const active = this.activePcid(cpu);
    const pcidOf = (root: Root) => Number(root.pgd & 0xfffn);
    if (type === 0) {
      const current = this.roots[cpu];
      if (current && pcid === active && this.invalidateAddress(current.sp, la)) this.needFlush = true;
      for (const root of this.prevRoots[cpu]) {
        if (root && pcidOf(root) === pcid && this.invalidateAddress(root.sp, la)) this.needFlush = true;
      }
    } else if (type === 1) {
      if (pcid === active) this.syncRoots(cpu);
      else {
        const prev = this.prevRoots[cpu];
        for (let i = 0; i < PREV_ROOTS; i++) {
          const root = prev[i];
          if (root && pcidOf(root) === pcid) {
            this.freeRoot(root);
            prev[i] = undefined;
          }
        }
      }
    } else {
      this.syncRoots(cpu);
      this.syncPrevRoots(cpu);
    }
    this.commit();
    if (!this.machine.invpcid(cpu, type, pcid, la)) throw new MemvirtError(`INVPCID type ${type} #GP`, 1);
  }

  /**
   * The guest's shootdown IPIs go through KVM's local APIC; each target's INVLPG or CR3 reload then
   * traps on that vCPU and resyncs the shadow there.
   */
  guestFlushOthers(
    from: number,
    targets: readonly number[],
    flush: TlbFlush,
    handler: (cpu: number) => void,
  ): void {
    this.ipis.shootdown(from, targets, flush, (target) => {
      const before = this.exitCounter.total;
      handler(target);
      this.targetFlushExits += this.exitCounter.total - before;
    });
    // The kernel goes on storing from the CPU that sent the IPIs.
    this.currentCpu = from;
  }

  /**
   * The guest kernel's store to one of its page-table entries. It lands in guest memory directly unless
   * the page is write-protected: then a leaf table may go unsync (the store faults once, the page becomes
   * writable), and otherwise the store traps and is emulated (kvm_mmu_pte_write).
   */
  guestStore(gpa: bigint, value: bigint, _level?: number): void {
    const gfn = gpa >> 12n;
    if (!this.isWriteProtected(gfn)) {
      this.writeGuest(gpa, value);
      return;
    }
    const cpu = this.currentCpu;
    if (this.canUnsync(gfn)) {
      // The store hits a read-only SPTE: a #PF exit whose fix is to let the table go unsync.
      this.exitCounter.take("pageFault", cpu);
      this.unsyncGfn(gfn);
      this.counters.pf_fixed++;
      this.machine.chargeCycles(this.costs.shadowFault, CYCLES_SHADOW);
      this.writeGuest(gpa, value);
      return;
    }
    this.exitCounter.take("wpWrite", cpu);
    this.machine.chargeCycles(this.costs.emulate, CYCLES_EMULATION);
    this.writeGuest(gpa, value);
    this.ptWrite(gpa, value);
    this.commit();
  }

  /**
   * kvm_mmu_pte_write: after an emulated store to a shadowed guest table, every shadow page of that
   * table drops the SPTE for the written entry. Leaf pages refill it from the new gpte (prefetch); a
   * non-leaf page written 3 times with no use in between is zapped (write flooding), as is any page
   * written misaligned. The guest kernel's stores here are whole aligned 8-byte entries, so the
   * misaligned rule never fires, but it is kept for other writers.
   */
  private ptWrite(gpa: bigint, value: bigint): void {
    this.counters.mmu_pte_write++;
    const gfn = gpa >> 12n;
    const index = Number((gpa & 0xfffn) >> 3n);
    const misaligned = (gpa & 7n) !== 0n;
    for (const sp of [...(this.gfnPages.get(gfn) ?? [])]) {
      if (sp.invalid) continue;
      if (misaligned || this.detectFlooding(sp)) {
        this.zapPage(sp);
        this.counters.mmu_flooded++;
        continue;
      }
      if (this.zapSpte(sp, index)) this.needFlush = true;
      if (value === 0n) continue;
      if (sp.level === 1) {
        this.counters.mmu_pte_updated++;
        this.prefetch(sp, index, value);
      } else {
        this.counters.mmu_pde_zapped++;
      }
    }
  }

  /** detect_write_flooding: leaf pages are exempt, since they can go unsync instead. */
  private detectFlooding(sp: ShadowPage): boolean {
    if (sp.level === 1) return false;
    sp.writeFlooding++;
    return sp.writeFlooding >= FLOOD_LIMIT;
  }

  /**
   * FNAME(prefetch_gpte): installs the SPTE for a gpte the guest just wrote, if it is present, valid and
   * already accessed, and names a frame in a memslot; else the entry stays empty and faults later.
   */
  private prefetch(sp: ShadowPage, index: number, gpte: bigint): void {
    const regs = this.machine.getRegs(this.currentCpu);
    const nxe = (regs.efer & EFER_NXE) !== 0n;
    if ((gpte & P) === 0n || (gpte & A) === 0n || this.reserved(gpte, 1, nxe)) return;
    const gfn = (gpte & ADDRESS_MASK) >> 12n;
    if (!this.vm.memslotOf(gfn << 12n)) return;
    let access = sp.access & gpteAccess(gpte, nxe);
    if ((gpte & D) === 0n) access &= ~ACC_WRITE;
    this.setSpte(sp, index, gfn, 1, access, false, true, regs);
  }

  // --- shadow faults -----------------------------------------------------------------------------

  /**
   * Every guest #PF exits to the hypervisor first. It walks the guest's tables: a fault they explain is
   * injected into the guest (with the error code of the guest's walk); otherwise the shadow lacks the
   * translation and is fixed, and the access retried.
   */
  onPageFault(exit: ExitRecord): ExitAction {
    const cpu = exit.cpu;
    this.currentCpu = cpu;
    this.exitCounter.take("pageFault", cpu);
    this.guardLoop(exit);
    this.ensureRoot(cpu);
    const walk = this.walkGuest(cpu, exit.linear, exit.qualification);
    if (walk.fault) {
      this.counters.pf_guest++;
      this.machine.chargeCycles(this.costs.inject, CYCLES_SHADOW);
      // The guest sees the fault its own tables explain, not the shadow's (KVM injects walker->fault).
      exit.qualification = walk.errorCode;
      return "deliver";
    }
    const slot = this.vm.memslotOf(walk.gpa);
    const write = (exit.qualification & PF_W) !== 0n;
    if (!slot || (write && slot.readonly)) {
      // No memslot: MMIO, emulated; no SPTE ever maps it.
      this.counters.pf_mmio++;
      this.machine.chargeCycles(this.costs.emulate, CYCLES_EMULATION);
      return "complete";
    }
    this.setAccessedDirty(walk, write);
    this.makePagesAvailable();
    const action = this.fetch(cpu, exit.linear, walk, exit.qualification);
    this.commit();
    if (action === "complete") {
      this.counters.pf_emulate++;
      this.machine.chargeCycles(this.costs.emulate, CYCLES_EMULATION);
      // The emulated store reached a write-tracked page, so page tracking tells the shadow MMU
      // (kvm_mmu_pte_write): a frame that no longer holds a table is zapped by write flooding. A data
      // store changes no bytes here, so the entry it covers keeps its value.
      const entry = walk.gpa & ~7n;
      this.ptWrite(entry, this.guestLoad(entry));
      this.commit();
    } else {
      this.counters.pf_fixed++;
      this.machine.chargeCycles(this.costs.shadowFault, CYCLES_SHADOW);
    }
    return action;
  }

  /**
   * A record that keeps faulting with no access completing in between means the shadow never converges:
   * fail loudly instead of spinning.
   */
  private guardLoop(exit: ExitRecord): void {
    const key = `${exit.cpu}:${exit.index}:${exit.linear}:${exit.kind}`;
    const accesses = this.machine.counter(S_ACCESSES);
    if (key === this.lastFault.key && accesses === this.lastFault.accesses) this.lastFault.count++;
    else this.lastFault = { key, accesses, count: 1 };
    if (this.lastFault.count > FAULT_LOOP_LIMIT) {
      throw new MemvirtError(`shadow fault at 0x${exit.linear.toString(16)} repeats without progress`, 1);
    }
  }

  /** The walk's A/D updates, as the hardware would have made them on the guest's tables. */
  private setAccessedDirty(walk: GuestWalk, write: boolean): void {
    for (let level = walk.levels; level >= walk.leafLevel; level--) {
      let entry = walk.entries[level];
      let updated = entry | A;
      if (level === walk.leafLevel && write) updated |= D;
      if (updated !== entry) {
        this.writeGuest(walk.entryAddresses[level], updated);
        entry = updated;
        walk.entries[level] = entry;
      }
    }
  }

  /** kvm_mmu_hugepage_adjust: the largest level the host backing, the memslot and write tracking allow. */
  private mappingLevel(walk: GuestWalk): number {
    const hostLevel = LEVEL_OF[this.vm.backingPageSize];
    for (let level = Math.min(walk.leafLevel, hostLevel); level > 1; level--) {
      const bytes = levelBytes(level);
      const base = walk.gpa & ~(bytes - 1n);
      const slot = this.vm.memslotOf(base);
      if (!slot || slot.logDirty || base + bytes > slot.base + slot.size) continue;
      if ((this.disallowLpage.get(this.lpageKey(level, base >> 12n)) ?? 0) > 0) continue;
      return level;
    }
    return 1;
  }

  /**
   * FNAME(fetch): builds the shadow path for `la` from the vCPU's root, one indirect shadow page per
   * guest table, then direct pages where a guest large page is mapped with smaller SPTEs, then the leaf.
   */
  private fetch(cpu: number, la: bigint, walk: GuestWalk, errorCode: bigint): ExitAction {
    const root = this.roots[cpu];
    if (!root) throw new MemvirtError(`vCPU ${cpu} has no shadow root`, 1);
    const regs = this.machine.getRegs(cpu);
    let sp = root.sp;
    for (let level = walk.levels; level > walk.leafLevel; level--) {
      sp.writeFlooding = 0;
      const index = indexOf(la, level);
      const childGfn = walk.tables[level - 1] >> 12n;
      const spte = this.machine.readPhys64(this.sptep(sp, index));
      if ((spte & P) !== 0n) {
        const child = this.isLeafSpte(sp, spte) ? undefined : this.byFrame.get(spte & ADDRESS_MASK);
        if (child && !child.direct && child.gfn === childGfn && child.level === level - 1) {
          sp = child;
          continue;
        }
        // A large SPTE where the guest now has a table, or a link write protection should have dropped.
        this.zapSpte(sp, index);
        this.needFlush = true;
      }
      const child = this.getShadowPage(childGfn, level - 1, false, walk.accessAbove[level - 1], regs);
      if (sp.invalid) return "retry";
      this.link(sp, index, child);
      sp = child;
    }
    const write = (errorCode & PF_W) !== 0n;
    const user = (errorCode & PF_U) !== 0n;
    let access = walk.access;
    // protect_clean_gpte: a read of a clean page maps it read-only, so the first write faults and sets D.
    if (!write && (walk.entries[walk.leafLevel] & D) === 0n) access &= ~ACC_WRITE;
    const directAccess = access;
    if ((regs.cr0 & CR0_WP) === 0n && !user && write && (access & ACC_WRITE) === 0) {
      // CR0.WP=0: a kernel write to a read-only page gets a kernel-only writable SPTE.
      access = (access | ACC_WRITE) & ~ACC_USER;
      if ((regs.cr4 & CR4_SMEP) !== 0n) access &= ~ACC_EXEC;
    }
    const mapLevel = this.mappingLevel(walk);
    for (let level = walk.leafLevel; level > mapLevel; level--) {
      sp.writeFlooding = 0;
      const index = indexOf(la, level);
      // The direct page covers what the SPTE at `level` maps: it is named by that region's first gfn.
      const bytes = levelBytes(level);
      const gfn = (walk.gpa & ~(bytes - 1n)) >> 12n;
      const spte = this.machine.readPhys64(this.sptep(sp, index));
      if ((spte & P) !== 0n) {
        const child = this.isLeafSpte(sp, spte) ? undefined : this.byFrame.get(spte & ADDRESS_MASK);
        if (child?.direct && child.gfn === gfn) {
          sp = child;
          continue;
        }
        this.zapSpte(sp, index);
        this.needFlush = true;
      }
      const child = this.getShadowPage(gfn, level - 1, true, directAccess, regs);
      this.link(sp, index, child);
      sp = child;
    }
    sp.writeFlooding = 0;
    const gfn = (walk.gpa & ~(levelBytes(mapLevel) - 1n)) >> 12n;
    const index = indexOf(la, mapLevel);
    const before = this.machine.readPhys64(this.sptep(sp, index));
    const emulate = this.setSpte(sp, index, gfn, mapLevel, access, write, false, regs);
    if (emulate) return "complete";
    if (before === this.machine.readPhys64(this.sptep(sp, index))) this.counters.pf_spurious++;
    return "retry";
  }

  /**
   * mmu_set_spte/make_spte: the leaf SPTE mapping guest frame `gfn` at `level` with `access`. The host
   * frame is always the VM's own backing of a gfn inside a memslot. A write to a frame that holds a
   * shadowed guest table either lets its shadows go unsync or is emulated; true means emulate.
   */
  private setSpte(
    sp: ShadowPage,
    index: number,
    gfn: bigint,
    level: number,
    access: number,
    writeFault: boolean,
    prefetch: boolean,
    regs: Regs,
  ): boolean {
    const sptep = this.sptep(sp, index);
    const old = this.machine.readPhys64(sptep);
    const slot = this.vm.memslotOf(gfn << 12n);
    if (!slot) throw new MemvirtError(`no memslot holds gfn 0x${gfn.toString(16)}`, 1);
    let writable = (access & ACC_WRITE) !== 0 && !slot.readonly;
    let emulate = false;
    if (writable && this.isWriteProtected(gfn)) {
      if (!prefetch && level === 1 && this.canUnsync(gfn)) {
        this.unsyncGfn(gfn);
      } else {
        writable = false;
        emulate = writeFault;
      }
    }
    // make_spte: with dirty logging on, a writable SPTE lets the guest dirty the page unseen, so creating
    // one marks the page dirty (mark_page_dirty_in_slot); the harvest write-protects it again.
    if (writable && slot.logDirty) this.markDirty(gfn);
    const hpa = this.vm.hostAddress(gfn << 12n);
    const nxe = (regs.efer & EFER_NXE) !== 0n;
    let spte = hpa | P;
    if (writable) spte |= RW;
    if ((access & ACC_USER) !== 0) spte |= US;
    if (nxe && (access & ACC_EXEC) === 0) spte |= XD;
    if (level > 1) spte |= PS;
    if (!prefetch) spte |= A;
    if (writable && writeFault) spte |= D;
    if ((old & P) !== 0n) {
      if (!this.isLeafSpte(sp, old)) {
        this.zapSpte(sp, index);
        this.needFlush = true;
      } else if ((old & ADDRESS_MASK) !== hpa) {
        this.zapSpte(sp, index);
        this.needFlush = true;
      } else if ((old & RW) !== 0n && !writable) {
        this.needFlush = true;
      }
    }
    // Keep the hardware's A/D on an SPTE that still maps the same frame.
    if ((old & P) !== 0n && (old & ADDRESS_MASK) === hpa) spte |= old & (A | (writable ? D : 0n));
    this.machine.writePhys64(sptep, spte);
    if (sp.gfns.get(index) !== gfn) {
      const previous = sp.gfns.get(index);
      if (previous !== undefined) this.rmapRemove(previous, level, sptep);
      sp.gfns.set(index, gfn);
      this.rmapAdd(gfn, level, sptep);
    }
    return emulate;
  }

  // --- dirty logging -----------------------------------------------------------------------------

  private markDirty(gfn: bigint): void {
    const page = gfn << 12n;
    if (this.vm.dirty.has(page)) return;
    this.vm.dirty.add(page);
    this.counters.dirty_pages++;
  }

  /**
   * KVM_GET_DIRTY_LOG with KVM_CLEAR_DIRTY_LOG on a shadow MMU: returns the dirty pages and write-
   * protects each through the rmap (kvm_mmu_write_protect_pt_masked), then flushes remote TLBs, so the
   * next write to any of them faults and marks it again.
   */
  harvestDirty(): bigint[] {
    this.counters.dirty_log_harvests++;
    const dirty = [...this.vm.dirty];
    this.vm.dirty.clear();
    for (const page of dirty) this.writeProtectGfn(page >> 12n);
    this.commit();
    return dirty;
  }

  get periodCycles(): number {
    return this.vm.memslots.some((slot) => slot.logDirty) ? (this.options.dirtyLogIntervalCycles ?? 0) : 0;
  }

  /** The VMM's dirty-log harvest, every periodCycles of simulated time. */
  periodic(): void {
    this.harvestDirty();
  }

  // --- inspection --------------------------------------------------------------------------------

  /** The shadow leaf translating `la` on `cpu` (a software walk of the current shadow root). */
  shadowLeaf(cpu: number, la: bigint): { spte: bigint; level: number; hpa: bigint } | undefined {
    const root = this.roots[cpu];
    if (!root) return undefined;
    let sp = root.sp;
    for (let level = sp.level; level >= 1; level--) {
      const spte = this.machine.readPhys64(this.sptep(sp, indexOf(la, level)));
      if ((spte & P) === 0n) return undefined;
      if (this.isLeafSpte(sp, spte)) {
        const bytes = levelBytes(level);
        return { spte, level, hpa: (spte & ADDRESS_MASK & ~(bytes - 1n)) | (la & (bytes - 1n)) };
      }
      const child = this.byFrame.get(spte & ADDRESS_MASK);
      if (!child) return undefined;
      sp = child;
    }
    return undefined;
  }

  /** The guest's CR3 as the guest believes it is. */
  guestCr3Of(cpu: number): bigint {
    return this.guestCr3[cpu];
  }

  /** Every host frame a valid shadow page's leaf SPTEs map (for isolation checks). */
  mappedHostFrames(): bigint[] {
    const frames: bigint[] = [];
    for (const sp of this.active.values()) {
      for (const index of sp.gfns.keys()) {
        const spte = this.machine.readPhys64(this.sptep(sp, index));
        if ((spte & P) === 0n) continue;
        frames.push(spte & ADDRESS_MASK & ~(levelBytes(sp.level) - 1n));
      }
    }
    return frames;
  }

  /** Shadow pages in the cache that are unsync now. */
  unsyncPages(): number {
    let count = 0;
    for (const sp of this.active.values()) if (sp.unsync) count++;
    return count;
  }
}

export const shadowTechnique: TechniqueModule = {
  virtual: true,
  nestedTables: false,
  create: ({ machine, vm, memory, cpuIds }, { hypervisor, guestMemory }) =>
    new ShadowMmu(machine, vm, memory, {
      costs: hypervisor.costs,
      cpus: cpuIds.length,
      unsync: hypervisor.unsync,
      maxShadowPages: hypervisor.maxShadowPages,
      guestMemory,
      dirtyLogIntervalCycles: hypervisor.dirtyLogIntervalCycles,
      ipi: hypervisor.ipi,
    }),
};
