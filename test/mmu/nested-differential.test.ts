// Differential property tests of the nested dimension (docs/MODEL.md §12): the WebAssembly core
// (Machine, the build MEMVIRT_BUILD picks) against the reference model (RefMachine) on random machines,
// random guest page tables in guest-physical memory, random EPT and NPT tables in host memory, random
// VM entries and random operation sequences. Every access result (fault, error code or exit
// qualification, PA, GPA, references, nested references, cycles, page size), every instruction verdict,
// the statistics, the nested statistics and every table word (A/D updates) must be identical.
//
// Building a core costs ~25 ms, so as in differential.test.ts the high-volume property keeps a machine
// pair alive across cases (a case continues the pair's history; every ROTATE cases a new scenario starts)
// and, on a divergence, replays the history on fresh pairs and minimizes it into a reproducer. The
// fresh-pair property keeps fast-check's own shrinking.
//
// Environment: FC_SEED fixes the seed, FC_RUNS_SCALE scales every numRuns (FC_RUNS_NESTED and
// FC_RUNS_NESTED_SESSION set each property's count), NESTED_COVERAGE=1 prints outcome classes and
// summed statistics.

import fc from "fast-check";
import { describe, expect, it } from "vitest";
import { RefMachine } from "../../reference/machine.js";
import { Machine, type VmEntry } from "../../src/core/machine.js";
import {
  type AccessResult,
  type MachineConfig,
  type PageSize,
  POLICIES,
  type PscConfig,
  type Regs,
  type SetAssocConfig,
  type TlbArrayConfig,
  type TlbLevelConfig,
} from "../../src/core/types.js";
import { runs } from "../fc-runs.js";

const SEED = Number(process.env.FC_SEED ?? 0x6e657374);

/** Scenarios back ~100-200 host frames. */
const CORE_OPTIONS = { backedFramesLog2: 10 };
/** Generous: the default counts take ~15-20 s each alone, but CI runs test files side by side. */
const TIMEOUT_MS = 600_000;

/** Continuation cases per long-lived pair. */
const ROTATE = 40;

const KB4 = 1n << 12n;
const MB2 = 1n << 21n;
const GB1 = 1n << 30n;
const SIZE: Record<PageSize, bigint> = { "4K": KB4, "2M": MB2, "1G": GB1 };

// --- a small deterministic PRNG for table layout --------------------------------------------------------

class Rng {
  private state: number;

  constructor(seed: number) {
    this.state = seed >>> 0 || 0x9e3779b9;
  }

  /** mulberry32. */
  next(): number {
    this.state = (this.state + 0x6d2b79f5) >>> 0;
    let t = this.state;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  }

  int(n: number): number {
    return Math.floor(this.next() * n);
  }

  chance(p: number): boolean {
    return this.next() < p;
  }

  pick<T>(items: readonly T[]): T {
    return items[this.int(items.length)];
  }
}

// --- configuration -----------------------------------------------------------------------------------------

// Every replacement policy the core has (its Policy enumeration), so a new one is tested here too.
const policyArb = fc.constantFrom(...POLICIES);

const setAssocArb: fc.Arbitrary<SetAssocConfig> = fc
  .record({ ways: fc.constantFrom(1, 2, 4), sets: fc.constantFrom(1, 2, 4), policy: policyArb })
  .map(({ ways, sets, policy }) => ({ entries: ways * sets, ways, policy }));

const tlbArrayArb: fc.Arbitrary<TlbArrayConfig> = fc
  .record({
    sizes: fc.subarray<PageSize>(["4K", "2M", "1G"], { minLength: 1 }),
    geometry: setAssocArb,
  })
  .map(({ sizes, geometry }) => ({ sizes, ...geometry }));

const tlbLevelArb: fc.Arbitrary<TlbLevelConfig | null> = fc.option(
  fc.record({ arrays: fc.array(tlbArrayArb, { minLength: 1, maxLength: 2 }), latency: fc.nat(3) }),
  { nil: null, freq: 4 },
);

const pscArb: fc.Arbitrary<PscConfig> = fc.record({
  pml5: fc.option(setAssocArb, { nil: null }),
  pml4: fc.option(setAssocArb, { nil: null }),
  pdpte: fc.option(setAssocArb, { nil: null }),
  pde: fc.option(setAssocArb, { nil: null }),
  latency: fc.nat(4),
});

const cacheLevelArb = (maxSets: number) =>
  fc.option(
    fc
      .record({
        ways: fc.constantFrom(1, 2, 4),
        sets: fc.constantFrom(1, 2, maxSets),
        latency: fc.integer({ min: 1, max: 20 }),
      })
      .map(({ ways, sets, latency }) => ({ size: 64 * ways * sets, ways, latency })),
    { nil: null },
  );

const configArb: fc.Arbitrary<MachineConfig> = fc
  .record({
    cpus: fc.integer({ min: 1, max: 2 }),
    maxPhyAddr: fc.constantFrom(36, 39, 40, 46, 48, 52),
    gbPages: fc.oneof(
      { weight: 4, arbitrary: fc.constant(true) },
      { weight: 1, arbitrary: fc.constant(false) },
    ),
    seed: fc.nat(1000),
    l1d: tlbLevelArb,
    l1i: tlbLevelArb,
    l2: tlbLevelArb,
    psc: pscArb,
    nestedTlb: tlbLevelArb,
    nestedPsc: fc.option(pscArb, { nil: null, freq: 4 }),
    cache: fc.record({
      l1: cacheLevelArb(8),
      l2: cacheLevelArb(16),
      llc: cacheLevelArb(32),
      dramLatency: fc.nat(100),
    }),
  })
  .map((c) => ({
    cpus: c.cpus,
    maxPhyAddr: c.maxPhyAddr,
    gbPages: c.gbPages,
    seed: c.seed,
    tlb: { l1d: c.l1d, l1i: c.l1i, l2: c.l2 },
    psc: c.psc,
    cache: c.cache,
    nestedTlb: c.nestedTlb,
    nestedPsc: c.nestedPsc,
  }));

// --- layout: guest tables in guest-physical memory, EPT and NPT tables in host memory -------------------

type NestedKind = "ept" | "npt";

interface Forest {
  mode: NestedKind;
  /** PML4 table (4-level root) and PML5 table (5-level root). */
  root4: bigint;
  root5: bigint;
}

interface LinearPage {
  la: bigint;
  size: PageSize;
}

interface LayoutKnobs {
  guestLevels: 4 | 5;
  /** Probability that a nested entry is made not present, restricted or malformed. */
  nestedNoise: number;
  /** Probability that a guest entry is. */
  guestNoise: number;
  mappings: number;
  seed: number;
}

interface Layout {
  memory: Map<bigint, bigint>;
  forests: Forest[];
  linear: LinearPage[];
  guestRoot: bigint;
  guestEntries: bigint[];
  nestedEntries: bigint[];
}

/** Region kinds of the nested map of guest-physical GiB r (0..3); GiBs 4 and 5 stay unmapped. */
type RegionKind = "1G" | "split";

