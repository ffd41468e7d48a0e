// The batch loop: the host fills the record buffer, and one call runs records until the buffer ends,
// a record needs software (a fault becomes an exit record, as a CPU hands a #PF to its kernel), or
// the cycle budget for the slice runs out. No call crosses into JavaScript per access.
import {
  BR_CYCLES,
  BR_OUTCOME,
  BR_PA,
  BR_PAGE_SHIFT,
  BR_REFS,
  CFG_CPUS,
  CTRL_BASE,
  EX_CPU,
  EX_GUEST_PHYS,
  EX_INDEX,
  EX_KIND,
  EX_LINEAR,
  EX_QUAL,
  EX_REASON,
  EX_REFS,
  ExitReason,
  EXIT_BASE,
  AccessKind,
  KIND_MASK,
  REC_CPU,
  REC_KIND,
  RECORD_CAPACITY,
  RECORD_SIZE,
  RECORDS_BASE,
  STATS_BASE,
  TL_LATENCY,
  FaultType,
} from "./constants";
import { demandEnabled, demandFault } from "./demand";
import { vmTransition } from "./mmu/invalidate";
import {
  access,
  accessCycles,
  accessError,
  accessGpa,
  accessPa,
  accessRefs,
  accessSizeCode,
} from "./mmu/translate";
import { hitMemoHolds, hitMemoReplay, hitMemoSlot } from "./memo";
import { ATTR_MASK, E_FRAME, E_STAMP, entrySizeCode, levelDesc } from "./mmu/tlb";
import { HISTOGRAM_BUCKETS, S_ACCESSES, S_CYCLES, S_EXIT_REASONS, S_EXITS, S_HISTOGRAM, S_TLB, add, bump } from "./stats";

const STATS_CYCLES_ADDRESS: usize = STATS_BASE + (<usize>S_CYCLES << 3);

/** Index of the record whose exit is being handled, or -1. */
export let pendingIndex: i32 = -1;
/** Cycles the pending record has spent so far, so its histogram sample covers every attempt. */
export let pendingCycles: u64 = 0;
export let budget: u64 = 0;
/** Whether the pending record's fault was handled in the core (demand.ts). */
export let demandRetried = false;
/** Simulated time at which the current slice ends (total cycles, handlers included). */
export let budgetDeadline: u64 = 0;

export function setBudget(cycles: u64): void {
  budget = cycles;
  budgetDeadline = cycles == 0 ? 0 : (load<u64>(STATS_CYCLES_ADDRESS) / cycles + 1) * cycles;
}

export function resetReplay(): void {
  pendingIndex = -1;
  demandRetried = false;
  pendingCycles = 0;
  store<u32>(EXIT_BASE + EX_REASON, ExitReason.None);
}

@inline export function histogramBucket(cycles: u64): u32 {
  if (cycles == 0) return 0;
  const bucket = <u32>(64 - clz(cycles));
  return bucket < HISTOGRAM_BUCKETS ? bucket : HISTOGRAM_BUCKETS - 1;
}

@inline function completeRecord(cycles: u64): void {
  bump(S_ACCESSES);
  bump(S_HISTOGRAM + histogramBucket(cycles));
}

/** The exit reason for an access result. */
@inline function exitReasonOf(result: u32): u32 {
  if (result == FaultType.PageFault) return ExitReason.PageFault;
  if (result == FaultType.GeneralProtection) return ExitReason.GeneralProtection;
  if (result == FaultType.EptViolation) return ExitReason.EptViolation;
  if (result == FaultType.EptMisconfig) return ExitReason.EptMisconfig;
  if (result == FaultType.PmlFull) return ExitReason.PmlFull;
  return ExitReason.Npf;
}

function raiseExit(
  reason: u32,
  index: u32,
  cpu: u32,
  kind: u32,
  la: u64,
  qualification: u64,
  refs: u32,
  gpa: u64 = 0,
): void {
  const p = EXIT_BASE;
  store<u32>(p + EX_REASON, reason);
  store<u32>(p + EX_CPU, cpu);
  store<u32>(p + EX_INDEX, index);
  store<u32>(p + EX_KIND, kind);
  store<u64>(p + EX_LINEAR, la);
  store<u64>(p + EX_GUEST_PHYS, gpa);
  store<u64>(p + EX_QUAL, qualification);
  store<u32>(p + EX_REFS, refs);
  if (reason != ExitReason.Budget) bump(S_EXITS);
  bump(S_EXIT_REASONS + reason);
}

