// Set-associative TLBs: per CPU three levels (l1d, l1i, l2), each an ordered list of arrays, each
// array holding one or more page sizes (Skylake's STLB holds 4K and 2M in one array). Entries are
// tagged with the PCID and the virtual context, and global entries match any PCID.
import {
  AD_BASE,
  AD_POLICY,
  AD_RNG,
  AD_SETS_LOG2,
  AD_SIZEMASK,
  AD_WAYS,
  ARRAY_DESC_SIZE,
  CPU_TLB_LEVELS,
  TL_ARRAYS,
  TL_COUNT,
  TL_EMPTY_SIZES,
  TL_PRESENT,
  TL_SIZEMASK,
  TLB_ENTRY_SIZE,
  TLB_LEVEL_SIZE,
} from "../constants";
import { cpuBlock } from "../cpu";
import { contextMatches } from "./context";
import { translationsChanged } from "../memo";
import { ENTRY_HELD, fillWay, policyHit, tick } from "./setassoc";

// Entry: u64 tag = vpn<<3 | size<<1 | valid; u64 frame | attributes; u32 pcid; u32 vmTag; u64 stamp.
export const E_TAG: u32 = 0;
export const E_FRAME: u32 = 8;
export const E_PCID: u32 = 16;
export const E_VMTAG: u32 = 20;
export const E_STAMP: u32 = 24;

// Attribute bits kept in the low 12 bits of the frame word.
export const A_RW: u64 = 1;
export const A_US: u64 = 2;
export const A_XD: u64 = 4;
export const A_DIRTY: u64 = 8;
export const A_GLOBAL: u64 = 16;
export const A_SS: u64 = 32;
export const A_PKEY_SHIFT: u64 = 8;
export const ATTR_MASK: u64 = 0xfff;

/** The nested (guest-physical -> host-physical) TLB, tagged by root instead of context. */

/**
 * The pcid word holds the PCID in bits 11:0 and, in bits 19:16, what the nested dimension denies the
 * translation (read, write, execute, or "clean": its nested dirty flag is not set yet), so a TLB hit
 * knows whether the cached combined mapping allows the access.
 */
export const PCID_MASK: u32 = 0xfff;
export const DENY_SHIFT: u32 = 16;
export const DENY_R: u32 = 1 << 16;
export const DENY_W: u32 = 1 << 17;
export const DENY_X: u32 = 1 << 18;
export const DENY_CLEAN: u32 = 1 << 19;

/** Linear addresses keep 57 significant bits; dropping the sign extension keeps tags small. */
export const LA_MASK: u64 = 0x01ffffffffffffff;

@inline export function levelDesc(cpu: u32, level: u32): usize {
  return cpuBlock(cpu) + CPU_TLB_LEVELS + level * TLB_LEVEL_SIZE;
}

@inline export function levelPresent(desc: usize): bool {
  return load<u32>(desc + TL_PRESENT) != 0;
}

@inline function pageShift(sizeCode: u32): u64 {
  return 12 + 9 * <u64>sizeCode;
}

@inline function setBaseOf(array: usize, vpn: u64): usize {
  const mask = (<u64>1 << load<u32>(array + AD_SETS_LOG2)) - 1;
  return <usize>load<u32>(array + AD_BASE) + <usize>((vpn & mask) * <u64>(load<u32>(array + AD_WAYS) * TLB_ENTRY_SIZE));
}

@inline function matches(e: usize, tag: u64, pcid: u32, vmTag: u32): bool {
  return (
    load<u64>(e, E_TAG) == tag &&
    load<u32>(e, E_VMTAG) == vmTag &&
    ((load<u32>(e, E_PCID) & PCID_MASK) == pcid || (load<u64>(e, E_FRAME) & A_GLOBAL) != 0)
  );
}

/** Whether the array of the last hit uses LRU (its hits refresh stamps). */
export let lookupLru: bool = false;