function buildLayout(knobs: LayoutKnobs, config: MachineConfig): Layout {
  const rng = new Rng(knobs.seed);
  const M = BigInt(config.maxPhyAddr);
  const reservedBit = M < 52n ? 1n << BigInt(Number(M) + rng.int(52 - Number(M))) : 0n;
  const memory = new Map<bigint, bigint>();

  // The intended nested map: GiB regions (1G leaves or split), 2 MiB chunks (2M leaves or 4K pages).
  // 1G nested leaves need gbPages; without it they are rare (each one makes a whole GiB fault).
  const oneGig = config.gbPages ? 0.4 : 0.05;
  const regionKind: RegionKind[] = [0, 1, 2, 3].map((r) => (r > 0 && rng.chance(oneGig) ? "1G" : "split"));
  const chunkKind = new Map<bigint, "2M" | "4K">();
  const host2M = new Map<bigint, bigint>();
  const host4K = new Map<bigint, bigint>();
  let next2M = 0x4000_0000n;
  let next4K = 0x0100_0000n;
  let nextTable = 0x0080_0000n;
  const newHostTable = () => {
    const address = nextTable;
    nextTable += KB4;
    return address;
  };

  /** Registers a guest-physical 4K page in the nested map; returns its host address (or null: unmapped). */
  const mapGpa = (gpa: bigint): bigint | null => {
    const region = gpa / GB1;
    if (region > 3n) return null;
    if (regionKind[Number(region)] === "1G") return 0x4_0000_0000n + (region - 1n) * GB1 + (gpa % GB1);
    const chunk = gpa / MB2;
    let kind = chunkKind.get(chunk);
    if (!kind) {
      kind = rng.chance(0.35) ? "2M" : "4K";
      chunkKind.set(chunk, kind);
    }
    if (kind === "2M") {
      let host = host2M.get(chunk);
      if (host === undefined) {
        host = next2M;
        next2M += MB2;
        host2M.set(chunk, host);
      }
      return host + (gpa % MB2);
    }
    const page = gpa & ~(KB4 - 1n);
    let host = host4K.get(page);
    if (host === undefined) {
      host = next4K;
      next4K += KB4;
      host4K.set(page, host);
    }
    return host + (gpa % KB4);
  };

  // Guest tables at random guest-physical pages of GiB 0 and 1.
  const usedTables = new Set<bigint>();
  const newGuestTable = (): bigint => {
    for (;;) {
      const gpa = BigInt(rng.int(2)) * GB1 + BigInt(rng.int(4)) * MB2 + BigInt(rng.int(512)) * KB4;
      if (usedTables.has(gpa)) continue;
      usedTables.add(gpa);
      mapGpa(gpa);
      return gpa;
    }
  };
  const writeGuest = (gpa: bigint, value: bigint, entries: bigint[]) => {
    const host = mapGpa(gpa);
    if (host === null) throw new Error("guest tables are always nested-mapped");
    memory.set(host, value);
    entries.push(host);
  };

  const guestEntries: bigint[] = [];
  const guestRoot = newGuestTable();
  /** Guest entry values by guest-physical address (tables are built top-down, then written). */
  const guestTables = new Map<bigint, bigint>();
  /** Child table of each non-leaf guest entry (its value may be noisy). */
  const children = new Map<bigint, bigint>();
  const levels = knobs.guestLevels;
  const indexPools = Array.from({ length: 6 }, () => [0, 1, 511, rng.int(512)]);
  const noisyGuest = (value: bigint, leaf: boolean, size: PageSize): bigint => {
    if (!rng.chance(knobs.guestNoise)) return value;
    switch (rng.int(7)) {
      case 0:
        return value & ~1n; // not present
      case 1:
        return value & ~2n; // read-only
      case 2:
        return value & ~4n; // supervisor
      case 3:
        return value | (1n << 63n); // XD (reserved without NXE)
      case 4:
        return reservedBit ? value | reservedBit : value | (leaf ? 0n : 0x80n);
      case 5:
        return leaf && size !== "4K" ? value | (1n << 13n) : value | (BigInt(1 + rng.int(15)) << 59n);
      default:
        return value | 0x100n; // global
    }
  };

  const linear: LinearPage[] = [];
  for (let m = 0; m < knobs.mappings; m++) {
    const size: PageSize = rng.chance(0.55) ? "4K" : rng.chance(0.75) ? "2M" : "1G";
    const leafLevel = size === "4K" ? 1 : size === "2M" ? 2 : 3;
    let la = 0n;
    for (let level = levels; level >= leafLevel; level--) {
      la |= BigInt(rng.pick(indexPools[level])) << BigInt(12 + 9 * (level - 1));
    }
    const top = levels === 5 ? 56n : 47n;
    if ((la >> top) & 1n) la |= ~((1n << top) - 1n) & ((1n << 64n) - 1n);
    // Walk down, creating tables.
    let table = guestRoot;
    let conflict = false;
    for (let level = levels; level > leafLevel; level--) {
      const address = table + ((la >> BigInt(12 + 9 * (level - 1))) & 0x1ffn) * 8n;
      const existing = guestTables.get(address);
      const child = children.get(address);
      if (existing === undefined) {
        const created = newGuestTable();
        let flags = 0x7n;
        if (rng.chance(0.5)) flags |= 0x20n;
        guestTables.set(address, noisyGuest(created | flags, false, "4K"));
        children.set(address, created);
        table = created;
      } else if (child === undefined) {
        conflict = true; // a leaf already sits here
        break;
      } else {
        table = child;
      }
    }
    if (conflict) continue;
    const leafAddress = table + ((la >> BigInt(12 + 9 * (leafLevel - 1))) & 0x1ffn) * 8n;
    if (guestTables.has(leafAddress)) {
      if (children.has(leafAddress)) continue;
      linear.push({ la, size });
      continue;
    }
    // The guest-physical page: mostly nested-mapped, sometimes in an unmapped GiB or a missing 4K page.
    let gpa: bigint;
    const unmapped = rng.chance(0.08);
    if (size === "4K") {
      gpa = BigInt(unmapped ? 4 + rng.int(2) : rng.int(4)) * GB1 + BigInt(rng.int(8)) * MB2;
      gpa += BigInt(rng.int(512)) * KB4;
    } else if (size === "2M") {
      gpa = BigInt(unmapped ? 4 : rng.int(4)) * GB1 + BigInt(rng.int(8)) * MB2;
    } else {
      gpa = BigInt(unmapped ? 4 : 1 + rng.int(3)) * GB1;
    }
    if (!rng.chance(0.06)) {
      mapGpa(gpa);
      if (size !== "4K") mapGpa(gpa + KB4);
    }
    let flags = 0x7n | (size === "4K" ? 0n : 0x80n);
    if (rng.chance(0.5)) flags |= 0x20n;
    if (rng.chance(0.4)) flags |= 0x40n;
    if (rng.chance(0.15)) flags |= 0x100n;
    if (rng.chance(0.1)) flags |= 1n << 63n;
    if (rng.chance(0.1)) flags &= ~2n;
    guestTables.set(leafAddress, noisyGuest(gpa | flags, true, size));
    linear.push({ la, size });
  }
  for (const [gpa, value] of guestTables) writeGuest(gpa, value, guestEntries);

  // Nested forests: EPT and NPT, two of each (roots A and B), over the same intended map.
  const nestedEntries: bigint[] = [];
  const forests: Forest[] = [];
  const regionPages = new Map<bigint, bigint[]>();
  for (const page of host4K.keys()) {
    const chunk = page / MB2;
    const list = regionPages.get(chunk) ?? [];
    list.push(page);
    regionPages.set(chunk, list);
  }
  for (const mode of ["ept", "npt"] as const) {
    for (let copy = 0; copy < 2; copy++) {
      const noise = copy === 0 ? knobs.nestedNoise / 2 : knobs.nestedNoise;
      const write = (address: bigint, value: bigint) => {
        memory.set(address, value);
        nestedEntries.push(address);
      };
      const nonLeaf = (next: bigint, level: number): bigint => {
        let value = mode === "ept" ? next | 7n | (rng.chance(0.5) ? 1n << 8n : 0n) : next | 7n;
        if (mode === "npt" && rng.chance(0.5)) value |= 0x20n;
        if (!rng.chance(noise)) return value;
        if (mode === "ept") {
          switch (rng.int(8)) {
            case 0:
              return value & ~7n;
            case 1:
              return (value & ~7n) | BigInt(rng.pick([1, 3, 4, 5]));
            case 2:
              return (value & ~7n) | BigInt(rng.pick([2, 6]));
            case 3:
              return value | (reservedBit || 0x8n);
            case 4:
              return value | (1n << BigInt(3 + rng.int(4)));
            case 5:
              return level >= 4 ? value | 0x80n : value | (1n << 10n);
            default:
              return value & ~(1n << 8n);
          }
        }
        switch (rng.int(7)) {
          case 0:
            return value & ~1n;
          case 1:
            return value & ~2n;
          case 2:
            return value & ~4n;
          case 3:
            return value | (1n << 63n);
          case 4:
            return value | (reservedBit || 0x80n);
          case 5:
            return level >= 4 ? value | 0x80n : value | 0x100n;
          default:
            return value & ~0x20n;
        }
      };
      const leafValue = (frame: bigint, size: PageSize): bigint => {
        let value: bigint;
        if (mode === "ept") {
          const memoryType = rng.chance(0.8) ? 6n : BigInt(rng.pick([0, 1, 4, 5]));
          value = frame | 7n | (memoryType << 3n) | (size === "4K" ? 0n : 0x80n);
          if (rng.chance(0.2)) value |= 0x40n; // IPAT
          if (rng.chance(0.5)) value |= 1n << 8n;
          if (rng.chance(0.3)) value |= 1n << 9n;
        } else {
          value = frame | 7n | (size === "4K" ? 0n : 0x80n);
          if (rng.chance(0.5)) value |= 0x20n;
          if (rng.chance(0.3)) value |= 0x40n;
        }
        if (!rng.chance(noise)) return value;
        if (mode === "ept") {
          switch (rng.int(8)) {
            case 0:
              return value & ~7n;
            case 1:
              return (value & ~7n) | BigInt(rng.pick([1, 3, 4, 5]));
            case 2:
              return (value & ~7n) | BigInt(rng.pick([2, 6]));
            case 3:
              return (value & ~0x38n) | (BigInt(rng.pick([2, 3, 7])) << 3n);
            case 4:
              return value | (reservedBit || 0x38n);
            case 5:
              return size === "4K"
                ? value | 0x80n
                : value | (1n << BigInt(12 + rng.int(size === "2M" ? 9 : 18)));
            default:
              return value & ~(3n << 8n);
          }
        }
        switch (rng.int(8)) {
          case 0:
            return value & ~1n;
          case 1:
            return value & ~2n;
          case 2:
            return value & ~4n;
          case 3:
            return value | (1n << 63n);
          case 4:
            return value | (reservedBit || 1n << 63n);
          case 5:
            return size === "4K"
              ? value | 0x80n
              : value | (1n << BigInt(13 + rng.int(size === "2M" ? 8 : 17)));
          default:
            return value & ~0x60n;
        }
      };

      const pml5 = newHostTable();
      const pml4 = newHostTable();
      const pdpt = newHostTable();
      write(pml5, nonLeaf(pml4, 5));
      write(pml4, nonLeaf(pdpt, 4));
      for (let r = 0; r < 4; r++) {
        const pdpte = pdpt + BigInt(r) * 8n;
        if (regionKind[r] === "1G") {
          write(pdpte, leafValue(0x4_0000_0000n + BigInt(r - 1) * GB1, "1G"));
          continue;
        }
        let pd: bigint | null = null;
        for (const [chunk, kind] of chunkKind) {
          if (chunk / 512n !== BigInt(r)) continue;
          if (pd === null) {
            pd = newHostTable();
            write(pdpte, nonLeaf(pd, 3));
          }
          const pde = pd + (chunk % 512n) * 8n;
          if (kind === "2M") {
            write(pde, leafValue(host2M.get(chunk)!, "2M"));
            continue;
          }
          const pt = newHostTable();
          write(pde, nonLeaf(pt, 2));
          for (const page of regionPages.get(chunk) ?? []) {
            write(pt + ((page >> 12n) & 0x1ffn) * 8n, leafValue(host4K.get(page)!, "4K"));
          }
        }
      }
      forests.push({ mode, root4: pml4, root5: pml5 });
    }
  }
  return { memory, forests, linear, guestRoot, guestEntries, nestedEntries };
}