/** A record the core refuses: a CPU beyond the configured ones, or an unknown kind. */
@inline function badRecord(cpu: u32, kindByte: u32, cpus: u32): bool {
  return cpu >= cpus || (kindByte & KIND_MASK) > <u32>AccessKind.ShadowStackWrite;
}

/**
 * The L1-hit memo: a plain access (kind byte up to FETCH) to the page of this CPU's last L1 hit, with
 * no translation changed since, finds the same TLB entry, and only its LRU stamp moves. Returns that
 * entry, or 0 when the memo cannot stand in for the lookup.
 */
@inline function memoHit(cpu: u32, la: u64, kindByte: u32): usize {
  const memo = hitMemoSlot(cpu, kindByte == AccessKind.Fetch ? 1 : 0, la);
  if (!hitMemoHolds(memo, la, kindByte)) return 0;
  return hitMemoReplay(memo, E_STAMP);
}

/**
 * Runs records [start, end). Returns the index it stopped at: `end` when all ran, else the record
 * that exited (an exit record describes why), or the record after the slice when the budget ran out.
 */
export function replay(start: u32, end: u32): u32 {
  const cpus = load<u32>(CTRL_BASE + CFG_CPUS);
  store<u32>(EXIT_BASE + EX_REASON, ExitReason.None);
  for (let i = start; i < end; i++) {
    const record = RECORDS_BASE + <usize>i * RECORD_SIZE;
    const la = load<u64>(record);
    const kindByte = <u32>load<u8>(record, REC_KIND);
    const cpu = <u32>load<u16>(record, REC_CPU);
    if (badRecord(cpu, kindByte, cpus)) {
      flushMemoHits(cpu);
      raiseExit(ExitReason.BadRecord, i, cpu, kindByte, la, 0, 0);
      return i;
    }
    const retry = <i32>i == pendingIndex;
    // Fast path: the L1-hit memo. Statistics are added in bulk at the end (for memoCpu).
    if (kindByte <= <u32>AccessKind.Fetch && !retry && memoCpu == cpu && memoHit(cpu, la, kindByte) != 0) {
      if (kindByte == AccessKind.Fetch) memoHitsFetch++;
      else memoHitsData++;
      if (budget != 0 && budgetReached(cpu)) {
        raiseExit(ExitReason.Budget, i + 1, cpu, 0, 0, 0, 0);
        return i + 1;
      }
      continue;
    }
    if (cpu != memoCpu) {
      flushMemoHits(memoCpu);
      memoCpu = cpu;
    }
    const result = access(cpu, la, kindByte, !retry);
    const spent = (retry ? pendingCycles : 0) + <u64>accessCycles;
    if (result != FaultType.None) {
      flushMemoHits(cpu);
      pendingIndex = <i32>i;
      pendingCycles = spent;
      // An anonymous demand fault the core may handle itself (demand.ts): the record runs again, as
      // after the host's handler. A second fault of a record it handled goes to the host.
      if (result == FaultType.PageFault && !(retry && demandRetried)) {
        const region = demandEnabled();
        if (region != 0 && demandFault(region, cpu, la, accessError)) {
          demandRetried = true;
          i--; // the loop's i++ runs it again (u32 arithmetic wraps back for record 0)
          continue;
        }
      }
      demandRetried = false;
      const reason = exitReasonOf(result);
      // Nested faults are VM exits: without VPIDs the exit and the next entry flush the guest's TLB.
      if (reason >= <u32>ExitReason.EptViolation) vmTransition(cpu);
      raiseExit(reason, i, cpu, kindByte, la, accessError, accessRefs, accessGpa);
      return i;
    }
    pendingIndex = -1;
    completeRecord(spent);
    if (budget != 0 && budgetReached(cpu)) {
      raiseExit(ExitReason.Budget, i + 1, cpu, 0, 0, 0, 0);
      return i + 1;
    }
  }
  flushMemoHits(memoCpu);
  return end;
}

/** Memo hits not yet added to the statistics, for l1d and l1i of `memoCpu`. */
export let memoHitsData: u64 = 0;
export let memoHitsFetch: u64 = 0;
export let memoCpu: u32 = 0;

function addMemoHits(level: u32, hits: u64): void {
  const latency = <u64>load<u32>(levelDesc(memoCpu, level) + TL_LATENCY);
  add(S_ACCESSES, hits);
  add(S_TLB + (level << 1), hits);
  add(S_CYCLES, hits * latency);
  add(S_HISTOGRAM + histogramBucket(latency), hits);
}

