// A traced translation: every page-table reference one access makes, in order, with the entry's
// address and value, the level of the cache model that served it, its cycles, and whether it was an
// A/D update. For showing one walk (the playground's Walk view), never for replay: the only cost off
// the traced call is one flag test on the cache model's slow path.
//
// Every reference a walk makes is priced by priceReference (timing/cache.ts), whose inlined L1 path
// answers from the line memo. The traced call empties its CPU's line memo first and keeps it empty,
// so every reference takes the slow path, which reports it here (a replayed walk's hinted run takes no
// hint while tracing, timing/cache.ts). The line memo is an exact shortcut
// (the slow path finds the same way and stamps it the same), so the traced access costs and counts
// exactly what it would untraced.
import { CTRL_BASE, STATS_BASE } from "../constants";
import { forgetLines } from "../memo";
import { readPhys64 } from "../phys";
import { S_CACHE, S_DRAM } from "../stats";
import { CFG_MEMORY_GENERATION } from "../constants";

/** References one traced access can report (a 5+5-level walk with every A/D update is under 80). */
export const TRACE_CAPACITY: u32 = 128;
/** Bytes per reference: u64 entry address, u64 value read (after the update, for A/D updates),
 * u32 cycles, u32 level served (0 L1, 1 L2, 2 LLC, 3 DRAM), u32 1 for an A/D update, u32 unused. */
export const TRACE_ENTRY_SIZE: u32 = 32;
export const traceBuffer: usize = memory.data(TRACE_CAPACITY * TRACE_ENTRY_SIZE, 16);

export let tracing: bool = false;
export let traceCount: u32 = 0;
/** References beyond TRACE_CAPACITY (not recorded; should stay 0). */
export let traceDropped: u32 = 0;
// What the cache counters and the memory generation held after the last reference.
let seenCache: StaticArray<u64> = [0, 0, 0, 0];
let seenGeneration: u64 = 0;

@inline function counter(index: u32): u64 {
  return load<u64>(STATS_BASE + (index << 3));
}

@inline function generation(): u64 {
  return load<u64>(CTRL_BASE + CFG_MEMORY_GENERATION);
}

/** Starts tracing the next access of `cpu`: its line memo emptied, the counters noted. */
export function beginTrace(cpu: u32): void {
  forgetLines(cpu);
  for (let i: u32 = 0; i < 3; i++) seenCache[i] = counter(S_CACHE + i);
  seenCache[3] = counter(S_DRAM);
  seenGeneration = generation();
  traceCount = 0;
  traceDropped = 0;
  tracing = true;
}

export function endTrace(): void {
  tracing = false;
}

/**
 * One reference priced by the slow path: the entry at `pa`, which cost `cycles`. `memo` is the line
 * memo slot the lookup may have filled: emptied again, so the next reference to the line is seen too.
 */
export function traceReference(pa: u64, memo: usize, cycles: u32): void {
  store<u32>(memo, 0);
  // The counter that moved says which level served the line; a store since the last reference
  // (the memory generation moved) makes this one an A/D update's locked read-modify-write.
  let level: u32 = 3;
  for (let i: u32 = 0; i < 4; i++) {
    const now = counter(i < 3 ? S_CACHE + i : S_DRAM);
    if (now != seenCache[i]) level = i;
    seenCache[i] = now;
  }
  const now = generation();
  const update = now != seenGeneration;
  seenGeneration = now;
  if (traceCount >= TRACE_CAPACITY) {
    traceDropped++;
    return;
  }
  const entry = traceBuffer + <usize>(traceCount * TRACE_ENTRY_SIZE);
  const address = pa & ~(<u64>7);
  store<u64>(entry, address);
  store<u64>(entry, readPhys64(address), 8);
  store<u32>(entry, cycles, 16);
  store<u32>(entry, level, 20);
  store<u32>(entry, update ? 1 : 0, 24);
  traceCount++;
}
