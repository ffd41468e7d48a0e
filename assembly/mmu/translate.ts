// One memory access through the MMU (docs/MODEL.md §4): canonical check, L1 then L2 TLB, and a walk
// when they miss, when a write meets a clean entry (a D-bit assist: the walk sets D and the fill
// updates the entry in place), or when a cached entry denies the access.
import {
  AccessKind,
  KIND_MASK,
  KIND_IMPLICIT,
  R_PKRS,
  R_PKRU,
  R_VMTAG,
  TL_LATENCY,
  FaultType,
  TlbLevel,
  WalkFault,
} from "../constants";
import { cpuBlock, isCanonical, mode, pcid, reg } from "../cpu";
import { x86AccessCheck } from "../formats/x86";
import { rememberHit } from "../memo";
import {
  S_CYCLES,
  S_D_ASSISTS,
  S_FAULT_GP,
  S_FAULT_NOT_PRESENT,
  S_FAULT_PKEY,
  S_FAULT_PROTECTION,
  S_FAULT_RESERVED,
  S_FAULTED_NESTED_REFS,
  S_FAULTED_WALK_REFS,
  S_FAULTED_WALKS,
  S_NESTED_REFS,
  S_PAGES,
  S_TLB,
  S_WALK_REFS,
  S_WALKS,
  add,
  bump,
} from "../stats";
import { nestedFaultInvalidate, pageFaultInvalidate } from "./invalidate";
import {
  A_DIRTY,
  ATTR_MASK,
  DENY_CLEAN,
  DENY_R,
  DENY_W,
  DENY_X,
  E_FRAME,
  E_PCID,
  PCID_MASK,
  entrySizeCode,
  fill,
  levelDesc,
  levelPresent,
  lookup,
  lookupLru,
} from "./tlb";
import {
  walkAttrs,
  walkCycles,
  walkDeny,
  walkError,
  walkFault,
  walkFrame,
  walkGpa,
  walkNestedRefs,
  walkRefs,
  walkSizeCode,
  walkX86,
} from "./walk";

// Outputs of the last access.
export let accessPa: u64 = 0;
/** #PF error code, EPT exit qualification or #NPF EXITINFO1. */
export let accessError: u64 = 0;
/** Guest-physical address of a nested fault. */
export let accessGpa: u64 = 0;
export let accessSizeCode: u32 = 0;
export let accessRefs: u32 = 0;
export let accessCycles: u32 = 0;

/**
 * Translates one access. `countLookups` is false for the retry of a record whose fault the software
 * fixed, so TLB statistics count each record's lookups once.
 */
