// Host physical memory. Sparse: a frame takes 4 KiB of linear memory (heap.ts) only when something
// writes it, and an unbacked frame reads as zeros, so a machine of many gigabytes costs nothing until
// touched. The directory is an open-addressing hash (linear probing, backward-shift deletion) from
// frame number to where its bytes are: walks touch a handful of page-table frames scattered over a
// 52-bit space, which a hash serves in one probe where a radix tree would need several loads. It
// starts small and doubles as frames are backed, up to the configured capacity.
import {
  CFG_DIR_BASE,
  CFG_DIR_LOG2,
  CFG_DIR_MAX_LOG2,
  CFG_MAXPHYADDR,
  CFG_MEMORY_GENERATION,
  CTRL_BASE,
  DIR_ENTRY_SIZE,
  DIR_FIRST_LOG2,
  FRAME_SIZE,
  PhysError,
} from "./constants";
import { allocate } from "./heap";
import { forgetFrame, frameMemoAddress, frameMemoHolds, frameMemoSlot, memoryChanged, rememberFrame } from "./memo";

const EMPTY: u64 = 0;
const HASH_MUL: u64 = 0x9e3779b97f4a7c15;
/** The end of the free list. */
const NO_FRAME: u32 = 0xffffffff;

// The directory: at dirBase, 2^dirLog2 entries of u64 frame number + 1 (0: empty) and u32 address of
// the frame's bytes >> 12. It doubles when three quarters full, up to 2^dirMaxLog2 entries.
export let dirBase: usize = 0;
export let dirLog2: u32 = 0;
export let dirMaxLog2: u32 = 0;
export let dirMask: u32 = 0;
export let dirCount: u32 = 0;
/** Released frames, linked through their first word (address >> 12), for backFrame to take first. */
export let freeHead: u32 = NO_FRAME;

/** Sets up an empty directory; `maxLog2` caps its growth. False when memory cannot hold it. */
export function physInit(maxLog2: u32): bool {
  dirMaxLog2 = maxLog2;
  dirCount = 0;
  freeHead = NO_FRAME;
  store<u32>(CTRL_BASE + CFG_DIR_MAX_LOG2, maxLog2);
  store<u64>(CTRL_BASE + CFG_MEMORY_GENERATION, 1);
  return newDirectory(min(DIR_FIRST_LOG2, maxLog2));
}

/** Points the directory at a new, empty table of 2^log2 entries; false when memory cannot hold it. */
function newDirectory(log2: u32): bool {
  const base = allocate((<usize>1 << log2) * DIR_ENTRY_SIZE, FRAME_SIZE);
  if (base == 0) return false;
  dirBase = base;
  dirLog2 = log2;
  dirMask = (1 << log2) - 1;
  store<u32>(CTRL_BASE + CFG_DIR_LOG2, log2);
  store<u32>(CTRL_BASE + CFG_DIR_BASE, <u32>base);
  return true;
}

/**
 * Doubles the directory: every entry is hashed into a new table, and the old table's pages become
 * free frames. False when memory cannot hold the new table (nothing changes then).
 */
function growDirectory(): bool {
  const oldBase = dirBase;
  const oldEntries = dirMask + 1;
  if (!newDirectory(dirLog2 + 1)) return false;
  for (let i: u32 = 0; i < oldEntries; i++) {
    const e = oldBase + (<usize>i << 4);
    const key = load<u64>(e);
    if (key != EMPTY) insert(key, load<u32>(e, 8));
  }
  const oldBytes = <usize>oldEntries * DIR_ENTRY_SIZE;
  for (let page: usize = 0; page + FRAME_SIZE <= oldBytes; page += FRAME_SIZE) freeFrame(oldBase + page);
  return true;
}

/** Puts an entry (frame number + 1, address >> 12) in the first empty slot from its home. */
@inline function insert(key: u64, page: u32): void {
  let i = hashFrame(key - 1);
  while (load<u64>(dirEntry(i)) != EMPTY) i = (i + 1) & dirMask;
  store<u64>(dirEntry(i), key);
  store<u32>(dirEntry(i), page, 8);
}

@inline function freeFrame(address: usize): void {
  store<u32>(address, freeHead);
  freeHead = <u32>(address >> 12);
}

@inline function hashFrame(frame: u64): u32 {
  return <u32>((frame * HASH_MUL) >> (64 - <u64>dirLog2));
}

@inline function dirEntry(i: u32): usize {
  return dirBase + (<usize>i << 4);
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
      const address = <usize>load<u32>(e, 8) << 12;
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
    if (dirLog2 >= dirMaxLog2) {
      lastError = PhysError.DirectoryFull;
      return 0;
    }
    if (!growDirectory()) {
      lastError = PhysError.OutOfMemory;
      return 0;
    }
  }
  let address: usize;
  if (freeHead != NO_FRAME) {
    address = <usize>freeHead << 12;
    freeHead = load<u32>(address);
  } else {
    address = allocate(FRAME_SIZE, FRAME_SIZE);
    if (address == 0) {
      lastError = PhysError.OutOfMemory;
      return 0;
    }
  }
  memory.fill(address, 0, FRAME_SIZE);
  insert(frame + 1, <u32>(address >> 12));
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
  const address = <usize>load<u32>(dirEntry(i), 8) << 12;
  memoryChanged();
  forgetFrame(frame);
  freeFrame(address);
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
