// Replacement shared by every set-associative structure in the core: TLB arrays, paging-structure
// caches and the data-cache model. Entries keep their tag word at offset 0 (0 = invalid).
import { Policy } from "../constants";

/** One stamp clock for the whole core. Only the order of stamps inside one set matters, and a single
 * monotonic counter orders them exactly as per-structure counters would. */
export let clock: u64 = 0;

@inline export function tick(): u64 {
  return ++clock;
}

export function resetClock(): void {
  clock = 0;
}

@inline function xorshift64(stateAddress: usize): u64 {
  let s = load<u64>(stateAddress);
  s ^= s << 13;
  s ^= s >> 7;
  s ^= s << 17;
  store<u64>(stateAddress, s);
  return s;
}

export function splitmix64(z: u64): u64 {
  z += 0x9e3779b97f4a7c15;
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9;
  z = (z ^ (z >> 27)) * 0x94d049bb133111eb;
  return z ^ (z >> 31);
}

/**
 * A hit on `entry` (stamp at `stampOffset`) in an array of `policy`: LRU refreshes the stamp, its
 * recency; FIFO and random keep the fill stamp, so they evict in fill order. Returns whether it moved.
 */
@inline export function policyHit(policy: u32, entry: usize, stampOffset: u32): bool {
  if (policy != Policy.Lru) return false;
  store<u64>(entry + stampOffset, tick());
  return true;
}

/**
 * Way to replace in the set at `setBase`: the lowest invalid way, else by policy. LRU and FIFO
 * differ only in whether hits refresh the stamp, so both take the smallest stamp here. Every stamp is
 * a tick, 1 or more, so an invalid way counts as stamp 0: older than any entry, and the lowest of them
 * wins ties. The oldest is picked with select rather than a branch the stamps decide.
 */
export function victimWay(
  setBase: usize,
  ways: u32,
  entrySize: u32,
  stampOffset: u32,
  policy: u32,
  rngAddress: usize,
): u32 {
  let best: u32 = 0;
  let bestStamp: u64 = U64.MAX_VALUE;
  for (let w: u32 = 0; w < ways; w++) {
    const entry = setBase + <usize>(w * entrySize);
    const s = select<u64>(0, load<u64>(entry + stampOffset), load<u64>(entry) == 0);
    const older = s < bestStamp;
    bestStamp = select<u64>(s, bestStamp, older);
    best = select<u32>(w, best, older);
  }
  // Random replaces a random way once every way is valid.
  if (bestStamp != 0 && policy == Policy.Random) return <u32>((xorshift64(rngAddress) >> 32) % <u64>ways);
  return best;
}

/** Set in what fillWay returns when the set already holds the entry (entries are 8-byte aligned). */
export const ENTRY_HELD: usize = 1;

/**
 * The entry a fill of the common tagged layout (u64 key at 0, u64 value at 8, two u32 tags at 16 and 20,
 * u64 stamp at 24) writes in the set at `set`, from one pass over it: the entry that already holds
 * `key`, `tagA` under `maskA`, `tagB` and `valueBits` under `valueMask`, with ENTRY_HELD set; else the
 * one victimWay would choose.
 */
@inline export function fillWay(
  set: usize,
  ways: u32,
  entrySize: u32,
  key: u64,
  tagA: u32,
  maskA: u32,
  tagB: u32,
  valueMask: u64,
  valueBits: u64,
  policy: u32,
  rngAddress: usize,
): usize {
  let victim: usize = set;
  let oldest: u64 = U64.MAX_VALUE;
  const end = set + <usize>(ways * entrySize);
  for (let e = set; e < end; e += entrySize) {
    const tag = load<u64>(e);
    if (
      tag == key &&
      (load<u32>(e, 16) & maskA) == tagA &&
      load<u32>(e, 20) == tagB &&
      (load<u64>(e, 8) & valueMask) == valueBits
    ) {
      return e | ENTRY_HELD;
    }
    // victimWay's rule: an invalid way counts as stamp 0.
    const stamp = select<u64>(0, load<u64>(e, 24), tag == 0);
    const older = stamp < oldest;
    oldest = select<u64>(stamp, oldest, older);
    victim = select<usize>(e, victim, older);
  }
  if (oldest != 0 && policy == Policy.Random) {
    return set + <usize>(<u32>((xorshift64(rngAddress) >> 32) % <u64>ways) * entrySize);
  }
  return victim;
}

/**
 * Fills an entry of the common tagged layout into the set at `set`: over the way that already holds the
 * same key and tags, else over the policy's victim. The CPUs' and the IOMMU's paging-structure caches and
 * the IOTLB share it.
 */
export function fillTagged(
  set: usize,
  ways: u32,
  entrySize: u32,
  key: u64,
  value: u64,
  tagA: u32,
  tagB: u32,
  policy: u32,
  rngAddress: usize,
): void {
  const e = fillWay(set, ways, entrySize, key, tagA, 0xffffffff, tagB, 0, 0, policy, rngAddress) & ~ENTRY_HELD;
  store<u64>(e, key);
  store<u64>(e, value, 8);
  store<u32>(e, tagA, 16);
  store<u32>(e, tagB, 20);
  store<u64>(e, tick(), 24);
}