/** Adds deferred memo hits: each is a completed record that hit the L1 TLB at its probe latency. */
function flushMemoHits(cpu: u32): void {
  if (memoHitsData != 0) addMemoHits(0, memoHitsData);
  if (memoHitsFetch != 0) addMemoHits(1, memoHitsFetch);
  memoHitsData = 0;
  memoHitsFetch = 0;
  memoCpu = cpu;
}

/**
 * Whether the slice's simulated time is up. Slices span calls (exits split them) and end on a deadline
 * of total cycles, so host work runs every `budget` cycles however the records were batched.
 */
@inline function budgetReached(cpu: u32): bool {
  flushMemoHits(cpu);
  const now = load<u64>(STATS_CYCLES_ADDRESS);
  if (now < budgetDeadline) return false;
  // The next slice ends on the next multiple of the budget: host work keeps a fixed period.
  budgetDeadline = (now / budget + 1) * budget;
  return true;
}

/** The software gave up on the pending record (a fault delivered to the guest): it counts as done. */
export function completePending(): void {
  if (pendingIndex < 0) return;
  completeRecord(pendingCycles);
  pendingIndex = -1;
  pendingCycles = 0;
}

/**
 * The embedding batch: translates records [start, end) of the record buffer, each a fresh access (as
 * the `translate` export does), and writes its result over it (BR_*): the physical address, or for a
 * fault the error code or qualification; the outcome as an exit reason; the page size; the references;
 * the cycles. A fault does not stop the batch (the host simulator decides what a fault means to it) and
 * causes no VM transition. Every record counts as one access. Returns the number translated.
 */
export function translateBatch(start: u32, end: u32): u32 {
  const cpus = load<u32>(CTRL_BASE + CFG_CPUS);
  if (end > RECORD_CAPACITY) end = RECORD_CAPACITY;
  if (start >= end) return 0;
  for (let i = start; i < end; i++) {
    const record = RECORDS_BASE + <usize>i * RECORD_SIZE;
    const la = load<u64>(record);
    const kindByte = <u32>load<u8>(record, REC_KIND);
    const cpu = <u32>load<u16>(record, REC_CPU);
    if (badRecord(cpu, kindByte, cpus)) {
      store<u64>(record, 0, BR_PA);
      store<u32>(record, ExitReason.BadRecord, BR_OUTCOME);
      store<u32>(record, 0, BR_CYCLES);
      bump(S_ACCESSES);
      continue;
    }
    if (kindByte <= <u32>AccessKind.Fetch) {
      // Hits are counted as replay counts them: accesses, L1 hits, their latency, in bulk per CPU.
      if (cpu != memoCpu) flushMemoHits(cpu);
      const entry = memoHit(cpu, la, kindByte);
      if (entry != 0) {
        const level: u32 = kindByte == AccessKind.Fetch ? 1 : 0;
        const sizeCode = entrySizeCode(entry);
        const frame = load<u64>(entry, E_FRAME) & ~ATTR_MASK;
        store<u64>(record, frame | (la & ((<u64>1 << (12 + 9 * <u64>sizeCode)) - 1)), BR_PA);
        // Outcome ExitReason.None, the page shift, no references: one word.
        store<u32>(record, <u32>ExitReason.None | ((12 + 9 * sizeCode) << 8), BR_OUTCOME);
        store<u32>(record, load<u32>(levelDesc(cpu, level) + TL_LATENCY), BR_CYCLES);
        if (level == 0) memoHitsData++;
        else memoHitsFetch++;
        continue;
      }
    }
    const result = access(cpu, la, kindByte, true);
    const ok = result == FaultType.None;
    bump(S_ACCESSES);
    store<u64>(record, ok ? accessPa : accessError, BR_PA);
    store<u8>(record, ok ? <u8>ExitReason.None : <u8>exitReasonOf(result), BR_OUTCOME);
    store<u8>(record, ok ? <u8>(12 + 9 * accessSizeCode) : 0, BR_PAGE_SHIFT);
    store<u16>(record, <u16>min<u32>(accessRefs, 0xffff), BR_REFS);
    store<u32>(record, accessCycles, BR_CYCLES);
    bump(S_HISTOGRAM + histogramBucket(accessCycles));
  }
  flushMemoHits(memoCpu);
  return end - start;
}
