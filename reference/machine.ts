// Independent reference model of the x86-64 MMU described in docs/MODEL.md.
//
// This model is the oracle of the differential tests against the WebAssembly core, so it favours a
// literal reading of MODEL.md over speed: every section number in the comments below points at the
// rule the code implements. It shares nothing with assembly/ except src/core/types.ts.
//
// The nested dimension (§12) runs through the same walk: under EPT or NPT each guest table entry's
// guest-physical address goes through translateGpa (nested TLB, nested PSCs, nested tables; the entry
// formats and exit reports are in nested.ts), and TLB and PSC entries carry a context id (guest) or root
// tag (nested). Where §12 leaves a choice open, the comments say which reading the model takes.

import {
  type AccessResult,
  type CacheLevelConfig,
  CR0_WP,
  CR4_LA57,
  CR4_PCIDE,
  CR4_PGE,
  CR4_PKE,
  CR4_PKS,
  CR4_SMAP,
  CR4_SMEP,
  EFER_LMA,
  EFER_NXE,
  IMPLICIT,
  type MachineConfig,
  PAGE_SHIFT,
  PAGE_SIZES,
  type PageSize,
  PFEC,
  type Policy,
  type Regs,
  RFLAGS_AC,
  type SetAssocConfig,
  type Stats,
  type TlbArrayConfig,
  type TlbLevelConfig,
} from "../src/core/types.js";
import {
  decodeEpt,
  decodeNpt,
  NESTED_ALL,
  NESTED_R,
  NESTED_W,
  NESTED_X,
  type NestedAccess,
  type NestedFaultCause,
  type NestedMode,
  nestedAccessedBit,
  nestedDirtyBit,
  nestedFault,
} from "./nested.js";

// Access kinds and fault types are spelled out locally rather than imported: types.ts declares them as
// `const enum`, which per-file transpilers (vitest) cannot inline across modules.
export const KIND_READ = 0;
export const KIND_WRITE = 1;
export const KIND_FETCH = 2;
export const KIND_SHADOW_STACK_READ = 3;
export const KIND_SHADOW_STACK_WRITE = 4;

export const FAULT_NONE = 0;
export const FAULT_GENERAL_PROTECTION = 13;
export const FAULT_PAGE = 14;

const TABLE_ADDRESS_MASK = 0x000f_ffff_ffff_f000n;
const PHYSICAL_LIMIT_MASK = (1n << 52n) - 1n;
const CR3_NOFLUSH = 1n << 63n;
const CR4_PAE = 1n << 5n;
const ENTRY_PRESENT = 1n;
const ENTRY_RW = 1n << 1n;
const ENTRY_US = 1n << 2n;
const ENTRY_ACCESSED = 1n << 5n;
const ENTRY_DIRTY = 1n << 6n;
const ENTRY_PS = 1n << 7n;
const ENTRY_GLOBAL = 1n << 8n;
const ENTRY_XD = 1n << 63n;
const GIGABYTE_LEAF_RESERVED = 0x3fffe000n;
const TWO_MEGABYTE_LEAF_RESERVED = 0x1fe000n;

const PAGE_BYTES: Record<PageSize, bigint> = { "4K": 1n << 12n, "2M": 1n << 21n, "1G": 1n << 30n };

/** SplitMix64 (MODEL.md §6.3), wrapping u64 arithmetic. */
export function splitmix64(seed: bigint): bigint {
  let z = BigInt.asUintN(64, seed + 0x9e3779b97f4a7c15n);
  z = BigInt.asUintN(64, (z ^ (z >> 30n)) * 0xbf58476d1ce4e5b9n);
  z = BigInt.asUintN(64, (z ^ (z >> 27n)) * 0x94d049bb133111ebn);
  return z ^ (z >> 31n);
}

/** xorshift64 (MODEL.md §6.3); the state can never be 0 because 0 is a fixed point. */
export class XorShift64 {
  private state: bigint;

  constructor(initial: bigint) {
    const state = BigInt.asUintN(64, initial);
    this.state = state === 0n ? 1n : state;
  }

  next(): bigint {
    let state = this.state;
    state ^= BigInt.asUintN(64, state << 13n);
    state ^= state >> 7n;
    state ^= BigInt.asUintN(64, state << 17n);
    this.state = state;
    return state;
  }
}

/** Per-CPU stamp source shared by all TLB arrays and PSCs of that CPU (§6.2). */
class Clock {
  value = 0;

  tick(): number {
    this.value += 1;
    return this.value;
  }
}

interface Stamped {
  valid: boolean;
  stamp: number;
}

function isPowerOfTwo(value: number): boolean {
  return Number.isInteger(value) && value > 0 && (value & (value - 1)) === 0;
}

/**
 * Storage and replacement shared by TLB arrays and PSCs: both use the same insertion rules (§6.3, §7.3),
 * so they share the way choice.
 */
class SetAssociative<Entry extends Stamped> {
  readonly sets: number;
  readonly ways: number;
  readonly policy: Policy;
  readonly slots: Entry[];
  private readonly random: XorShift64;

  constructor(entries: number, ways: number, policy: Policy, randomState: bigint, makeEntry: () => Entry) {
    if (!Number.isInteger(ways) || ways <= 0 || !Number.isInteger(entries) || entries % ways !== 0) {
      throw new Error(`invalid geometry: ${entries} entries, ${ways} ways`);
    }
    this.sets = entries / ways;
    if (!isPowerOfTwo(this.sets)) throw new Error(`set count ${this.sets} is not a power of two`);
    this.ways = ways;
    this.policy = policy;
    this.random = new XorShift64(randomState);
    this.slots = Array.from({ length: entries }, makeEntry);
  }

  entryAt(set: number, way: number): Entry {
    return this.slots[set * this.ways + way];
  }

  /** Way chosen for an insertion into `set`: a matching valid entry, else the lowest invalid, else a victim. */
  chooseWay(set: number, matches: (entry: Entry) => boolean): number {
    for (let way = 0; way < this.ways; way++) {
      const entry = this.entryAt(set, way);
      if (entry.valid && matches(entry)) return way;
    }
    for (let way = 0; way < this.ways; way++) {
      if (!this.entryAt(set, way).valid) return way;
    }
    if (this.policy === "random") {
      return Number((this.random.next() >> 32n) % BigInt(this.ways));
    }
    let victim = 0;
    for (let way = 1; way < this.ways; way++) {
      // Strictly smaller keeps the lowest way on ties.
      if (this.entryAt(set, way).stamp < this.entryAt(set, victim).stamp) victim = way;
    }
    return victim;
  }

  /** A hit refreshes the stamp only under LRU: FIFO ages by insertion and random ignores stamps. */
  touch(entry: Entry, clock: Clock): void {
    if (this.policy === "lru") entry.stamp = clock.tick();
  }

  invalidateWhere(predicate: (entry: Entry) => boolean): void {
    for (const entry of this.slots) {
      if (entry.valid && predicate(entry)) entry.valid = false;
    }
  }
}

/** Attributes a translation carries from the walk into a TLB entry and back into the permission check. */
interface TranslationAttributes {
  rw: boolean;
  us: boolean;
  xd: boolean;
  dirty: boolean;
  ssPage: boolean;
  pkey: number;
  global: boolean;
  pcid: number;
  /**
   * Tag beyond the PCID (§12): the context id in the TLBs, the root tag in the nested TLB. 0 = host.
   */
  context: number;
  /** Nested rights of the page (§12.2 deny bits; the cached rights in the nested TLB). All for native. */
  nestedRights: number;
  /** Nested dirty flag (§12.1, §12.2); true for native entries. */
  nestedDirty: boolean;
}

interface TlbEntry extends Stamped, TranslationAttributes {
  vpn: bigint;
  size: PageSize;
  frame: bigint;
}

function emptyTlbEntry(): TlbEntry {
  return {
    valid: false,
    stamp: 0,
    vpn: 0n,
    size: "4K",
    frame: 0n,
    rw: false,
    us: false,
    xd: false,
    dirty: false,
    ssPage: false,
    pkey: 0,
    global: false,
    pcid: 0,
    context: 0,
    nestedRights: NESTED_ALL,
    nestedDirty: true,
  };
}

class TlbArray {
  /** Held sizes in the lookup order of §6.2 (4K, 2M, 1G) whatever order the config lists them in. */
  readonly sizes: PageSize[];
  readonly storage: SetAssociative<TlbEntry>;

  constructor(config: TlbArrayConfig, randomState: bigint) {
    this.sizes = PAGE_SIZES.filter((size) => config.sizes.includes(size));
    this.storage = new SetAssociative(config.entries, config.ways, config.policy, randomState, emptyTlbEntry);
  }

  setFor(la: bigint, size: PageSize): number {
    return Number((la >> BigInt(PAGE_SHIFT[size])) & BigInt(this.storage.sets - 1));
  }
}

