// Paging-structure caches (SDM 4.10.3): per CPU one cache for each non-leaf level (PML5, PML4, PDPTE,
// PDE). An entry maps the linear-address bits above a level to the physical base of the next table,
// with the rights accumulated so far, so a hit lets the walk skip the levels above.
import {
  AD_BASE,
  AD_POLICY,
  AD_RNG,
  AD_SETS_LOG2,
  AD_WAYS,
  CPU_NPSC,
  CPU_PSC,
  PD_PRESENT,
  PSC_DESC_SIZE,
  PSC_ENTRY_SIZE,
} from "../constants";
import { cpuBlock } from "../cpu";
import { S_NPSC, S_PSC, bump } from "../stats";
import { contextMatches } from "./context";
import { fillTagged, policyHit } from "./setassoc";
import { E_FRAME, E_PCID, E_STAMP, E_TAG, E_VMTAG, LA_MASK, MATCH_ANY_PCID } from "./tlb";

/** Descriptor of the cache for paging level `level` (5..2). */
@inline export function pscDesc(cpu: u32, level: u32): usize {
  return cpuBlock(cpu) + CPU_PSC + (5 - level) * PSC_DESC_SIZE;
}

/** Descriptor of the nested dimension's cache for nested level `level` (5..2). */
@inline export function npscDesc(cpu: u32, level: u32): usize {
  return cpuBlock(cpu) + CPU_NPSC + (5 - level) * PSC_DESC_SIZE;
}

@inline export function pscPresent(desc: usize): bool {
  return load<u32>(desc + PD_PRESENT) != 0;
}

/** Level of the entry the last successful probePsc found. */
export let pscHitLevel: u32 = 0;

/**
 * Probes one dimension's paging-structure caches deepest first (a PDE-cache hit leaves the fewest
 * references), counting a miss for each cache passed and a hit for the one that answers. Returns the
 * hit entry, or 0.
 */
@inline export function probePsc(cpu: u32, nested: bool, address: u64, top: u32, pcidTag: u32, contextTag: u32): usize {
  for (let cached: u32 = 2; cached <= top; cached++) {
    const desc = nested ? npscDesc(cpu, cached) : pscDesc(cpu, cached);
    if (!pscPresent(desc)) continue;
    const e = pscLookup(desc, address, cached, pcidTag, contextTag);
    const counter = (nested ? S_NPSC : S_PSC) + ((5 - cached) << 1);
    if (e != 0) {
      bump(counter);
      pscHitLevel = cached;
      return e;
    }
    bump(counter + 1);
  }
  return 0;
}

/** The linear-address bits a level-`level` entry translates: LA[56 : 12 + 9(level-1)]. */
@inline export function pscTag(la: u64, level: u32): u64 {
  return (la & LA_MASK) >> (12 + 9 * (<u64>level - 1));
}

@inline function setBaseOf(desc: usize, tag: u64): usize {
  const mask = (<u64>1 << load<u32>(desc + AD_SETS_LOG2)) - 1;
  return <usize>load<u32>(desc + AD_BASE) + <usize>((tag & mask) * <u64>(load<u32>(desc + AD_WAYS) * PSC_ENTRY_SIZE));
}

/** The entry for `la` at `level` in the given context, or 0. */
export function pscLookup(desc: usize, la: u64, level: u32, pcid: u32, vmTag: u32): usize {
  const tag = pscTag(la, level);
  const key = (tag << 1) | 1;
  const set = setBaseOf(desc, tag);
  const end = set + <usize>(load<u32>(desc + AD_WAYS) * PSC_ENTRY_SIZE);
  for (let e = set; e < end; e += PSC_ENTRY_SIZE) {
    if (load<u64>(e, E_TAG) == key && load<u32>(e, E_PCID) == pcid && load<u32>(e, E_VMTAG) == vmTag) {
      policyHit(<u32>load<u16>(desc + AD_POLICY), e, E_STAMP);
      return e;
    }
  }
  return 0;
}

/** `value` is the next-table base with the accumulated rights in its low bits (A_RW, A_US, A_XD). */
export function pscFill(desc: usize, la: u64, level: u32, value: u64, pcid: u32, vmTag: u32): void {
  const tag = pscTag(la, level);
  const key = (tag << 1) | 1;
  const set = setBaseOf(desc, tag);
  // E_TAG, E_FRAME, E_PCID, E_VMTAG and E_STAMP are the common tagged layout fillTagged writes.
  fillTagged(set, load<u32>(desc + AD_WAYS), PSC_ENTRY_SIZE, key, value, pcid, vmTag, <u32>load<u16>(desc + AD_POLICY), desc + AD_RNG);
}

/**
 * Removes every entry with `pcid` (or any) in the contexts the filter selects; or only those tagging
 * `la` when `onlyLa`.
 */
export function pscInvalidate(
  desc: usize,
  level: u32,
  pcid: u32,
  filter: u32,
  value: u32,
  onlyLa: bool,
  la: u64,
): void {
  if (!pscPresent(desc)) return;
  const n = (<u32>1 << load<u32>(desc + AD_SETS_LOG2)) * load<u32>(desc + AD_WAYS);
  const base = <usize>load<u32>(desc + AD_BASE);
  const key = (pscTag(la, level) << 1) | 1;
  for (let i: u32 = 0; i < n; i++) {
    const e = base + <usize>(i * PSC_ENTRY_SIZE);
    const tag = load<u64>(e, E_TAG);
    if (tag == 0 || !contextMatches(load<u32>(e, E_VMTAG), filter, value)) continue;
    if (pcid != MATCH_ANY_PCID && load<u32>(e, E_PCID) != pcid) continue;
    if (onlyLa && tag != key) continue;
    store<u64>(e, 0, E_TAG);
  }
}
