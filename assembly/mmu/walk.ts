// The CPU's page walk (SDM 4.5; in two dimensions SDM 29.3 and APM 15.25): x86-64 tables from CR3, or
// from the deepest paging-structure-cache hit, read by the one radix walk (mmu/radix.ts). Natively the
// tables are host-physical (CpuTables); a guest's are guest-physical (CpuGuestTables<N>, mmu/nested.ts),
// so each table address, and last the final address, goes through the nested dimension of format N.
// Faults are results: walkFault, walkError and walkGpa tell the caller which exit to raise.
import {
  CFG_GBPAGES,
  CFG_MAXPHYADDR,
  CFG_PSC_LATENCY,
  CTRL_BASE,
  M_LA57,
  M_NXE,
  M_PGE,
  NestedMode,
  R_CR3,
  R_NESTED_MODE,
  R_PKRS,
  R_PKRU,
  R_PSC_ANY,
  R_VMTAG,
  WALK_SCRATCH,
  WALK_SLOT,
  WM_NESTED_REFS,
  WM_REF_COUNT,
  WM_REFS,
  WM_TABLE_HPA,
  WM_TABLE_RIGHTS,
  WM_WAYS,
  WML_ENTRY,
  WML_GPA,
  WML_HPA,
  WML_RIGHTS,
  WML_TABLE_RIGHTS,
  WS_ENTRY,
  WS_GPA,
  WS_HPA,
  WS_RIGHTS,
  WS_TABLE_RIGHTS,
  AccessKind,
  WalkFault,
} from "../constants";
import { ADDRESS_MASK, cpuBlock, mode, pcid, reg } from "../cpu";
import { Ept, N_ALL, N_R, N_W, N_X } from "../formats/ept";
import {
  Native,
  STOP_NESTED,
  STOP_NOT_PRESENT,
  STOP_RESERVED,
  STOP_RIGHTS,
  addressReserved,
  format,
  gbPages,
  x86Mode,
} from "../formats/format";
import { Npt } from "../formats/npt";
import {
  PF_PK,
  PTE_A,
  PTE_D,
  PTE_G,
  PTE_RW,
  X86,
  physReservedMask,
  x86AccessCheck,
  x86ErrorCode,
} from "../formats/x86";
import {
  NESTED_FOR_FINAL,
  rememberGuestWalk,
  walkMemoLevel,
  walkMemoLevels,
  walkMemoSlot,
  walkMemoWaysFor,
} from "../memo";
import { writeBacked64 } from "../phys";
import { S_AD_UPDATES, bump } from "../stats";
import { flushReferenceCounts, priceHintedRun, priceReference } from "../timing/cache";
import {
  CpuTables,
  flushNestedWalks,
  guestTableHost,
  guestTableNeed,
  guestTableRights,
  loadNestedContext,
  nestedCycles,
  nestedDirty,
  nestedError,
  nestedFault,
  nestedHpa,
  nestedMemoContext,
  nestedPscOn,
  nestedRefs,
  nestedRights,
  nestedSizeCode,
  nestedTlbOn,
  nestedTrackDirty,
  nestedWalks,
  translateNested,
} from "./nested";
import { pscDesc, pscFill, pscHitLevel, pscPresent, probePsc } from "./psc";
import { NOWHERE, radixAccessedAll, radixCycles, radixEntry, radixGpa, radixLevel, radixRefs, radixUsed, walkRadix } from "./radix";
import { A_DIRTY, A_GLOBAL, A_PKEY_SHIFT, A_RW, A_SS, A_US, A_XD, DENY_CLEAN, DENY_SHIFT, E_FRAME } from "./tlb";

// Outputs of the last walk.
export let walkFault: u32 = 0;
/** #PF error code, EPT exit qualification, or #NPF EXITINFO1. */
export let walkError: u64 = 0;
/** Guest-physical address of a nested fault. */
export let walkGpa: u64 = 0;
/** Host frame of the translation, aligned to its size. */
export let walkFrame: u64 = 0;
/** 0 = 4K, 1 = 2M, 2 = 1G: the smaller of the guest and nested page sizes. */
export let walkSizeCode: u32 = 0;
/** TLB attribute bits for the translation (A_* and the pkey). */
export let walkAttrs: u64 = 0;
/** Nested-rights deny bits for the TLB entry (DENY_*, already shifted). */
export let walkDeny: u32 = 0;
export let walkRefs: u32 = 0;
export let walkNestedRefs: u32 = 0;
export let walkCycles: u32 = 0;

