// fast-check arbitraries for the MMU: machine configurations, page-table forests, register files and
// operation sequences, shaped so that random walks succeed often and still fault in every way
// docs/MODEL.md names. The differential test (differential.test.ts) drives the WebAssembly core and
// the reference model with them; other tests may reuse any piece.
//
// Every scenario is a plain value (bigints for addresses) produced by `.map` over raw choices, so
// fast-check shrinks the raw choices and prints a concrete, replayable scenario.

import fc from "fast-check";
import {
  type CacheLevelConfig,
  type MachineConfig,
  type PageSize,
  POLICIES,
  type Policy,
  type PscConfig,
  type Regs,
  type SetAssocConfig,
  type TlbArrayConfig,
  type TlbLevelConfig,
} from "../../src/core/types.js";

// --- architectural bits ------------------------------------------------------------------------------

export const PTE_P = 1n;
export const PTE_RW = 1n << 1n;
export const PTE_US = 1n << 2n;
export const PTE_A = 1n << 5n;
export const PTE_D = 1n << 6n;
export const PTE_PS = 1n << 7n;
export const PTE_G = 1n << 8n;
/** PAT of a large leaf (bit 12), inside the address field of a table pointer. */
export const PTE_PAT_LARGE = 1n << 12n;
export const PTE_XD = 1n << 63n;
export const ADDRESS_MASK = 0x000f_ffff_ffff_f000n;
export const U64_MASK = (1n << 64n) - 1n;

export const CR0_PE = 1n;
export const CR0_WP = 1n << 16n;
export const CR0_PG = 1n << 31n;
export const CR3_NOFLUSH = 1n << 63n;
export const CR4_PAE = 1n << 5n;
export const CR4_PGE = 1n << 7n;
export const CR4_LA57 = 1n << 12n;
export const CR4_PCIDE = 1n << 17n;
export const CR4_SMEP = 1n << 20n;
export const CR4_SMAP = 1n << 21n;
export const CR4_PKE = 1n << 22n;
export const CR4_CET = 1n << 23n;
export const CR4_PKS = 1n << 24n;
export const EFER_LME = 1n << 8n;
export const EFER_LMA = 1n << 10n;
export const EFER_NXE = 1n << 11n;
export const RFLAGS_FIXED = 1n << 1n;
export const RFLAGS_AC = 1n << 18n;
export const IMPLICIT_FLAG = 0x80;

const PAGE_SIZES: PageSize[] = ["4K", "2M", "1G"];

/** Largest frame number the forests use: every table and data frame sits below 2^36 (MODEL.md's 36..52). */
const FRAME_LIMIT = (1n << 24n) - 1n;

// --- small helpers -----------------------------------------------------------------------------------

/** false with weight `falseWeight`, true with weight 1; shrinks to false. */
export function rarely(falseWeight: number): fc.Arbitrary<boolean> {
  return fc.oneof(
    { weight: falseWeight, arbitrary: fc.constant(false) },
    { weight: 1, arbitrary: fc.constant(true) },
  );
}

/** Any u64, biased to edge values by fast-check itself. */
export function u64(): fc.Arbitrary<bigint> {
  return fc.bigInt({ min: 0n, max: U64_MASK });
}

export function u32(): fc.Arbitrary<number> {
  return fc.integer({ min: 0, max: 0xffff_ffff });
}

/** Sign-extends `la` from bit 47 (4-level) or bit 56 (5-level): a canonical address (MODEL.md §3). */
export function canonicalize(la: bigint, levels: number): bigint {
  const top = levels === 5 ? 56n : 47n;
  const low = la & ((1n << (top + 1n)) - 1n);
  return (low >> top) & 1n ? (low | (U64_MASK << (top + 1n))) & U64_MASK : low;
}

// --- machine configuration ---------------------------------------------------------------------------

export function policyArb(): fc.Arbitrary<Policy> {
  return fc.constantFrom(...POLICIES);
}

/** Small set-associative geometry: a power-of-two set count and any way count. */
export function setAssocArb(maxSetsLog2 = 3, maxWays = 4): fc.Arbitrary<SetAssocConfig> {
  return fc
    .record({
      setsLog2: fc.integer({ min: 0, max: maxSetsLog2 }),
      ways: fc.integer({ min: 1, max: maxWays }),
      policy: policyArb(),
    })
    .map(({ setsLog2, ways, policy }) => ({ entries: ways << setsLog2, ways, policy }));
}

export function tlbArrayArb(maxSetsLog2 = 4): fc.Arbitrary<TlbArrayConfig> {
  return fc
    .record({
      // Any non-empty subset in any order: overlapping arrays ("shared sizes") and missing large sizes
      // (fracturing, §6.3) both come out of this.
      sizes: fc.shuffledSubarray(PAGE_SIZES, { minLength: 1 }),
      geometry: setAssocArb(maxSetsLog2, 5),
    })
    .map(({ sizes, geometry }) => ({ sizes, ...geometry }));
}

/** A TLB level or none; the L2 gets up to twice the sets, so L1 evictions often leave it a copy. */
export function tlbLevelArb(maxSetsLog2 = 4): fc.Arbitrary<TlbLevelConfig | null> {
  return fc.option(
    fc.record({
      arrays: fc.array(tlbArrayArb(maxSetsLog2), { minLength: 1, maxLength: 3 }),
      latency: fc.integer({ min: 0, max: 12 }),
    }),
    { nil: null, freq: 6 },
  );
}

export function pscArb(): fc.Arbitrary<PscConfig> {
  const level = () => fc.option(setAssocArb(3, 4), { nil: null, freq: 4 });
  return fc.record({
    pml5: level(),
    pml4: level(),
    pdpte: level(),
    pde: level(),
    latency: fc.integer({ min: 0, max: 6 }),
  });
}