class TlbLevel {
  constructor(
    readonly arrays: TlbArray[],
    readonly latency: number,
  ) {}

  /** §6.2: the first matching entry over arrays in order, sizes 4K/2M/1G, ways in order. */
  lookup(la: bigint, pcid: number, context: number, clock: Clock): TlbEntry | null {
    for (const array of this.arrays) {
      for (const size of array.sizes) {
        const vpn = la >> BigInt(PAGE_SHIFT[size]);
        const set = array.setFor(la, size);
        for (let way = 0; way < array.storage.ways; way++) {
          const entry = array.storage.entryAt(set, way);
          if (
            entry.valid &&
            entry.size === size &&
            entry.vpn === vpn &&
            entry.context === context &&
            (entry.global || entry.pcid === pcid)
          ) {
            array.storage.touch(entry, clock);
            return entry;
          }
        }
      }
    }
    return null;
  }

  /** §6.3: insert a translation of size `size` whose page starts at `pageFrame`, fracturing if needed. */
  fill(la: bigint, size: PageSize, pageFrame: bigint, attributes: TranslationAttributes, clock: Clock): void {
    const largestFirst = PAGE_SIZES.slice(0, PAGE_SIZES.indexOf(size) + 1).reverse();
    const cachedSize = largestFirst.find((candidate) => this.arrays.some((a) => a.sizes.includes(candidate)));
    if (cachedSize === undefined) return;
    const array = this.arrays.find((candidate) => candidate.sizes.includes(cachedSize))!;
    const offsetInPage = la & (PAGE_BYTES[size] - 1n);
    const frame = pageFrame + (offsetInPage & ~(PAGE_BYTES[cachedSize] - 1n));
    const vpn = la >> BigInt(PAGE_SHIFT[cachedSize]);
    const set = array.setFor(la, cachedSize);
    const holds = (entry: TlbEntry) =>
      entry.size === cachedSize &&
      entry.vpn === vpn &&
      entry.pcid === attributes.pcid &&
      entry.context === attributes.context &&
      entry.global === attributes.global;
    const entry = array.storage.entryAt(set, array.storage.chooseWay(set, holds));
    // §6.3: an entry that already holds the translation is updated in place and keeps its stamp.
    const inPlace = entry.valid && holds(entry);
    // Copied field by field: `attributes` may be an L2 entry, whose own tag fields must not leak in.
    entry.rw = attributes.rw;
    entry.us = attributes.us;
    entry.xd = attributes.xd;
    entry.dirty = attributes.dirty;
    entry.ssPage = attributes.ssPage;
    entry.pkey = attributes.pkey;
    entry.global = attributes.global;
    entry.pcid = attributes.pcid;
    entry.context = attributes.context;
    entry.nestedRights = attributes.nestedRights;
    entry.nestedDirty = attributes.nestedDirty;
    entry.valid = true;
    entry.vpn = vpn;
    entry.size = cachedSize;
    entry.frame = frame;
    if (!inPlace) entry.stamp = clock.tick();
  }

  invalidateWhere(predicate: (entry: TlbEntry) => boolean): void {
    for (const array of this.arrays) array.storage.invalidateWhere(predicate);
  }
}

interface PscEntry extends Stamped {
  tag: bigint;
  pcid: number;
  /** Context id (guest PSCs) or root tag (nested PSCs), §12. */
  context: number;
  /** Next table: physical (native), host-physical (guest PSC under a nested dimension, §12.2). */
  base: bigint;
  rw: boolean;
  us: boolean;
  xd: boolean;
  /** Guest PSC: nested rights of the next table's page. Nested PSC: accumulated nested rights. */
  nestedRights: number;
}

/** What a PSC fill stores besides the tag. */
type PscValue = Pick<PscEntry, "pcid" | "context" | "base" | "rw" | "us" | "xd" | "nestedRights">;

function emptyPscEntry(): PscEntry {
  return {
    valid: false,
    stamp: 0,
    tag: 0n,
    pcid: 0,
    context: 0,
    base: 0n,
    rw: false,
    us: false,
    xd: false,
    nestedRights: 0,
  };
}

/** Paging-structure cache for one level (§7): keyed by the linear-address bits above that level. */
class PagingStructureCache {
  readonly storage: SetAssociative<PscEntry>;

  constructor(
    readonly level: number,
    config: SetAssocConfig,
    randomState: bigint,
  ) {
    this.storage = new SetAssociative(config.entries, config.ways, config.policy, randomState, emptyPscEntry);
  }

  tagOf(la: bigint): bigint {
    return la >> BigInt(12 + 9 * (this.level - 1));
  }

  private setOf(tag: bigint): number {
    return Number(tag & BigInt(this.storage.sets - 1));
  }

  lookup(la: bigint, pcid: number, context: number, clock: Clock): PscEntry | null {
    const tag = this.tagOf(la);
    const set = this.setOf(tag);
    for (let way = 0; way < this.storage.ways; way++) {
      const entry = this.storage.entryAt(set, way);
      if (entry.valid && entry.tag === tag && entry.pcid === pcid && entry.context === context) {
        this.storage.touch(entry, clock);
        return entry;
      }
    }
    return null;
  }

  fill(la: bigint, value: PscValue, clock: Clock): void {
    const tag = this.tagOf(la);
    const set = this.setOf(tag);
    const way = this.storage.chooseWay(
      set,
      (entry) => entry.tag === tag && entry.pcid === value.pcid && entry.context === value.context,
    );
    Object.assign(this.storage.entryAt(set, way), {
      valid: true,
      tag,
      pcid: value.pcid,
      context: value.context,
      base: value.base,
      rw: value.rw,
      us: value.us,
      xd: value.xd,
      nestedRights: value.nestedRights,
      stamp: clock.tick(),
    });
  }
}

interface CacheLine {
  valid: boolean;
  line: number;
  stamp: number;
}

/** One level of the data-cache hierarchy that prices page-table references (§9); always LRU. */
class DataCache {
  private readonly sets: number;
  private readonly ways: number;
  private readonly lines: CacheLine[];
  private counter = 0;
  readonly latency: number;

  constructor(config: CacheLevelConfig) {
    const lineCount = config.size / 64;
    if (!Number.isInteger(lineCount) || lineCount % config.ways !== 0) {
      throw new Error(`invalid cache geometry: ${config.size} bytes, ${config.ways} ways`);
    }
    this.ways = config.ways;
    this.sets = lineCount / config.ways;
    if (!isPowerOfTwo(this.sets)) throw new Error(`cache set count ${this.sets} is not a power of two`);
    this.latency = config.latency;
    this.lines = Array.from({ length: lineCount }, () => ({ valid: false, line: 0, stamp: 0 }));
  }

  private firstWay(line: number): number {
    // Line numbers stay below 2^46 (physical addresses are 52 bits), so `%` on numbers is exact.
    return (line % this.sets) * this.ways;
  }

  lookup(line: number): boolean {
    const first = this.firstWay(line);
    for (let way = 0; way < this.ways; way++) {
      const slot = this.lines[first + way];
      if (slot.valid && slot.line === line) {
        this.counter += 1;
        slot.stamp = this.counter;
        return true;
      }
    }
    return false;
  }

  fill(line: number): void {
    const first = this.firstWay(line);
    let victim = -1;
    for (let way = 0; way < this.ways && victim < 0; way++) {
      if (!this.lines[first + way].valid) victim = way;
    }
    if (victim < 0) {
      victim = 0;
      for (let way = 1; way < this.ways; way++) {
        if (this.lines[first + way].stamp < this.lines[first + victim].stamp) victim = way;
      }
    }
    this.counter += 1;
    this.lines[first + victim] = { valid: true, line, stamp: this.counter };
  }
}

/** A CPU in guest mode (§12). */
interface GuestState {
  mode: NestedMode;
  /** EPTP or nCR3 as given. */
  root: bigint;
  rootTag: number;
  /** Nested walk length, 4 or 5. */
  levels: number;
  vpid: number;
  /** EPT A/D (EPTP bit 6); always on for NPT. */
  nestedAd: boolean;
  context: number;
}

/**
 * The arguments of VM entry, as the core's `Machine.vmEnter` takes them: under EPT the EPTP alone (its
 * bits 5:3 give the walk length, bit 6 A/D enable); under NPT nCR3 and the host's paging depth.
 */
export type RefVmEntry =
  | { nested: "none"; vpid?: number }
  | { nested: "ept"; root: bigint; vpid?: number }
  | { nested: "npt"; root: bigint; nestedLevels?: 4 | 5; vpid?: number };

/** Virtualization counters beyond §11, shaped as the core's `Machine.nestedStats()`. */
export interface NestedStats {
  nestedRefs: number;
  faultedNestedRefs: number;
  nestedWalks: number;
  nestedTlb: { hits: number; misses: number };
  nestedPsc: Record<"pml5" | "pml4" | "pdpte" | "pde", { hits: number; misses: number }>;
}