/** x86-64 4- or 5-level walk of `la` for CPU `cpu`, two-dimensional when the CPU runs a guest. */
@inline export function walkX86(cpu: u32, la: u64, kind: u32, implicit: bool): void {
  const nestedMode = load<u32>(cpuBlock(cpu) + R_NESTED_MODE);
  // One body, compiled once per nested format: the native copy (inlined here) has no nested step.
  if (nestedMode == NestedMode.None) walkBody<Native>(cpu, la, kind, implicit);
  else underNestedFormat(cpu, nestedMode, la, kind, implicit, 0, false);
  flushReferenceCounts();
  flushNestedWalks();
}

/**
 * A guest walk of `address` (or, with `probe`, its nested translation alone, needing `need`) under the
 * CPU's nested format: one line per nested format, the only place that names them.
 */
function underNestedFormat(cpu: u32, nestedMode: u32, address: u64, kind: u32, implicit: bool, need: u32, probe: bool): bool {
  if (nestedMode == NestedMode.Ept) return inNestedFormat<Ept>(cpu, address, kind, implicit, need, probe);
  return inNestedFormat<Npt>(cpu, address, kind, implicit, need, probe);
}

function inNestedFormat<N>(cpu: u32, address: u64, kind: u32, implicit: bool, need: u32, probe: bool): bool {
  if (!probe) {
    walkBody<N>(cpu, address, kind, implicit);
    return true;
  }
  loadNestedContext(cpu);
  const accessBits: u32 = (need & N_X) != 0 ? 4 : (need & N_W) != 0 ? 2 : 1;
  return translateNested<N>(cpu, address, need, accessBits, NESTED_FOR_FINAL, 0);
}

/** Guest walk scratch: per level read, the entry's host and guest-physical addresses, value, rights. */
@inline function slot(i: u32): usize {
  return CTRL_BASE + WALK_SCRATCH + i * WALK_SLOT;
}

/**
 * Rights accumulate as A_RW/A_US (AND over levels) and A_XD (OR), in TLB attribute form. A_RW and A_US
 * are bits 0 and 1, so R/W and U/S (entry bits 1 and 2) move into place with one shift; `xdMask` is
 * A_XD when EFER.NXE is set, else 0.
 */
@inline function combine(sofar: u64, e: u64, xdMask: u64): u64 {
  // XD already accumulated (say, from a PSC entry made while NXE was set) stays: only this entry's bit
  // depends on NXE now.
  return (sofar & ((e >> 1) & (A_RW | A_US))) | (sofar & A_XD) | ((e >> 61) & xdMask);
}

/** A walk that faulted: `nested` tells whether the nested dimension's spending counts. */
function finishFault(fault: u32, error: u64, gpa: u64, refs: u32, cycles: u32, nested: bool): void {
  walkFault = fault;
  walkError = error;
  walkGpa = gpa;
  walkRefs = refs;
  walkNestedRefs = nested ? nestedRefs : 0;
  walkCycles = nested ? nestedCycles + cycles : cycles;
  walkFrame = 0;
  walkAttrs = 0;
}

/** The nested fault of the last nested translation, as the walk's outcome. */
function finishNestedFault(gpa: u64, refs: u32, cycles: u32): void {
  finishFault(nestedFault, nestedError, gpa, refs, cycles, true);
}

/**
 * The walk under nested format N (Native: none). Each step only a nested dimension has is under
 * `if (nesting.nested)`, which the compiler resolves: the native copy has none of them.
 */
