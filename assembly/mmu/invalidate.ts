// Invalidation instructions and the flushes of control-register writes (SDM 4.10.4, 29.4.3; APM 15.16;
// MODEL.md §8). A guest's own invalidations reach the linear and combined mappings of its VPID under
// every EP4TA; INVEPT reaches guest-physical and combined mappings by root; INVVPID and TLB_CONTROL by
// VPID/ASID.
import {
  M_LMA,
  M_PCIDE,
  M_PGE,
  M_SMEP,
  R_CR3,
  R_CR4,
  R_IN_GUEST,
  R_ROOT_TAG,
  R_VMTAG,
  R_VPID,
  TlbLevel,
} from "../constants";
import { ADDRESS_MASK, CR3_NOFLUSH, CR4_LA57, CR4_PAE, CR4_PCIDE, cpuBlock, isCanonical, mode, pcid, recomputeMode, reg } from "../cpu";
import { CTX_ANY, CTX_ANY_ROOT, CTX_EXACT, CTX_NOT_VPID0, CTX_ROOT, CTX_VPID, knownRootTag } from "./context";
import { npscDesc, pscDesc, pscInvalidate } from "./psc";
import {
  MATCH_ANY_PCID,
  invalidateContext,
  invalidatePage,
  levelDesc,
} from "./tlb";

@inline function vpidOf(cpu: u32): u32 {
  return load<u32>(cpuBlock(cpu) + R_VPID);
}

function tlbPage(cpu: u32, la: u64, targetPcid: u32, globals: bool, filter: u32, value: u32): void {
  invalidatePage(levelDesc(cpu, TlbLevel.L1d), la, targetPcid, globals, filter, value);
  invalidatePage(levelDesc(cpu, TlbLevel.L1i), la, targetPcid, globals, filter, value);
  invalidatePage(levelDesc(cpu, TlbLevel.L2), la, targetPcid, globals, filter, value);
}

function tlbContext(cpu: u32, targetPcid: u32, globals: bool, filter: u32, value: u32): void {
  invalidateContext(levelDesc(cpu, TlbLevel.L1d), targetPcid, globals, filter, value);
  invalidateContext(levelDesc(cpu, TlbLevel.L1i), targetPcid, globals, filter, value);
  invalidateContext(levelDesc(cpu, TlbLevel.L2), targetPcid, globals, filter, value);
}

function pscContext(cpu: u32, targetPcid: u32, filter: u32, value: u32): void {
  for (let level: u32 = 2; level <= 5; level++) {
    pscInvalidate(pscDesc(cpu, level), level, targetPcid, filter, value, false, 0);
  }
}

/** Guest-physical mappings (the nested TLB and nested PSCs), of one root tag or of all. */
function nestedMappings(cpu: u32, filter: u32, rootTag: u32): void {
  invalidateContext(levelDesc(cpu, TlbLevel.Nested), MATCH_ANY_PCID, true, filter, rootTag);
  for (let level: u32 = 2; level <= 5; level++) {
    pscInvalidate(npscDesc(cpu, level), level, MATCH_ANY_PCID, filter, rootTag, false, 0);
  }
}

/**
 * After an EPT violation or misconfiguration (SDM 29.4.3.1), or a #NPF: the guest-physical mappings that
 * would translate `gpa` under the current root, and the combined mappings of `la` in the current
 * context, go.
 */
export function nestedFaultInvalidate(cpu: u32, la: u64, gpa: u64): void {
  const block = cpuBlock(cpu);
  const rootTag = load<u32>(block + R_ROOT_TAG);
  invalidatePage(levelDesc(cpu, TlbLevel.Nested), gpa, MATCH_ANY_PCID, true, CTX_EXACT, rootTag);
  for (let level: u32 = 2; level <= 5; level++) {
    pscInvalidate(npscDesc(cpu, level), level, MATCH_ANY_PCID, CTX_EXACT, rootTag, true, gpa);
  }
  tlbPage(cpu, la, pcid(cpu), true, CTX_EXACT, load<u32>(block + R_VMTAG));
}

