// Checkpoints of the core. Linear memory holds almost all of the machine's state and the host saves
// it directly; what lives in WebAssembly globals (where the frame directory and the per-CPU memos are,
// the free frames, the LRU stamp clock, the translation generation the memos are checked against, the
// pending record, the budget deadline) is not visible from outside, so these two functions copy it to and
// from a fixed scratch block. Globals that only carry one access's or one walk's settings and results
// (walk* in mmu/walk.ts, nested* and guestTable* in mmu/nested.ts, radix* in mmu/radix.ts, the
// capabilities in formats/format.ts, io* in mmu/iowalk.ts, access*, hexEnd, lookupLru) are rewritten
// before they are read, and the batched counters (nested.ts nestedWalks, timing/cache.ts pendingL1Hits)
// are flushed to the statistics before every call returns, so they are zero whenever the host can take
// a checkpoint; all of these are left out. A module that adds lasting state in a global must add it
// here, or resumed runs would drift.
import { CORE_LAYOUT_VERSION, SNAPSHOT_SCRATCH_SIZE } from "./constants";
import * as heap from "./heap";
import * as memo from "./memo";
import * as setassoc from "./mmu/setassoc";
import * as phys from "./phys";
import * as replay from "./replay";
import * as text from "./trace/text";

/** Bytes of the scratch block; saveGlobals fills a prefix of it. */
export const snapshotScratch: usize = memory.data(SNAPSHOT_SCRATCH_SIZE, 16);

/** Writes the globals of every module except abi.ts (which appends its own) at `at`; returns the end. */
export function saveModuleGlobals(at: usize): usize {
  let p = at;
  store<u32>(p, CORE_LAYOUT_VERSION); p += 8;
  store<u64>(p, <u64>phys.dirBase); p += 8;
  store<u32>(p, phys.dirLog2); p += 8;
  store<u32>(p, phys.dirMaxLog2); p += 8;
  store<u32>(p, phys.dirMask); p += 8;
  store<u32>(p, phys.dirCount); p += 8;
  store<u32>(p, phys.freeHead); p += 8;
  store<i32>(p, phys.lastError); p += 8;
  store<i32>(p, heap.limitPages); p += 8;
  store<u64>(p, <u64>memo.hitMemoBase); p += 8;
  store<u64>(p, <u64>memo.lineMemoBase); p += 8;
  store<i32>(p, replay.pendingIndex); p += 8;
  store<u64>(p, replay.pendingCycles); p += 8;
  store<u64>(p, replay.budget); p += 8;
  store<u64>(p, replay.budgetDeadline); p += 8;
  store<u64>(p, replay.memoHitsData); p += 8;
  store<u64>(p, replay.memoHitsFetch); p += 8;
  store<u32>(p, replay.memoCpu); p += 8;
  store<u64>(p, setassoc.clock); p += 8;
  store<u32>(p, memo.translationGeneration); p += 8;
  store<u32>(p, text.eofSeen ? 1 : 0); p += 8;
  store<u32>(p, replay.demandRetried ? 1 : 0); p += 8;
  return p;
}

/** The inverse of saveModuleGlobals; returns the end, or 0 (restoring nothing) when the block was
 *  saved by a core with another memory layout. */
export function restoreModuleGlobals(at: usize): usize {
  let p = at;
  if (load<u32>(p) != CORE_LAYOUT_VERSION) return 0;
  p += 8;
  phys.dirBase = <usize>load<u64>(p); p += 8;
  phys.dirLog2 = load<u32>(p); p += 8;
  phys.dirMaxLog2 = load<u32>(p); p += 8;
  phys.dirMask = load<u32>(p); p += 8;
  phys.dirCount = load<u32>(p); p += 8;
  phys.freeHead = load<u32>(p); p += 8;
  phys.lastError = load<i32>(p); p += 8;
  heap.limitPages = load<i32>(p); p += 8;
  memo.hitMemoBase = <usize>load<u64>(p); p += 8;
  memo.lineMemoBase = <usize>load<u64>(p); p += 8;
  replay.pendingIndex = load<i32>(p); p += 8;
  replay.pendingCycles = load<u64>(p); p += 8;
  replay.budget = load<u64>(p); p += 8;
  replay.budgetDeadline = load<u64>(p); p += 8;
  replay.memoHitsData = load<u64>(p); p += 8;
  replay.memoHitsFetch = load<u64>(p); p += 8;
  replay.memoCpu = load<u32>(p); p += 8;
  setassoc.clock = load<u64>(p); p += 8;
  memo.translationGeneration = load<u32>(p); p += 8;
  text.eofSeen = load<u32>(p) != 0; p += 8;
  replay.demandRetried = load<u32>(p) != 0; p += 8;
  return p;
}