export function cacheLevelArb(): fc.Arbitrary<CacheLevelConfig | null> {
  return fc.option(
    fc
      .record({
        setsLog2: fc.integer({ min: 0, max: 4 }),
        ways: fc.integer({ min: 1, max: 4 }),
        latency: fc.integer({ min: 1, max: 60 }),
      })
      .map(({ setsLog2, ways, latency }) => ({ size: 64 * ways * (1 << setsLog2), ways, latency })),
    { nil: null, freq: 4 },
  );
}

export interface ConfigOptions {
  maxCpus?: number;
  /** Policies of every TLB array and PSC forced to this one (the determinism test uses "random"). */
  policy?: Policy;
}

export function machineConfigArb(options: ConfigOptions = {}): fc.Arbitrary<MachineConfig> {
  const config = fc.record({
    cpus: fc.integer({ min: 1, max: options.maxCpus ?? 2 }),
    maxPhyAddr: fc.integer({ min: 36, max: 52 }),
    gbPages: fc.boolean(),
    seed: fc.oneof(fc.nat(1000), fc.maxSafeInteger()),
    tlb: fc.record({ l1d: tlbLevelArb(3), l1i: tlbLevelArb(3), l2: tlbLevelArb(5) }),
    psc: pscArb(),
    cache: fc.record({
      l1: cacheLevelArb(),
      l2: cacheLevelArb(),
      llc: cacheLevelArb(),
      dramLatency: fc.integer({ min: 0, max: 300 }),
    }),
  });
  const forced = options.policy;
  if (!forced) return config;
  return config.map((cfg) => withPolicy(cfg, forced));
}

function withPolicy(cfg: MachineConfig, policy: Policy): MachineConfig {
  const level = (l: TlbLevelConfig | null) =>
    l && { ...l, arrays: l.arrays.map((array) => ({ ...array, policy })) };
  const psc = (p: SetAssocConfig | null) => p && { ...p, policy };
  return {
    ...cfg,
    tlb: { l1d: level(cfg.tlb.l1d), l1i: level(cfg.tlb.l1i), l2: level(cfg.tlb.l2) },
    psc: {
      ...cfg.psc,
      pml5: psc(cfg.psc.pml5),
      pml4: psc(cfg.psc.pml4),
      pdpte: psc(cfg.psc.pdpte),
      pde: psc(cfg.psc.pde),
    },
  };
}

// --- page-table forests ------------------------------------------------------------------------------

/**
 * What a generated entry points at. Every table has a level (its role in the forest, see
 * `tableLevel`): `next` is a table of the level below (a data frame in a level-1 table), `any` is any
 * table at all (self-references and cycles), `large` a 2M/1G-aligned frame with PS set.
 */
type EntryTarget =
  | { to: "next"; index: number }
  | { to: "any"; index: number }
  | { to: "data"; index: number }
  | { to: "large"; index: number; gigabyte: boolean; misaligned: boolean }
  | { to: "random"; address: bigint }
  | { to: "zero" };

interface EntrySpec {
  target: EntryTarget;
  notPresent: boolean;
  readOnly: boolean;
  supervisor: boolean;
  accessed: boolean;
  dirty: boolean;
  /** PS on an entry that does not point at a large frame (a reserved-bit fault or a misaligned leaf). */
  pageSize: boolean;
  global: boolean;
  executeDisable: boolean;
  pkey: number;
  /** Bits 11:9 and 58:52, which the walk ignores. */
  ignored: bigint;
  /** An address bit in [MAXPHYADDR, 51] (a reserved-bit fault unless MAXPHYADDR = 52). */
  aboveMaxPhyAddr: number | null;
}

function entrySpecArb(): fc.Arbitrary<EntrySpec> {
  const target: fc.Arbitrary<EntryTarget> = fc.oneof(
    { weight: 30, arbitrary: fc.record({ to: fc.constant("next" as const), index: fc.nat(15) }) },
    { weight: 1, arbitrary: fc.record({ to: fc.constant("any" as const), index: fc.nat(15) }) },
    { weight: 1, arbitrary: fc.record({ to: fc.constant("data" as const), index: fc.nat(15) }) },
    {
      weight: 6,
      arbitrary: fc.record({
        to: fc.constant("large" as const),
        index: fc.nat(15),
        gigabyte: fc.boolean(),
        misaligned: rarely(15),
      }),
    },
    {
      weight: 1,
      arbitrary: fc.record({
        to: fc.constant("random" as const),
        address: fc.bigInt({ min: 0n, max: (1n << 52n) - 1n }).map((a) => a & ADDRESS_MASK),
      }),
    },
    { weight: 1, arbitrary: fc.record({ to: fc.constant("zero" as const) }) },
  );
  return fc.record({
    target,
    notPresent: rarely(25),
    readOnly: rarely(5),
    supervisor: rarely(5),
    accessed: fc.boolean(),
    dirty: fc.boolean(),
    pageSize: rarely(40),
    global: rarely(3),
    executeDisable: rarely(8),
    pkey: fc.oneof({ weight: 3, arbitrary: fc.constant(0) }, { weight: 1, arbitrary: fc.nat(15) }),
    ignored: fc.oneof(
      { weight: 4, arbitrary: fc.constant(0n) },
      { weight: 1, arbitrary: fc.bigInt({ min: 0n, max: 0x3ffn }) },
    ),
    aboveMaxPhyAddr: fc.oneof(
      { weight: 60, arbitrary: fc.constant(null) },
      { weight: 1, arbitrary: fc.nat(15) },
    ),
  });
}