/** After a #PF: the entries that would translate `la` go (SDM 4.10.4.1, "page faults invalidate"). */
export function pageFaultInvalidate(cpu: u32, la: u64): void {
  const currentPcid = pcid(cpu);
  const vpid = vpidOf(cpu);
  tlbPage(cpu, la, currentPcid, true, CTX_VPID, vpid);
  for (let level: u32 = 2; level <= 5; level++) {
    pscInvalidate(pscDesc(cpu, level), level, currentPcid, CTX_VPID, vpid, true, la);
  }
}

export function invlpg(cpu: u32, la: u64): void {
  if (!isCanonical(la, mode(cpu))) return;
  const currentPcid = pcid(cpu);
  const vpid = vpidOf(cpu);
  tlbPage(cpu, la, currentPcid, true, CTX_VPID, vpid);
  pscContext(cpu, currentPcid, CTX_VPID, vpid);
}

/** Returns false (#GP) for an invalid type, PCID or address, changing nothing. */
export function invpcid(cpu: u32, type: u32, targetPcid: u32, la: u64): bool {
  if (type > 3 || targetPcid > 0xfff) return false;
  if (type == 0 && !isCanonical(la, mode(cpu))) return false;
  // Without PCIDs only PCID 0 exists, so naming another in a single-context type is #GP.
  if (type <= 1 && targetPcid != 0 && (mode(cpu) & M_PCIDE) == 0) return false;
  const vpid = vpidOf(cpu);
  if (type == 0) {
    tlbPage(cpu, la, targetPcid, false, CTX_VPID, vpid);
    pscContext(cpu, targetPcid, CTX_VPID, vpid);
  } else if (type == 1) {
    tlbContext(cpu, targetPcid, false, CTX_VPID, vpid);
    pscContext(cpu, targetPcid, CTX_VPID, vpid);
  } else {
    tlbContext(cpu, MATCH_ANY_PCID, type == 2, CTX_VPID, vpid);
    pscContext(cpu, MATCH_ANY_PCID, CTX_VPID, vpid);
  }
  return true;
}

/** Everything the CPU's current VPID may have cached (what a guest can flush). */
function flushVpid(cpu: u32): void {
  const vpid = vpidOf(cpu);
  tlbContext(cpu, MATCH_ANY_PCID, true, CTX_VPID, vpid);
  pscContext(cpu, MATCH_ANY_PCID, CTX_VPID, vpid);
}

/** Every TLB, PSC and nested entry of the CPU (a host helper, not an instruction). */
export function flushAll(cpu: u32): void {
  tlbContext(cpu, MATCH_ANY_PCID, true, CTX_ANY, 0);
  pscContext(cpu, MATCH_ANY_PCID, CTX_ANY, 0);
  nestedMappings(cpu, CTX_ANY, 0);
}

export function movCr3(cpu: u32, value: u64): void {
  const block = cpuBlock(cpu);
  store<u64>(block + R_CR3, value & ~CR3_NOFLUSH);
  recomputeMode(cpu);
  const vpid = vpidOf(cpu);
  if ((mode(cpu) & M_PCIDE) == 0) {
    tlbContext(cpu, MATCH_ANY_PCID, false, CTX_VPID, vpid);
    pscContext(cpu, MATCH_ANY_PCID, CTX_VPID, vpid);
  } else if ((value & CR3_NOFLUSH) == 0) {
    const newPcid = pcid(cpu);
    tlbContext(cpu, newPcid, false, CTX_VPID, vpid);
    pscContext(cpu, newPcid, CTX_VPID, vpid);
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
    flushVpid(cpu);
  } else if ((changed & M_SMEP) != 0 && (newMode & M_SMEP) != 0) {
    // Globals belong to every PCID, so they go with the current one's entries.
    const vpid = vpidOf(cpu);
    tlbContext(cpu, oldPcid, true, CTX_VPID, vpid);
    pscContext(cpu, oldPcid, CTX_VPID, vpid);
  }
  return true;
}