@inline function walkBody<N>(cpu: u32, la: u64, kind: u32, implicit: bool): void {
  const nesting = format<N>();
  const virtualized = nesting.nested;
  const cpuMode = mode(cpu);
  const block = cpuBlock(cpu);
  const currentPcid = pcid(cpu);
  const vmTag = load<u32>(block + R_VMTAG);
  const top: u32 = (cpuMode & M_LA57) != 0 ? 5 : 4;
  // What the x86 reserved-bit rules read: the guest's NXE decides whether XD is reserved.
  addressReserved = physReservedMask(load<u32>(CTRL_BASE + CFG_MAXPHYADDR));
  gbPages = load<u32>(CTRL_BASE + CFG_GBPAGES) != 0;
  x86Mode = cpuMode;

  const xdMask: u64 = (cpuMode & M_NXE) != 0 ? A_XD : 0;
  // Guest paging-structure reads need what the nested format says (R, or R and W to update A/D).
  let tableNeed: u32 = 0;
  let memoContext: u64 = 0;
  if (nesting.nested) {
    nestedRefs = 0;
    nestedCycles = 0;
    loadNestedContext(cpu);
    tableNeed = nesting.tableNeed(nestedTrackDirty);
    guestTableNeed = tableNeed;
    memoContext = nestedMemoContext<N>();
  }
  let cycles: u32 = 0;
  let level = top;
  let base = reg(cpu, R_CR3) & ADDRESS_MASK;
  // The first table's host address when it is known already (a cache hit, a memo), and its nested rights.
  let tableHost: u64 = NOWHERE;
  let tableRights: u32 = N_ALL;
  let rights: u64 = A_RW | A_US;

  // Deepest paging-structure cache first: a PDE-cache hit leaves one reference to make. Under a
  // nested dimension the entries are combined ones: they hold the next table's host address.
  if (load<u32>(block + R_PSC_ANY) != 0) {
    const hit = probeGuestPsc(cpu, la, top, currentPcid, vmTag);
    if (hit != 0) {
      const value = load<u64>(hit, E_FRAME);
      base = value & ADDRESS_MASK;
      rights = value & (A_RW | A_US | A_XD);
      tableRights = <u32>(value >> 3) & N_ALL;
      tableHost = base;
      level = pscHitLevel - 1;
      cycles += load<u32>(CTRL_BASE + CFG_PSC_LATENCY);
    }
  }

  // A walk from the top with no cache in between may repeat one the walk memo (memo.ts) holds for this
  // 2 MiB region: price and count what it read down to the page-directory entry, then walk the page
  // table. The entries above need no A/D update (they were remembered after it, and memory has not
  // changed since), so only the paging-structure-cache fills need them in the scratch.
  const pscAny = load<u32>(block + R_PSC_ANY) != 0;
  const fromTop = level == top && (!virtualized || (!nestedTlbOn && !nestedPscOn));
  const walkMemo = walkMemoSlot(la);
  const rootContext = (reg(cpu, R_CR3) & ADDRESS_MASK) | ((cpuMode & M_LA57) != 0 ? 1 : 0) | (xdMask != 0 ? 2 : 0);
  const nestedContext = virtualized ? memoContext | (<u64>tableNeed << 6) : 0;
  const prefix = fromTop ? walkMemoLevels(walkMemo, la, rootContext, nestedContext) : 0;
  if (prefix != 0) {
    cycles += replayGuestWalk(walkMemo, cpu, prefix, virtualized, pscAny);
    const last = walkMemoLevel(walkMemo, prefix - 1);
    base = load<u64>(last, WML_ENTRY) & ADDRESS_MASK;
    rights = load<u64>(last, WML_RIGHTS);
    level = top - prefix;
    // Under a nested dimension the memo translated the page table's page too.
    if (virtualized) {
      tableHost = load<u64>(walkMemo, WM_TABLE_HPA);
      tableRights = load<u32>(walkMemo, WM_TABLE_RIGHTS);
    }
  }

  // The radix walk of the guest's tables, each table address through the nested dimension first (its
  // translation inlined: four of a walk's five nested translations are of guest paging-structure pages).
  if (nesting.nested) {
    guestTableHost = tableHost;
    guestTableRights = tableRights;
  }
  const stop = walkRadix<X86, CpuTables<N>>(cpu, base, level, la, N_ALL, true, slot(prefix), WALK_SLOT);
  const refs = prefix + radixRefs;
  cycles += radixCycles;
  const used = prefix + radixUsed;
  const e = radixEntry;
  level = radixLevel;
  if (stop == STOP_NESTED) {
    finishNestedFault(radixGpa, refs, cycles);
    return;
  }
  if (stop == STOP_NOT_PRESENT) {
    finishFault(WalkFault.NotPresent, x86ErrorCode(kind, implicit, cpuMode, false, false), 0, refs, cycles, virtualized);
    return;
  }
  if (stop == STOP_RESERVED) {
    finishFault(WalkFault.Reserved, x86ErrorCode(kind, implicit, cpuMode, true, true), 0, refs, cycles, virtualized);
    return;
  }
  // The rights down to each entry in TLB attribute form (kept for the PSC fills), and whether every
  // non-leaf entry allowed writes (shadow-stack pages need it). A memo's entries are combined already.
  const accessedAll = radixAccessedAll & PTE_A;
  let nonLeafWritable = (rights & A_RW) != 0;
  for (let i = prefix; i < used; i++) {
    const s = slot(i);
    const entry = load<u64>(s, WS_ENTRY);
    rights = combine(rights, entry, xdMask);
    store<u64>(s, rights, WS_RIGHTS);
    if (i + 1 < used && (entry & PTE_RW) == 0) nonLeafWritable = false;
  }

  const guestSizeCode = level - 1;
  let attrs = rights;
  if ((e & PTE_G) != 0 && (cpuMode & M_PGE) != 0) attrs |= A_GLOBAL;
  if (nonLeafWritable && (e & PTE_RW) == 0 && (e & PTE_D) != 0) attrs |= A_SS;
  attrs |= ((e >> 59) & 0xf) << A_PKEY_SHIFT;
  const check = x86AccessCheck(kind, implicit, cpuMode, attrs, <u32>reg(cpu, R_PKRU), <u32>reg(cpu, R_PKRS));
  if (check != 0) {
    const code = x86ErrorCode(kind, implicit, cpuMode, true, false) | (check & PF_PK);
    finishFault(WalkFault.Protection, code, 0, refs, cycles, virtualized);
    return;
  }

  // A in every entry this walk read, D in the leaf on a write. Writing a guest entry needs nested write
  // permission for its page: where table reads did not already need it (EPT without A/D, SDM
  // 29.3.3.2), a table page without it is a nested fault.
  const isWrite = kind == AccessKind.Write || kind == AccessKind.ShadowStackWrite;
  const needsUpdate = (accessedAll & PTE_A) == 0 || (isWrite && (e & PTE_D) == 0);
  if (nesting.nested) {
    for (let i = prefix; needsUpdate && (tableNeed & N_W) == 0 && i < used; i++) {
      const s = slot(i);
      const old = load<u64>(s, WS_ENTRY);
      const wants = (old & PTE_A) == 0 || (i == used - 1 && isWrite && (old & PTE_D) == 0);
      const pageRights = load<u32>(s, WS_TABLE_RIGHTS);
      if (wants && (pageRights & N_W) == 0) {
        // The write the update would make, refused: bits 2:0 say "write" (N_W, as EPT numbers them).
        finishFault(nesting.fault(STOP_RIGHTS), nesting.faultError(STOP_RIGHTS, pageRights, N_W, N_W, false, 0), load<u64>(s, WS_GPA), refs, cycles, true);
        return;
      }
    }
  }
  if (needsUpdate) cycles += updateAccessedDirty(cpu, prefix, used, isWrite);
  if ((load<u64>(slot(used - 1), WS_ENTRY) & PTE_D) != 0) attrs |= A_DIRTY;

  // The final guest-physical address goes through the nested dimension last (Bochs order: the guest
  // walk, with its A/D updates, completes first).
  const guestMask = (<u64>1 << (12 + 9 * <u64>guestSizeCode)) - 1;
  const guestFrame = e & ADDRESS_MASK & ~guestMask;
  let sizeCode = guestSizeCode;
  let frame = guestFrame;
  let deny: u32 = 0;
  if (nesting.nested) {
    const finalGpa = guestFrame | (la & guestMask);
    // The access's rights, which are also its EPT qualification bits 2:0.
    const need: u32 = kind == AccessKind.Fetch ? N_X : isWrite ? N_W : N_R;
    if (!translateNested<N>(cpu, finalGpa, need, need, NESTED_FOR_FINAL, attrs)) {
      finishNestedFault(finalGpa, refs, cycles);
      return;
    }
    // The combined entry maps the smaller of the two pages (a 2M guest page on 4K host pages is 4K).
    if (nestedSizeCode < sizeCode) sizeCode = nestedSizeCode;
    frame = nestedHpa & ~((<u64>1 << (12 + 9 * <u64>sizeCode)) - 1);
    deny = ((~nestedRights & N_ALL) | (nestedDirty ? 0 : DENY_CLEAN >> DENY_SHIFT)) << DENY_SHIFT;
  }

  // Cache every non-leaf entry read (SDM 4.10.3.1).
  if (pscAny) fillPscs(cpu, la, level, used, virtualized, currentPcid, vmTag);

  // Remember a walk from the top that ended at a page table, once nothing in it needs updating.
  if (fromTop && prefix == 0 && guestSizeCode == 0) {
    rememberGuestWalk(cpu, walkMemo, la, rootContext, nestedContext, slot(0), WALK_SLOT, used - 1, virtualized, memoContext);
  }

  walkFault = WalkFault.Ok;
  walkError = 0;
  walkGpa = 0;
  walkSizeCode = sizeCode;
  walkFrame = frame;
  walkAttrs = attrs;
  walkDeny = deny;
  walkRefs = refs;
  walkNestedRefs = virtualized ? nestedRefs : 0;
  walkCycles = virtualized ? nestedCycles + cycles : cycles;
}

