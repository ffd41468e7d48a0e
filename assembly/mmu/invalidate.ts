// Invalidation instructions and the flushes of control-register writes (SDM 4.10.4; MODEL.md §8).
import { M_LMA, M_PCIDE, M_PGE, M_SMEP, R_CR3, R_CR4, R_VMTAG } from "../constants";
import { CR3_NOFLUSH, CR4_LA57, CR4_PAE, CR4_PCIDE, cpuBlock, isCanonical, mode, pcid, recomputeMode, reg } from "../cpu";
import { pscDesc, pscInvalidate } from "./psc";
import { LEVEL_L1D, LEVEL_L1I, LEVEL_L2, MATCH_ANY_PCID, invalidateContext, invalidatePage, levelDesc } from "./tlb";

@inline function vmTagOf(cpu: u32): u32 {
  return load<u32>(cpuBlock(cpu) + R_VMTAG);
}

function tlbPage(cpu: u32, la: u64, targetPcid: u32, globals: bool): void {
  const vmTag = vmTagOf(cpu);
  invalidatePage(levelDesc(cpu, LEVEL_L1D), la, targetPcid, vmTag, globals);
  invalidatePage(levelDesc(cpu, LEVEL_L1I), la, targetPcid, vmTag, globals);
  invalidatePage(levelDesc(cpu, LEVEL_L2), la, targetPcid, vmTag, globals);
}

function tlbContext(cpu: u32, targetPcid: u32, globals: bool): void {
  const vmTag = vmTagOf(cpu);
  invalidateContext(levelDesc(cpu, LEVEL_L1D), targetPcid, vmTag, globals, false);
  invalidateContext(levelDesc(cpu, LEVEL_L1I), targetPcid, vmTag, globals, false);
  invalidateContext(levelDesc(cpu, LEVEL_L2), targetPcid, vmTag, globals, false);
}

function pscContext(cpu: u32, targetPcid: u32): void {
  const vmTag = vmTagOf(cpu);
  for (let level: u32 = 2; level <= 5; level++) {
    pscInvalidate(pscDesc(cpu, level), level, targetPcid, vmTag, false, 0);
  }
}

/** After a #PF: the entries that would translate `la` go (SDM 4.10.4.1, "page faults invalidate"). */
export function pageFaultInvalidate(cpu: u32, la: u64): void {
  const currentPcid = pcid(cpu);
  tlbPage(cpu, la, currentPcid, true);
  const vmTag = vmTagOf(cpu);
  for (let level: u32 = 2; level <= 5; level++) {
    pscInvalidate(pscDesc(cpu, level), level, currentPcid, vmTag, true, la);
  }
}

export function invlpg(cpu: u32, la: u64): void {
  if (!isCanonical(la, mode(cpu))) return;
  const currentPcid = pcid(cpu);
  tlbPage(cpu, la, currentPcid, true);
  pscContext(cpu, currentPcid);
}

/** Returns false (#GP) for an invalid type, PCID or address, changing nothing. */
export function invpcid(cpu: u32, type: u32, targetPcid: u32, la: u64): bool {
  if (type > 3 || targetPcid > 0xfff) return false;
  if (type == 0 && !isCanonical(la, mode(cpu))) return false;
  // Without PCIDs only PCID 0 exists, so naming another in a single-context type is #GP.
  if (type <= 1 && targetPcid != 0 && (mode(cpu) & M_PCIDE) == 0) return false;
  if (type == 0) {
    tlbPage(cpu, la, targetPcid, false);
    pscContext(cpu, targetPcid);
  } else if (type == 1) {
    tlbContext(cpu, targetPcid, false);
    pscContext(cpu, targetPcid);
  } else {
    tlbContext(cpu, MATCH_ANY_PCID, type == 2);
    pscContext(cpu, MATCH_ANY_PCID);
  }
  return true;
}

export function flushAll(cpu: u32): void {
  tlbContext(cpu, MATCH_ANY_PCID, true);
  pscContext(cpu, MATCH_ANY_PCID);
}

export function movCr3(cpu: u32, value: u64): void {
  const block = cpuBlock(cpu);
  store<u64>(block + R_CR3, value & ~CR3_NOFLUSH);
  recomputeMode(cpu);
  if ((mode(cpu) & M_PCIDE) == 0) {
    tlbContext(cpu, MATCH_ANY_PCID, false);
    pscContext(cpu, MATCH_ANY_PCID);
  } else if ((value & CR3_NOFLUSH) == 0) {
    const newPcid = pcid(cpu);
    tlbContext(cpu, newPcid, false);
    pscContext(cpu, newPcid);
  }
}

/** Returns false (#GP) when the new value is not allowed, changing nothing. */
export function movCr4(cpu: u32, value: u64): bool {
  const block = cpuBlock(cpu);
  const old = load<u64>(block + R_CR4);
  const oldMode = mode(cpu);
  const settingPcide = (value & CR4_PCIDE) != 0 && (old & CR4_PCIDE) == 0;
  if (settingPcide && ((oldMode & M_LMA) == 0 || (reg(cpu, R_CR3) & 0xfff) != 0)) return false;
  if (((value ^ old) & CR4_LA57) != 0) return false;
  // Long mode needs PAE: clearing it with EFER.LMA=1 is #GP.
  if ((oldMode & M_LMA) != 0 && (value & CR4_PAE) == 0) return false;
  const oldPcid = pcid(cpu);
  store<u64>(block + R_CR4, value);
  recomputeMode(cpu);
  const newMode = mode(cpu);
  const changed = oldMode ^ newMode;
  if ((changed & M_PGE) != 0 || ((oldMode & M_PCIDE) != 0 && (newMode & M_PCIDE) == 0)) {
    flushAll(cpu);
  } else if ((changed & M_SMEP) != 0 && (newMode & M_SMEP) != 0) {
    // Globals belong to every PCID, so they go with the current one's entries.
    tlbContext(cpu, oldPcid, true);
    pscContext(cpu, oldPcid);
  }
  return true;
}