function emptyNestedStats(): NestedStats {
  return {
    nestedRefs: 0,
    faultedNestedRefs: 0,
    nestedWalks: 0,
    nestedTlb: { hits: 0, misses: 0 },
    nestedPsc: {
      pml5: { hits: 0, misses: 0 },
      pml4: { hits: 0, misses: 0 },
      pdpte: { hits: 0, misses: 0 },
      pde: { hits: 0, misses: 0 },
    },
  };
}

interface CpuState {
  regs: Regs;
  clock: Clock;
  l1d: TlbLevel | null;
  l1i: TlbLevel | null;
  l2: TlbLevel | null;
  /** Indexed by paging level: [2] = pde, [3] = pdpte, [4] = pml4, [5] = pml5. */
  psc: (PagingStructureCache | null)[];
  /** The nested TLB (§12.1): tag = root tag in `context`, pcid 0. */
  nestedTlb: TlbLevel | null;
  /** Nested PSCs, indexed like `psc`. */
  nestedPsc: (PagingStructureCache | null)[];
  l1Cache: DataCache | null;
  l2Cache: DataCache | null;
  /** Guest mode (§12), or null on the host. */
  guest: GuestState | null;
}

/** The access as the permission check and the error code see it (§1, §5.4, §5.5). */
interface AccessContext {
  kind: number;
  implicit: boolean;
  user: boolean;
  isWrite: boolean;
  isShadowStack: boolean;
  isFetch: boolean;
  pcid: number;
  levels: number;
  /** Context id of the CPU (§12): tags TLB and guest-PSC entries. */
  context: number;
  /** The nested dimension the walk goes through (EPT or NPT), null natively and for shadow/PV. */
  nested: GuestState | null;
  /** Rights the final GPA needs (§12.2): X for fetches, W for writes, else R. */
  need: number;
}

interface PermissionOutcome {
  fault: boolean;
  pk: boolean;
}

type FaultCause = "notPresent" | "reserved" | "protection";

/** A nested fault (§12.3) as the access reports it. */
interface NestedExit {
  fault: number;
  errorCode: number;
  gpa: bigint;
}

interface WalkOutcome {
  cycles: number;
  refs: number;
  nestedRefs: number;
  fault: FaultCause | null;
  pk: boolean;
  exit: NestedExit | null;
  pa: bigint;
  size: PageSize;
}

interface EntryRead {
  level: number;
  /** Host-physical address the entry was read at. */
  address: bigint;
  /** Its guest-physical address under a nested dimension (else = address). */
  gpa: bigint;
  value: bigint;
  /** Accumulated permissions up to and including this entry, kept for the PSC fill (§7.3). */
  rw: boolean;
  us: boolean;
  xd: boolean;
  /** Nested rights of the page holding the entry (§12.2), all rights natively. */
  tableRights: number;
}

/** A guest-physical translation (§12.1). */
type GpaTranslation =
  | { ok: true; hpa: bigint; rights: number; dirty: boolean; size: PageSize; cycles: number; refs: number }
  | { ok: false; cause: NestedFaultCause; rights: number; cycles: number; refs: number };

interface NestedRead {
  level: number;
  address: bigint;
  value: bigint;
  /** Nested rights accumulated from the walk's start (a PSC hit's included) up to this entry. */
  rights: number;
  /** NPT: U/S set at every level so far (always true for EPT). */
  user: boolean;
}

const PSC_NAMES: Record<number, "pde" | "pdpte" | "pml4" | "pml5"> = {
  2: "pde",
  3: "pdpte",
  4: "pml4",
  5: "pml5",
};

function emptyStats(): Stats {
  return {
    accesses: 0,
    cycles: 0,
    tlb: { l1d: { hits: 0, misses: 0 }, l1i: { hits: 0, misses: 0 }, l2: { hits: 0, misses: 0 } },
    walks: 0,
    walkRefs: 0,
    faultedWalks: 0,
    faultedWalkRefs: 0,
    adUpdates: 0,
    dirtyAssists: 0,
    psc: {
      pml5: { hits: 0, misses: 0 },
      pml4: { hits: 0, misses: 0 },
      pdpte: { hits: 0, misses: 0 },
      pde: { hits: 0, misses: 0 },
    },
    cache: { l1: { hits: 0 }, l2: { hits: 0 }, llc: { hits: 0 }, dram: 0 },
    faults: { notPresent: 0, reserved: 0, protection: 0, pkey: 0, gp: 0 },
    pages: { "4K": 0, "2M": 0, "1G": 0 },
    histogram: new Array<number>(32).fill(0),
  };
}

function cloneStats(stats: Stats): Stats {
  return {
    ...stats,
    tlb: { l1d: { ...stats.tlb.l1d }, l1i: { ...stats.tlb.l1i }, l2: { ...stats.tlb.l2 } },
    psc: {
      pml5: { ...stats.psc.pml5 },
      pml4: { ...stats.psc.pml4 },
      pdpte: { ...stats.psc.pdpte },
      pde: { ...stats.psc.pde },
    },
    cache: {
      l1: { ...stats.cache.l1 },
      l2: { ...stats.cache.l2 },
      llc: { ...stats.cache.llc },
      dram: stats.cache.dram,
    },
    faults: { ...stats.faults },
    pages: { ...stats.pages },
    histogram: [...stats.histogram],
  };
}

/** §10: bucket 0 for zero cycles, else 1 + floor(log2(cycles)), capped at 31. */
export function histogramBucket(cycles: number): number {
  if (cycles <= 0) return 0;
  if (cycles >= 2 ** 30) return 31;
  return Math.min(31, 32 - Math.clz32(Math.floor(cycles)));
}

/** §3: bits 63:47 (4-level) or 63:56 (5-level) all equal. */
export function isCanonical(la: bigint, levels: number): boolean {
  const topBit = levels === 5 ? 56n : 47n;
  const upper = BigInt.asUintN(64, la) >> topBit;
  return upper === 0n || upper === (1n << (64n - topBit)) - 1n;
}

/** Register state of a CPU that has just entered long mode with paging on; setRegs overrides it. */
export function defaultRegs(): Regs {
  return {
    cr0: 0x8001_0001n, // PG | WP | PE
    cr3: 0n,
    cr4: 0x20n, // PAE
    efer: 0x500n, // LMA | LME
    pkru: 0,
    pkrs: 0,
    rflags: 0x2n,
    cpl: 0,
  };
}

function bit(value: bigint, mask: bigint): boolean {
  return (value & mask) !== 0n;
}

export class RefMachine {
  readonly config: MachineConfig;
  private readonly cpus: CpuState[] = [];
  private readonly memory = new Map<number, BigUint64Array>();
  private readonly llc: DataCache | null;
  private readonly reservedAddressMask: bigint;
  private counters: Stats = emptyStats();
  private nestedCounters: NestedStats = emptyNestedStats();
  /** Context ids (§12): index = id, 0 = the host (vpid 0, no root). */
  private readonly contexts: { vpid: number; rootTag: number }[] = [{ vpid: 0, rootTag: 0 }];
  private readonly contextIds = new Map<string, number>([["0/0", 0]]);
  /** Root tags by table base, in order of first use; 0 = none. */
  private readonly rootTags = new Map<bigint, number>();

  constructor(cfg: MachineConfig) {
    if (!Number.isInteger(cfg.cpus) || cfg.cpus < 1) throw new Error(`invalid cpu count ${cfg.cpus}`);
    if (!Number.isInteger(cfg.maxPhyAddr) || cfg.maxPhyAddr < 36 || cfg.maxPhyAddr > 52) {
      throw new Error(`maxPhyAddr ${cfg.maxPhyAddr} is outside 36..52`);
    }
    this.config = cfg;
    this.reservedAddressMask = PHYSICAL_LIMIT_MASK & ~((1n << BigInt(cfg.maxPhyAddr)) - 1n);
    this.llc = cfg.cache.llc ? new DataCache(cfg.cache.llc) : null;

    // Random states are numbered over every array and PSC of every CPU in creation order, whatever the
    // policy, so adding an LRU array still shifts the numbering exactly as the core does.
    let arrayNumber = 0;
    const nextRandomState = (): bigint => {
      const state = splitmix64(BigInt.asUintN(64, BigInt(cfg.seed) + BigInt(arrayNumber)));
      arrayNumber += 1;
      return state === 0n ? 1n : state;
    };
    const makeLevel = (level: TlbLevelConfig | null): TlbLevel | null =>
      level
        ? new TlbLevel(
            level.arrays.map((array) => new TlbArray(array, nextRandomState())),
            level.latency,
          )
        : null;
    const makePsc = (level: number, config: SetAssocConfig | null): PagingStructureCache | null =>
      config ? new PagingStructureCache(level, config, nextRandomState()) : null;

    // Per CPU: l1d, l1i and l2 arrays, guest PSCs pml5..pde, nested TLB arrays, nested PSCs pml5..pde.
    for (let cpu = 0; cpu < cfg.cpus; cpu++) {
      const l1d = makeLevel(cfg.tlb.l1d);
      const l1i = makeLevel(cfg.tlb.l1i);
      const l2 = makeLevel(cfg.tlb.l2);
      const pml5 = makePsc(5, cfg.psc.pml5);
      const pml4 = makePsc(4, cfg.psc.pml4);
      const pdpte = makePsc(3, cfg.psc.pdpte);
      const pde = makePsc(2, cfg.psc.pde);
      const nestedTlb = makeLevel(cfg.nestedTlb ?? null);
      const nestedPml5 = makePsc(5, cfg.nestedPsc?.pml5 ?? null);
      const nestedPml4 = makePsc(4, cfg.nestedPsc?.pml4 ?? null);
      const nestedPdpte = makePsc(3, cfg.nestedPsc?.pdpte ?? null);
      const nestedPde = makePsc(2, cfg.nestedPsc?.pde ?? null);
      this.cpus.push({
        regs: defaultRegs(),
        clock: new Clock(),
        l1d,
        l1i,
        l2,
        psc: [null, null, pde, pdpte, pml4, pml5],
        nestedTlb,
        nestedPsc: [null, null, nestedPde, nestedPdpte, nestedPml4, nestedPml5],
        l1Cache: cfg.cache.l1 ? new DataCache(cfg.cache.l1) : null,
        l2Cache: cfg.cache.l2 ? new DataCache(cfg.cache.l2) : null,
        guest: null,
      });
    }
  }

