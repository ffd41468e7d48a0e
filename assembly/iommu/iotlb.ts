// The IOTLB and the context cache: set-associative arrays (replacement shared with the CPU's TLBs
// through mmu/setassoc.ts). IOTLB entries are tagged by domain and by requester (the source id for
// requests translated without PASIDs, the PASID in scalable mode), so domain, device and PASID
// invalidations each select exactly their entries.
import {
  AD_BASE,
  AD_POLICY,
  AD_RNG,
  AD_SETS_LOG2,
  AD_WAYS,
  IO_CC_DESC,
  IO_CC_ENTRY_SIZE,
  IO_DESC_PRESENT,
  IO_IOTLB_DESC,
  IO_IOTLB_ENTRY_SIZE,
  IO_PSC_DESC,
  IO_PSC_ENTRY_SIZE,
  IOMMU_BASE,
} from "../constants";
import { fillTagged, policyHit, tick, victimWay } from "../mmu/setassoc";

// IOTLB entry: u64 tag = vpn << 3 | size << 1 | 1; u64 frame | rights; u32 domain; u32 requester; u64 stamp.
const T_TAG: u32 = 0;
const T_FRAME: u32 = 8;
const T_DOMAIN: u32 = 16;
const T_REQUESTER: u32 = 20;
const T_STAMP: u32 = 24;

@inline function iotlbDesc(): usize {
  return IOMMU_BASE + IO_IOTLB_DESC;
}

@inline export function iotlbPresent(): bool {
  return load<u32>(iotlbDesc() + IO_DESC_PRESENT) != 0;
}

@inline function iotlbSet(vpn: u64): usize {
  const desc = iotlbDesc();
  const mask = (<u64>1 << load<u32>(desc + AD_SETS_LOG2)) - 1;
  return (
    <usize>load<u32>(desc + AD_BASE) +
    <usize>((vpn & mask) * <u64>(load<u32>(desc + AD_WAYS) * IO_IOTLB_ENTRY_SIZE))
  );
}

/** The entry translating `iova` for (domain, requester), probing 4K, 2M, then 1G entries; or 0. */
export function iotlbLookup(iova: u64, domain: u32, requester: u32): usize {
  const desc = iotlbDesc();
  const ways = load<u32>(desc + AD_WAYS);
  const policy = <u32>load<u16>(desc + AD_POLICY);
  for (let size: u32 = 0; size < 3; size++) {
    const vpn = iova >> (12 + 9 * <u64>size);
    const tag = (vpn << 3) | (<u64>size << 1) | 1;
    const set = iotlbSet(vpn);
    for (let w: u32 = 0; w < ways; w++) {
      const e = set + <usize>(w * IO_IOTLB_ENTRY_SIZE);
      if (load<u64>(e, T_TAG) == tag && load<u32>(e, T_DOMAIN) == domain && load<u32>(e, T_REQUESTER) == requester) {
        policyHit(policy, e, T_STAMP);
        return e;
      }
    }
  }
  return 0;
}

@inline export function iotlbEntryRights(e: usize): u32 {
  return <u32>load<u64>(e, T_FRAME) & 3;
}

/** Host-physical address of `iova` through entry `e`. */
@inline export function iotlbEntryAddress(e: usize, iova: u64): u64 {
  const size = <u32>(load<u64>(e, T_TAG) >> 1) & 3;
  const mask = (<u64>1 << (12 + 9 * <u64>size)) - 1;
  return (load<u64>(e, T_FRAME) & ~<u64>0xfff) | (iova & mask);
}

/**
 * Caches a translation of a 2^shift page (any size AMD-Vi can encode) as the largest entry size not
 * above it, for the sub-page holding `iova`.
 */
export function iotlbFill(iova: u64, shift: u32, frame: u64, rights: u32, domain: u32, requester: u32): void {
  const size: u32 = shift >= 30 ? 2 : shift >= 21 ? 1 : 0;
  const entryShift = 12 + 9 * <u64>size;
  const vpn = iova >> entryShift;
  const subFrame = (frame | (iova & ((<u64>1 << <u64>shift) - 1))) & ~((<u64>1 << entryShift) - 1);
  const tag = (vpn << 3) | (<u64>size << 1) | 1;
  const desc = iotlbDesc();
  // T_TAG, T_FRAME, T_DOMAIN, T_REQUESTER and T_STAMP are the common tagged layout fillTagged writes.
  fillTagged(iotlbSet(vpn), load<u32>(desc + AD_WAYS), IO_IOTLB_ENTRY_SIZE, tag, subFrame | <u64>rights, domain, requester, <u32>load<u16>(desc + AD_POLICY), desc + AD_RNG);
}

export const ANY: u32 = 0xffffffff;