// --- registers ------------------------------------------------------------------------------------------

interface RegsSpec {
  wp: boolean;
  pge: boolean;
  pcide: boolean;
  pcid: number;
  smep: boolean;
  smap: boolean;
  pke: boolean;
  nxe: boolean;
  cpl3: boolean;
  ac: boolean;
  pkru: number;
}

const regsSpecArb: fc.Arbitrary<RegsSpec> = fc.record({
  wp: fc.boolean(),
  pge: fc.boolean(),
  pcide: fc.boolean(),
  pcid: fc.nat(3),
  smep: fc.oneof({ weight: 4, arbitrary: fc.constant(false) }, { weight: 1, arbitrary: fc.constant(true) }),
  smap: fc.oneof({ weight: 4, arbitrary: fc.constant(false) }, { weight: 1, arbitrary: fc.constant(true) }),
  pke: fc.oneof({ weight: 4, arbitrary: fc.constant(false) }, { weight: 1, arbitrary: fc.constant(true) }),
  nxe: fc.boolean(),
  cpl3: fc.boolean(),
  ac: fc.boolean(),
  pkru: fc.nat(0xffff),
});

function regsOf(spec: RegsSpec, guestRoot: bigint, guestLevels: 4 | 5): Regs {
  let cr4 = 0x20n;
  if (guestLevels === 5) cr4 |= 1n << 12n;
  if (spec.pge) cr4 |= 1n << 7n;
  if (spec.pcide) cr4 |= 1n << 17n;
  if (spec.smep) cr4 |= 1n << 20n;
  if (spec.smap) cr4 |= 1n << 21n;
  if (spec.pke) cr4 |= 1n << 22n;
  return {
    cr0: 0x8000_0001n | (spec.wp ? 1n << 16n : 0n),
    cr3: guestRoot | (spec.pcide ? BigInt(spec.pcid) : 0n),
    cr4,
    efer: 0x500n | (spec.nxe ? 1n << 11n : 0n),
    pkru: spec.pkru,
    pkrs: 0,
    rflags: 0x2n | (spec.ac ? 1n << 18n : 0n),
    cpl: spec.cpl3 ? 3 : 0,
  };
}