  // ---- physical memory -------------------------------------------------------------------------

  writePhys64(pa: bigint, value: bigint): void {
    const [frame, index] = this.locate(pa);
    let page = this.memory.get(frame);
    if (!page) {
      page = new BigUint64Array(512);
      this.memory.set(frame, page);
    }
    page[index] = BigInt.asUintN(64, value);
  }

  readPhys64(pa: bigint): bigint {
    this.locate(pa);
    return this.readEntry(pa);
  }

  /**
   * A walk's read. A root register loaded without its checks (setRegs) can point a walk beyond
   * MAXPHYADDR, where nothing was ever written: it reads 0 (§5.1, unbacked memory), as in the core.
   */
  private readEntry(pa: bigint): bigint {
    const address = BigInt.asUintN(64, pa);
    return this.memory.get(Number(address >> 12n))?.[Number((address >> 3n) & 511n)] ?? 0n;
  }

  /** §2: physical memory is the addresses below 2^MAXPHYADDR; no other address exists to read or write. */
  private locate(pa: bigint): [number, number] {
    const address = BigInt.asUintN(64, pa);
    if ((address & 7n) !== 0n)
      throw new Error(`physical address 0x${address.toString(16)} is not 8-byte aligned`);
    if (address >> BigInt(this.config.maxPhyAddr) !== 0n)
      throw new Error(`physical address 0x${address.toString(16)} is beyond MAXPHYADDR`);
    return [Number(address >> 12n), Number((address >> 3n) & 511n)];
  }

  // ---- registers and control instructions ------------------------------------------------------

  setRegs(cpu: number, regs: Partial<Regs>): void {
    const target = this.cpu(cpu).regs;
    for (const [name, value] of Object.entries(regs) as [keyof Regs, Regs[keyof Regs] | undefined][]) {
      // An explicit `undefined` means "leave alone", as if the field were absent.
      if (value === undefined) continue;
      // CR3 bit 63 is the MOV's no-flush hint, never part of the register.
      const stored = name === "cr3" ? BigInt.asUintN(63, value as bigint) : value;
      Object.assign(target, { [name]: stored });
    }
  }

  getRegs(cpu: number): Regs {
    return { ...this.cpu(cpu).regs };
  }

  /** §8.3. */
  movCr3(cpu: number, value: bigint): void {
    const state = this.cpu(cpu);
    const written = BigInt.asUintN(64, value);
    const noFlush = bit(written, CR3_NOFLUSH);
    state.regs.cr3 = written & ~CR3_NOFLUSH;
    const mine = this.ofCurrentVpid(state);
    if (!bit(state.regs.cr4, CR4_PCIDE)) {
      this.invalidateTlb(state, (entry) => mine(entry) && !entry.global);
      this.invalidatePsc(state, mine);
    } else if (!noFlush) {
      const pcid = Number(written & 0xfffn);
      this.invalidateTlb(state, (entry) => mine(entry) && !entry.global && entry.pcid === pcid);
      this.invalidatePsc(state, (entry) => mine(entry) && entry.pcid === pcid);
    }
  }

  /** §8.4: returns false for #GP, leaving everything unchanged. */
  movCr4(cpu: number, value: bigint): boolean {
    const state = this.cpu(cpu);
    const before = state.regs.cr4;
    const after = BigInt.asUintN(64, value);
    const settingPcide = !bit(before, CR4_PCIDE) && bit(after, CR4_PCIDE);
    if (settingPcide && (!bit(state.regs.efer, EFER_LMA) || (state.regs.cr3 & 0xfffn) !== 0n)) return false;
    if (bit(before, CR4_LA57) !== bit(after, CR4_LA57)) return false;
    // Long mode needs PAE: clearing it with EFER.LMA=1 is #GP.
    if (bit(state.regs.efer, EFER_LMA) && !bit(after, CR4_PAE)) return false;
    const pcidBefore = this.currentPcid(state);
    state.regs.cr4 = after;
    const changed = before ^ after;
    const clearingPcide = bit(before, CR4_PCIDE) && !bit(after, CR4_PCIDE);
    // §12.4: in guest mode "everything" is every context of the CPU's VPID.
    const mine = this.ofCurrentVpid(state);
    if (bit(changed, CR4_PGE) || clearingPcide) {
      this.invalidateTlb(state, mine);
      this.invalidatePsc(state, mine);
    } else if (!bit(before, CR4_SMEP) && bit(after, CR4_SMEP)) {
      // PCIDE did not go 1 -> 0 here, and setting it requires CR3[11:0] = 0, so the pcid is unchanged.
      this.invalidateTlb(state, (entry) => mine(entry) && (entry.global || entry.pcid === pcidBefore));
      this.invalidatePsc(state, (entry) => mine(entry) && entry.pcid === pcidBefore);
    }
    return true;
  }

  /** §8.1. */
  invlpg(cpu: number, la: bigint): void {
    const state = this.cpu(cpu);
    const address = BigInt.asUintN(64, la);
    if (!isCanonical(address, this.levelsOf(state))) return;
    const pcid = this.currentPcid(state);
    const mine = this.ofCurrentVpid(state);
    this.invalidateTlb(
      state,
      (entry) => mine(entry) && coversAddress(entry, address) && (entry.global || entry.pcid === pcid),
    );
    this.invalidatePsc(state, (entry) => mine(entry) && entry.pcid === pcid);
  }

  /** §8.2: returns false for #GP, leaving everything unchanged. */
  invpcid(cpu: number, type: number, pcid: number, la: bigint): boolean {
    const state = this.cpu(cpu);
    const address = BigInt.asUintN(64, la);
    if (!Number.isInteger(type) || type < 0 || type > 3) return false;
    if (!Number.isInteger(pcid) || pcid < 0 || pcid > 0xfff) return false;
    if (type === 0 && !isCanonical(address, this.levelsOf(state))) return false;
    // Without PCIDs only PCID 0 exists, so naming another in a single-context type is #GP.
    if (type <= 1 && pcid !== 0 && !bit(state.regs.cr4, CR4_PCIDE)) return false;
    const mine = this.ofCurrentVpid(state);
    switch (type) {
      case 0:
        this.invalidateTlb(
          state,
          (entry) => mine(entry) && !entry.global && entry.pcid === pcid && coversAddress(entry, address),
        );
        this.invalidatePsc(state, (entry) => mine(entry) && entry.pcid === pcid);
        break;
      case 1:
        this.invalidateTlb(state, (entry) => mine(entry) && !entry.global && entry.pcid === pcid);
        this.invalidatePsc(state, (entry) => mine(entry) && entry.pcid === pcid);
        break;
      case 2:
        this.invalidateTlb(state, mine);
        this.invalidatePsc(state, mine);
        break;
      default:
        this.invalidateTlb(state, (entry) => mine(entry) && !entry.global);
        this.invalidatePsc(state, mine);
        break;
    }
    return true;
  }

  /** §8.6: every TLB and PSC entry of the CPU, of every context, and every nested entry. */
  flushAll(cpu: number): void {
    const state = this.cpu(cpu);
    this.invalidateTlb(state, () => true);
    this.invalidatePsc(state, () => true);
    this.invalidateNested(state, () => true);
  }

  // ---- virtualization (§12) --------------------------------------------------------------------