/**
 * Removes IOTLB entries of `domain` (or ANY) and `requester` (or ANY) whose page overlaps
 * [base, base + size); size 0 means every address. Returns how many were removed.
 */
export function iotlbInvalidate(domain: u32, requester: u32, base: u64, size: u64): u32 {
  if (!iotlbPresent()) return 0;
  const desc = iotlbDesc();
  const n = (<u32>1 << load<u32>(desc + AD_SETS_LOG2)) * load<u32>(desc + AD_WAYS);
  const array = <usize>load<u32>(desc + AD_BASE);
  let removed: u32 = 0;
  for (let i: u32 = 0; i < n; i++) {
    const e = array + <usize>(i * IO_IOTLB_ENTRY_SIZE);
    const tag = load<u64>(e, T_TAG);
    if (tag == 0) continue;
    if (domain != ANY && load<u32>(e, T_DOMAIN) != domain) continue;
    if (requester != ANY && load<u32>(e, T_REQUESTER) != requester) continue;
    if (size != 0) {
      const shift = 12 + 9 * ((tag >> 1) & 3);
      const start = (tag >> 3) << shift;
      const end = start + (<u64>1 << shift);
      if (end <= base || start >= base + size) continue;
    }
    store<u64>(e, 0, T_TAG);
    removed++;
  }
  return removed;
}

// --- context cache ------------------------------------------------------------------------------------
// Entry (IO_CC_ENTRY_SIZE bytes): u64 key; u64 stamp; u64 root; u64 nested (second-level) root;
// u32 domain; u32 info (CI_*); u32 source id; u32 PASID the requests translate with (ANY: none).
export const C_KEY: u32 = 0;
const C_STAMP: u32 = 8;
export const C_ROOT: u32 = 16;
export const C_NESTED_ROOT: u32 = 24;
export const C_DOMAIN: u32 = 32;
export const C_INFO: u32 = 36;
export const C_SID: u32 = 40;
export const C_PASID: u32 = 44;

@inline function ccDesc(): usize {
  return IOMMU_BASE + IO_CC_DESC;
}

@inline export function ccPresent(): bool {
  return load<u32>(ccDesc() + IO_DESC_PRESENT) != 0;
}

@inline function ccSet(key: u64): usize {
  const desc = ccDesc();
  // The source id's bus and devfn spread over the sets; the PASID (bits 18 and up) too.
  const hash = (key >> 1) ^ (key >> 18);
  const mask = (<u64>1 << load<u32>(desc + AD_SETS_LOG2)) - 1;
  return (
    <usize>load<u32>(desc + AD_BASE) +
    <usize>((hash & mask) * <u64>(load<u32>(desc + AD_WAYS) * IO_CC_ENTRY_SIZE))
  );
}

export function ccLookup(key: u64): usize {
  const desc = ccDesc();
  const ways = load<u32>(desc + AD_WAYS);
  const set = ccSet(key);
  for (let w: u32 = 0; w < ways; w++) {
    const e = set + <usize>(w * IO_CC_ENTRY_SIZE);
    if (load<u64>(e, C_KEY) == key) {
      policyHit(<u32>load<u16>(desc + AD_POLICY), e, C_STAMP);
      return e;
    }
  }
  return 0;
}

/** Copies the resolved context at `from` (an entry-shaped scratch) into the cache under `key`. */
export function ccFill(key: u64, from: usize): usize {
  const desc = ccDesc();
  const ways = load<u32>(desc + AD_WAYS);
  const set = ccSet(key);
  let way = ways;
  for (let w: u32 = 0; w < ways; w++) {
    if (load<u64>(set + <usize>(w * IO_CC_ENTRY_SIZE), C_KEY) == key) {
      way = w;
      break;
    }
  }
  if (way == ways) {
    way = victimWay(set, ways, IO_CC_ENTRY_SIZE, C_STAMP, <u32>load<u16>(desc + AD_POLICY), desc + AD_RNG);
  }
  const e = set + <usize>(way * IO_CC_ENTRY_SIZE);
  memory.copy(e, from, IO_CC_ENTRY_SIZE);
  store<u64>(e, key, C_KEY);
  store<u64>(e, tick(), C_STAMP);
  return e;
}

/**
 * Removes context-cache entries of `domain` (or ANY), of source ids equal to `sid` outside the bits of
 * `sidMask` (sid ANY: any), and of `pasid` (or ANY). Returns how many were removed.
 */