export function access(cpu: u32, la: u64, kindByte: u32, countLookups: bool): u32 {
  const cpuMode = mode(cpu);
  if (!isCanonical(la, cpuMode)) {
    bump(S_FAULT_GP);
    accessError = 0;
    accessRefs = 0;
    accessCycles = 0;
    return FaultType.GeneralProtection;
  }
  const kind = kindByte & KIND_MASK;
  const implicit = (kindByte & KIND_IMPLICIT) != 0;
  const isWrite = kind == AccessKind.Write || kind == AccessKind.ShadowStackWrite;
  const currentPcid = pcid(cpu);
  const vmTag = load<u32>(cpuBlock(cpu) + R_VMTAG);
  const l1Level = kind == AccessKind.Fetch ? TlbLevel.L1i : TlbLevel.L1d;
  const l1 = levelDesc(cpu, l1Level);
  const l2 = levelDesc(cpu, TlbLevel.L2);
  let cycles: u32 = 0;
  let entry: usize = 0;
  let fromL2 = false;
  let assist = false;

  if (levelPresent(l1)) {
    cycles += load<u32>(l1 + TL_LATENCY);
    entry = lookup(l1, la, currentPcid, vmTag);
    if (countLookups) bump(S_TLB + (l1Level << 1) + (entry != 0 ? 0 : 1));
  }
  if (entry == 0 && levelPresent(l2)) {
    cycles += load<u32>(l2 + TL_LATENCY);
    entry = lookup(l2, la, currentPcid, vmTag);
    if (countLookups) bump(S_TLB + (TlbLevel.L2 << 1) + (entry != 0 ? 0 : 1));
    fromL2 = entry != 0;
  }
  if (entry != 0) {
    const word = load<u64>(entry, E_FRAME);
    const attrs = word & ATTR_MASK;
    const deny = load<u32>(entry, E_PCID) & ~PCID_MASK;
    // What the nested dimension denies this kind of access (a write also needs the nested D flag).
    const deniedByNested = kind == AccessKind.Fetch ? DENY_X : isWrite ? DENY_W | DENY_CLEAN : DENY_R;
    const denied = x86AccessCheck(kind, implicit, cpuMode, attrs, <u32>reg(cpu, R_PKRU), <u32>reg(cpu, R_PKRS));
    // A write allowed by every right but meeting a clean entry (guest D, or the nested D flag) is a
    // D-bit assist: the walk below sets D, and its fills update the entries in place.
    const clean = isWrite && ((attrs & A_DIRTY) == 0 || (deny & DENY_CLEAN) != 0);
    if (denied == 0 && !clean && (deny & deniedByNested) == 0) {
      const sizeCode = entrySizeCode(entry);
      const frame = word & ~ATTR_MASK;
      if (!fromL2 && kindByte <= <u32>AccessKind.Fetch) rememberHit(cpu, l1Level, la, entry, kind, lookupLru);
      if (fromL2 && levelPresent(l1)) fill(l1, la, sizeCode, frame, attrs, currentPcid | deny, vmTag);
      accessPa = frame | (la & ((<u64>1 << (12 + 9 * <u64>sizeCode)) - 1));
      accessSizeCode = sizeCode;
      accessError = 0;
      accessRefs = 0;
      accessCycles = cycles;
      add(S_CYCLES, cycles);
      return FaultType.None;
    }
    assist = clean && denied == 0 && (deny & deniedByNested & ~DENY_CLEAN) == 0;
  }

  walkX86(cpu, la, kind, implicit);
  cycles += walkCycles;
  const refs = walkRefs + walkNestedRefs;
  accessRefs = refs;
  accessCycles = cycles;
  add(S_CYCLES, cycles);
  if (walkFault != WalkFault.Ok) {
    bump(S_FAULTED_WALKS);
    add(S_FAULTED_WALK_REFS, refs);
    add(S_FAULTED_NESTED_REFS, walkNestedRefs);
    accessError = walkError;
    accessGpa = walkGpa;
    // A full page-modification log changed nothing: the exit has no fault to invalidate for.
    if (walkFault == WalkFault.PmlFull) return FaultType.PmlFull;
    if (walkFault >= <u32>WalkFault.EptViolation) {
      nestedFaultInvalidate(cpu, la, walkGpa);
      return walkFault == WalkFault.EptViolation
        ? FaultType.EptViolation
        : walkFault == WalkFault.EptMisconfig
          ? FaultType.EptMisconfig
          : FaultType.NestedPageFault;
    }
    if (walkFault == WalkFault.NotPresent) bump(S_FAULT_NOT_PRESENT);
    else if (walkFault == WalkFault.Reserved) bump(S_FAULT_RESERVED);
    else {
      bump(S_FAULT_PROTECTION);
      if ((walkError & (1 << 5)) != 0) bump(S_FAULT_PKEY);
    }
    pageFaultInvalidate(cpu, la);
    return FaultType.PageFault;
  }
  bump(S_WALKS);
  if (assist) bump(S_D_ASSISTS);
  add(S_WALK_REFS, refs);
  add(S_NESTED_REFS, walkNestedRefs);
  bump(S_PAGES + walkSizeCode);
  const pcidWord = currentPcid | walkDeny;
  if (levelPresent(l2)) fill(l2, la, walkSizeCode, walkFrame, walkAttrs, pcidWord, vmTag);
  if (levelPresent(l1)) fill(l1, la, walkSizeCode, walkFrame, walkAttrs, pcidWord, vmTag);
  accessPa = walkFrame | (la & ((<u64>1 << (12 + 9 * <u64>walkSizeCode)) - 1));
  accessSizeCode = walkSizeCode;
  accessError = 0;
  return FaultType.None;
}