// --- operations -------------------------------------------------------------------------------------------

/**
 * An operation as both implementations run it. `flip` XORs the current word; `hot` (when set) replaces
 * the page of `la` by the (hot+1)-th most recently translated one when the operation runs.
 */
type Operation =
  | { op: "access"; cpu: number; la: bigint; kind: number; flags: number; retry: boolean; hot?: number }
  | { op: "invlpg"; cpu: number; la: bigint; hot?: number }
  | { op: "invpcid"; cpu: number; type: number; pcid: number; la: bigint }
  | { op: "movCr3"; cpu: number; value: bigint }
  | { op: "invept"; cpu: number; type: number; eptp: bigint }
  | { op: "invvpid"; cpu: number; type: number; vpid: number; la: bigint }
  | { op: "tlbControl"; cpu: number; value: number }
  | { op: "vmExitEntry"; cpu: number }
  | { op: "vmEnter"; cpu: number; entry: VmEntry }
  | { op: "vmLeave"; cpu: number }
  | { op: "movCr4"; cpu: number; value: bigint }
  /** Relative: MOV to CR4 of the current value XOR `mask` (resolved to movCr4 when it runs). */
  | { op: "toggleCr4"; cpu: number; mask: bigint }
  | { op: "setRegs"; cpu: number; regs: Partial<Regs> }
  /** Relative: XOR `efer`, `cr0` and `rflags` with these masks and set `cpl` (resolved to setRegs). */
  | { op: "toggleRegs"; cpu: number; efer: bigint; cr0: bigint; rflags: bigint; cpl: number }
  | { op: "flushAll"; cpu: number }
  | { op: "flip"; pa: bigint; mask: bigint };

/** Address choice: a mapped page (index into the layout's pool) with an offset, or a raw address. */
interface AddressSpec {
  page: number;
  offset: number;
  /**
   * 0: within the first 4K, 1: in the second 4K (large pages), 2: anywhere in the page, 3: raw,
   * 4: a recently translated page (resolved when the operation runs).
   */
  where: number;
  raw: bigint;
}

const addressSpecArb: fc.Arbitrary<AddressSpec> = fc.record({
  page: fc.oneof(fc.nat(3), fc.nat(63)),
  offset: fc.nat(0xfff),
  where: fc.oneof(
    { weight: 12, arbitrary: fc.constant(0) },
    { weight: 4, arbitrary: fc.constant(1) },
    { weight: 2, arbitrary: fc.constant(2) },
    { weight: 1, arbitrary: fc.constant(3) },
    { weight: 8, arbitrary: fc.constant(4) },
  ),
  raw: fc.bigInt({ min: 0n, max: (1n << 64n) - 1n }),
});

type OperationSpec =
  | { op: "access"; cpu: number; address: AddressSpec; kind: number; implicit: boolean; retry: boolean }
  | { op: "invlpg"; cpu: number; address: AddressSpec }
  | { op: "invpcid"; cpu: number; type: number; pcid: number; address: AddressSpec }
  | { op: "movCr3"; cpu: number; pcid: number; noFlush: boolean }
  | { op: "invept"; cpu: number; type: number; forest: number; garbage: boolean }
  | { op: "invvpid"; cpu: number; type: number; vpid: number; address: AddressSpec }
  | { op: "tlbControl"; cpu: number; value: number }
  | { op: "vmExitEntry"; cpu: number }
  | {
      op: "vmEnter";
      cpu: number;
      forest: number;
      otherMode: boolean;
      levels: 4 | 5;
      vpid: number;
      ad: boolean;
      none: boolean;
    }
  /** Leave to the host, make `host` accesses there, enter again as `back` says (null: stay there). */
  | { op: "vmLeave"; cpu: number; host: AddressSpec[]; back: VmChoiceSpec | null }
  | { op: "toggleCr4"; cpu: number; mask: number }
  | { op: "toggleRegs"; cpu: number; which: number; cpl3: boolean }
  | { op: "flushAll"; cpu: number }
  | { op: "flip"; nested: boolean; entry: number; mask: number };

interface VmChoiceSpec {
  forest: number;
  levels: 4 | 5;
  vpid: number;
  ad: boolean;
}

const vmChoiceSpecArb: fc.Arbitrary<VmChoiceSpec> = fc.record({
  forest: fc.nat(1),
  levels: fc.constantFrom<4 | 5>(4, 5),
  vpid: fc.nat(3),
  ad: fc.boolean(),
});

const cpuArb = fc.nat(1);

/** CR4 bits a guest toggles: PGE, SMEP, PCIDE, SMAP, PKE, and PGE with SMEP. */
const CR4_TOGGLES = [1n << 7n, 1n << 20n, 1n << 17n, 1n << 21n, 1n << 22n, (1n << 7n) | (1n << 20n)];
const rarely = (weight = 1) =>
  fc.oneof({ weight: 12, arbitrary: fc.constant(false) }, { weight, arbitrary: fc.constant(true) });