interface ForestContext {
  tables: bigint[];
  data: bigint[];
  maxPhyAddr: number;
  gbPages: boolean;
  /**
   * A tame forest has only present, well-formed entries pointing down the forest (faults then come
   * from rights, keys and later writes), so walks mostly succeed and TLB/PSC replacement gets exercised.
   */
  tame: boolean;
}

/**
 * The role of table `t` in the forest: tables 0..4 form one full chain PML5 -> PML4 -> PDPT -> PD ->
 * PT, the rest take levels 4..1 in turn, so every level has a table and most have several.
 */
export function tableLevel(t: number): number {
  return t < 5 ? 5 - t : 4 - ((t - 5) % 4);
}

function tablesOfLevel(tables: bigint[], level: number): bigint[] {
  return tables.filter((_, t) => tableLevel(t) === level);
}

function entryValue(raw: EntrySpec, level: number, context: ForestContext): bigint {
  const { tables, data, maxPhyAddr } = context;
  const spec: EntrySpec = context.tame
    ? {
        ...raw,
        target:
          raw.target.to === "large"
            ? { ...raw.target, misaligned: false }
            : { to: "next", index: "index" in raw.target ? raw.target.index : 0 },
        notPresent: false,
        // Rights rarely restrict: a tame forest is about TLB, PSC and cache behaviour.
        readOnly: raw.readOnly && raw.dirty && raw.accessed,
        supervisor: raw.supervisor && raw.dirty && raw.accessed,
        pageSize: false,
        executeDisable: raw.executeDisable && raw.readOnly,
        pkey: raw.dirty ? raw.pkey : 0,
        aboveMaxPhyAddr: null,
      }
    : raw;
  let address = 0n;
  let pageSize = spec.pageSize;
  // A large frame means a leaf only in a PD or PDPT; elsewhere the entry points at the next table.
  // Without 1 GiB pages, a PDPTE mostly points at a PD (a 1 GiB leaf there is a reserved-bit fault).
  const target: EntryTarget =
    spec.target.to === "large" &&
    (level === 1 || level >= 4 || (level === 3 && !context.gbPages && !spec.target.gigabyte))
      ? { to: "next", index: spec.target.index }
      : spec.target;
  switch (target.to) {
    case "next": {
      const below = level === 1 ? data : tablesOfLevel(tables, level - 1);
      address = below[target.index % below.length];
      break;
    }
    case "any":
      address = tables[target.index % tables.length];
      break;
    case "data":
      address = data[target.index % data.length];
      break;
    case "large": {
      // A large leaf: aligned to its size unless asked to be misaligned (bits 20:13 or 29:13 reserved).
      const gigabyte = level === 3 || (level !== 2 && target.gigabyte);
      const align = gigabyte ? 1n << 30n : 1n << 21n;
      address = data[target.index % data.length] & ~(align - 1n);
      if (target.misaligned) address |= 1n << 13n;
      if (spec.accessed) address |= PTE_PAT_LARGE;
      pageSize = true;
      break;
    }
    case "random":
      address = target.address & ((1n << BigInt(maxPhyAddr)) - 1n);
      break;
    case "zero":
      break;
  }
  let value = address;
  if (!spec.notPresent) value |= PTE_P;
  if (!spec.readOnly) value |= PTE_RW;
  if (!spec.supervisor) value |= PTE_US;
  if (spec.accessed) value |= PTE_A;
  if (spec.dirty) value |= PTE_D;
  if (pageSize) value |= PTE_PS;
  if (spec.global) value |= PTE_G;
  if (spec.executeDisable) value |= PTE_XD;
  value |= BigInt(spec.pkey) << 59n;
  value |= (spec.ignored & 0x7n) << 9n;
  value |= (spec.ignored >> 3n) << 52n;
  if (spec.aboveMaxPhyAddr !== null && maxPhyAddr < 52) {
    value |= 1n << BigInt(maxPhyAddr + (spec.aboveMaxPhyAddr % (52 - maxPhyAddr)));
  }
  return value & U64_MASK;
}

interface TableSpec {
  /** Entries at the scenario's index pool, by pool position (missing = zero). */
  entries: (EntrySpec | null)[];
  /** A dense table maps all 512 indexes from a template (consecutive frames), so random indexes hit. */
  dense: EntrySpec | null;
}

function tableSpecArb(): fc.Arbitrary<TableSpec> {
  return fc.record({
    entries: fc.array(fc.option(entrySpecArb(), { nil: null, freq: 40 }), { minLength: 6, maxLength: 6 }),
    dense: fc.oneof({ weight: 3, arbitrary: fc.constant(null) }, { weight: 1, arbitrary: entrySpecArb() }),
  });
}

/** 4 KiB frames below 2^36, sometimes clustered so table lines collide in the small data caches. */
function framesArb(minLength: number, maxLength: number): fc.Arbitrary<bigint[]> {
  const frame = fc.oneof(fc.bigInt({ min: 1n, max: 64n }), fc.bigInt({ min: 1n, max: FRAME_LIMIT }));
  return fc.uniqueArray(frame, { minLength, maxLength }).map((frames) => frames.map((f) => f << 12n));
}

/** Index pool: the table indexes the forest populates and the linear addresses mostly use. */
function indexPoolArb(): fc.Arbitrary<number[]> {
  return fc.uniqueArray(fc.oneof(fc.constantFrom(0, 1, 2, 255, 256, 511), fc.nat(511)), {
    minLength: 2,
    maxLength: 6,
  });
}

// --- linear addresses --------------------------------------------------------------------------------