/** Address of the matching entry in a level, or 0. The LRU stamp is refreshed on a hit. */
export function lookup(desc: usize, la: u64, pcid: u32, vmTag: u32): usize {
  const count = load<u32>(desc + TL_COUNT);
  // Sizes the level holds no entry of cannot match: only the others are probed, in the same order.
  const empty = load<u32>(desc + TL_EMPTY_SIZES);
  const masked = la & LA_MASK;
  for (let a: u32 = 0; a < count; a++) {
    const array = desc + TL_ARRAYS + a * ARRAY_DESC_SIZE;
    let sizes = <u32>load<u16>(array + AD_SIZEMASK) & ~empty;
    if (sizes == 0) continue;
    const ways = load<u32>(array + AD_WAYS);
    while (sizes != 0) {
      const size = ctz(sizes);
      sizes &= sizes - 1;
      const vpn = masked >> pageShift(size);
      const tag = (vpn << 3) | (<u64>size << 1) | 1;
      const set = setBaseOf(array, vpn);
      const end = set + <usize>(ways * TLB_ENTRY_SIZE);
      for (let e = set; e < end; e += TLB_ENTRY_SIZE) {
        if (matches(e, tag, pcid, vmTag)) {
          lookupLru = policyHit(<u32>load<u16>(array + AD_POLICY), e, E_STAMP);
          return e;
        }
      }
    }
  }
  return 0;
}

@inline export function entrySizeCode(e: usize): u32 {
  return <u32>(load<u64>(e, E_TAG) >> 1) & 3;
}

/**
 * Inserts a translation of page size `sizeCode` into a level, fracturing it to the largest size the
 * level holds. `frame` is the page frame of the full page, `attrs` the attribute bits, and
 * `pcidWord` the PCID with the nested deny bits. A way that already holds the translation is updated
 * in place and keeps its stamp, its place in the replacement order: a D-bit assist's walk sets D in
 * the entry it hit without making it the newest insertion (FIFO ages by insertion, as DineroIV does;
 * LRU's lookup has already made it the most recent).
 */
export function fill(desc: usize, la: u64, sizeCode: u32, frame: u64, attrs: u64, pcidWord: u32, vmTag: u32): void {
  const pcid = pcidWord & PCID_MASK;
  const held = load<u32>(desc + TL_SIZEMASK);
  let size = <i32>sizeCode;
  while (size >= 0 && (held & (1 << size)) == 0) size--;
  if (size < 0) return;
  translationsChanged();
  store<u32>(desc + TL_EMPTY_SIZES, load<u32>(desc + TL_EMPTY_SIZES) & ~(1 << size));
  const count = load<u32>(desc + TL_COUNT);
  let array: usize = 0;
  for (let a: u32 = 0; a < count; a++) {
    const candidate = desc + TL_ARRAYS + a * ARRAY_DESC_SIZE;
    if ((<u32>load<u16>(candidate + AD_SIZEMASK) & (1 << size)) != 0) {
      array = candidate;
      break;
    }
  }
  const masked = la & LA_MASK;
  const shift = pageShift(<u32>size);
  const vpn = masked >> shift;
  const fullMask = (<u64>1 << pageShift(sizeCode)) - 1;
  const subFrame = frame + ((masked & fullMask) & ~((<u64>1 << shift) - 1));
  const tag = (vpn << 3) | (<u64>size << 1) | 1;
  const global = attrs & A_GLOBAL;
  const set = setBaseOf(array, vpn);
  // E_TAG, E_FRAME, E_PCID, E_VMTAG and E_STAMP are the common tagged layout fillWay reads.
  const found = fillWay(set, load<u32>(array + AD_WAYS), TLB_ENTRY_SIZE, tag, pcid, PCID_MASK, vmTag, A_GLOBAL, global, <u32>load<u16>(array + AD_POLICY), array + AD_RNG);
  const inPlace = (found & ENTRY_HELD) != 0;
  const e = found & ~ENTRY_HELD;
  store<u64>(e, tag, E_TAG);
  store<u64>(e, subFrame | attrs, E_FRAME);
  store<u32>(e, pcidWord, E_PCID);
  store<u32>(e, vmTag, E_VMTAG);
  if (!inPlace) store<u64>(e, tick(), E_STAMP);
}

// --- invalidation ------------------------------------------------------------------------------

export const MATCH_ANY_PCID: u32 = 0xffffffff;