const operationSpecArb: fc.Arbitrary<OperationSpec> = fc.oneof(
  {
    weight: 60,
    arbitrary: fc.record({
      op: fc.constant("access" as const),
      cpu: cpuArb,
      address: addressSpecArb,
      kind: fc.oneof(
        { weight: 4, arbitrary: fc.constant(0) },
        { weight: 3, arbitrary: fc.constant(1) },
        { weight: 2, arbitrary: fc.constant(2) },
        { weight: 1, arbitrary: fc.constantFrom(3, 4) },
      ),
      implicit: rarely(),
      retry: rarely(),
    }),
  },
  {
    weight: 2,
    arbitrary: fc.record({ op: fc.constant("invlpg" as const), cpu: cpuArb, address: addressSpecArb }),
  },
  {
    weight: 1,
    arbitrary: fc.record({
      op: fc.constant("invpcid" as const),
      cpu: cpuArb,
      type: fc.nat(4),
      pcid: fc.nat(3),
      address: addressSpecArb,
    }),
  },
  {
    weight: 1,
    arbitrary: fc.record({
      op: fc.constant("movCr3" as const),
      cpu: cpuArb,
      pcid: fc.nat(3),
      noFlush: fc.boolean(),
    }),
  },
  {
    weight: 2,
    arbitrary: fc.record({
      op: fc.constant("invept" as const),
      cpu: cpuArb,
      type: fc.oneof(
        { weight: 4, arbitrary: fc.constantFrom(1, 2) },
        { weight: 1, arbitrary: fc.constantFrom(0, 3) },
      ),
      forest: fc.nat(3),
      garbage: rarely(),
    }),
  },
  {
    weight: 2,
    arbitrary: fc.record({
      op: fc.constant("invvpid" as const),
      cpu: cpuArb,
      type: fc.nat(4),
      vpid: fc.nat(3),
      address: addressSpecArb,
    }),
  },
  {
    weight: 1,
    arbitrary: fc.record({
      op: fc.constant("tlbControl" as const),
      cpu: cpuArb,
      value: fc.constantFrom(0, 1, 2, 3, 7),
    }),
  },
  { weight: 2, arbitrary: fc.record({ op: fc.constant("vmExitEntry" as const), cpu: cpuArb }) },
  {
    weight: 2,
    arbitrary: fc.record({
      op: fc.constant("vmEnter" as const),
      cpu: cpuArb,
      forest: fc.nat(1),
      otherMode: rarely(2),
      levels: fc.constantFrom<4 | 5>(4, 5),
      vpid: fc.nat(3),
      ad: fc.boolean(),
      none: rarely(),
    }),
  },
  {
    weight: 1,
    arbitrary: fc.record({
      op: fc.constant("vmLeave" as const),
      cpu: cpuArb,
      host: fc.array(addressSpecArb, { maxLength: 2 }),
      back: fc.option(vmChoiceSpecArb, { nil: null, freq: 4 }),
    }),
  },
  { weight: 1, arbitrary: fc.record({ op: fc.constant("flushAll" as const), cpu: cpuArb }) },
  {
    weight: 1,
    arbitrary: fc.record({
      op: fc.constant("toggleCr4" as const),
      cpu: cpuArb,
      mask: fc.nat(CR4_TOGGLES.length - 1),
    }),
  },
  {
    weight: 2,
    arbitrary: fc.record({
      op: fc.constant("toggleRegs" as const),
      cpu: cpuArb,
      which: fc.nat(3),
      cpl3: fc.boolean(),
    }),
  },
  {
    weight: 5,
    arbitrary: fc.record({
      op: fc.constant("flip" as const),
      nested: fc.boolean(),
      entry: fc.nat(),
      mask: fc.nat(15),
    }),
  },
);

// --- scenarios ------------------------------------------------------------------------------------------

interface VmChoice {
  mode: NestedKind;
  forest: number;
  levels: 4 | 5;
  vpid: number;
  ad: boolean;
}

interface Scenario {
  config: MachineConfig;
  layout: Layout;
  guestLevels: 4 | 5;
  mode: NestedKind;
  regs: Regs[];
  /** The VM entry each CPU starts with. */
  entries: VmEntry[];
  ops: Operation[];
}

interface ScenarioSpec {
  config: MachineConfig;
  mode: NestedKind;
  guestLevels: 4 | 5;
  knobs: Omit<LayoutKnobs, "guestLevels">;
  regs: RegsSpec[];
  vm: Omit<VmChoice, "mode">[];
  ops: OperationSpec[];
}

function scenarioSpecArb(minOps: number, maxOps: number): fc.Arbitrary<ScenarioSpec> {
  return fc.record({
    config: configArb,
    mode: fc.constantFrom<NestedKind>("ept", "npt"),
    guestLevels: fc.constantFrom<4 | 5>(4, 4, 5),
    knobs: fc.record({
      nestedNoise: fc.constantFrom(0, 0.03, 0.08, 0.2),
      guestNoise: fc.constantFrom(0, 0.03, 0.1),
      mappings: fc.integer({ min: 4, max: 24 }),
      seed: fc.nat(),
    }),
    regs: fc.array(regsSpecArb, { minLength: 2, maxLength: 2 }),
    vm: fc.array(
      fc.record({
        forest: fc.nat(1),
        levels: fc.constantFrom<4 | 5>(4, 5),
        vpid: fc.nat(3),
        ad: fc.boolean(),
      }),
      { minLength: 2, maxLength: 2 },
    ),
    ops: fc.array(operationSpecArb, { minLength: minOps, maxLength: maxOps, size: "max" }),
  });
}

function vmEntryOf(layout: Layout, choice: VmChoice): VmEntry {
  const forests = layout.forests.filter((forest) => forest.mode === choice.mode);
  const forest = forests[choice.forest % forests.length];
  const base = choice.levels === 5 ? forest.root5 : forest.root4;
  if (choice.mode === "npt") {
    return { nested: "npt", root: base, nestedLevels: choice.levels, vpid: choice.vpid };
  }
  // EPTP: write-back structures, walk length - 1 in bits 5:3, A/D enable in bit 6.
  const root = base | 6n | (BigInt(choice.levels - 1) << 3n) | (choice.ad ? 1n << 6n : 0n);
  return { nested: "ept", root, vpid: choice.vpid };
}

function addressOf(spec: AddressSpec, layout: Layout): bigint {
  if (spec.where === 3 || layout.linear.length === 0) return spec.raw;
  if (spec.where === 4) return layout.linear[spec.page % layout.linear.length].la + BigInt(spec.offset);
  const page = layout.linear[spec.page % layout.linear.length];
  const span = SIZE[page.size];
  let offset = BigInt(spec.offset);
  if (spec.where === 1 && page.size !== "4K") offset += KB4;
  if (spec.where === 2) offset = (BigInt(spec.offset) * 0x1_0001n * 8n + BigInt(spec.offset)) % span;
  return page.la + offset;
}

const FLIP_GUEST = [
  1n,
  2n,
  4n,
  0x20n,
  0x40n,
  0x80n,
  0x100n,
  1n << 63n,
  0x20n,
  0x40n,
  1n,
  2n,
  4n,
  0x60n,
  0x1000n,
  0n,
];
const FLIP_EPT = [
  1n,
  2n,
  4n,
  3n,
  7n,
  0x80n,
  0x100n,
  0x200n,
  0x300n,
  0x10n,
  0x28n,
  1n << 10n,
  0x100n,
  0x200n,
  0x1000n,
  0n,
];
const FLIP_NPT = [
  1n,
  2n,
  4n,
  0x20n,
  0x40n,
  0x60n,
  0x80n,
  1n << 63n,
  0x20n,
  0x40n,
  0x100n,
  2n,
  4n,
  0x1000n,
  0x2000n,
  0n,
];

function placeOperations(scenario: Omit<Scenario, "ops">, specs: OperationSpec[]): Operation[] {
  return specs.flatMap((spec) => placeOperation(scenario, spec));
}

function hotOf(spec: AddressSpec): { hot?: number } {
  return spec.where === 4 ? { hot: spec.page % 8 } : {};
}

