// The core's sized regions: everything above the fixed ones (constants.ts) is allocated here, in the
// order the machine is configured, each region as large as its configuration asks (a 64-entry TLB takes
// 2 KiB, not a fixed 8 MiB region), and linear memory grows as the top rises. Nothing is given back but
// frames (phys.ts keeps a free list of them). The top lives in linear memory, so a saved core restores
// with it.
import { CFG_HEAP_TOP, CTRL_BASE, HEAP_BASE } from "./constants";

/** Cap on linear memory in 64 KiB pages (0: what the engine allows). */
export let limitPages: i32 = 0;

export function setMemoryLimit(pages: u32): void {
  limitPages = <i32>pages;
}

/** Where the next region goes. */
@inline export function heapTop(): usize {
  const top = <usize>load<u32>(CTRL_BASE + CFG_HEAP_TOP);
  return top == 0 ? HEAP_BASE : top;
}

/** Forgets every region (a machine reset): the next one goes at HEAP_BASE again. */
export function resetHeap(): void {
  store<u32>(CTRL_BASE + CFG_HEAP_TOP, HEAP_BASE);
}

/**
 * A region of `bytes` aligned to `align` (a power of two), zero unless memory was reused after a reset;
 * 0 when linear memory cannot grow to hold it (the configured limit, or the engine refused).
 */
export function allocate(bytes: usize, align: usize): usize {
  const start = (heapTop() + align - 1) & ~(align - 1);
  const end = start + bytes;
  if (end < start || end > 0xffff_f000 || !ensureMemory(end)) return 0;
  store<u32>(CTRL_BASE + CFG_HEAP_TOP, <u32>end);
  return start;
}

/**
 * The region whose address the control word at CTRL_BASE + `word` holds, allocated (`bytes`, aligned
 * to `align`) the first time it is asked for: buffers only some runs use cost the others nothing.
 * 0 when memory cannot hold it.
 */
export function regionOnDemand(word: u32, bytes: usize, align: usize): usize {
  let base = <usize>load<u32>(CTRL_BASE + word);
  if (base == 0) {
    base = allocate(bytes, align);
    store<u32>(CTRL_BASE + word, <u32>base);
  }
  return base;
}

/** Grows linear memory to cover `end`; false when the configured limit or the engine refuses. */
function ensureMemory(end: usize): bool {
  const have = <usize>memory.size() << 16;
  if (end <= have) return true;
  // Grow in 4 MiB steps so frame allocation does not grow memory once per frame.
  let pages = <i32>((end - have + 0xffff) >> 16);
  if (pages < 64) pages = 64;
  if (limitPages > 0 && memory.size() + pages > limitPages) {
    pages = limitPages - memory.size();
    if (pages <= 0 || ((<usize>memory.size() + <usize>pages) << 16) < end) return false;
  }
  return memory.grow(pages) >= 0;
}