/**
 * Removes the entries of a level whose page contains `la`, in the contexts the filter selects, with the
 * given pcid (or any pcid) and, when `globals` is set, global entries of any pcid too.
 */
export function invalidatePage(desc: usize, la: u64, pcid: u32, globals: bool, filter: u32, value: u32): void {
  if (!levelPresent(desc)) return;
  translationsChanged();
  const count = load<u32>(desc + TL_COUNT);
  const empty = load<u32>(desc + TL_EMPTY_SIZES);
  const masked = la & LA_MASK;
  for (let a: u32 = 0; a < count; a++) {
    const array = desc + TL_ARRAYS + a * ARRAY_DESC_SIZE;
    const sizes = <u32>load<u16>(array + AD_SIZEMASK) & ~empty;
    const ways = load<u32>(array + AD_WAYS);
    for (let size: u32 = 0; size < 3; size++) {
      if ((sizes & (1 << size)) == 0) continue;
      const vpn = masked >> pageShift(size);
      const tag = (vpn << 3) | (<u64>size << 1) | 1;
      const set = setBaseOf(array, vpn);
      for (let w: u32 = 0; w < ways; w++) {
        const e = set + <usize>(w * TLB_ENTRY_SIZE);
        if (load<u64>(e, E_TAG) != tag || !contextMatches(load<u32>(e, E_VMTAG), filter, value)) continue;
        const isGlobal = (load<u64>(e, E_FRAME) & A_GLOBAL) != 0;
        if (isGlobal ? globals : pcid == MATCH_ANY_PCID || (load<u32>(e, E_PCID) & PCID_MASK) == pcid) {
          store<u64>(e, 0, E_TAG);
        }
      }
    }
  }
}

/**
 * Removes every entry of a level, in the contexts the filter selects, that belongs to `pcid` (or any
 * pcid), keeping global entries unless `globals` is set.
 */
export function invalidateContext(desc: usize, pcid: u32, globals: bool, filter: u32, value: u32): void {
  if (!levelPresent(desc)) return;
  translationsChanged();
  const count = load<u32>(desc + TL_COUNT);
  // The scan sees every entry, so it also learns which sizes are left.
  let left: u32 = 0;
  for (let a: u32 = 0; a < count; a++) {
    const array = desc + TL_ARRAYS + a * ARRAY_DESC_SIZE;
    const n = (<u32>1 << load<u32>(array + AD_SETS_LOG2)) * load<u32>(array + AD_WAYS);
    const base = <usize>load<u32>(array + AD_BASE);
    for (let i: u32 = 0; i < n; i++) {
      const e = base + <usize>(i * TLB_ENTRY_SIZE);
      const tag = load<u64>(e, E_TAG);
      if (tag == 0) continue;
      if (contextMatches(load<u32>(e, E_VMTAG), filter, value)) {
        const isGlobal = (load<u64>(e, E_FRAME) & A_GLOBAL) != 0;
        if (isGlobal ? globals : pcid == MATCH_ANY_PCID || (load<u32>(e, E_PCID) & PCID_MASK) == pcid) {
          store<u64>(e, 0, E_TAG);
          continue;
        }
      }
      left |= 1 << (<u32>(tag >> 1) & 3);
    }
  }
  store<u32>(desc + TL_EMPTY_SIZES, load<u32>(desc + TL_SIZEMASK) & ~left);
}

/** Entries currently valid in a level (for tests and reports). */
export function validEntries(desc: usize): u32 {
  if (!levelPresent(desc)) return 0;
  const count = load<u32>(desc + TL_COUNT);
  let valid: u32 = 0;
  for (let a: u32 = 0; a < count; a++) {
    const array = desc + TL_ARRAYS + a * ARRAY_DESC_SIZE;
    const n = (<u32>1 << load<u32>(array + AD_SETS_LOG2)) * load<u32>(array + AD_WAYS);
    const base = <usize>load<u32>(array + AD_BASE);
    for (let i: u32 = 0; i < n; i++) {
      if (load<u64>(base + <usize>(i * TLB_ENTRY_SIZE), E_TAG) != 0) valid++;
    }
  }
  return valid;
}