/**
 * A linear address as a path of table indexes, pool positions (mostly) or raw indexes; or, for
 * locality (TLB and PSC hits), another offset in the page of an address generated shortly before, or
 * of a page that recently translated (resolved when the operation runs, see `Operation.hot`).
 */
interface AddressSpec {
  indexes: { pool: boolean; value: number }[];
  offset: number;
  /** Make it non-canonical by flipping a bit above the sign bit. */
  nonCanonical: boolean;
  /** Reuse the page of the (reuse+1)-th most recent address, if any. */
  reuse: number | null;
  /** Use the (hot+1)-th most recently translated page when the operation runs. */
  hot: number | null;
  /** With `hot`, an access also repeats that translation's CPU, kind and flags. */
  repeat: boolean;
}

function addressSpecArb(): fc.Arbitrary<AddressSpec> {
  const index = fc.oneof(
    { weight: 30, arbitrary: fc.record({ pool: fc.constant(true), value: fc.nat(5) }) },
    { weight: 1, arbitrary: fc.record({ pool: fc.constant(false), value: fc.nat(511) }) },
  );
  return fc.record({
    indexes: fc.array(index, { minLength: 5, maxLength: 5 }),
    offset: fc.oneof(fc.constant(0), fc.nat(4095)),
    nonCanonical: rarely(30),
    reuse: fc.oneof({ weight: 3, arbitrary: fc.constant(null) }, { weight: 2, arbitrary: fc.nat(7) }),
    hot: fc.oneof({ weight: 1, arbitrary: fc.constant(null) }, { weight: 1, arbitrary: fc.nat(7) }),
    repeat: fc.oneof(
      { weight: 1, arbitrary: fc.constant(false) },
      { weight: 2, arbitrary: fc.constant(true) },
    ),
  });
}

/** What resolving addresses needs: the index pool and the addresses generated so far. */
interface AddressContext {
  pool: number[];
  recent: bigint[];
}

function addressOf(spec: AddressSpec, context: AddressContext, levels: number): bigint {
  const { pool, recent } = context;
  let la: bigint;
  if (spec.reuse !== null && recent.length > 0) {
    la = (recent[recent.length - 1 - (spec.reuse % recent.length)] & ~0xfffn) | BigInt(spec.offset);
  } else {
    la = BigInt(spec.offset);
    spec.indexes.forEach((index, i) => {
      const value = index.pool ? pool[index.value % pool.length] : index.value;
      // indexes[0] is level 5, indexes[4] is level 1.
      la |= BigInt(value) << BigInt(12 + 9 * (4 - i));
    });
    la = canonicalize(la, levels);
    if (spec.nonCanonical) la ^= 1n << (levels === 5 ? 60n : 52n);
  }
  recent.push(la);
  return la;
}

function hotPageOf(spec: AddressSpec): { hot?: number } {
  return spec.hot === null ? {} : { hot: spec.hot };
}

function hotOf(spec: AddressSpec): { hot?: number; repeat?: boolean } {
  if (spec.hot === null) return {};
  return spec.repeat ? { hot: spec.hot, repeat: true } : { hot: spec.hot };
}

// --- registers -----------------------------------------------------------------------------------------

interface RegsSpec {
  wp: boolean;
  root: number;
  pcid: number;
  cr3LowBits: boolean;
  pge: boolean;
  la57: boolean;
  pcide: boolean;
  smep: boolean;
  smap: boolean;
  pke: boolean;
  pks: boolean;
  cet: boolean;
  nxe: boolean;
  pkru: number;
  pkrs: number;
  ac: boolean;
  cpl: number;
}

function pkeyRightsArb(): fc.Arbitrary<number> {
  return fc.oneof(
    { weight: 2, arbitrary: fc.constant(0) },
    { weight: 2, arbitrary: u32() },
    // A single key denied (access or write), the usual shape of PKRU in practice.
    { weight: 1, arbitrary: fc.integer({ min: 0, max: 31 }).map((bit) => 2 ** bit) },
  );
}

function pcidArb(): fc.Arbitrary<number> {
  return fc.oneof(fc.constantFrom(0, 1, 2), fc.nat(0xfff));
}

function regsSpecArb(): fc.Arbitrary<RegsSpec> {
  return fc.record({
    wp: fc.boolean(),
    root: rootChoiceArb(),
    pcid: pcidArb(),
    cr3LowBits: rarely(4),
    pge: fc.boolean(),
    la57: rarely(3),
    pcide: fc.boolean(),
    smep: fc.boolean(),
    smap: fc.boolean(),
    pke: fc.boolean(),
    pks: fc.boolean(),
    cet: fc.boolean(),
    nxe: fc.oneof({ weight: 9, arbitrary: fc.constant(true) }, { weight: 1, arbitrary: fc.constant(false) }),
    pkru: pkeyRightsArb(),
    pkrs: pkeyRightsArb(),
    ac: fc.boolean(),
    cpl: fc.oneof(
      { weight: 4, arbitrary: fc.constantFrom(0, 3) },
      { weight: 1, arbitrary: fc.constantFrom(1, 2) },
    ),
  });
}

/** A top-level table for the paging mode, or (rarely) any table, which the walk must take as it comes. */
function rootOf(tables: bigint[], choice: number, levels: number): bigint {
  if (choice >= 16) return tables[choice % tables.length];
  const roots = tablesOfLevel(tables, levels);
  return roots[choice % roots.length];
}

/** Mostly a top-level table (0..15), rarely any table (16..31); see rootOf. */
function rootChoiceArb(): fc.Arbitrary<number> {
  return fc.oneof(
    { weight: 12, arbitrary: fc.nat(15) },
    { weight: 1, arbitrary: fc.integer({ min: 16, max: 31 }) },
  );
}

