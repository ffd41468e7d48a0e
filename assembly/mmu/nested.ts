// The nested dimension of a CPU's two-dimensional walk (SDM 29.3; APM 15.25): guest-physical to
// host-physical through the nested tables, with the nested TLB and paging-structure caches. It is the
// one radix walk (mmu/radix.ts) over the nested format N (Ept or Npt, formats/), so nothing here
// depends on which it is: the format says what its entries mean and how its faults are reported. The
// guest walk (mmu/walk.ts) translates every guest table address, and the final address, through it.
import {
  CFG_EPT_EXECUTE_ONLY,
  CFG_GBPAGES,
  CFG_MAXPHYADDR,
  CFG_PSC_LATENCY,
  CTRL_BASE,
  NESTED_SCRATCH,
  NESTED_SLOT,
  NM_ADDRESSES,
  NM_ENTRIES,
  NM_WAYS,
  NM_FLAGS,
  NM_FRAME,
  NM_RIGHTS,
  NM_SIZE_CODE,
  NM_USED,
  NMF_ALL_ACCESSED,
  NMF_LARGE,
  NMF_LEAF_DIRTY,
  NMF_USER,
  PML_ENTRIES,
  R_NESTED_AD,
  R_NESTED_LEVELS,
  R_NESTED_ROOT,
  R_NPSC_ANY,
  R_PML,
  R_PML_INDEX,
  R_ROOT_TAG,
  TlbLevel,
  WalkFault,
  WS_GPA,
  WS_TABLE_RIGHTS,
} from "../constants";
import { ADDRESS_MASK, cpuBlock } from "../cpu";
import { N_ALL, N_W } from "../formats/ept";
import { Native, STOP_LEAF, STOP_RIGHTS, addressReserved, eptExecuteOnly, format, gbPages } from "../formats/format";
import { physReservedMask } from "../formats/x86";
import { NESTED_FOR_TABLE, nestedMemoHolds, nestedMemoSlot, nestedMemoWaysFor, rememberNestedWalk } from "../memo";
import { readPhys64, writeBacked64 } from "../phys";
import { S_AD_UPDATES, S_NESTED_WALKS, S_NTLB, S_PML_CYCLES, S_PML_LOGGED, add, bump } from "../stats";
import { priceHintedRun, priceReference } from "../timing/cache";
import { npscDesc, probePsc, pscFill, pscHitLevel, pscPresent } from "./psc";
import {
  NOWHERE,
  radixAccessedAll,
  radixCycles,
  radixEntry,
  radixLevel,
  radixRefs,
  radixRights,
  radixUsed,
  radixUser,
  walkRadix,
} from "./radix";
import { ATTR_MASK, DENY_CLEAN, DENY_SHIFT, E_FRAME, E_PCID, entrySizeCode, fill, levelDesc, levelPresent, lookup } from "./tlb";

// Outputs of the last nested translation.
export let nestedHpa: u64 = 0;
export let nestedRights: u32 = 0;
export let nestedSizeCode: u32 = 0;
export let nestedDirty: bool = false;
/** The WalkFault of a failed translation, and its qualification or EXITINFO1. */
export let nestedFault: u32 = 0;
export let nestedError: u64 = 0;

// What the nested dimension spent for the walk in progress (the walk zeroes them when it starts).
export let nestedRefs: u32 = 0;
export let nestedCycles: u32 = 0;
/** Nested walks made and not yet added to S_NESTED_WALKS (see flushNestedWalks). */
export let nestedWalks: u32 = 0;

// The nested context of the CPU whose walk is in progress, loaded once per walk, not per address.
export let nestedTop: u32 = 4;
export let nestedRootBase: u64 = 0;
let nestedRootTag: u32 = 0;
export let nestedTrackDirty: bool = false;
let nestedTlbDesc: usize = 0;
export let nestedTlbOn: bool = false;
export let nestedPscOn: bool = false;
/** Whether the CPU logs page modifications (its R_PML word; only an EPT guest's can be set). */
let nestedPmlOn: bool = false;

