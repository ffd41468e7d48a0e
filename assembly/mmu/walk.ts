// The radix page walk (SDM 4.5): from CR3, or from the deepest paging-structure-cache hit, down to
// the leaf, checking each entry, then the access rights, then setting A/D bits. Faults are results:
// the walk leaves them in `walkFault`/`walkError` for the caller to turn into an exit.
import {
  CFG_GBPAGES,
  CFG_MAXPHYADDR,
  CFG_PSC_LATENCY,
  CTRL_BASE,
  KIND_SS_WRITE,
  KIND_WRITE,
  M_LA57,
  M_NXE,
  M_PGE,
  R_CR3,
  R_PSC_ANY,
  R_PKRS,
  R_PKRU,
  R_VMTAG,
  WALK_SCRATCH,
  WALK_SLOT,
} from "../constants";
import { ADDRESS_MASK, cpuBlock, mode, pcid, reg } from "../cpu";
import {
  PF_PK,
  PTE_A,
  PTE_D,
  PTE_G,
  PTE_P,
  PTE_RW,
  PTE_US,
  PTE_XD,
  physReservedMask,
  x86AccessCheck,
  x86ErrorCode,
  x86IsLeaf,
  x86Reserved,
} from "../formats/x86";
import { readPhys64, writeBacked64 } from "../phys";
import { S_AD_UPDATES, S_PSC, bump } from "../stats";
import { priceReference } from "../timing/cache";
import { pscDesc, pscFill, pscLookup, pscPresent } from "./psc";
import { A_DIRTY, A_GLOBAL, A_PKEY_SHIFT, A_RW, A_SS, A_US, A_XD, E_FRAME } from "./tlb";

export const WALK_OK: u32 = 0;
export const WALK_NOT_PRESENT: u32 = 1;
export const WALK_RESERVED: u32 = 2;
export const WALK_PROTECTION: u32 = 3;

// Outputs of the last walk.
export let walkFault: u32 = 0;
export let walkError: u32 = 0;
/** Frame of the whole page (aligned to its size). */
export let walkFrame: u64 = 0;
/** 0 = 4K, 1 = 2M, 2 = 1G. */
export let walkSizeCode: u32 = 0;
/** TLB attribute bits for the translation (A_* and the pkey). */
export let walkAttrs: u64 = 0;
export let walkRefs: u32 = 0;
export let walkCycles: u32 = 0;

@inline function slot(i: u32): usize {
  return CTRL_BASE + WALK_SCRATCH + i * WALK_SLOT;
}

/**
 * Rights accumulate as A_RW/A_US (AND over levels) and A_XD (OR), in TLB attribute form. A_RW and A_US
 * are bits 0 and 1, so R/W and U/S (entry bits 1 and 2) move into place with one shift; `xdMask` is
 * A_XD when EFER.NXE is set, else 0.
 */
@inline function combine(sofar: u64, e: u64, xdMask: u64): u64 {
  return (sofar & ((e >> 1) & (A_RW | A_US))) | ((sofar | (e >> 61)) & xdMask);
}