function regsOf(raw: RegsSpec, tables: bigint[], tame: boolean): Regs {
  // Tame registers let most accesses through: no SMAP, keys rarely denied.
  const spec = tame
    ? { ...raw, smap: raw.smap && raw.ac, pkru: raw.pkru & 0x5555_5554, pkrs: raw.pkrs & 0x5555_5554 }
    : raw;
  let cr4 = CR4_PAE;
  if (spec.pge) cr4 |= CR4_PGE;
  if (spec.la57) cr4 |= CR4_LA57;
  if (spec.pcide) cr4 |= CR4_PCIDE;
  if (spec.smep) cr4 |= CR4_SMEP;
  if (spec.smap) cr4 |= CR4_SMAP;
  if (spec.pke) cr4 |= CR4_PKE;
  if (spec.pks) cr4 |= CR4_PKS;
  if (spec.cet) cr4 |= CR4_CET;
  // Without PCIDE, CR3[11:0] holds PWT/PCD and ignored bits: the walk must not care.
  const low = spec.pcide || spec.cr3LowBits ? BigInt(spec.pcid) : 0n;
  return {
    cr0: CR0_PG | CR0_PE | (spec.wp ? CR0_WP : 0n),
    cr3: rootOf(tables, spec.root, spec.la57 ? 5 : 4) | low,
    cr4,
    efer: EFER_LME | EFER_LMA | (spec.nxe ? EFER_NXE : 0n),
    pkru: spec.pkru,
    pkrs: spec.pkrs,
    rflags: RFLAGS_FIXED | (spec.ac ? RFLAGS_AC : 0n),
    cpl: spec.cpl,
  };
}

// --- operations ----------------------------------------------------------------------------------------

/**
 * One step of a scenario. Some are relative to the state when they run: `toggleCr4` writes CR4 with
 * `toggle` flipped, `switchPcid` is MOV to CR3 of the current root with another PCID, `flip` rewrites a
 * physical word with `mask` flipped, and an address with `hot` set means the page of the (hot+1)-th
 * most recent distinct successful translation (with `la`'s page offset; `la` itself when nothing
 * translated yet), an access with `repeat` also takes that translation's CPU, kind and flags. A runner
 * resolves them (see `absolute` in differential.test.ts) so both implementations get one operation.
 */
export type Operation =
  | {
      op: "access";
      cpu: number;
      la: bigint;
      kind: number;
      flags: number;
      retry: boolean;
      hot?: number;
      repeat?: boolean;
    }
  | { op: "movCr3"; cpu: number; value: bigint }
  | { op: "movCr4"; cpu: number; value: bigint }
  | { op: "toggleCr4"; cpu: number; toggle: bigint }
  | { op: "switchPcid"; cpu: number; pcid: number; noFlush: boolean }
  | { op: "invlpg"; cpu: number; la: bigint; hot?: number }
  | { op: "invpcid"; cpu: number; type: number; pcid: number; la: bigint; hot?: number }
  | { op: "flushAll"; cpu: number }
  | { op: "write"; pa: bigint; value: bigint }
  | { op: "flip"; pa: bigint; mask: bigint }
  | { op: "setRegs"; cpu: number; regs: Partial<Regs> };

/** An operation before it is placed in a scenario: tables, slots and addresses still symbolic. */
export type OperationSpec =
  | { op: "access"; cpu: number; address: AddressSpec; kind: number; implicit: boolean; retry: boolean }
  | { op: "movCr3"; cpu: number; root: number; pcid: number; noFlush: boolean }
  | { op: "toggleCr4"; cpu: number; toggle: bigint }
  | { op: "switchPcid"; cpu: number; pcid: number; noFlush: boolean }
  | { op: "invlpg"; cpu: number; address: AddressSpec }
  | { op: "invpcid"; cpu: number; type: number; pcid: number; address: AddressSpec }
  | { op: "flushAll"; cpu: number }
  | { op: "write"; table: number; slot: number; entry: EntrySpec }
  | { op: "flip"; table: number; slot: number; mask: bigint }
  | { op: "setRegs"; cpu: number; field: RegisterField; value: number };

/**
 * Registers a raw load (setRegs: no flush) changes mid-sequence. `cr4` flips bits of the initial CR4
 * other than LA57 (PCIDE, PGE, SMEP... without the flushes MOV to CR4 implies), `cr3` switches root
 * and PCID without MOV to CR3's flushes, `lma` toggles EFER.LMA (which only MOV to CR4 checks).
 */
type RegisterField = "cpl" | "ac" | "pkru" | "pkrs" | "wp" | "nxe" | "lma" | "cr4" | "cr3";

const RAW_CR4_BITS = [CR4_PGE, CR4_PCIDE, CR4_SMEP, CR4_SMAP, CR4_PKE, CR4_PKS, CR4_CET, CR4_PAE];

const CR4_TOGGLES = [CR4_PGE, CR4_PCIDE, CR4_SMEP, CR4_SMAP, CR4_PKE, CR4_PKS, CR4_CET, CR4_LA57, CR4_PAE];
const FLIP_BITS = [
  PTE_P,
  PTE_RW,
  PTE_US,
  PTE_A,
  PTE_D,
  PTE_PS,
  PTE_G,
  PTE_XD,
  PTE_PAT_LARGE,
  1n << 59n,
  1n << 40n,
];

const orAll = (bits: bigint[]) => bits.reduce((mask, bit) => mask | bit, 0n);