/** Loads the nested context of `cpu` for a walk, and the capabilities its format's rules read. */
export function loadNestedContext(cpu: u32): void {
  const block = cpuBlock(cpu);
  nestedTop = load<u32>(block + R_NESTED_LEVELS);
  nestedRootBase = load<u64>(block + R_NESTED_ROOT) & ADDRESS_MASK;
  nestedRootTag = load<u32>(block + R_ROOT_TAG);
  nestedTrackDirty = load<u32>(block + R_NESTED_AD) != 0;
  nestedTlbDesc = levelDesc(cpu, TlbLevel.Nested);
  nestedTlbOn = levelPresent(nestedTlbDesc);
  nestedPscOn = load<u32>(block + R_NPSC_ANY) != 0;
  nestedPmlOn = load<u64>(block + R_PML) != 0;
  // What the nested formats' reserved bits depend on (the guest's x86 mode stays as the walk set it).
  addressReserved = physReservedMask(load<u32>(CTRL_BASE + CFG_MAXPHYADDR));
  gbPages = load<u32>(CTRL_BASE + CFG_GBPAGES) != 0;
  eptExecuteOnly = load<u32>(CTRL_BASE + CFG_EPT_EXECUTE_ONLY) != 0;
}

/** Adds the nested walks counted in a global to the statistics: exact whenever a call returns. */
@inline export function flushNestedWalks(): void {
  if (nestedWalks != 0) {
    add(S_NESTED_WALKS, nestedWalks);
    nestedWalks = 0;
  }
}

/** The nested context a memo of nested walks is valid for: root, format, depth and A/D tracking. */
@inline export function nestedMemoContext<N>(): u64 {
  return nestedRootBase | format<N>().mode | (nestedTop << 2) | (nestedTrackDirty ? 32 : 0);
}

/** Bit 3 of a nested PSC entry's value: U/S held at every level above (NPT; always set for EPT). */
const NPSC_USER: u64 = 8;

@inline function nestedSlot(i: u32): usize {
  return CTRL_BASE + NESTED_SCRATCH + i * NESTED_SLOT;
}

@inline function pageMaskOf(sizeCode: u32): u64 {
  return (<u64>1 << (12 + 9 * <u64>sizeCode)) - 1;
}

/**
 * Tables a CPU reads, priced by its caches (a space of mmu/radix.ts). With N = Native they are
 * host-physical: the CPU's own tables natively, and the nested dimension's. Behind a nested dimension
 * of format N they are a guest's, guest-physical: each entry's address goes through that dimension
 * first, unless `guestTableHost` says where the walk's first table is in host memory already (a
 * paging-structure-cache hit, a memo).
 */
@final @unmanaged export class CpuTables<N> {
  @inline locate(cpu: u32, address: u64, first: bool): u64 {
    if (format<N>().nested) {
      if (first && guestTableHost != NOWHERE) return guestTableHost | (address & 0xfff);
      if (!translateNestedInline<N>(cpu, address, guestTableNeed, guestTableNeed, NESTED_FOR_TABLE, 0)) {
        return NOWHERE;
      }
      guestTableRights = nestedRights;
      return nestedHpa;
    }
    return address;
  }
  @inline extraRefs(): u32 {
    return 0;
  }
  @inline extraCycles(): u32 {
    return 0;
  }
  @inline beyond(hpa: u64): bool {
    return false;
  }
  @inline price(cpu: u32, hpa: u64): u32 {
    return priceReference(cpu, hpa);
  }
  /** Guest tables: each entry's guest-physical address, and the nested rights of its table's page. */
  @inline record(slot: usize, address: u64): void {
    if (format<N>().nested) {
      store<u64>(slot, address, WS_GPA);
      store<u32>(slot, guestTableRights, WS_TABLE_RIGHTS);
    }
  }
  @inline get iommu(): bool {
    return false;
  }
}

/** Where the guest walk's first table is in host memory, if known already (else NOWHERE: translate it). */
export let guestTableHost: u64 = NOWHERE;
/** The nested rights of the guest table page being read (for the first: what a cache hit held). */
export let guestTableRights: u32 = N_ALL;
/**
 * Rights a guest paging-structure access needs in the nested dimension (the format's tableNeed for the
 * walk's A/D tracking); also its EPT qualification bits 2:0, which number R, W, X as N_* does.
 */