/**
 * INVEPT (SDM 31.3, 29.4.3.1): type 1 removes the guest-physical and combined mappings of the EP4TA in
 * `eptp` (bits 51:12); type 2 those of every EP4TA. Other types fail (VMfail), changing nothing.
 */
export function invept(cpu: u32, type: u32, eptp: u64): bool {
  if (type == 1) {
    const tag = knownRootTag(eptp & ADDRESS_MASK);
    if (tag == 0) return true;
    nestedMappings(cpu, CTX_EXACT, tag);
    tlbContext(cpu, MATCH_ANY_PCID, true, CTX_ROOT, tag);
    pscContext(cpu, MATCH_ANY_PCID, CTX_ROOT, tag);
    return true;
  }
  if (type == 2) {
    nestedMappings(cpu, CTX_ANY, 0);
    tlbContext(cpu, MATCH_ANY_PCID, true, CTX_ANY_ROOT, 0);
    pscContext(cpu, MATCH_ANY_PCID, CTX_ANY_ROOT, 0);
    return true;
  }
  return false;
}

/**
 * INVVPID (SDM 31.3, 29.4.3.3): linear and combined mappings of a VPID under every EP4TA. Type 0 one
 * linear address (globals too), 1 the whole VPID, 2 every VPID but 0, 3 the VPID but its globals.
 * VPID 0 with types 0, 1 and 3, a non-canonical address with type 0, or another type fail.
 */
export function invvpid(cpu: u32, type: u32, vpid: u32, la: u64): bool {
  if (type > 3 || vpid > 0xffff) return false;
  if (type != 2 && vpid == 0) return false;
  if (type == 0) {
    if (!isCanonical(la, mode(cpu))) return false;
    tlbPage(cpu, la, MATCH_ANY_PCID, true, CTX_VPID, vpid);
    pscContext(cpu, MATCH_ANY_PCID, CTX_VPID, vpid);
  } else if (type == 2) {
    tlbContext(cpu, MATCH_ANY_PCID, true, CTX_NOT_VPID0, 0);
    pscContext(cpu, MATCH_ANY_PCID, CTX_NOT_VPID0, 0);
  } else {
    tlbContext(cpu, MATCH_ANY_PCID, type == 1, CTX_VPID, vpid);
    pscContext(cpu, MATCH_ANY_PCID, CTX_VPID, vpid);
  }
  return true;
}

/**
 * The VMCB TLB_CONTROL field applied at VMRUN (APM 15.16.1): 0 nothing, 1 every ASID, 3 the guest's
 * ASID, 7 the guest's ASID except global entries. The flushes cover cached nested translations too.
 */
export function tlbControl(cpu: u32, value: u32): bool {
  const asid = vpidOf(cpu);
  const rootTag = load<u32>(cpuBlock(cpu) + R_ROOT_TAG);
  if (value == 0) return true;
  if (value == 1) {
    flushAll(cpu);
    return true;
  }
  if (value == 3 || value == 7) {
    tlbContext(cpu, MATCH_ANY_PCID, value == 3, CTX_VPID, asid);
    pscContext(cpu, MATCH_ANY_PCID, CTX_VPID, asid);
    nestedMappings(cpu, CTX_EXACT, rootTag);
    return true;
  }
  return false;
}

/**
 * A VM exit and the VM entry that follows it. Without VPIDs (VPID 0) both flush the linear and combined
 * mappings of VPID 0 (SDM 29.4.3.1), so every exit costs the guest its TLB contents.
 */
export function vmTransition(cpu: u32): void {
  const block = cpuBlock(cpu);
  if (load<u32>(block + R_IN_GUEST) == 0 || load<u32>(block + R_VPID) != 0) return;
  tlbContext(cpu, MATCH_ANY_PCID, true, CTX_VPID, 0);
  pscContext(cpu, MATCH_ANY_PCID, CTX_VPID, 0);
}