function placeOperation(scenario: Omit<Scenario, "ops">, spec: OperationSpec): Operation | Operation[] {
  const { layout, config } = scenario;
  const cpuOf = (cpu: number) => cpu % config.cpus;
  switch (spec.op) {
    case "access":
      return {
        op: "access",
        cpu: cpuOf(spec.cpu),
        la: addressOf(spec.address, layout),
        kind: spec.kind,
        flags: spec.implicit ? 0x80 : 0,
        retry: spec.retry,
        ...hotOf(spec.address),
      };
    case "invlpg":
      return {
        op: "invlpg",
        cpu: cpuOf(spec.cpu),
        la: addressOf(spec.address, layout),
        ...hotOf(spec.address),
      };
    case "invpcid":
      return {
        op: "invpcid",
        cpu: cpuOf(spec.cpu),
        type: spec.type,
        pcid: spec.pcid,
        la: addressOf(spec.address, layout),
      };
    case "movCr3":
      return {
        op: "movCr3",
        cpu: cpuOf(spec.cpu),
        value: layout.guestRoot | BigInt(spec.pcid) | (spec.noFlush ? 1n << 63n : 0n),
      };
    case "invept": {
      const forest = layout.forests[spec.forest % layout.forests.length];
      const eptp = spec.garbage ? 0x7777_7000n : (spec.forest & 2 ? forest.root5 : forest.root4) | 0x1en;
      return { op: "invept", cpu: cpuOf(spec.cpu), type: spec.type, eptp };
    }
    case "invvpid":
      return {
        op: "invvpid",
        cpu: cpuOf(spec.cpu),
        type: spec.type,
        vpid: spec.vpid,
        la: addressOf(spec.address, layout),
      };
    case "tlbControl":
      return { op: "tlbControl", cpu: cpuOf(spec.cpu), value: spec.value };
    case "vmExitEntry":
      return { op: "vmExitEntry", cpu: cpuOf(spec.cpu) };
    case "vmEnter": {
      if (spec.none)
        return { op: "vmEnter", cpu: cpuOf(spec.cpu), entry: { nested: "none", vpid: spec.vpid } };
      const mode = spec.otherMode ? (scenario.mode === "ept" ? "npt" : "ept") : scenario.mode;
      return {
        op: "vmEnter",
        cpu: cpuOf(spec.cpu),
        entry: vmEntryOf(layout, {
          mode,
          forest: spec.forest,
          levels: spec.levels,
          vpid: spec.vpid,
          ad: spec.ad,
        }),
      };
    }
    case "vmLeave": {
      const cpu = cpuOf(spec.cpu);
      return [
        { op: "vmLeave", cpu },
        ...spec.host.map(
          (address): Operation => ({
            op: "access",
            cpu,
            la: addressOf(address, layout),
            kind: 0,
            flags: 0,
            retry: false,
          }),
        ),
        ...(spec.back
          ? [{ op: "vmEnter", cpu, entry: vmEntryOf(layout, { ...spec.back, mode: scenario.mode }) } as const]
          : []),
      ];
    }
    case "toggleCr4":
      return { op: "toggleCr4", cpu: cpuOf(spec.cpu), mask: CR4_TOGGLES[spec.mask] };
    case "toggleRegs":
      // EFER.NXE, CR0.WP, RFLAGS.AC or CPL only.
      return {
        op: "toggleRegs",
        cpu: cpuOf(spec.cpu),
        efer: spec.which === 0 ? 1n << 11n : 0n,
        cr0: spec.which === 1 ? 1n << 16n : 0n,
        rflags: spec.which === 2 ? 1n << 18n : 0n,
        cpl: spec.which === 3 ? (spec.cpl3 ? 3 : 0) : -1,
      };
    case "flushAll":
      return { op: "flushAll", cpu: cpuOf(spec.cpu) };
    case "flip": {
      const pool = spec.nested ? layout.nestedEntries : layout.guestEntries;
      const pa = pool[spec.entry % pool.length];
      const masks = !spec.nested ? FLIP_GUEST : isEpt(layout, pa) ? FLIP_EPT : FLIP_NPT;
      return { op: "flip", pa, mask: masks[spec.mask] };
    }
  }
}

/** Nested entries of the EPT forests come first in host-table order (forests 0 and 1 are EPT). */
function isEpt(layout: Layout, pa: bigint): boolean {
  const firstNpt = layout.forests.find((forest) => forest.mode === "npt")!.root5;
  return pa < firstNpt;
}

function buildScenario(spec: ScenarioSpec): Scenario {
  const layout = buildLayout({ ...spec.knobs, guestLevels: spec.guestLevels }, spec.config);
  const cpus = spec.config.cpus;
  const base = {
    config: spec.config,
    layout,
    guestLevels: spec.guestLevels,
    mode: spec.mode,
    regs: spec.regs.slice(0, cpus).map((regs) => regsOf(regs, layout.guestRoot, spec.guestLevels)),
    entries: spec.vm.slice(0, cpus).map((choice) => vmEntryOf(layout, { ...choice, mode: spec.mode })),
  };
  return { ...base, ops: placeOperations(base, spec.ops) };
}

// --- running both implementations ----------------------------------------------------------------------

interface Pair {
  core: Machine;
  ref: RefMachine;
  /** Pages that translated recently (most recent last), for `hot` operations. */
  hot: bigint[];
}

const HOT_PAGES = 16;

/** The operation with its `hot` address resolved: what both implementations run, and the history keeps. */
function resolve(op: Operation, pair: Pair): Operation {
  if (op.op === "toggleCr4") {
    return { op: "movCr4", cpu: op.cpu, value: pair.ref.getRegs(op.cpu).cr4 ^ op.mask };
  }
  if (op.op === "toggleRegs") {
    const regs = pair.ref.getRegs(op.cpu);
    return {
      op: "setRegs",
      cpu: op.cpu,
      regs: {
        efer: regs.efer ^ op.efer,
        cr0: regs.cr0 ^ op.cr0,
        rflags: regs.rflags ^ op.rflags,
        cpl: op.cpl < 0 ? regs.cpl : op.cpl,
      },
    };
  }
  if ((op.op !== "access" && op.op !== "invlpg") || op.hot === undefined) return op;
  const { hot: back, ...rest } = op;
  if (pair.hot.length === 0) return rest;
  return { ...rest, la: pair.hot[pair.hot.length - 1 - (back % pair.hot.length)] | (op.la & 0xfffn) };
}

function noteTranslation(pair: Pair, la: bigint): void {
  const page = la & ~0xfffn;
  const at = pair.hot.indexOf(page);
  if (at >= 0) pair.hot.splice(at, 1);
  pair.hot.push(page);
  if (pair.hot.length > HOT_PAGES) pair.hot.shift();
}