export let guestTableNeed: u32 = 0;

/**
 * Translates guest-physical `gpa` through the nested dimension of format N. `need` holds the N_* rights
 * the access requires and `accessBits` its EPT qualification bits 2:0. Returns false on a nested fault
 * (then nestedFault/nestedError say which). Adds its references to nestedRefs and cycles to nestedCycles.
 */
@inline export function translateNestedInline<N>(
  cpu: u32,
  gpa: u64,
  need: u32,
  accessBits: u32,
  final: bool,
  guestAttrs: u64,
): bool {
  const entries = format<N>();
  const rootTag = nestedRootTag;
  const trackDirty = nestedTrackDirty;
  const isWrite = (need & N_W) != 0;
  if (nestedTlbOn) {
    const hit = lookup(nestedTlbDesc, gpa, 0, rootTag);
    bump(S_NTLB + (hit != 0 ? 0 : 1));
    if (hit != 0) {
      const deny = (load<u32>(hit, E_PCID) >> DENY_SHIFT) & 0xf;
      const rights = ~deny & N_ALL;
      const dirty = (deny & (DENY_CLEAN >> DENY_SHIFT)) == 0;
      if ((rights & need) == need && !(isWrite && trackDirty && !dirty)) {
        const sizeCode = entrySizeCode(hit);
        nestedSizeCode = sizeCode;
        nestedRights = rights;
        nestedDirty = dirty;
        nestedHpa = (load<u64>(hit, E_FRAME) & ~ATTR_MASK) | (gpa & pageMaskOf(sizeCode));
        return true;
      }
    }
  }
  nestedWalks++;
  const top = nestedTop;
  let base = nestedRootBase;
  let level = top;
  let rights: u32 = N_ALL;
  let user = true;
  let cycles: u32 = 0;

  if (nestedPscOn) {
    const hit = probePsc(cpu, true, gpa, top, 0, rootTag);
    if (hit != 0) {
      const value = load<u64>(hit, E_FRAME);
      base = value & ADDRESS_MASK;
      rights = <u32>value & N_ALL;
      user = (value & NPSC_USER) != 0;
      level = pscHitLevel - 1;
      cycles += load<u32>(CTRL_BASE + CFG_PSC_LATENCY);
    }
  }

  // A walk from the root may repeat one the memo holds (memo.ts): the same entries down to the page
  // table (or to a large leaf), the same lines, nothing to update. Only the 4K leaf is read and checked
  // again; if anything about it needs the full walk (a fault, an A/D update), nothing has been priced
  // yet and the full walk runs instead.
  const fromRoot = level == top;
  const memo = nestedMemoSlot(gpa, final);
  const context = nestedMemoContext<N>();
  if (fromRoot && nestedMemoHolds(memo, gpa, final, context)) {
    const flags = <u32>load<u8>(memo, NM_FLAGS);
    const stored = <u32>load<u8>(memo, NM_USED);
    let memoRights = <u32>load<u8>(memo, NM_RIGHTS);
    let userOk = (flags & NMF_USER) != 0;
    let sizeCode: u32 = 0;
    let frame: u64 = 0;
    let dirty = true;
    let settled = true;
    let valid = true;
    let leafAddress: u64 = 0;
    let leaf: u64 = 0;
    const large = (flags & NMF_LARGE) != 0;
    if (large) {
      sizeCode = <u32>load<u8>(memo, NM_SIZE_CODE);
      frame = load<u64>(memo, NM_FRAME);
      const leafDirty = (flags & NMF_LEAF_DIRTY) != 0;
      dirty = !trackDirty || leafDirty;
      settled = !trackDirty || ((flags & NMF_ALL_ACCESSED) != 0 && (!isWrite || leafDirty));
    } else {
      leafAddress = load<u64>(memo, NM_FRAME) | (((gpa >> 12) & 0x1ff) << 3);
      leaf = readPhys64(leafAddress);
      valid = entries.present(leaf) && !entries.reserved(leaf, 1);
      memoRights &= entries.rights(leaf);
      userOk = userOk && entries.user(leaf);
      const leafDirty = (leaf & entries.dirty) != 0;
      const leafAccessed = (leaf & entries.accessed) != 0;
      dirty = !trackDirty || leafDirty;
      settled = !trackDirty || ((flags & NMF_ALL_ACCESSED) != 0 && leafAccessed && (!isWrite || leafDirty));
      frame = leaf & ADDRESS_MASK;
    }
    if (valid && settled && userOk && (memoRights & need) == need) {
      nestedMemoWaysFor(memo, cpu);
      cycles += priceHintedRun(cpu, memo + NM_ADDRESSES, memo + NM_WAYS, stored);
      if (!large) cycles += priceReference(cpu, leafAddress);
      const used = large ? stored : stored + 1;
      if (nestedPscOn) {
        for (let i: u32 = 0; i < stored; i++) {
          const s = nestedSlot(i);
          store<u64>(s, load<u64>(memo + NM_ADDRESSES + (i << 3)));
          store<u64>(s, load<u64>(memo + NM_ENTRIES + (i << 3)), 8);
        }
        if (!large) {
          store<u64>(nestedSlot(stored), leafAddress);
          store<u64>(nestedSlot(stored), leaf, 8);
        }
      }
      nestedRefs += used;
      nestedCycles += cycles;
      finishNested<N>(cpu, gpa, sizeCode, used, frame, memoRights, dirty, N_ALL, true);
      return true;
    }
  }

  // What the walk starts from (all, or a PSC hit's accumulation): its own PSC fills build on it.
  const startRights = rights;
  const startUser = user;
  let stop = walkRadix<N, CpuTables<Native>>(cpu, base, level, gpa, rights, user, CTRL_BASE + NESTED_SCRATCH, NESTED_SLOT);
  const used = radixUsed;
  const e = radixEntry;
  level = radixLevel;
  rights = radixRights;
  user = radixUser;
  const accessedBit = entries.accessed;
  const accessedAll = radixAccessedAll & accessedBit;
  nestedRefs += radixRefs;
  nestedCycles += cycles + radixCycles;
  if (stop == STOP_LEAF && (!user || (rights & need) != need)) stop = STOP_RIGHTS;
  if (stop != STOP_LEAF) {
    nestedFault = entries.fault(stop);
    nestedError = entries.faultError(stop, rights, accessBits, need, final, guestAttrs);
    return false;
  }

  // Accessed in every entry used, dirty in the leaf on a write: the format's A/D bits, when the nested
  // dimension keeps them.
  let dirty = !trackDirty;
  const dirtyBit = entries.dirty;
  if (trackDirty) {
    // Usually every entry is already accessed (and the leaf dirty): then there is nothing to write.
    const settled = accessedAll != 0 && (!isWrite || (e & dirtyBit) != 0);
    if (!settled) {
      // SDM 29.3.6: an A/D update first checks the PML index; out of 0..511 the log is full, and the
      // access exits with no flag set.
      if (nestedPmlOn && load<u32>(cpuBlock(cpu) + R_PML_INDEX) >= PML_ENTRIES) {
        nestedFault = WalkFault.PmlFull;
        nestedError = 0;
        return false;
      }
      const newlyDirty = isWrite && (e & dirtyBit) == 0;
      for (let i: u32 = 0; i < used; i++) {
        const s = nestedSlot(i);
        const old = load<u64>(s, 8);
        let updated = old | accessedBit;
        if (i == used - 1 && isWrite) updated |= dirtyBit;
        if (updated != old) {
          const address = load<u64>(s);
          writeBacked64(address, updated);
          store<u64>(s, updated, 8);
          bump(S_AD_UPDATES);
          nestedCycles += priceReference(cpu, address);
        }
      }
      if (newlyDirty && nestedPmlOn) nestedCycles += logModification(cpu, gpa);
    }
    dirty = (load<u64>(nestedSlot(used - 1), 8) & dirtyBit) != 0;
  }

  const sizeCode = level - 1;
  const frame = e & ADDRESS_MASK & ~pageMaskOf(sizeCode);
  if (fromRoot) {
    // Remember the walk with the entries as they are now (after any A/D update): a table page's whole,
    // a final address's down to the page table unless it ends at a large leaf.
    const large = final == NESTED_FOR_TABLE || sizeCode > 0;
    const stored = large ? used : used - 1;
    let allAccessed = accessedBit;
    let storedRights: u32 = N_ALL;
    let storedUser = true;
    for (let i: u32 = 0; i < stored; i++) {
      const entry = load<u64>(nestedSlot(i), 8);
      allAccessed &= entry;
      storedRights &= entries.rights(entry);
      storedUser = storedUser && entries.user(entry);
    }
    const leafDirty = (load<u64>(nestedSlot(used - 1), 8) & dirtyBit) != 0;
    const flags =
      (storedUser ? NMF_USER : 0) |
      (allAccessed != 0 ? NMF_ALL_ACCESSED : 0) |
      (large && leafDirty ? NMF_LEAF_DIRTY : 0) |
      (large ? NMF_LARGE : 0);
    const remembered = large ? frame : load<u64>(nestedSlot(stored - 1), 8) & ADDRESS_MASK;
    rememberNestedWalk(cpu, memo, gpa, final, context, nestedSlot(0), NESTED_SLOT, stored, sizeCode, storedRights, flags, remembered);
  }
  finishNested<N>(cpu, gpa, sizeCode, used, frame, rights, dirty, startRights, startUser);
  return true;
}

