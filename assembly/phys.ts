// Host physical memory. Sparse: a frame takes a 4 KiB pool slot only when something writes it, and
// an unbacked frame reads as zeros, so a machine of many gigabytes costs nothing until touched.
// The directory is an open-addressing hash (linear probing, backward-shift deletion) from frame
// number to pool slot: walks touch a handful of page-table frames scattered over a 52-bit space,
// which a hash serves in one probe where a radix tree would need several loads.
import {
  CFG_DIR_LOG2,
  CFG_MAXPHYADDR,
  CFG_MEMORY_GENERATION,
  CFG_MEM_LIMIT_PAGES,
  CFG_POOL_BASE,
  CTRL_BASE,
  DIR_BASE,
  DIR_ENTRY_SIZE,
  FRAME_SIZE,
  PhysError,
} from "./constants";
import {
  forgetFrame,
  forgetMemoryMemos,
  frameMemoAddress,
  frameMemoHolds,
  frameMemoSlot,
  memoryChanged,
  rememberFrame,
} from "./memo";

const EMPTY: u64 = 0;
const HASH_MUL: u64 = 0x9e3779b97f4a7c15;

export let dirLog2: u32 = 0;
export let dirMask: u32 = 0;
export let dirCount: u32 = 0;
export let poolBase: usize = 0;
export let slotsUsed: u32 = 0;
export let freeHead: u32 = 0xffffffff;
export let limitPages: i32 = 0;

/** Error codes returned by the writers (0 = ok). */

/** Lays out the directory and pool; false when linear memory cannot hold the directory. `clear` is
 *  false on a fresh instance, whose memory is already zero. */
export function physInit(log2Capacity: u32, memLimitPages: u32, clear: bool): bool {
  dirLog2 = log2Capacity;
  dirMask = (1 << log2Capacity) - 1;
  dirCount = 0;
  slotsUsed = 0;
  freeHead = 0xffffffff;
  limitPages = <i32>memLimitPages;
  const dirBytes = (<usize>1 << log2Capacity) * DIR_ENTRY_SIZE;
  poolBase = (DIR_BASE + dirBytes + FRAME_SIZE - 1) & ~(<usize>FRAME_SIZE - 1);
  store<u32>(CTRL_BASE + CFG_DIR_LOG2, log2Capacity);
  store<u32>(CTRL_BASE + CFG_POOL_BASE, <u32>poolBase);
  store<u32>(CTRL_BASE + CFG_MEM_LIMIT_PAGES, memLimitPages);
  if (clear) forgetMemoryMemos();
  store<u64>(CTRL_BASE + CFG_MEMORY_GENERATION, 1);
  // Memory grown here is zero too; memory the instance already had may hold an old directory.
  const had = <usize>memory.size() << 16;
  if (!ensureMemory(poolBase)) return false;
  if (clear) memory.fill(DIR_BASE, 0, min(dirBytes, had > DIR_BASE ? had - DIR_BASE : 0));
  return true;
}

/** Grows linear memory to cover `end`; false when the configured limit or the engine refuses. */
function ensureMemory(end: usize): bool {
  const have = <usize>memory.size() << 16;
  if (end <= have) return true;
  // Grow in 4 MiB steps so page-table allocation does not grow memory once per frame.
  let pages = <i32>((end - have + 0xffff) >> 16);
  if (pages < 64) pages = 64;
  if (limitPages > 0 && memory.size() + pages > limitPages) {
    pages = limitPages - memory.size();
    if (pages <= 0 || ((<usize>memory.size() + <usize>pages) << 16) < end) return false;
  }
  return memory.grow(pages) >= 0;
}

@inline function hashFrame(frame: u64): u32 {
  return <u32>((frame * HASH_MUL) >> (64 - <u64>dirLog2));
}

@inline function dirEntry(i: u32): usize {
  return DIR_BASE + (<usize>i << 4);
}

/** Pool address of a frame's bytes, or 0 when the frame is unbacked. */
@inline export function frameAddress(frame: u64): usize {
  const slot = frameMemoSlot(frame);
  if (frameMemoHolds(slot, frame)) return frameMemoAddress(slot);
  return frameAddressSlow(frame);
}