  /**
   * VM entry: guest mode with a context id for (vpid, root tag). Without VPIDs (vpid 0) the entry is a VM
   * transition that removes every entry of VPID-0 contexts (§12.4; docs/ept-npt.md §VPIDs and cached
   * mappings: every VM entry and exit flushes VPID 0).
   */
  vmEnter(cpu: number, entry: RefVmEntry): void {
    const state = this.cpu(cpu);
    const mode = entry.nested;
    if (mode !== "none" && mode !== "ept" && mode !== "npt") throw new Error(`invalid nested mode ${mode}`);
    const vpid = entry.vpid ?? 0;
    if (!Number.isInteger(vpid) || vpid < 0 || vpid > 0xffff) throw new Error(`invalid vpid ${vpid}`);
    const root = mode === "none" ? 0n : BigInt.asUintN(64, entry.root);
    const beyondWidth = root >> BigInt(this.config.maxPhyAddr) !== 0n;
    let levels = 4;
    let nestedAd = mode === "npt";
    if (mode === "ept") {
      // §12 and SDM 25.6.11 / 27.2.1.1: the EPTP is checked at VM entry, and it alone configures the walk.
      const memoryType = Number(root & 7n);
      if (memoryType !== 0 && memoryType !== 6) throw new Error(`EPTP memory type ${memoryType} is reserved`);
      levels = Number((root >> 3n) & 7n) + 1;
      if (levels !== 4 && levels !== 5) throw new Error(`EPTP walk length ${levels} is not supported`);
      if ((root & 0xf80n) !== 0n || beyondWidth) throw new Error("EPTP reserved bit set");
      nestedAd = (root & (1n << 6n)) !== 0n;
    } else if (mode === "npt") {
      levels = entry.nestedLevels ?? 4;
      if (levels !== 4 && levels !== 5) throw new Error(`invalid nested levels ${levels}`);
      if (beyondWidth) throw new Error("nCR3 beyond MAXPHYADDR");
    }
    const rootTag = mode === "none" ? 0 : this.rootTagOf(root & TABLE_ADDRESS_MASK);
    state.guest = {
      mode,
      root,
      rootTag,
      levels,
      vpid,
      nestedAd,
      context: this.contextIdOf(vpid, rootTag),
    };
    if (vpid === 0) this.flushVpidZero(state);
  }

  /** VM exit to the host; like every VM transition without VPIDs it flushes VPID 0 (§12.4). */
  vmLeave(cpu: number): void {
    const state = this.cpu(cpu);
    if (state.guest?.vpid === 0) this.flushVpidZero(state);
    state.guest = null;
  }

  /** §12.4: an exit and re-entry; without VPIDs (vpid 0) it removes every entry of VPID-0 contexts. */
  vmExitEntry(cpu: number): void {
    const state = this.cpu(cpu);
    if (state.guest?.vpid !== 0) return;
    this.flushVpidZero(state);
  }

  private flushVpidZero(state: CpuState): void {
    const vpidZero = (entry: { context: number }) => this.contexts[entry.context].vpid === 0;
    this.invalidateTlb(state, vpidZero);
    this.invalidatePsc(state, vpidZero);
  }

  /** §12.4 INVEPT: type 1 one EP4TA, type 2 all; false (VMfail) for other types. */
  invept(cpu: number, type: number, eptp = 0n): boolean {
    const state = this.cpu(cpu);
    if (type === 1) {
      const tag = this.rootTags.get(BigInt.asUintN(64, eptp) & TABLE_ADDRESS_MASK);
      if (tag === undefined) return true;
      const ofRoot = (entry: { context: number }) => this.contexts[entry.context].rootTag === tag;
      this.invalidateNested(state, (entry) => entry.context === tag);
      this.invalidateTlb(state, ofRoot);
      this.invalidatePsc(state, ofRoot);
      return true;
    }
    if (type === 2) {
      const withRoot = (entry: { context: number }) => this.contexts[entry.context].rootTag !== 0;
      this.invalidateNested(state, () => true);
      this.invalidateTlb(state, withRoot);
      this.invalidatePsc(state, withRoot);
      return true;
    }
    return false;
  }

  /** §12.4 INVVPID types 0-3; false (VMfail) for others, VPID 0 in types 0/1/3, a non-canonical type-0 la. */
  invvpid(cpu: number, type: number, vpid: number, la = 0n): boolean {
    const state = this.cpu(cpu);
    const address = BigInt.asUintN(64, la);
    if (!Number.isInteger(type) || type < 0 || type > 3) return false;
    if (!Number.isInteger(vpid) || vpid < 0 || vpid > 0xffff) return false;
    if (type !== 2 && vpid === 0) return false;
    if (type === 0 && !isCanonical(address, this.levelsOf(state))) return false;
    const ofVpid = (entry: { context: number }) => this.contexts[entry.context].vpid === vpid;
    switch (type) {
      case 0:
        this.invalidateTlb(state, (entry) => ofVpid(entry) && coversAddress(entry, address));
        this.invalidatePsc(state, ofVpid);
        break;
      case 1:
        this.invalidateTlb(state, ofVpid);
        this.invalidatePsc(state, ofVpid);
        break;
      case 2: {
        const notZero = (entry: { context: number }) => this.contexts[entry.context].vpid !== 0;
        this.invalidateTlb(state, notZero);
        this.invalidatePsc(state, notZero);
        break;
      }
      default:
        this.invalidateTlb(state, (entry) => ofVpid(entry) && !entry.global);
        this.invalidatePsc(state, ofVpid);
        break;
    }
    return true;
  }

  /** §12.4 VMCB TLB_CONTROL: 0 nothing, 1 everything, 3 the ASID and the current root, 7 as 3 but globals. */
  tlbControl(cpu: number, value: number): boolean {
    const state = this.cpu(cpu);
    switch (value) {
      case 0:
        return true;
      case 1:
        this.invalidateTlb(state, () => true);
        this.invalidatePsc(state, () => true);
        this.invalidateNested(state, () => true);
        return true;
      case 3:
      case 7: {
        const mine = this.ofCurrentVpid(state);
        const keepGlobals = value === 7;
        this.invalidateTlb(state, (entry) => mine(entry) && !(keepGlobals && entry.global));
        this.invalidatePsc(state, mine);
        const rootTag = state.guest?.rootTag ?? 0;
        if (rootTag !== 0) this.invalidateNested(state, (entry) => entry.context === rootTag);
        return true;
      }
      default:
        return false;
    }
  }

  nestedStats(): NestedStats {
    const c = this.nestedCounters;
    return {
      nestedRefs: c.nestedRefs,
      faultedNestedRefs: c.faultedNestedRefs,
      nestedWalks: c.nestedWalks,
      nestedTlb: { ...c.nestedTlb },
      nestedPsc: {
        pml5: { ...c.nestedPsc.pml5 },
        pml4: { ...c.nestedPsc.pml4 },
        pdpte: { ...c.nestedPsc.pdpte },
        pde: { ...c.nestedPsc.pde },
      },
    };
  }

  private rootTagOf(base: bigint): number {
    let tag = this.rootTags.get(base);
    if (tag === undefined) {
      tag = this.rootTags.size + 1;
      this.rootTags.set(base, tag);
    }
    return tag;
  }

  private contextIdOf(vpid: number, rootTag: number): number {
    const key = `${vpid}/${rootTag}`;
    let id = this.contextIds.get(key);
    if (id === undefined) {
      id = this.contexts.length;
      this.contexts.push({ vpid, rootTag });
      this.contextIds.set(key, id);
    }
    return id;
  }

  /** §12.4: the guest's flushes reach every context with the CPU's VPID (0 on the host). */
  private ofCurrentVpid(state: CpuState): (entry: { context: number }) => boolean {
    const vpid = state.guest?.vpid ?? 0;
    return (entry) => this.contexts[entry.context].vpid === vpid;
  }

  // ---- statistics ------------------------------------------------------------------------------

  stats(): Stats {
    return cloneStats(this.counters);
  }

  resetStats(): void {
    this.counters = emptyStats();
    this.nestedCounters = emptyNestedStats();
  }

  chargeCycles(n: number): void {
    this.counters.cycles += n;
  }

  countAccess(n = 1): void {
    this.counters.accesses += n;
  }

  // ---- translation -----------------------------------------------------------------------------