/**
 * Page-modification logging (SDM 29.3.6): the D flag of the leaf mapping `gpa` went from 0 to 1, so
 * the page's 4 KiB-aligned guest-physical address goes into the log entry the PML index names, and
 * the index counts down (from 0 it wraps to FFFFH: the next A/D update finds the log full). Returns
 * the cycles of the write.
 */
function logModification(cpu: u32, gpa: u64): u32 {
  const block = cpuBlock(cpu);
  const index = load<u32>(block + R_PML_INDEX);
  const entry = (load<u64>(block + R_PML) & ADDRESS_MASK) + (<u64>index << 3);
  writeBacked64(entry, gpa & ~(<u64>0xfff));
  store<u32>(block + R_PML_INDEX, (index - 1) & 0xffff);
  bump(S_PML_LOGGED);
  const cycles = priceReference(cpu, entry);
  add(S_PML_CYCLES, cycles);
  return cycles;
}

/** translateNestedInline as one function, for the call sites off the hot loop. */
export function translateNested<N>(cpu: u32, gpa: u64, need: u32, accessBits: u32, final: bool, guestAttrs: u64): bool {
  return translateNestedInline<N>(cpu, gpa, need, accessBits, final, guestAttrs);
}

/**
 * The end of a successful nested walk whose entries are in the nested scratch: nested PSC fills, the
 * nested TLB fill and the outputs. `startRights`/`startUser` are what the walk started from.
 */