function load(scenario: Scenario): Pair {
  const core = new Machine(scenario.config, CORE_OPTIONS);
  const ref = new RefMachine(scenario.config);
  for (const [pa, value] of scenario.layout.memory) {
    core.writePhys64(pa, value);
    ref.writePhys64(pa, value);
  }
  for (let cpu = 0; cpu < scenario.config.cpus; cpu++) {
    core.setRegs(cpu, scenario.regs[cpu]);
    ref.setRegs(cpu, scenario.regs[cpu]);
    core.vmEnter(cpu, scenario.entries[cpu]);
    ref.vmEnter(cpu, scenario.entries[cpu]);
  }
  return { core, ref, hot: [] };
}

class Divergence extends Error {
  override name = "Divergence";
}

const hex = (value: bigint) => `0x${value.toString(16)}`;

function show(value: unknown): string {
  return JSON.stringify(value, (_, v) => (typeof v === "bigint" ? hex(v) : v));
}

/** Results with a fixed key order, so that the comparison does not depend on how objects were built. */
function normal(result: AccessResult): Record<string, unknown> {
  const out: Record<string, unknown> = {
    fault: result.fault,
    errorCode: result.errorCode,
    pa: result.pa,
    pageSize: result.pageSize,
    refs: result.refs,
    cycles: result.cycles,
  };
  if (result.gpa !== undefined || result.nestedRefs !== undefined) {
    out.gpa = result.gpa;
    out.nestedRefs = result.nestedRefs;
  }
  return out;
}

type Outcome = Record<string, unknown> | boolean | null;

function apply(machine: Machine | RefMachine, op: Operation): Outcome {
  switch (op.op) {
    case "access":
      return normal(
        machine instanceof Machine
          ? machine.translate(op.cpu, op.la, op.kind, op.flags, op.retry)
          : machine.access(op.cpu, op.la, op.kind, op.flags, op.retry),
      );
    case "invlpg":
      machine.invlpg(op.cpu, op.la);
      return null;
    case "invpcid":
      return machine.invpcid(op.cpu, op.type, op.pcid, op.la);
    case "movCr3":
      machine.movCr3(op.cpu, op.value);
      return null;
    case "invept":
      return machine.invept(op.cpu, op.type, op.eptp);
    case "invvpid":
      return machine.invvpid(op.cpu, op.type, op.vpid, op.la);
    case "tlbControl":
      return machine.tlbControl(op.cpu, op.value);
    case "vmExitEntry":
      machine.vmExitEntry(op.cpu);
      return null;
    case "vmEnter":
      machine.vmEnter(op.cpu, op.entry);
      return null;
    case "vmLeave":
      machine.vmLeave(op.cpu);
      return null;
    case "movCr4":
      return machine.movCr4(op.cpu, op.value);
    case "setRegs":
      machine.setRegs(op.cpu, op.regs);
      return null;
    case "toggleCr4":
    case "toggleRegs":
      throw new Error("relative operations are resolved before they run");
    case "flushAll":
      machine.flushAll(op.cpu);
      return null;
    case "flip":
      machine.writePhys64(op.pa, machine.readPhys64(op.pa) ^ op.mask);
      return null;
  }
}

/** Outcome classes seen (NESTED_COVERAGE=1 prints them). */
const coverage = new Map<string, number>();
const COVERAGE = process.env.NESTED_COVERAGE === "1";

function noteCoverage(op: Operation, outcome: Outcome): void {
  if (!COVERAGE || op.op !== "access" || !outcome || typeof outcome !== "object") return;
  const r = outcome as Record<string, unknown>;
  const key =
    r.gpa === undefined
      ? `host fault=${r.fault}`
      : `fault=${r.fault}${r.fault === 48 ? ` q=${(r.errorCode as number) & 0x107}` : ""}${r.fault === 0x400 ? ` i=${Math.floor((r.errorCode as number) / 2 ** 32)}:${(r.errorCode as number) & 0xf}` : ""} ${r.refs === 0 ? "tlbhit" : (r.nestedRefs as number) > 0 ? "nestedrefs" : "nonested"}`;
  coverage.set(key, (coverage.get(key) ?? 0) + 1);
}

/** Outcomes of the last operations run, shown with a divergence. */
const recent: string[] = [];
const RECENT = 40;
const recentOutcomes = () => `  recent outcomes:\n${recent.join("\n")}`;

/** Runs operations on a pair; throws a Divergence at the first different outcome. */
function runOperations(pair: Pair, ops: Operation[], history: Operation[] = [], everyStep = false): number {
  let accesses = 0;
  for (const relative of ops) {
    const op = resolve(relative, pair);
    const step = history.length;
    history.push(op);
    if (op.op === "flip") {
      const before = [pair.ref.readPhys64(op.pa), pair.core.readPhys64(op.pa)];
      if (before[0] !== before[1]) {
        throw new Divergence(
          `step ${step}: word at ${hex(op.pa)}: reference ${hex(before[0])}, core ${hex(before[1])}\n${recentOutcomes()}`,
        );
      }
    }
    if (op.op === "access") accesses++;
    const outcome = apply(pair.ref, op);
    noteCoverage(op, outcome);
    if (op.op === "access" && outcome && typeof outcome === "object" && outcome.fault === 0) {
      noteTranslation(pair, op.la);
    }
    const expected = show(outcome);
    recent.push(`    ${step}: ${show(op)} -> ${expected}`);
    if (recent.length > RECENT) recent.shift();
    let actual: string;
    try {
      actual = show(apply(pair.core, op));
    } catch (error) {
      throw new Divergence(`step ${step}: ${show(op)}\n  the core threw: ${String(error)}`);
    }
    if (actual !== expected) {
      throw new Divergence(
        `step ${step}: ${show(op)}\n  reference: ${expected}\n  core:      ${actual}\n${recentOutcomes()}`,
      );
    }
    if (everyStep) compareStats(pair, `after step ${step}: ${show(op)}\n${recentOutcomes()}`);
  }
  return accesses;
}

function diffObjects(actual: unknown, expected: unknown): string[] {
  const diffs: string[] = [];
  const walk = (a: unknown, b: unknown, path: string) => {
    if (typeof a === "object" && a && typeof b === "object" && b) {
      for (const key of new Set([...Object.keys(a), ...Object.keys(b)]))
        walk((a as never)[key], (b as never)[key], path ? `${path}.${key}` : key);
    } else if (a !== b) {
      diffs.push(`${path}: reference ${String(b)}, core ${String(a)}`);
    }
  };
  walk(actual, expected, "");
  return diffs;
}

function compareStats(pair: Pair, when: string): void {
  const diffs = diffObjects(pair.core.stats(), pair.ref.stats());
  // Exits are the host's, and page-modification logging is the core's alone (the scenarios never
  // enable it; test/virt/pml.test.ts holds its rules).
  const { exitsByReason: _, pml: _pml, ...nested } = pair.core.nestedStats();
  diffs.push(...diffObjects(nested, pair.ref.nestedStats()).map((d) => `nested ${d}`));
  if (diffs.length > 0) throw new Divergence(`statistics differ ${when}:\n  ${diffs.join("\n  ")}`);
}