  /**
   * Translates one access (§4). `retry` marks the re-execution of a record that faulted: its TLB
   * lookups are not counted again (§11), everything else is. `accesses` is left to countAccess().
   * In guest mode the result also carries `gpa` and `nestedRefs` (§12).
   */
  access(cpu: number, la: bigint, kind: number, flags = 0, retry = false): AccessResult {
    const state = this.cpu(cpu);
    const address = BigInt.asUintN(64, la);
    const context = this.contextOf(state, kind, flags);
    const guest = state.guest !== null;
    const result = (base: AccessResult, gpa: bigint, nestedRefs: number): AccessResult =>
      this.finish(guest ? { ...base, gpa, nestedRefs } : base);

    if (!isCanonical(address, context.levels)) {
      this.counters.faults.gp += 1;
      return result(
        { fault: FAULT_GENERAL_PROTECTION, pa: 0n, errorCode: 0, pageSize: 0, refs: 0, cycles: 0 },
        0n,
        0,
      );
    }

    let cycles = 0;
    const l1 = context.isFetch ? state.l1i : state.l1d;
    const l1Stats = context.isFetch ? this.counters.tlb.l1i : this.counters.tlb.l1d;
    let hit: TlbEntry | null = null;
    let hitInL2 = false;
    if (l1) {
      cycles += l1.latency;
      hit = l1.lookup(address, context.pcid, context.context, state.clock);
      if (!retry) {
        if (hit) l1Stats.hits += 1;
        else l1Stats.misses += 1;
      }
    }
    if (!hit && state.l2) {
      cycles += state.l2.latency;
      hit = state.l2.lookup(address, context.pcid, context.context, state.clock);
      hitInL2 = hit !== null;
      if (!retry) {
        if (hit) this.counters.tlb.l2.hits += 1;
        else this.counters.tlb.l2.misses += 1;
      }
    }

    // §4: a write allowed by every right that meets a clean entry (D, or the nested dirty flag) walks to
    // set D: a D-bit assist.
    let assist = false;
    if (hit) {
      const permission = this.checkPermission(state, context, hit);
      const allowed = !permission.fault && this.nestedRightsAllow(context, hit);
      const clean = context.isWrite && (!hit.dirty || (context.nested !== null && !hit.nestedDirty));
      assist = allowed && clean;
      if (allowed && !clean) {
        // The L1 copy is tagged with the current PCID: PCID is a tag of the lookup, not an attribute.
        if (hitInL2 && l1) l1.fill(address, hit.size, hit.frame, { ...hit, pcid: context.pcid }, state.clock);
        const pa = hit.frame | (address & (PAGE_BYTES[hit.size] - 1n));
        return result(
          { fault: FAULT_NONE, pa, errorCode: 0, pageSize: pageBytes(hit.size), refs: 0, cycles },
          0n,
          0,
        );
      }
    }

    const walk = this.walk(state, context, address);
    cycles += walk.cycles;
    if (walk.exit) {
      this.invalidateAfterNestedFault(state, context, address, walk.exit.gpa);
      return result(
        {
          fault: walk.exit.fault,
          pa: 0n,
          errorCode: walk.exit.errorCode,
          pageSize: 0,
          refs: walk.refs,
          cycles,
        },
        walk.exit.gpa,
        walk.nestedRefs,
      );
    }
    if (walk.fault) {
      this.countFault(walk.fault, walk.pk);
      this.invalidateAfterFault(state, context, address);
      return result(
        {
          fault: FAULT_PAGE,
          pa: 0n,
          errorCode: this.errorCode(state, context, walk.fault, walk.pk),
          pageSize: 0,
          refs: walk.refs,
          cycles,
        },
        0n,
        walk.nestedRefs,
      );
    }
    if (assist) this.counters.dirtyAssists += 1;
    return result(
      {
        fault: FAULT_NONE,
        pa: walk.pa,
        errorCode: 0,
        pageSize: pageBytes(walk.size),
        refs: walk.refs,
        cycles,
      },
      // `gpa` reports the guest-physical address of a nested fault only (AccessResult).
      0n,
      walk.nestedRefs,
    );
  }

  private finish(result: AccessResult): AccessResult {
    this.counters.cycles += result.cycles;
    this.counters.histogram[histogramBucket(result.cycles)] += 1;
    return result;
  }

  private contextOf(state: CpuState, kind: number, flags: number): AccessContext {
    // The record's kind byte may carry IMPLICIT itself; accept it in either argument.
    const implicit = ((kind | flags) & IMPLICIT) !== 0;
    const baseKind = kind & ~IMPLICIT;
    if (!Number.isInteger(baseKind) || baseKind < KIND_READ || baseKind > KIND_SHADOW_STACK_WRITE) {
      throw new Error(`invalid access kind ${kind}`);
    }
    const isWrite = baseKind === KIND_WRITE || baseKind === KIND_SHADOW_STACK_WRITE;
    const isFetch = baseKind === KIND_FETCH;
    const guest = state.guest;
    return {
      kind: baseKind,
      implicit,
      user: state.regs.cpl === 3 && !implicit,
      isWrite,
      isShadowStack: baseKind === KIND_SHADOW_STACK_READ || baseKind === KIND_SHADOW_STACK_WRITE,
      isFetch,
      pcid: this.currentPcid(state),
      levels: this.levelsOf(state),
      context: guest?.context ?? 0,
      nested: guest && guest.mode !== "none" ? guest : null,
      need: isFetch ? NESTED_X : isWrite ? NESTED_W : NESTED_R,
    };
  }

  /**
   * §12.2: a combined entry's deny bits (nested rights, nested dirty flag) may refuse a TLB hit; the
   * rights here, the dirty flag with the guest's D (a write to a clean entry). Unlike the nested TLB
   * (§12.1 step 1) the dirty deny bit does not depend on the current nestedAd: it was fixed when the
   * entry was filled (always set when nested A/D was off).
   */
  private nestedRightsAllow(context: AccessContext, entry: TlbEntry): boolean {
    return !context.nested || (entry.nestedRights & context.need) === context.need;
  }