@inline function finishNested<N>(
  cpu: u32,
  gpa: u64,
  sizeCode: u32,
  used: u32,
  frame: u64,
  rights: u32,
  dirty: bool,
  startRights: u32,
  startUser: bool,
): void {
  const entries = format<N>();
  const rootTag = nestedRootTag;
  const level = sizeCode + 1;
  if (nestedPscOn) {
    // Nested PSC entries carry the rights (and, for NPT, U/S) accumulated down to them in their low bits.
    let sofar: u32 = startRights;
    let userSofar = startUser;
    for (let i: u32 = 0; i + 1 < used; i++) {
      const entry = load<u64>(nestedSlot(i), 8);
      sofar &= entries.rights(entry);
      userSofar = userSofar && entries.user(entry);
      const entryLevel = level + (used - 1 - i);
      const desc = npscDesc(cpu, entryLevel);
      const value = (entry & ADDRESS_MASK) | <u64>sofar | (userSofar ? NPSC_USER : 0);
      if (pscPresent(desc)) pscFill(desc, gpa, entryLevel, value, 0, rootTag);
    }
  }
  if (nestedTlbOn) {
    const deny = ((~rights & N_ALL) | (dirty ? 0 : DENY_CLEAN >> DENY_SHIFT)) << DENY_SHIFT;
    fill(nestedTlbDesc, gpa, sizeCode, frame, 0, deny, rootTag);
  }
  nestedSizeCode = sizeCode;
  nestedRights = rights;
  nestedDirty = dirty;
  nestedHpa = frame | (gpa & pageMaskOf(sizeCode));
}