/** x86-64 4- or 5-level walk of `la` for CPU `cpu`. */
export function walkX86(cpu: u32, la: u64, kind: u32, implicit: bool): void {
  const cpuMode = mode(cpu);
  const block = cpuBlock(cpu);
  const currentPcid = pcid(cpu);
  const vmTag = load<u32>(block + R_VMTAG);
  const top: u32 = (cpuMode & M_LA57) != 0 ? 5 : 4;
  const addressReserved = physReservedMask(load<u32>(CTRL_BASE + CFG_MAXPHYADDR));
  const gbPages = load<u32>(CTRL_BASE + CFG_GBPAGES) != 0;

  const xdMask: u64 = (cpuMode & M_NXE) != 0 ? A_XD : 0;
  let cycles: u32 = 0;
  let refs: u32 = 0;
  let level = top;
  let base = reg(cpu, R_CR3) & ADDRESS_MASK;
  let rights: u64 = A_RW | A_US;

  // Deepest paging-structure cache first: a PDE-cache hit leaves one reference to make.
  for (let cached: u32 = 2; cached <= top && load<u32>(block + R_PSC_ANY) != 0; cached++) {
    const desc = pscDesc(cpu, cached);
    if (!pscPresent(desc)) continue;
    const e = pscLookup(desc, la, cached, currentPcid, vmTag);
    if (e != 0) {
      bump(S_PSC + ((5 - cached) << 1));
      const value = load<u64>(e, E_FRAME);
      base = value & ADDRESS_MASK;
      rights = value & (A_RW | A_US | A_XD);
      level = cached - 1;
      cycles += load<u32>(CTRL_BASE + CFG_PSC_LATENCY);
      break;
    }
    bump(S_PSC + ((5 - cached) << 1) + 1);
  }

  let used: u32 = 0;
  let e: u64 = 0;
  let accessedAll: u64 = PTE_A;
  let nonLeafWritable = (rights & A_RW) != 0;
  while (true) {
    const entryAddress = base | (((la >> (12 + 9 * (<u64>level - 1))) & 0x1ff) << 3);
    e = readPhys64(entryAddress);
    refs++;
    cycles += priceReference(cpu, entryAddress);
    const s = slot(used++);
    store<u64>(s, entryAddress);
    store<u64>(s, e, 8);
    if ((e & PTE_P) == 0) {
      finishFault(WALK_NOT_PRESENT, x86ErrorCode(kind, implicit, cpuMode, false, false), refs, cycles);
      return;
    }
    if (x86Reserved(e, level, cpuMode, addressReserved, gbPages)) {
      finishFault(WALK_RESERVED, x86ErrorCode(kind, implicit, cpuMode, true, true), refs, cycles);
      return;
    }
    rights = combine(rights, e, xdMask);
    accessedAll &= e;
    store<u64>(s, rights, 16);
    if (x86IsLeaf(e, level)) break;
    if ((e & PTE_RW) == 0) nonLeafWritable = false;
    base = e & ADDRESS_MASK;
    level--;
  }

  const sizeCode = level - 1;
  let attrs = rights;
  if ((e & PTE_G) != 0 && (cpuMode & M_PGE) != 0) attrs |= A_GLOBAL;
  if (nonLeafWritable && (e & PTE_RW) == 0 && (e & PTE_D) != 0) attrs |= A_SS;
  attrs |= ((e >> 59) & 0xf) << A_PKEY_SHIFT;
  const check = x86AccessCheck(kind, implicit, cpuMode, attrs, <u32>reg(cpu, R_PKRU), <u32>reg(cpu, R_PKRS));
  if (check != 0) {
    finishFault(
      WALK_PROTECTION,
      x86ErrorCode(kind, implicit, cpuMode, true, false) | (check & PF_PK),
      refs,
      cycles,
    );
    return;
  }

  // A in every entry this walk read, D in the leaf on a write; each update is a locked RMW of the line.
  const isWrite = kind == KIND_WRITE || kind == KIND_SS_WRITE;
  const needsUpdate = (accessedAll & PTE_A) == 0 || (isWrite && (e & PTE_D) == 0);
  for (let i: u32 = 0; needsUpdate && i < used; i++) {
    const s = slot(i);
    const old = load<u64>(s, 8);
    let updated = old | PTE_A;
    if (i == used - 1 && isWrite) updated |= PTE_D;
    if (updated != old) {
      const address = load<u64>(s);
      writeBacked64(address, updated);
      store<u64>(s, updated, 8);
      bump(S_AD_UPDATES);
      cycles += priceReference(cpu, address);
    }
  }
  if ((load<u64>(slot(used - 1), 8) & PTE_D) != 0) attrs |= A_DIRTY;

  // Cache every non-leaf entry read, with the rights accumulated down to it (SDM 4.10.3.1).
  const anyPsc = load<u32>(block + R_PSC_ANY) != 0;
  for (let i: u32 = 0; anyPsc && i + 1 < used; i++) {
    const entryLevel = level + (used - 1 - i);
    const desc = pscDesc(cpu, entryLevel);
    if (!pscPresent(desc)) continue;
    const s = slot(i);
    pscFill(desc, la, entryLevel, (load<u64>(s, 8) & ADDRESS_MASK) | load<u64>(s, 16), currentPcid, vmTag);
  }

  walkFault = WALK_OK;
  walkError = 0;
  walkSizeCode = sizeCode;
  walkFrame = e & ADDRESS_MASK & ~((<u64>1 << (12 + 9 * <u64>sizeCode)) - 1);
  walkAttrs = attrs;
  walkRefs = refs;
  walkCycles = cycles;
}

function finishFault(fault: u32, error: u32, refs: u32, cycles: u32): void {
  walkFault = fault;
  walkError = error;
  walkRefs = refs;
  walkCycles = cycles;
  walkFrame = 0;
  walkAttrs = 0;
}