  /**
   * §5 and §12.2: PSC probe, radix walk (each guest table entry's GPA translated through the nested
   * dimension when there is one), permission check, A/D update, final GPA translation, TLB and PSC fills.
   */
  private walk(state: CpuState, context: AccessContext, la: bigint): WalkOutcome {
    const regs = state.regs;
    const nxe = bit(regs.efer, EFER_NXE);
    const nested = context.nested;
    // §12.2: guest paging-structure accesses need R (EPT without A/D) or R+W (EPT A/D, NPT).
    const tableNeed = nested && (nested.mode === "npt" || nested.nestedAd) ? NESTED_R | NESTED_W : NESTED_R;
    let cycles = 0;
    let nestedRefs = 0;
    let level = context.levels;
    let base = regs.cr3 & TABLE_ADDRESS_MASK;
    // Natively every table address is host-physical; under a nested dimension only a PSC hit's is.
    let baseIsHost = nested === null;
    let tableRights = NESTED_ALL;
    let rw = true;
    let us = true;
    let xd = false;
    let nonLeafRw = true;

    // §7.2: lowest level first, so a hit skips the most references.
    for (let pscLevel = 2; pscLevel <= 5; pscLevel++) {
      if (pscLevel === 5 && context.levels !== 5) break;
      const cache = state.psc[pscLevel];
      if (!cache) continue;
      const counter = this.counters.psc[PSC_NAMES[pscLevel]];
      const entry = cache.lookup(la, context.pcid, context.context, state.clock);
      if (!entry) {
        counter.misses += 1;
        continue;
      }
      counter.hits += 1;
      cycles += this.config.psc.latency;
      level = pscLevel - 1;
      base = entry.base;
      baseIsHost = true;
      tableRights = entry.nestedRights;
      rw = entry.rw;
      us = entry.us;
      xd = entry.xd;
      nonLeafRw = entry.rw;
      break;
    }

    const reads: EntryRead[] = [];
    const refs = () => reads.length + nestedRefs;
    const faulted = () => {
      this.counters.faultedWalks += 1;
      this.counters.faultedWalkRefs += refs();
      this.nestedCounters.faultedNestedRefs += nestedRefs;
    };
    const fail = (fault: FaultCause, pk: boolean): WalkOutcome => {
      faulted();
      return { cycles, refs: refs(), nestedRefs, fault, pk, exit: null, pa: 0n, size: "4K" };
    };
    const exit = (
      guest: GuestState,
      cause: NestedFaultCause,
      access: NestedAccess,
      rights: number,
      gpa: bigint,
    ): WalkOutcome => {
      faulted();
      const reported = nestedFault(guest.mode, cause, access, rights, guest.nestedAd);
      return {
        cycles,
        refs: refs(),
        nestedRefs,
        fault: null,
        pk: false,
        exit: { ...reported, gpa },
        pa: 0n,
        size: "4K",
      };
    };

    let leaf = 0n;
    let size: PageSize = "4K";
    for (;;) {
      const index = (la >> BigInt(12 + 9 * (level - 1))) & 0x1ffn;
      const entryGpa = base | (index * 8n);
      let address = entryGpa;
      let rights = tableRights;
      if (nested && !baseIsHost) {
        const translation = this.translateGpa(state, nested, entryGpa, tableNeed);
        cycles += translation.cycles;
        nestedRefs += translation.refs;
        if (!translation.ok) {
          return exit(nested, translation.cause, { stage: "table" }, translation.rights, entryGpa);
        }
        address = translation.hpa;
        rights = translation.rights;
      }
      baseIsHost = nested === null;
      const entry = this.readEntry(address);
      cycles += this.priceReference(state, address);
      const read = (): EntryRead => ({
        level,
        address,
        gpa: entryGpa,
        value: entry,
        rw,
        us,
        xd,
        tableRights: rights,
      });

      if (!bit(entry, ENTRY_PRESENT)) {
        reads.push(read());
        return fail("notPresent", false);
      }
      const pageSizeBit = bit(entry, ENTRY_PS);
      const reserved =
        (entry & this.reservedAddressMask) !== 0n ||
        (bit(entry, ENTRY_XD) && !nxe) ||
        (pageSizeBit && level >= 4) ||
        (pageSizeBit && level === 3 && !this.config.gbPages) ||
        (pageSizeBit && level === 3 && (entry & GIGABYTE_LEAF_RESERVED) !== 0n) ||
        (pageSizeBit && level === 2 && (entry & TWO_MEGABYTE_LEAF_RESERVED) !== 0n);
      if (reserved) {
        reads.push(read());
        return fail("reserved", false);
      }

      rw &&= bit(entry, ENTRY_RW);
      us &&= bit(entry, ENTRY_US);
      xd ||= bit(entry, ENTRY_XD) && nxe;
      reads.push(read());

      if (level === 1 || (pageSizeBit && (level === 2 || level === 3))) {
        leaf = entry;
        size = level === 1 ? "4K" : level === 2 ? "2M" : "1G";
        break;
      }
      base = entry & TABLE_ADDRESS_MASK;
      nonLeafRw &&= bit(entry, ENTRY_RW);
      level -= 1;
    }

    // §5.3.
    const pageMask = PAGE_BYTES[size] - 1n;
    const frame = leaf & TABLE_ADDRESS_MASK & ~pageMask;
    const pa = frame | (la & pageMask);
    const attributes: TranslationAttributes = {
      rw,
      us,
      xd,
      dirty: false,
      ssPage: nonLeafRw && !bit(leaf, ENTRY_RW) && bit(leaf, ENTRY_DIRTY),
      pkey: Number((leaf >> 59n) & 0xfn),
      global: bit(leaf, ENTRY_GLOBAL) && bit(regs.cr4, CR4_PGE),
      pcid: context.pcid,
      context: context.context,
      nestedRights: NESTED_ALL,
      nestedDirty: true,
    };
    const permission = this.checkPermission(state, context, attributes);
    if (permission.fault) return fail("protection", permission.pk);

    // A/D update only after every check passed (Bochs order), top-down, one write per entry. Under EPT
    // without A/D each write first needs nested W on the guest table page it lands in (§12.2): all of
    // them are checked before any is written, since a walk that faults sets no A/D bit (§5.3).
    const leafRead = reads[reads.length - 1];
    const updatedValue = (read: EntryRead) =>
      read.value | ENTRY_ACCESSED | (read === leafRead && context.isWrite ? ENTRY_DIRTY : 0n);
    if (nested && !nested.nestedAd && nested.mode === "ept") {
      for (const read of reads) {
        if (updatedValue(read) !== read.value && (read.tableRights & NESTED_W) === 0) {
          return exit(nested, "protection", { stage: "adWrite" }, read.tableRights, read.gpa);
        }
      }
    }
    for (const read of reads) {
      const updated = updatedValue(read);
      if (updated === read.value) continue;
      this.writePhys64(read.address, updated);
      this.counters.adUpdates += 1;
      cycles += this.priceReference(state, read.address);
      if (read === leafRead) leaf = updated;
    }
    attributes.dirty = bit(leaf, ENTRY_DIRTY);

    // §12.2: the final GPA, then the combined mapping of the smaller page.
    let hpa = pa;
    let mappedSize = size;
    if (nested) {
      const final: NestedAccess = { stage: "final", need: context.need, us, rw, xd };
      const translation = this.translateGpa(state, nested, pa, context.need);
      cycles += translation.cycles;
      nestedRefs += translation.refs;
      if (!translation.ok) return exit(nested, translation.cause, final, translation.rights, pa);
      hpa = translation.hpa;
      if (PAGE_SIZES.indexOf(translation.size) < PAGE_SIZES.indexOf(size)) mappedSize = translation.size;
      attributes.nestedRights = translation.rights;
      attributes.nestedDirty = translation.dirty;
    }
    const mappedFrame = hpa & ~(PAGE_BYTES[mappedSize] - 1n);

    // `walks` and `walkRefs` count only walks that ended in a translation (the CLI's JSON contract).
    this.counters.walks += 1;
    this.counters.walkRefs += refs();
    this.nestedCounters.nestedRefs += nestedRefs;
    this.counters.pages[mappedSize] += 1;

    // §6.3: L2 first, then the L1 of the access kind.
    state.l2?.fill(la, mappedSize, mappedFrame, attributes, state.clock);
    (context.isFetch ? state.l1i : state.l1d)?.fill(la, mappedSize, mappedFrame, attributes, state.clock);

    // §7.3: every non-leaf entry this walk read, top-down. Under a nested dimension the cached base is
    // the host address of the next table, with the nested rights of its page (§12.2).
    reads.forEach((read, i) => {
      if (read === leafRead) return;
      const next = reads[i + 1];
      state.psc[read.level]?.fill(
        la,
        {
          pcid: context.pcid,
          context: context.context,
          base: nested ? next.address & ~0xfffn : read.value & TABLE_ADDRESS_MASK,
          rw: read.rw,
          us: read.us,
          xd: read.xd,
          nestedRights: nested ? next.tableRights : NESTED_ALL,
        },
        state.clock,
      );
    });

    return {
      cycles,
      refs: refs(),
      nestedRefs,
      fault: null,
      pk: false,
      exit: null,
      pa: hpa,
      size: mappedSize,
    };
  }

  /** §12.1: guest-physical to host-physical through the nested TLB, nested PSCs and nested tables. */
  private translateGpa(state: CpuState, guest: GuestState, gpa: bigint, need: number): GpaTranslation {
    let cycles = 0;
    const tag = guest.rootTag;
    const counters = this.nestedCounters;
    const tlb = state.nestedTlb;
    if (tlb) {
      // §10 prices only the L1/L2 TLB probes: a nested TLB probe costs nothing (nestedTlb.latency is
      // not part of the formula).
      const hit = tlb.lookup(gpa, 0, tag, state.clock);
      if (hit) counters.nestedTlb.hits += 1;
      else counters.nestedTlb.misses += 1;
      if (
        hit &&
        (hit.nestedRights & need) === need &&
        !((need & NESTED_W) !== 0 && guest.nestedAd && !hit.nestedDirty)
      ) {
        const hpa = hit.frame | (gpa & (PAGE_BYTES[hit.size] - 1n));
        return {
          ok: true,
          hpa,
          rights: hit.nestedRights,
          dirty: hit.nestedDirty,
          size: hit.size,
          cycles,
          refs: 0,
        };
      }
    }

    counters.nestedWalks += 1;
    let level = guest.levels;
    let base = guest.root & TABLE_ADDRESS_MASK;
    let rights = NESTED_ALL;
    let user = true;
    for (let pscLevel = 2; pscLevel <= 5; pscLevel++) {
      if (pscLevel === 5 && guest.levels !== 5) break;
      const cache = state.nestedPsc[pscLevel];
      if (!cache) continue;
      const counter = counters.nestedPsc[PSC_NAMES[pscLevel]];
      const entry = cache.lookup(gpa, 0, tag, state.clock);
      if (!entry) {
        counter.misses += 1;
        continue;
      }
      counter.hits += 1;
      cycles += this.nestedPscLatency();
      level = pscLevel - 1;
      base = entry.base;
      // §12.1 step 5: a nested-PSC hit starts the walk with its rights and U/S.
      rights = entry.nestedRights;
      user = entry.us;
      break;
    }

    const decode = guest.mode === "ept" ? decodeEpt : decodeNpt;
    const reads: NestedRead[] = [];
    for (;;) {
      const index = (gpa >> BigInt(12 + 9 * (level - 1))) & 0x1ffn;
      const address = base | (index * 8n);
      const value = this.readEntry(address);
      cycles += this.priceReference(state, address);
      const entry = decode(
        value,
        level,
        this.reservedAddressMask,
        this.config.gbPages,
        this.config.eptExecuteOnly !== false,
      );
      if (entry.kind !== "present") {
        return { ok: false, cause: entry.kind, rights: 0, cycles, refs: reads.length + 1 };
      }
      rights &= entry.rights;
      user &&= entry.user;
      reads.push({ level, address, value, rights, user });
      if (entry.leaf) break;
      base = entry.next;
      level -= 1;
    }
    const refs = reads.length;
    if (!user || (need & ~rights) !== 0) return { ok: false, cause: "protection", rights, cycles, refs };

    const leafRead = reads[reads.length - 1];
    let leaf = leafRead.value;
    const dirtyBit = nestedDirtyBit(guest.mode);
    if (guest.nestedAd) {
      const accessedBit = nestedAccessedBit(guest.mode);
      for (const read of reads) {
        let updated = read.value | accessedBit;
        if (read === leafRead && (need & NESTED_W) !== 0) updated |= dirtyBit;
        if (updated === read.value) continue;
        this.writePhys64(read.address, updated);
        this.counters.adUpdates += 1;
        cycles += this.priceReference(state, read.address);
        if (read === leafRead) leaf = updated;
      }
    }
    const size: PageSize = leafRead.level === 1 ? "4K" : leafRead.level === 2 ? "2M" : "1G";
    const frame = leaf & TABLE_ADDRESS_MASK & ~(PAGE_BYTES[size] - 1n);
    // Without nested A/D nothing tracks dirtiness: the flag never denies (§12.1 leaves it open).
    const dirty = !guest.nestedAd || bit(leaf, dirtyBit);

    for (const read of reads) {
      if (read === leafRead) continue;
      state.nestedPsc[read.level]?.fill(
        gpa,
        {
          pcid: 0,
          context: tag,
          base: read.value & TABLE_ADDRESS_MASK,
          rw: false,
          us: read.user,
          xd: false,
          nestedRights: read.rights,
        },
        state.clock,
      );
    }
    tlb?.fill(
      gpa,
      size,
      frame,
      {
        rw: false,
        us: false,
        xd: false,
        dirty: false,
        ssPage: false,
        pkey: 0,
        global: false,
        pcid: 0,
        context: tag,
        nestedRights: rights,
        nestedDirty: dirty,
      },
      state.clock,
    );
    return { ok: true, hpa: frame | (gpa & (PAGE_BYTES[size] - 1n)), rights, dirty, size, cycles, refs };
  }