export function operationSpecArb(): fc.Arbitrary<OperationSpec> {
  const cpu = fc.nat(1);
  // Shadow-stack accesses fault on all but shadow-stack pages: keep them a minority.
  const kind = fc.oneof(
    { weight: 4, arbitrary: fc.constant(0) },
    { weight: 3, arbitrary: fc.constant(1) },
    { weight: 2, arbitrary: fc.constant(2) },
    { weight: 1, arbitrary: fc.constantFrom(3, 4) },
  );
  return fc.oneof(
    {
      weight: 45,
      arbitrary: fc.record({
        op: fc.constant("access" as const),
        cpu,
        address: addressSpecArb(),
        kind,
        implicit: rarely(6),
        retry: rarely(12),
      }),
    },
    {
      weight: 2,
      arbitrary: fc.record({
        op: fc.constant("movCr3" as const),
        cpu,
        root: rootChoiceArb(),
        pcid: pcidArb(),
        noFlush: fc.boolean(),
      }),
    },
    {
      weight: 2,
      arbitrary: fc.record({
        op: fc.constant("toggleCr4" as const),
        cpu,
        toggle: fc.subarray(CR4_TOGGLES, { minLength: 1, maxLength: 3 }).map(orAll),
      }),
    },
    {
      // Same address space, another PCID (a context switch, KPTI's kernel/user pair): translations and
      // global entries of the old PCID stay relevant.
      weight: 3,
      arbitrary: fc.record({
        op: fc.constant("switchPcid" as const),
        cpu,
        pcid: fc.constantFrom(0, 1, 2),
        noFlush: fc.boolean(),
      }),
    },
    {
      weight: 2,
      arbitrary: fc.record({ op: fc.constant("invlpg" as const), cpu, address: addressSpecArb() }),
    },
    {
      weight: 2,
      arbitrary: fc.record({
        op: fc.constant("invpcid" as const),
        cpu,
        type: fc.nat(5),
        pcid: fc.oneof(
          { weight: 6, arbitrary: pcidArb() },
          { weight: 1, arbitrary: fc.integer({ min: 0x1000, max: 0x1fff }) },
        ),
        address: addressSpecArb(),
      }),
    },
    { weight: 1, arbitrary: fc.record({ op: fc.constant("flushAll" as const), cpu }) },
    {
      weight: 2,
      arbitrary: fc.record({
        op: fc.constant("write" as const),
        table: fc.nat(15),
        slot: fc.nat(5),
        entry: entrySpecArb(),
      }),
    },
    {
      weight: 2,
      arbitrary: fc.record({
        op: fc.constant("flip" as const),
        table: fc.nat(15),
        slot: fc.nat(5),
        mask: fc.subarray(FLIP_BITS, { minLength: 1, maxLength: 2 }).map(orAll),
      }),
    },
    {
      weight: 3,
      arbitrary: fc.record({
        op: fc.constant("setRegs" as const),
        cpu,
        field: fc.constantFrom(
          "cpl" as const,
          "ac" as const,
          "pkru" as const,
          "pkrs" as const,
          "wp" as const,
          "nxe" as const,
          "lma" as const,
          "cr4" as const,
          "cr3" as const,
        ),
        value: u32(),
      }),
    },
  );
}

/** Places symbolic operations in a scenario; `addresses.recent` carries locality across calls. */
function operationOf(spec: OperationSpec, scenario: Scenario, addresses: AddressContext): Operation {
  const pool = addresses.pool;
  const cpuOf = (cpu: number) => cpu % scenario.config.cpus;
  // LA57 never changes after set-up: MOV to CR4 cannot change it in long mode (MODEL.md §8.4).
  const levels = (cpu: number) => ((scenario.regs[cpuOf(cpu)].cr4 & CR4_LA57) !== 0n ? 5 : 4);
  const tables = scenario.tables;
  switch (spec.op) {
    case "access":
      return {
        op: "access",
        cpu: cpuOf(spec.cpu),
        la: addressOf(spec.address, addresses, levels(spec.cpu)),
        kind: spec.kind,
        flags: spec.implicit ? IMPLICIT_FLAG : 0,
        retry: spec.retry,
        ...hotOf(spec.address),
      };
    case "movCr3":
      return {
        op: "movCr3",
        cpu: cpuOf(spec.cpu),
        value:
          rootOf(tables, spec.root, levels(spec.cpu)) | BigInt(spec.pcid) | (spec.noFlush ? CR3_NOFLUSH : 0n),
      };
    case "toggleCr4":
      return { op: "toggleCr4", cpu: cpuOf(spec.cpu), toggle: spec.toggle };
    case "switchPcid":
      return { op: "switchPcid", cpu: cpuOf(spec.cpu), pcid: spec.pcid, noFlush: spec.noFlush };
    case "invlpg":
      return {
        op: "invlpg",
        cpu: cpuOf(spec.cpu),
        la: addressOf(spec.address, addresses, levels(spec.cpu)),
        ...hotPageOf(spec.address),
      };
    case "invpcid":
      return {
        op: "invpcid",
        cpu: cpuOf(spec.cpu),
        type: spec.type,
        pcid: spec.pcid,
        la: addressOf(spec.address, addresses, levels(spec.cpu)),
        ...hotPageOf(spec.address),
      };
    case "flushAll":
      return { op: "flushAll", cpu: cpuOf(spec.cpu) };
    case "write": {
      const t = spec.table % tables.length;
      return {
        op: "write",
        pa: tables[t] + BigInt(pool[spec.slot % pool.length] * 8),
        value: entryValue(spec.entry, tableLevel(t), {
          tables,
          data: scenario.data,
          maxPhyAddr: scenario.config.maxPhyAddr,
          gbPages: scenario.config.gbPages,
          tame: false,
        }),
      };
    }
    case "flip":
      return {
        op: "flip",
        pa: tables[spec.table % tables.length] + BigInt(pool[spec.slot % pool.length] * 8),
        mask: spec.mask,
      };
    case "setRegs": {
      const cpu = cpuOf(spec.cpu);
      const value = spec.value;
      switch (spec.field) {
        case "cpl":
          return { op: "setRegs", cpu, regs: { cpl: value % 4 } };
        case "ac":
          return { op: "setRegs", cpu, regs: { rflags: RFLAGS_FIXED | (value & 1 ? RFLAGS_AC : 0n) } };
        case "pkru":
          return { op: "setRegs", cpu, regs: { pkru: value } };
        case "pkrs":
          return { op: "setRegs", cpu, regs: { pkrs: value } };
        case "wp":
          return { op: "setRegs", cpu, regs: { cr0: CR0_PG | CR0_PE | (value & 1 ? CR0_WP : 0n) } };
        case "nxe":
          return { op: "setRegs", cpu, regs: { efer: EFER_LME | EFER_LMA | (value & 1 ? EFER_NXE : 0n) } };
        case "lma":
          return { op: "setRegs", cpu, regs: { efer: EFER_LME | EFER_NXE | (value & 1 ? EFER_LMA : 0n) } };
        case "cr4": {
          const toggle = orAll(
            RAW_CR4_BITS.filter((_, i) => ((value >>> i) & (value >>> (i + 8)) & 1) === 1),
          );
          return { op: "setRegs", cpu, regs: { cr4: scenario.regs[cpu].cr4 ^ toggle } };
        }
        case "cr3": {
          const root = rootOf(
            tables,
            (value & 0xff) === 0xff ? 16 + ((value >>> 20) & 0xf) : value & 0xf,
            levels(cpu),
          );
          return { op: "setRegs", cpu, regs: { cr3: root | BigInt((value >>> 8) & 0xfff) } };
        }
      }
    }
  }
}