/** The paging-structure caches' deepest hit for `la` (mmu/psc.ts probePsc), off the walk's hot path. */
function probeGuestPsc(cpu: u32, la: u64, top: u32, pcid: u32, vmTag: u32): usize {
  return probePsc(cpu, false, la, top, pcid, vmTag);
}

/**
 * Sets A in every entry from `from` to `used` that lacks it, and D in the leaf on a write; each update is
 * a locked read-modify-write of the entry's line. Returns its cycles.
 */
function updateAccessedDirty(cpu: u32, from: u32, used: u32, isWrite: bool): u32 {
  let cycles: u32 = 0;
  for (let i = from; i < used; i++) {
    const s = slot(i);
    const old = load<u64>(s, WS_ENTRY);
    let updated = old | PTE_A;
    if (i == used - 1 && isWrite) updated |= PTE_D;
    if (updated != old) {
      const address = load<u64>(s, WS_HPA);
      writeBacked64(address, updated);
      store<u64>(s, updated, WS_ENTRY);
      bump(S_AD_UPDATES);
      cycles += priceReference(cpu, address);
    }
  }
  return cycles;
}

/**
 * Caches every non-leaf entry of the walk in the scratch (`used` entries, the leaf at `level`), with the
 * rights accumulated down to it (SDM 4.10.3.1). Under a nested dimension the value is the next table's
 * host address and that page's nested rights.
 */