function frameAddressSlow(frame: u64): usize {
  const key = frame + 1;
  let i = hashFrame(frame);
  while (true) {
    const e = dirEntry(i);
    const k = load<u64>(e);
    if (k == key) {
      const address = poolBase + (<usize>load<u32>(e, 8) << 12);
      rememberFrame(frame, address);
      return address;
    }
    if (k == EMPTY) return 0;
    i = (i + 1) & dirMask;
  }
}

@inline export function readPhys64(pa: u64): u64 {
  const base = frameAddress(pa >> 12);
  if (base == 0) return 0;
  return load<u64>(base + <usize>(pa & 0xff8));
}

/** Writes an 8-byte value already known to be in a backed frame (A/D updates of entries just read). */
@inline export function writeBacked64(pa: u64, value: u64): void {
  store<u64>(frameAddress(pa >> 12) + <usize>(pa & 0xff8), value);
  memoryChanged();
}

/** Backs `frame` if needed and returns its pool address, or 0 with `lastError` set. */
export let lastError: i32 = 0;

export function backFrame(frame: u64): usize {
  const existing = frameAddress(frame);
  if (existing != 0) return existing;
  if (dirCount + 1 > ((dirMask + 1) >> 2) * 3) {
    lastError = PhysError.DirectoryFull;
    return 0;
  }
  let slot: u32;
  if (freeHead != 0xffffffff) {
    slot = freeHead;
    freeHead = load<u32>(poolBase + (<usize>slot << 12));
  } else {
    if (!ensureMemory(poolBase + ((<usize>slotsUsed + 1) << 12))) {
      lastError = PhysError.OutOfMemory;
      return 0;
    }
    slot = slotsUsed++;
  }
  const address = poolBase + (<usize>slot << 12);
  memory.fill(address, 0, FRAME_SIZE);
  let i = hashFrame(frame);
  while (load<u64>(dirEntry(i)) != EMPTY) i = (i + 1) & dirMask;
  store<u64>(dirEntry(i), frame + 1);
  store<u32>(dirEntry(i), slot, 8);
  dirCount++;
  return address;
}

@inline function maxPhyAddr(): u32 {
  return load<u32>(CTRL_BASE + CFG_MAXPHYADDR);
}

export function writePhys64(pa: u64, value: u64): i32 {
  if ((pa & 7) != 0) return PhysError.Misaligned;
  if (pa >> maxPhyAddr() != 0) return PhysError.BeyondMaxPhyAddr;
  const frame = pa >> 12;
  // Writing zero to an unbacked frame changes nothing a reader can see: keep it unbacked.
  if (value == 0 && frameAddress(frame) == 0) return PhysError.Ok;
  const base = backFrame(frame);
  if (base == 0) return lastError;
  store<u64>(base + <usize>(pa & 0xff8), value);
  memoryChanged();
  return PhysError.Ok;
}

/** Drops a frame's backing: it reads as zeros again (a scrubbed, freed frame). */
export function releaseFrame(frame: u64): void {
  const key = frame + 1;
  let i = hashFrame(frame);
  while (true) {
    const k = load<u64>(dirEntry(i));
    if (k == EMPTY) return;
    if (k == key) break;
    i = (i + 1) & dirMask;
  }
  const slot = load<u32>(dirEntry(i), 8);
  memoryChanged();
  forgetFrame(frame);
  store<u32>(poolBase + (<usize>slot << 12), freeHead);
  freeHead = slot;
  dirCount--;
  // Backward-shift deletion keeps every remaining key reachable from its home slot without tombstones.
  let hole = i;
  let j = (i + 1) & dirMask;
  while (true) {
    const k = load<u64>(dirEntry(j));
    if (k == EMPTY) break;
    const home = hashFrame(k - 1);
    // Move j into the hole when its home does not lie cyclically in (hole, j].
    const distHole = (j - home) & dirMask;
    const distJ = (j - hole) & dirMask;
    if (distHole >= distJ) {
      store<u64>(dirEntry(hole), k);
      store<u32>(dirEntry(hole), load<u32>(dirEntry(j), 8), 8);
      hole = j;
    }
    j = (j + 1) & dirMask;
  }
  store<u64>(dirEntry(hole), EMPTY);
  store<u32>(dirEntry(hole), 0, 8);
}

export function backedFrames(): u32 {
  return dirCount;
}