// --- scenarios ------------------------------------------------------------------------------------------

/** A machine, its physical memory and registers, and what to run on it. */
export interface Scenario {
  config: MachineConfig;
  /** Page-table frames (4 KiB aligned); the differential test compares all their words at the end. */
  tables: bigint[];
  /** Data frames the leaves point at (never written by the MMU). */
  data: bigint[];
  /** The table indexes the forest populates and linear addresses mostly use. */
  pool: number[];
  /** Initial physical memory: 8-byte words, in write order. */
  memory: [bigint, bigint][];
  /** Registers of each CPU, loaded with setRegs before the first operation. */
  regs: Regs[];
  ops: Operation[];
}

export interface ScenarioOptions extends ConfigOptions {
  minOps?: number;
  maxOps?: number;
  /** Force (true) or forbid (false) a tame forest; random when absent. */
  tame?: boolean;
}

/**
 * A random machine with a plausible page-table forest: a few tables whose entries (at a small pool of
 * indexes, or all 512 for dense tables) point mostly at other tables (cycles and self-references
 * included) or at data frames, with random flags, reserved bits and keys; random registers whose CR3
 * points at one of the tables; and a sequence of accesses, instructions, raw entry writes (no
 * invalidation, so TLBs and PSCs go stale) and register loads.
 */
export function scenarioArb(options: ScenarioOptions = {}): fc.Arbitrary<Scenario> {
  const tameArb =
    options.tame === undefined
      ? fc.oneof({ weight: 2, arbitrary: fc.constant(false) }, { weight: 1, arbitrary: fc.constant(true) })
      : fc.constant(options.tame);
  return fc
    .record({
      config: machineConfigArb(options),
      tables: framesArb(5, 12),
      data: framesArb(1, 6),
      pool: indexPoolArb(),
      tame: tameArb,
      tableSpecs: fc.array(tableSpecArb(), { minLength: 12, maxLength: 12 }),
      regs: fc.array(regsSpecArb(), { minLength: 2, maxLength: 2 }),
      ops: fc.array(operationSpecArb(), {
        minLength: options.minOps ?? 20,
        maxLength: options.maxOps ?? 200,
        size: "max",
      }),
    })
    .map(({ config, tables, data, pool, tame, tableSpecs, regs, ops }) => {
      const context: ForestContext = {
        tables,
        data,
        maxPhyAddr: config.maxPhyAddr,
        gbPages: config.gbPages,
        tame,
      };
      const memory: [bigint, bigint][] = [];
      tables.forEach((table, t) => {
        const spec = tableSpecs[t];
        const level = tableLevel(t);
        if (spec.dense) {
          const template = entryValue(spec.dense, level, context);
          // Consecutive pages from the template's frame, as a table mapping a contiguous region does;
          // entries pointing at tables all point at the same one.
          const large = (template & PTE_PS) !== 0n && level <= 3;
          const stride = level === 1 ? 1n << 12n : large ? 1n << BigInt(12 + 9 * (level - 1)) : 0n;
          for (let i = 0; i < 512; i++) {
            const address = ((template & ADDRESS_MASK) + BigInt(i) * stride) & ADDRESS_MASK;
            memory.push([table + BigInt(i * 8), (template & ~ADDRESS_MASK) | address]);
          }
        }
        pool.forEach((index, slot) => {
          const entry = spec.entries[slot];
          if (entry) memory.push([table + BigInt(index * 8), entryValue(entry, level, context)]);
        });
      });
      const scenario: Scenario = {
        config,
        tables,
        data,
        pool,
        memory,
        regs: regs.slice(0, config.cpus).map((spec) => regsOf(spec, tables, tame)),
        ops: [],
      };
      scenario.ops = placeOperations(scenario, [], ops);
      return scenario;
    });
}