  /** Cycles of a nested PSC hit: §10 charges `psc.latency` for a PSC hit, nested ones included. */
  private nestedPscLatency(): number {
    return this.config.psc.latency;
  }

  /** §5.4, shared by TLB hits and walks. */
  private checkPermission(
    state: CpuState,
    context: AccessContext,
    attributes: Pick<TranslationAttributes, "rw" | "us" | "xd" | "ssPage" | "pkey">,
  ): PermissionOutcome {
    const regs = state.regs;
    const writeProtect = bit(regs.cr0, CR0_WP);
    const { rw, us, xd, ssPage, pkey } = attributes;
    let fault = false;

    if (context.isShadowStack) {
      if (!ssPage) fault = true;
      if (us !== context.user) fault = true;
    } else {
      if (context.user) {
        if (!us) fault = true;
        if (context.isWrite && !rw) fault = true;
      } else if (context.isWrite && !rw && writeProtect) {
        fault = true;
      }
      if (context.isFetch) {
        if (xd) fault = true;
        if (!context.user && us && bit(regs.cr4, CR4_SMEP)) fault = true;
      }
      const supervisorData = !context.user && (context.kind === KIND_READ || context.kind === KIND_WRITE);
      if (
        supervisorData &&
        us &&
        bit(regs.cr4, CR4_SMAP) &&
        (context.implicit || !bit(regs.rflags, RFLAGS_AC))
      ) {
        fault = true;
      }
    }

    let pk = false;
    if (!context.isFetch) {
      let rights: number | null = null;
      if (us && bit(regs.cr4, CR4_PKE)) rights = regs.pkru;
      else if (!us && bit(regs.cr4, CR4_PKS)) rights = regs.pkrs;
      if (rights !== null) {
        const accessDisable = ((rights >>> (2 * pkey)) & 1) === 1;
        const writeDisable = ((rights >>> (2 * pkey + 1)) & 1) === 1;
        pk =
          accessDisable ||
          (writeDisable && context.isWrite && !context.isShadowStack && (context.user || writeProtect));
      }
    }
    return { fault: fault || pk, pk };
  }

  /** §5.5. */
  private errorCode(state: CpuState, context: AccessContext, cause: FaultCause, pk: boolean): number {
    const regs = state.regs;
    let code = 0;
    if (cause !== "notPresent") code |= PFEC.P;
    if (context.isWrite) code |= PFEC.W;
    if (context.user) code |= PFEC.U;
    if (cause === "reserved") code |= PFEC.RSVD;
    if (context.isFetch && (bit(regs.cr4, CR4_SMEP) || bit(regs.efer, EFER_NXE))) code |= PFEC.ID;
    if (pk) code |= PFEC.PK;
    if (context.isShadowStack) code |= PFEC.SS;
    return code;
  }

  private countFault(cause: FaultCause, pk: boolean): void {
    this.counters.faults[cause] += 1;
    if (pk) this.counters.faults.pkey += 1;
  }

  /**
   * §8.5: a #PF drops what could have produced it, so the retry walks afresh. Like the other §8
   * flushes it reaches every context with the CPU's VPID (§12.4).
   */
  private invalidateAfterFault(state: CpuState, context: AccessContext, la: bigint): void {
    const mine = this.ofCurrentVpid(state);
    this.invalidateTlb(
      state,
      (entry) => mine(entry) && coversAddress(entry, la) && (entry.global || entry.pcid === context.pcid),
    );
    for (let level = 2; level <= 5; level++) {
      const cache = state.psc[level];
      if (!cache) continue;
      const tag = cache.tagOf(la);
      cache.storage.invalidateWhere(
        (entry) => mine(entry) && entry.pcid === context.pcid && entry.tag === tag,
      );
    }
  }

  /**
   * §12.3: after a nested fault, the nested TLB and nested PSC entries for the GPA (current root) and
   * the combined TLB entries for the linear address (current context and PCID) are removed.
   */
  private invalidateAfterNestedFault(state: CpuState, context: AccessContext, la: bigint, gpa: bigint): void {
    const rootTag = state.guest?.rootTag ?? 0;
    state.nestedTlb?.invalidateWhere((entry) => entry.context === rootTag && coversAddress(entry, gpa));
    for (let level = 2; level <= 5; level++) {
      const cache = state.nestedPsc[level];
      if (!cache) continue;
      const tag = cache.tagOf(gpa);
      cache.storage.invalidateWhere((entry) => entry.context === rootTag && entry.tag === tag);
    }
    this.invalidateTlb(
      state,
      (entry) =>
        entry.context === context.context &&
        coversAddress(entry, la) &&
        (entry.global || entry.pcid === context.pcid),
    );
  }

  /** §9: the first level holding the line prices the reference; every level above it gets the line. */
  private priceReference(state: CpuState, address: bigint): number {
    const line = Number(BigInt.asUintN(64, address) >> 6n);
    const missed: DataCache[] = [];
    const levels: [DataCache | null, { hits: number }][] = [
      [state.l1Cache, this.counters.cache.l1],
      [state.l2Cache, this.counters.cache.l2],
      [this.llc, this.counters.cache.llc],
    ];
    for (const [cache, counter] of levels) {
      if (!cache) continue;
      if (cache.lookup(line)) {
        counter.hits += 1;
        for (const upper of missed) upper.fill(line);
        return cache.latency;
      }
      missed.push(cache);
    }
    this.counters.cache.dram += 1;
    for (const upper of missed) upper.fill(line);
    return this.config.cache.dramLatency;
  }

  private invalidateTlb(state: CpuState, predicate: (entry: TlbEntry) => boolean): void {
    state.l1d?.invalidateWhere(predicate);
    state.l1i?.invalidateWhere(predicate);
    state.l2?.invalidateWhere(predicate);
  }

  private invalidatePsc(state: CpuState, predicate: (entry: PscEntry) => boolean): void {
    for (const cache of state.psc) cache?.storage.invalidateWhere(predicate);
  }

  /** Nested TLB and nested PSC entries; their `context` is the root tag. */
  private invalidateNested(state: CpuState, predicate: (entry: { context: number }) => boolean): void {
    state.nestedTlb?.invalidateWhere(predicate);
    for (const cache of state.nestedPsc) cache?.storage.invalidateWhere(predicate);
  }

  private currentPcid(state: CpuState): number {
    return bit(state.regs.cr4, CR4_PCIDE) ? Number(state.regs.cr3 & 0xfffn) : 0;
  }

  private levelsOf(state: CpuState): number {
    return bit(state.regs.cr4, CR4_LA57) ? 5 : 4;
  }

  private cpu(cpu: number): CpuState {
    const state = this.cpus[cpu];
    if (!state) throw new Error(`no cpu ${cpu}`);
    return state;
  }
}

/** §8: "entries for a page" are those of any size whose range contains `la`. */
function coversAddress(entry: TlbEntry, la: bigint): boolean {
  return entry.vpn === la >> BigInt(PAGE_SHIFT[entry.size]);
}

function pageBytes(size: PageSize): number {
  return Number(PAGE_BYTES[size]);
}
