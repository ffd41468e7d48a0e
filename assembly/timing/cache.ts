// Data-cache model that prices page-table references: private L1 and L2 per CPU, a shared LLC, then
// DRAM. Only the lines a walk touches enter it, so it measures how well page-table lines stay cached
// between walks, which is what makes a walk cost 20 cycles or 200.
import {
  CACHE_DESC_SIZE,
  CACHE_LINE_SIZE,
  CD_BASE,
  CD_CPU_STRIDE,
  CD_LATENCY,
  CD_PRESENT,
  CD_SETS_LOG2,
  CD_WAYS,
  CFG_CACHE_DESC,
  CFG_DRAM_LATENCY,
  CTRL_BASE,
} from "../constants";
import { l1WayOf, lineMemoSlot, rememberLine, rememberedWay, wayHolds } from "../memo";
import { clock, tick } from "../mmu/setassoc";
import { S_CACHE, S_DRAM, add, bump } from "../stats";
import { traceReference, tracing } from "./trace";

@inline function levelDesc(level: u32): usize {
  return CTRL_BASE + CFG_CACHE_DESC + level * CACHE_DESC_SIZE;
}

@inline function setAddress(desc: usize, cpu: u32, line: u64): usize {
  const sets = (<u64>1 << load<u32>(desc + CD_SETS_LOG2)) - 1;
  const ways = load<u32>(desc + CD_WAYS);
  return (
    <usize>load<u32>(desc + CD_BASE) +
    <usize>(cpu * load<u32>(desc + CD_CPU_STRIDE)) +
    <usize>((line & sets) * <u64>(ways * CACHE_LINE_SIZE))
  );
}

/**
 * L1 hits not yet added to S_CACHE: the hottest path counts in a global, and the walk adds the sum
 * once at its end (flushReferenceCounts), so statistics are exact whenever a call returns.
 */
let pendingL1Hits: u32 = 0;

@inline export function flushReferenceCounts(): void {
  if (pendingL1Hits != 0) {
    add(S_CACHE, pendingL1Hits);
    pendingL1Hits = 0;
  }
}

/**
 * Cycles to read (or locked-update) the page-table line holding `pa`, updating the hierarchy. Inlined
 * for the common case, a line the CPU's L1 still holds: a way that holds the line is where the L1 scan
 * would find it, since lines are unique in a set.
 */
@inline export function priceReference(cpu: u32, pa: u64): u32 {
  const line = pa >> 6;
  const memo = lineMemoSlot(cpu, line);
  const remembered = rememberedWay(memo);
  if (remembered != 0 && wayHolds(remembered, line)) {
    store<u64>(remembered, tick(), 8);
    pendingL1Hits++;
    return load<u32>(levelDesc(0) + CD_LATENCY);
  }
  return priceReferenceSlow(cpu, pa, memo);
}

/**
 * Prices `count` references in order, their host addresses the u64s at `addresses`, each as
 * priceReference would, starting from the L1 way of this CPU a memo (memo.ts) saw its line in: the u32s
 * at `hints` (0: none). A way that still holds the line is where the L1 scan would find it, so the price
 * is an L1 hit's, from one tag check instead of a lookup; otherwise the full lookup runs and the hint is
 * pointed at where the line is now. The clock and the L1 hits stay in locals while the hints hold.
 */
export function priceHintedRun(cpu: u32, addresses: usize, hints: usize, count: u32): u32 {
  let cycles: u32 = 0;
  // A traced access (timing/trace.ts) must see every reference on the slow path: no hint is taken.
  if (tracing) {
    for (let i: u32 = 0; i < count; i++) cycles += priceReference(cpu, load<u64>(addresses + (<usize>i << 3)));
    return cycles;
  }
  let hits: u32 = 0;
  let stamp = clock;
  for (let i: u32 = 0; i < count; i++) {
    const pa = load<u64>(addresses + (<usize>i << 3));
    const hint = hints + (<usize>i << 2);
    const way = <usize>load<u32>(hint);
    if (way != 0 && wayHolds(way, pa >> 6)) {
      store<u64>(way, ++stamp, 8);
      hits++;
      continue;
    }
    clock = stamp;
    cycles += priceAndHint(cpu, pa, hint);
    stamp = clock;
  }
  clock = stamp;
  pendingL1Hits += hits;
  return cycles + hits * load<u32>(levelDesc(0) + CD_LATENCY);
}

/** priceReference, then points the u32 at `hint` at the L1 way that holds the line now (or 0). */
function priceAndHint(cpu: u32, pa: u64, hint: usize): u32 {
  const cycles = priceReference(cpu, pa);
  store<u32>(hint, <u32>l1WayOf(cpu, pa));
  return cycles;
}

function priceReferenceSlow(cpu: u32, pa: u64, memo: usize): u32 {
  const cycles = lookupLine(cpu, pa >> 6, memo);
  // A traced access (timing/trace.ts) emptied the line memo, so every reference it makes comes here.
  if (tracing) traceReference(pa, memo, cycles);
  return cycles;
}