/**
 * Places symbolic operations after `history` (operations already run on the scenario's machine), so a
 * long-lived machine can keep receiving fresh operations with the same forest and locality.
 */
export function placeOperations(
  scenario: Scenario,
  history: Operation[],
  specs: OperationSpec[],
): Operation[] {
  const recent: bigint[] = [];
  for (const op of history.slice(-16)) if ("la" in op) recent.push(op.la);
  const addresses: AddressContext = { pool: scenario.pool, recent };
  return specs.map((spec) => operationOf(spec, scenario, addresses));
}

/**
 * Hostile input for the walker: a handful of frames (one of them the CR3 root) filled with random
 * 64-bit words (some fully random, some with a random pointer to another frame, some with the bits
 * above MAXPHYADDR cleared), random control registers (any bits, including reserved ones) and random
 * accesses and instructions.
 */
export function hostileScenarioArb(options: ScenarioOptions = {}): fc.Arbitrary<Scenario> {
  const word = fc.oneof(
    { weight: 3, arbitrary: fc.record({ how: fc.constant("random" as const), value: u64() }) },
    {
      weight: 3,
      arbitrary: fc.record({ how: fc.constant("pointer" as const), value: u64(), frame: fc.nat(7) }),
    },
    { weight: 2, arbitrary: fc.record({ how: fc.constant("fits" as const), value: u64() }) },
  );
  const regs = fc.record({
    cr0: u64(),
    cr3: fc.oneof(
      fc.record({ how: fc.constant("random" as const), value: u64() }),
      fc.record({
        how: fc.constant("root" as const),
        value: fc.bigInt({ min: 0n, max: 0xfffn }),
        noFlush: fc.boolean(),
      }),
    ),
    cr4: u64(),
    efer: u64(),
    pkru: u32(),
    pkrs: u32(),
    rflags: u64(),
    cpl: fc.nat(3),
  });
  const address = fc.oneof(
    { weight: 2, arbitrary: u64() },
    { weight: 2, arbitrary: u64().map((la) => canonicalize(la, 4)) },
    { weight: 1, arbitrary: u64().map((la) => canonicalize(la, 5)) },
    // Paths through the frames' low indexes, where the "fits"/"pointer" words are more likely.
    { weight: 3, arbitrary: fc.array(fc.nat(7), { minLength: 5, maxLength: 5 }).map(pathAddress) },
  );
  const op: fc.Arbitrary<Operation> = fc.oneof(
    {
      weight: 20,
      arbitrary: fc.record({
        op: fc.constant("access" as const),
        cpu: fc.nat(1),
        la: address,
        kind: fc.nat(4),
        flags: fc.constantFrom(0, IMPLICIT_FLAG),
        retry: rarely(8),
      }),
    },
    { weight: 1, arbitrary: fc.record({ op: fc.constant("movCr3" as const), cpu: fc.nat(1), value: u64() }) },
    {
      weight: 1,
      arbitrary: fc.record({ op: fc.constant("movCr4" as const), cpu: fc.nat(1), value: u64() }),
    },
    { weight: 1, arbitrary: fc.record({ op: fc.constant("invlpg" as const), cpu: fc.nat(1), la: address }) },
    {
      weight: 1,
      arbitrary: fc.record({
        op: fc.constant("invpcid" as const),
        cpu: fc.nat(1),
        type: fc.nat(7),
        pcid: fc.nat(0x1fff),
        la: address,
      }),
    },
  );
  return fc
    .record({
      config: machineConfigArb(options),
      frames: framesArb(2, 6),
      words: fc.array(fc.tuple(fc.nat(511), word), { minLength: 1, maxLength: 60 }),
      lowWords: fc.array(fc.tuple(fc.nat(7), word), { minLength: 0, maxLength: 24 }),
      regs: fc.array(regs, { minLength: 2, maxLength: 2 }),
      ops: fc.array(op, { minLength: options.minOps ?? 5, maxLength: options.maxOps ?? 40, size: "max" }),
    })
    .map(({ config, frames, words, lowWords, regs: regSpecs, ops }) => {
      const fits = (1n << BigInt(config.maxPhyAddr)) - 1n;
      const memory: [bigint, bigint][] = [];
      const place = (frameSlot: number, index: number, w: (typeof words)[number][1]) => {
        const frame = frames[frameSlot % frames.length];
        let value = w.value;
        if (w.how === "pointer") value = (value & ~ADDRESS_MASK) | frames[w.frame % frames.length];
        else if (w.how === "fits") value = (value & ~(ADDRESS_MASK & ~fits)) | 1n;
        memory.push([frame + BigInt(index * 8), value]);
      };
      for (const [i, [index, w]] of words.entries()) place(i, index, w);
      for (const [i, [index, w]] of lowWords.entries()) place(i, index, w);
      return {
        config,
        tables: frames,
        data: [],
        pool: [],
        memory,
        regs: regSpecs.slice(0, config.cpus).map((r) => ({
          ...r,
          cr3:
            r.cr3.how === "random"
              ? r.cr3.value
              : frames[0] | r.cr3.value | (r.cr3.noFlush ? CR3_NOFLUSH : 0n),
        })),
        ops: ops.map((o) => ("cpu" in o ? { ...o, cpu: o.cpu % config.cpus } : o)),
      };
    });
}

function pathAddress(indexes: number[]): bigint {
  let la = 0n;
  indexes.forEach((index, i) => {
    la |= BigInt(index) << BigInt(12 + 9 * (4 - i));
  });
  return la;
}