function fillPscs(cpu: u32, la: u64, level: u32, used: u32, virtualized: bool, pcid: u32, vmTag: u32): void {
  for (let i: u32 = 0; i + 1 < used; i++) {
    const entryLevel = level + (used - 1 - i);
    const desc = pscDesc(cpu, entryLevel);
    if (!pscPresent(desc)) continue;
    const s = slot(i);
    const next = slot(i + 1);
    const nextTable = virtualized ? load<u64>(next, WS_HPA) & ADDRESS_MASK : load<u64>(s, WS_ENTRY) & ADDRESS_MASK;
    const value = nextTable | load<u64>(s, WS_RIGHTS) | (<u64>(virtualized ? load<u32>(next, WS_TABLE_RIGHTS) : 0) << 3);
    pscFill(desc, la, entryLevel, value, pcid, vmTag);
  }
}

/**
 * Replays the first `levels` entries the walk memo at `memo` holds: prices each (and, under a nested
 * dimension, its table page's nested references, counted as the nested walk the memo stands for) from
 * the L1 ways the memo saw them in (priceHintedRun). With `fill` (paging-structure caches to fill), puts them in the
 * scratch as the walk would have. Returns the cycles.
 */
@inline function replayGuestWalk(memo: usize, cpu: u32, levels: u32, virtualized: bool, fill: bool): u32 {
  walkMemoWaysFor(memo, cpu);
  const cycles = priceHintedRun(cpu, memo + WM_REFS, memo + WM_WAYS, load<u32>(memo, WM_REF_COUNT));
  if (virtualized) {
    // The nested walks of each level's table page and of the page table's.
    nestedRefs += load<u32>(memo, WM_NESTED_REFS);
    nestedWalks += levels + 1;
  }
  for (let i: u32 = 0; fill && i < levels; i++) {
    const m = walkMemoLevel(memo, i);
    const s = slot(i);
    store<u64>(s, load<u64>(m, WML_HPA), WS_HPA);
    store<u64>(s, load<u64>(m, WML_ENTRY), WS_ENTRY);
    store<u64>(s, load<u64>(m, WML_RIGHTS), WS_RIGHTS);
    if (virtualized) {
      store<u64>(s, load<u64>(m, WML_GPA), WS_GPA);
      store<u32>(s, load<u32>(m, WML_TABLE_RIGHTS), WS_TABLE_RIGHTS);
    }
  }
  return cycles;
}

/** Guest-physical to host-physical for the host's own use (tests, the hypervisor's emulation). */
export function nestedProbe(cpu: u32, gpa: u64, need: u32): u64 {
  nestedRefs = 0;
  nestedCycles = 0;
  const nestedMode = load<u32>(cpuBlock(cpu) + R_NESTED_MODE);
  walkNestedRefs = 0;
  walkCycles = 0;
  if (nestedMode == NestedMode.None) return gpa;
  const ok = underNestedFormat(cpu, nestedMode, gpa, 0, false, need, true);
  flushReferenceCounts();
  flushNestedWalks();
  walkNestedRefs = nestedRefs;
  walkCycles = nestedCycles;
  if (!ok) {
    walkFault = nestedFault;
    walkError = nestedError;
    return ~(<u64>0);
  }
  walkFault = WalkFault.Ok;
  return nestedHpa;
}