export function ccInvalidate(domain: u32, sid: u32, sidMask: u32, pasid: u32): u32 {
  if (!ccPresent()) return 0;
  const desc = ccDesc();
  const n = (<u32>1 << load<u32>(desc + AD_SETS_LOG2)) * load<u32>(desc + AD_WAYS);
  const array = <usize>load<u32>(desc + AD_BASE);
  let removed: u32 = 0;
  for (let i: u32 = 0; i < n; i++) {
    const e = array + <usize>(i * IO_CC_ENTRY_SIZE);
    if (load<u64>(e, C_KEY) == 0) continue;
    if (domain != ANY && load<u32>(e, C_DOMAIN) != domain) continue;
    if (sid != ANY && (load<u32>(e, C_SID) & ~sidMask) != (sid & ~sidMask)) continue;
    if (pasid != ANY && load<u32>(e, C_PASID) != pasid) continue;
    store<u64>(e, 0, C_KEY);
    removed++;
  }
  return removed;
}

// --- paging-structure cache ------------------------------------------------------------------------
// Non-leaf entries of single-dimension IO walks, tagged by the address bits above their level, the
// level, the domain and the requester: u64 tag = prefix << 4 | level << 1 | 1; u64 next table base |
// rights (IO_R, IO_W, IO_USER) | next level << 3; u32 domain; u32 requester; u64 stamp.
const P_VALUE: u32 = 8;

@inline function pscDesc(): usize {
  return IOMMU_BASE + IO_PSC_DESC;
}

@inline export function ioPscPresent(): bool {
  return load<u32>(pscDesc() + IO_DESC_PRESENT) != 0;
}

/**
 * Set of an entry: the prefix plus the level and the domain, so the directory entries of one address
 * (which share their low prefixes) and those of other domains spread over the sets.
 */
@inline function pscSet(prefix: u64, level: u32, domain: u32): usize {
  const desc = pscDesc();
  const mask = (<u64>1 << load<u32>(desc + AD_SETS_LOG2)) - 1;
  const index = (prefix + <u64>level + <u64>domain) & mask;
  return (
    <usize>load<u32>(desc + AD_BASE) + <usize>(index * <u64>(load<u32>(desc + AD_WAYS) * IO_PSC_ENTRY_SIZE))
  );
}

/** Level of the entry the last successful ioPscLookup found. */
export let ioPscLevel: u32 = 0;

/** The deepest cached entry (levels 2 up to `top`) for `iova` in (domain, requester), or 0. */
export function ioPscLookup(iova: u64, top: u32, domain: u32, requester: u32): usize {
  const desc = pscDesc();
  const ways = load<u32>(desc + AD_WAYS);
  for (let level: u32 = 2; level <= top; level++) {
    const prefix = iova >> (12 + 9 * (<u64>level - 1));
    const tag = (prefix << 4) | (<u64>level << 1) | 1;
    const set = pscSet(prefix, level, domain);
    for (let w: u32 = 0; w < ways; w++) {
      const e = set + <usize>(w * IO_PSC_ENTRY_SIZE);
      if (load<u64>(e, T_TAG) == tag && load<u32>(e, T_DOMAIN) == domain && load<u32>(e, T_REQUESTER) == requester) {
        policyHit(<u32>load<u16>(desc + AD_POLICY), e, T_STAMP);
        ioPscLevel = level;
        return e;
      }
    }
  }
  return 0;
}

@inline export function ioPscValue(e: usize): u64 {
  return load<u64>(e, P_VALUE);
}

export function ioPscFill(iova: u64, level: u32, value: u64, domain: u32, requester: u32): void {
  const desc = pscDesc();
  const prefix = iova >> (12 + 9 * (<u64>level - 1));
  const tag = (prefix << 4) | (<u64>level << 1) | 1;
  const set = pscSet(prefix, level, domain);
  // T_TAG, P_VALUE, T_DOMAIN, T_REQUESTER and T_STAMP are the common tagged layout fillTagged writes.
  fillTagged(set, load<u32>(desc + AD_WAYS), IO_PSC_ENTRY_SIZE, tag, value, domain, requester, <u32>load<u16>(desc + AD_POLICY), desc + AD_RNG);
}

/** Removes the paging-structure cache entries of `domain` (or ANY) and `requester` (or ANY). */
export function ioPscInvalidate(domain: u32, requester: u32): void {
  if (!ioPscPresent()) return;
  const desc = pscDesc();
  const n = (<u32>1 << load<u32>(desc + AD_SETS_LOG2)) * load<u32>(desc + AD_WAYS);
  const array = <usize>load<u32>(desc + AD_BASE);
  for (let i: u32 = 0; i < n; i++) {
    const e = array + <usize>(i * IO_PSC_ENTRY_SIZE);
    if (load<u64>(e, T_TAG) == 0) continue;
    if (domain != ANY && load<u32>(e, T_DOMAIN) != domain) continue;
    if (requester != ANY && load<u32>(e, T_REQUESTER) != requester) continue;
    store<u64>(e, 0, T_TAG);
  }
}