/** What scanSet returns when the set holds the line: its way's address (16-byte aligned) with this bit. */
const HELD: usize = 1;

/**
 * One scan of the set at `setBase` finds the line `key` (its way | HELD) or, failing that, the way a
 * fill would replace, so a miss never scans twice. The victim is LRU's: the lowest invalid way, else the
 * oldest stamp, lowest way on ties. An invalid way counts as stamp 0, older than any line (stamps start
 * at 1), and the oldest is picked with select rather than a branch the stamps decide.
 */
@inline function scanSet(setBase: usize, ways: u32, key: u64): usize {
  let victim: usize = 0;
  let oldest: u64 = U64.MAX_VALUE;
  const end = setBase + <usize>(ways * CACHE_LINE_SIZE);
  for (let p = setBase; p < end; p += CACHE_LINE_SIZE) {
    const tag = load<u64>(p);
    if (tag == key) return p | HELD;
    const stamp = select<u64>(0, load<u64>(p, 8), tag == 0);
    const older = stamp < oldest;
    oldest = select<u64>(stamp, oldest, older);
    victim = select<usize>(p, victim, older);
  }
  return victim;
}

/** Scans `cpu`'s set of `line` at the level `desc` describes (present): scanSet's answer. */
@inline function scanLevel(desc: usize, cpu: u32, line: u64, key: u64): usize {
  return scanSet(setAddress(desc, cpu, line), load<u32>(desc + CD_WAYS), key);
}

/** A hit at `level` in way `way`: the line becomes the most recent of its set. */
@inline function hitAt(way: usize, level: u32): u32 {
  store<u64>(way, tick(), 8);
  bump(S_CACHE + level);
  return load<u32>(levelDesc(level) + CD_LATENCY);
}

/**
 * Looks the line up level by level; a level that misses takes it (into the way its scan chose) once a
 * lower level or DRAM supplies it. The levels are written out, so each reads its own descriptor.
 */
@inline function lookupLine(cpu: u32, line: u64, memo: usize): u32 {
  const key = line + 1;
  let victim0: usize = 0;
  let victim1: usize = 0;
  if (load<u32>(levelDesc(0) + CD_PRESENT) != 0) {
    const found = scanLevel(levelDesc(0), cpu, line, key);
    if ((found & HELD) != 0) {
      const cycles = hitAt(found & ~HELD, 0);
      rememberLine(memo, found & ~HELD);
      return cycles;
    }
    victim0 = found;
  }
  if (load<u32>(levelDesc(1) + CD_PRESENT) != 0) {
    const found = scanLevel(levelDesc(1), cpu, line, key);
    if ((found & HELD) != 0) {
      const cycles = hitAt(found & ~HELD, 1);
      if (victim0 != 0) place(victim0, key, cpu, line, 0);
      return cycles;
    }
    victim1 = found;
  }
  let victim2: usize = 0;
  if (load<u32>(levelDesc(2) + CD_PRESENT) != 0) {
    const found = scanLevel(levelDesc(2), cpu, line, key);
    if ((found & HELD) != 0) {
      const cycles = hitAt(found & ~HELD, 2);
      if (victim0 != 0) place(victim0, key, cpu, line, 0);
      if (victim1 != 0) place(victim1, key, cpu, line, 1);
      return cycles;
    }
    victim2 = found;
  }
  // From DRAM, into every level present.
  bump(S_DRAM);
  if (victim0 != 0) place(victim0, key, cpu, line, 0);
  if (victim1 != 0) place(victim1, key, cpu, line, 1);
  if (victim2 != 0) place(victim2, key, cpu, line, 2);
  return load<u32>(CTRL_BASE + CFG_DRAM_LATENCY);
}

@inline function place(way: usize, key: u64, cpu: u32, line: u64, level: u32): void {
  store<u64>(way, key);
  store<u64>(way, tick(), 8);
  if (level == 0) rememberLine(lineMemoSlot(cpu, line), way);
}

/**
 * Cycles for the IOMMU to read (or update) the line holding `pa`. The IOMMU sits in the uncore: it has
 * no private L1/L2, so its structure reads look up the shared LLC and otherwise go to DRAM, filling the
 * LLC (where the CPUs' writes of those tables also land).
 */
export function priceUncoreReference(pa: u64): u32 {
  const line = pa >> 6;
  const key = line + 1;
  const desc = levelDesc(2);
  if (load<u32>(desc + CD_PRESENT) != 0) {
    // The same scan and victim as the CPUs' lookups.
    const found = scanLevel(desc, 0, line, key);
    if ((found & HELD) != 0) return hitAt(found & ~HELD, 2);
    place(found, key, 0, line, 2);
  }
  bump(S_DRAM);
  return load<u32>(CTRL_BASE + CFG_DRAM_LATENCY);
}