function compareMemory(pair: Pair, scenario: Scenario): void {
  for (const pa of scenario.layout.memory.keys()) {
    const expected = pair.ref.readPhys64(pa);
    const actual = pair.core.readPhys64(pa);
    if (actual !== expected) {
      throw new Divergence(
        `final word at ${hex(pa)}: reference ${hex(expected)}, core ${hex(actual)}\n${recentOutcomes()}`,
      );
    }
  }
}

function runDifferential(scenario: Scenario, everyStep = false): number {
  recent.length = 0;
  const pair = load(scenario);
  const accesses = runOperations(pair, scenario.ops, [], everyStep);
  compareStats(pair, "at the end");
  compareMemory(pair, scenario);
  if (COVERAGE) {
    const add = (prefix: string, value: unknown) => {
      if (typeof value === "number") coverage.set(prefix, (coverage.get(prefix) ?? 0) + value);
      else if (value && typeof value === "object")
        for (const [k, v] of Object.entries(value)) add(`${prefix}.${k}`, v);
    };
    const { histogram: _, ...stats } = pair.ref.stats();
    add("~stats", stats);
    add("~nested", pair.ref.nestedStats());
  }
  return accesses;
}

function diverges(scenario: Scenario): boolean {
  try {
    runDifferential(scenario);
    return false;
  } catch (error) {
    if (error instanceof Divergence) return true;
    throw error;
  }
}

function describeScenario(s: Scenario): string {
  return [
    `config: ${show(s.config)}`,
    `guest levels ${s.guestLevels}, guest root ${hex(s.layout.guestRoot)}, forests ${show(s.layout.forests)}`,
    `linear: ${s.layout.linear.map((p) => `${hex(p.la)}/${p.size}`).join(" ")}`,
    "memory:",
    ...[...s.layout.memory].map(([pa, value]) => `  [${hex(pa)}] = ${hex(value)}`),
    ...s.regs.map((regs, cpu) => `cpu ${cpu}: ${show(regs)} entry ${show(s.entries[cpu])}`),
    "ops:",
    ...s.ops.map((op, i) => `  ${i}: ${show(op)}`),
  ].join("\n");
}

/** Greedy removal of operations (halves, quarters, ... singles) while the scenario still diverges. */
function minimize(scenario: Scenario, budgetMs = 60_000): Scenario {
  const deadline = Date.now() + budgetMs;
  let ops = scenario.ops;
  for (let chunk = Math.max(1, ops.length >> 1); chunk >= 1; chunk = chunk === 1 ? 0 : chunk >> 1) {
    for (let start = 0; start < ops.length && Date.now() < deadline; ) {
      const candidate = [...ops.slice(0, start), ...ops.slice(start + chunk)];
      if (diverges({ ...scenario, ops: candidate })) ops = candidate;
      else start += chunk;
    }
  }
  return { ...scenario, ops };
}

function reproducer(scenario: Scenario): string {
  const minimal = minimize(scenario);
  let first = "";
  try {
    runDifferential(minimal, true);
  } catch (error) {
    first = (error as Error).message;
  }
  return `minimized reproducer (fresh machines):\n${first}\n${describeScenario(minimal)}`;
}

// --- the long-lived pair of the high-volume property -----------------------------------------------------

class SessionRunner {
  private session: { scenario: Scenario; pair: Pair; history: Operation[]; cases: number } | null = null;
  started = 0;
  cases = 0;
  accesses = 0;

  constructor(private readonly seed: number) {}

  run(specs: OperationSpec[]): void {
    try {
      if (!this.session || this.session.cases >= ROTATE) {
        if (this.session) compareMemory(this.session.pair, this.session.scenario);
        this.start();
      }
      const session = this.session!;
      session.cases++;
      this.cases++;
      const ops = placeOperations(session.scenario, specs);
      this.accesses += runOperations(session.pair, ops, session.history);
      compareStats(session.pair, `after case ${session.cases} of session ${this.started - 1}`);
    } catch (error) {
      const session = this.session;
      this.session = null;
      if (!(error instanceof Divergence) || !session) throw error;
      const replay = { ...session.scenario, ops: session.history };
      const detail = diverges(replay)
        ? reproducer(replay)
        : `the history does not diverge on fresh machines:\n${describeScenario(replay)}`;
      throw new Error(`${error.message}\n(session ${this.started - 1})\n${detail}`);
    }
  }

  finish(): void {
    if (this.session) compareMemory(this.session.pair, this.session.scenario);
    this.session = null;
  }

  private start(): void {
    const [spec] = fc.sample(scenarioSpecArb(10, 40), { seed: this.seed + 7919 * this.started, numRuns: 1 });
    this.started++;
    const scenario = buildScenario(spec);
    const pair = load(scenario);
    this.session = { scenario, pair, history: [], cases: 0 };
    this.accesses += runOperations(pair, scenario.ops, this.session.history);
    compareStats(pair, `after the opening operations of session ${this.started - 1}`);
  }
}

// --- the properties ----------------------------------------------------------------------------------------

describe("nested differential: WebAssembly core vs reference model (MODEL.md §12)", () => {
  it(
    "the core agrees with the reference model on random two-dimensional walks",
    () => {
      let accesses = 0;
      let cases = 0;
      fc.assert(
        fc.property(scenarioSpecArb(20, 120), (spec) => {
          const scenario = buildScenario(spec);
          try {
            accesses += runDifferential(scenario);
          } catch (error) {
            if (!(error instanceof Divergence)) throw error;
            // Replayed with statistics compared after every step, to name the operation that diverged.
            let detail = error.message;
            try {
              runDifferential(scenario, true);
            } catch (again) {
              detail = (again as Error).message;
            }
            throw new Error(`${detail}\n${describeScenario(scenario)}`);
          }
          cases++;
        }),
        { seed: SEED, numRuns: runs(Number(process.env.FC_RUNS_NESTED ?? 800)) },
      );
      console.log(`fresh-pair property: ${cases} scenarios, ${accesses} accesses`);
      if (COVERAGE)
        console.log(
          [...coverage]
            .sort()
            .map(([k, v]) => `${k}: ${v}`)
            .join("\n"),
        );
      expect(accesses).toBeGreaterThan(0);
    },
    TIMEOUT_MS,
  );

  it(
    "the core agrees with the reference model over thousands of cases continuing long-lived machines",
    () => {
      const runner = new SessionRunner(SEED ^ 0x5a5a);
      fc.assert(
        fc.property(fc.array(operationSpecArb, { minLength: 1, maxLength: 12 }), (ops) => runner.run(ops)),
        {
          seed: SEED ^ 0x1234,
          numRuns: runs(Number(process.env.FC_RUNS_NESTED_SESSION ?? 20_000)),
          endOnFailure: true,
        },
      );
      runner.finish();
      console.log(
        `continuation property: ${runner.started} sessions, ${runner.cases} cases, ${runner.accesses} accesses`,
      );
      expect(runner.accesses).toBeGreaterThan(0);
    },
    TIMEOUT_MS,
  );
});
