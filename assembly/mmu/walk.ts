// The radix page walk (SDM 4.5, 29.3; APM 15.25; VT-d 3.6-3.8; AMD IOMMU 2.2), one loop (walkRadix)
// for every entry format: the CPU's and VT-d first-level x86-64 tables, EPT, NPT, VT-d second-level and
// AMD-Vi I/O tables. The CPU's guest dimension walks x86-64 tables from CR3, or from the deepest
// paging-structure-cache hit; under EPT or NPT every guest table address, and the final guest-physical
// address, is translated through the nested dimension, which is the same loop over EPT or NPT entries
// with its own TLB and paging-structure caches. The IOMMU's walks (mmu/iowalk.ts) run the same loop.
// Faults are results: `walkFault`, `walkError` and `walkGpa` tell the caller which exit to raise.
import {
  CFG_GBPAGES,
  CFG_MAXPHYADDR,
  CFG_PSC_LATENCY,
  CTRL_BASE,
  IO_NESTED_WALK_SCRATCH,
  IOMMU_BASE,
  AccessKind,
  M_LA57,
  M_NXE,
  M_PGE,
  NM_ADDRESSES,
  NM_CONTEXT,
  NM_ENTRIES,
  NM_FLAGS,
  NM_FRAME,
  NM_GENERATION,
  NM_KEY,
  NM_RIGHTS,
  NM_SIZE_CODE,
  NM_USED,
  NMF_ALL_ACCESSED,
  NMF_LARGE,
  NMF_LEAF_DIRTY,
  WALK_MEMO_BASE,
  WALK_MEMO_SIZE,
  WALK_MEMO_SLOTS,
  WM_GENERATION,
  WM_KEY,
  WM_LEVEL_BASE,
  WM_LEVEL_SIZE,
  WM_LEVELS,
  WM_NESTED,
  WM_ROOT,
  WML_ENTRY,
  WML_GPA,
  WML_HPA,
  WML_NESTED,
  WML_NESTED_COUNT,
  WML_TABLE_RIGHTS,
  NMF_USER,
  NestedMode,
  NESTED_MEMO_BASE,
  NESTED_MEMO_SIZE,
  NESTED_MEMO_SLOTS,
  NESTED_SCRATCH,
  NESTED_SLOT,
  R_CR3,
  R_NESTED_AD,
  R_NESTED_LEVELS,
  R_NESTED_MODE,
  R_NESTED_ROOT,
  R_NPSC_ANY,
  R_PKRS,
  R_PKRU,
  R_PSC_ANY,
  R_ROOT_TAG,
  R_VMTAG,
  WALK_SCRATCH,
  WALK_SLOT,
  TlbLevel,
} from "../constants";
import { ADDRESS_MASK, cpuBlock, mode, pcid, reg } from "../cpu";
import {
  EPT_A,
  EPT_D,
  N_ALL,
  N_R,
  N_W,
  N_X,
  eptIsLeaf,
  eptMisconfigured,
  eptPresent,
  eptRights,
  nptRights,
} from "../formats/ept";
import {
  PF_PK,
  PTE_A,
  PTE_D,
  PTE_G,
  PTE_P,
  PTE_RW,
  PTE_US,
  physReservedMask,
  x86AccessCheck,
  x86ErrorCode,
  x86IsLeaf,
  x86Reserved,
} from "../formats/x86";
import { memoryGeneration, readPhys64, writeBacked64 } from "../phys";
import { S_AD_UPDATES, S_NESTED_WALKS, S_NPSC, S_NTLB, S_PSC, add, bump } from "../stats";
import { IOPTE_PR, iopteEncodedShift, iopteNextLevel, iopteReserved, iopteRights } from "../formats/amdvi";
import { slIsLeaf, slPresent, slReserved } from "../formats/vtd";
import { flushReferenceCounts, priceReference, priceUncoreReference } from "../timing/cache";
import { npscDesc, pscDesc, pscFill, pscLookup, pscPresent } from "./psc";
import {
  A_DIRTY,
  A_GLOBAL,
  A_PKEY_SHIFT,
  A_RW,
  A_SS,
  A_US,
  A_XD,
  ATTR_MASK,
  DENY_CLEAN,
  DENY_R,
  DENY_SHIFT,
  E_FRAME,
  E_PCID,
  entrySizeCode,
  fill,
  levelDesc,
  levelPresent,
  lookup,
} from "./tlb";

export const WALK_OK: u32 = 0;
export const WALK_NOT_PRESENT: u32 = 1;
export const WALK_RESERVED: u32 = 2;
export const WALK_PROTECTION: u32 = 3;
export const WALK_EPT_VIOLATION: u32 = 4;
export const WALK_EPT_MISCONFIG: u32 = 5;
export const WALK_NPF: u32 = 6;

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

/** Nested walks not yet added to S_NESTED_WALKS (see flushCounts). */
let nestedWalks: u32 = 0;

/** Adds the counts the walk kept in globals to the statistics: exact whenever a call returns. */
@inline function flushCounts(): void {
  flushReferenceCounts();
  if (nestedWalks != 0) {
    add(S_NESTED_WALKS, nestedWalks);
    nestedWalks = 0;
  }
}

/** Level of the entry the last successful probePsc found. */
let pscHitLevel: u32 = 0;

/**
 * Probes one dimension's paging-structure caches deepest first (a PDE-cache hit leaves the fewest
 * references), counting a miss for each cache passed and a hit for the one that answers. Returns the
 * hit entry, or 0.
 */
@inline function probePsc(cpu: u32, nested: bool, address: u64, top: u32, pcidTag: u32, contextTag: u32): usize {
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

// --- the radix walk ---------------------------------------------------------------------------------

// Entry formats the one radix loop reads. x86-64 entries serve three readers: the CPU's guest tables
// and VT-d first-level tables (FMT_X86), and AMD's nested dimension (FMT_NPT: host NXE, every access a
// user access).
export const FMT_X86: u32 = 0;
export const FMT_NPT: u32 = 1;
export const FMT_EPT: u32 = 2;
export const FMT_VTD_SL: u32 = 3;
export const FMT_AMDVI: u32 = 4;

/** Who walks: a CPU (its caches price each reference) or the IOMMU (shared LLC, then DRAM). */
export const UNIT_CPU: u32 = 0;
export const UNIT_IOMMU: u32 = 1;

/**
 * Where table addresses live, as a type argument of walkRadix (told apart by size): host-physical, or
 * guest-physical behind a CPU's EPT/NPT or behind VT-d's second level.
 */
export type NestNone = u8;
export type NestCpu = u16;
export type NestIo = u32;

/** Why the radix loop stopped. */
export const STOP_LEAF: u32 = 0;
export const STOP_NOT_PRESENT: u32 = 1;
/** A reserved bit, or for EPT a misconfiguration. */
export const STOP_RESERVED: u32 = 2;
/** The nested translation of a table address failed (the nested walker's outputs say how). */
export const STOP_NESTED: u32 = 3;
/** IOMMU only: an entry address with no memory behind it. */
export const STOP_BEYOND: u32 = 4;
/** AMD-Vi only: index bits of the levels a Next Level field skipped are not zero. */
export const STOP_SKIPPED: u32 = 5;
/** Set by callers that check the leaf's rights: they lack the access. */
export const STOP_RIGHTS: u32 = 6;

// Outputs of the last radix loop.
export let radixLevel: u32 = 0;
export let radixEntry: u64 = 0;
export let radixUsed: u32 = 0;
export let radixRefs: u32 = 0;
export let radixCycles: u32 = 0;
/** N_R/N_W/N_X ANDed over the entries (x86: R/W only, XD is the CPU's to combine). */
export let radixRights: u32 = 0;
/** U/S held at every x86 entry read. */
export let radixUser: bool = true;
/** The AND of every entry read (the caller masks its format's accessed bit). */
export let radixAccessedAll: u64 = 0;
/** log2 of the leaf's page size. */
export let radixShift: u32 = 12;
/** With STOP_NESTED: the guest-physical address whose translation failed. */
export let radixGpa: u64 = 0;

// Per-walk settings of the radix loop, set by its callers before the loop.
export let radixAddressReserved: u64 = 0;
export let radixGbPages: bool = true;
/** CPU mode bits for FMT_X86 reserved-bit checks (NXE decides whether XD is reserved). */
export let radixX86Mode: u32 = M_NXE;
/** VT-d capability bits (IO_F_*) for second-level reserved-bit checks. */
export let radixCapabilities: u32 = 0;
/** IOMMU only: host-physical addresses at and above this have no memory. */
export let radixMemTop: u64 = 0;
/** NEST_IO: the second-level tables' root and depth. */
export let radixIoNestedRoot: u64 = 0;
export let radixIoNestedLevels: u32 = 0;

/** Scratch fields every radix slot has: the entry's host address and value. */
export const RADIX_HPA: u32 = 0;
export const RADIX_ENTRY: u32 = 8;
/** IOMMU slots also keep the entry's level, the next table's level and the rights so far (with IO_USER). */
export const RADIX_LEVEL: u32 = 16;
export const RADIX_NEXT_LEVEL: u32 = 20;
export const RADIX_RIGHTS_SO_FAR: u32 = 24;
/** CPU guest slots under a nested dimension keep the entry's guest-physical address and its page's rights. */
export const RADIX_GPA: u32 = 24;
export const RADIX_TABLE_RIGHTS: u32 = 32;
/** The IOMMU's user bit in RADIX_RIGHTS_SO_FAR (next to N_R and N_W). */
export const RADIX_IO_USER: u32 = 4;

/**
 * The one radix walk (docs/MODEL.md §3, §12, §13). From the table at `base` (a `level`-level table,
 * host-physical when `baseIsHost`), reads one entry per level along `address`: nested translation of the
 * entry's address when the tables are guest-physical, the read, its price, then the format's presence,
 * reserved-bit, rights and leaf rules, and AMD-Vi's level skipping. Every entry read goes into the
 * caller's scratch (`slots`, `slotSize` bytes each). Returns a STOP_* reason; radix* hold the rest.
 * Compiled per call site with constant `format` and `unit`, so each copy keeps only its rules. `Nest`
 * picks where table addresses live (NestNone, NestCpu, NestIo): a type, so the compiler leaves out the
 * other nestings' code altogether (the CPU's nested translation itself walks radix tables).
 */
@inline export function walkRadix<Nest>(
  format: u32,
  unit: u32,
  cpu: u32,
  base: u64,
  level: u32,
  baseIsHost: bool,
  address: u64,
  rights: u32,
  user: bool,
  slots: usize,
  slotSize: u32,
  nestedMode: u32,
  tableNeed: u32,
  tableAccessBits: u32,
  startTableRights: u32,
): u32 {
  let refs: u32 = 0;
  let cycles: u32 = 0;
  let used: u32 = 0;
  let e: u64 = 0;
  let accessedAll: u64 = ~(<u64>0);
  let shift: u32 = 12;
  let stop: u32 = STOP_LEAF;
  let hostTables = baseIsHost;
  // NEST_CPU: the nested rights of the current table's page (a PSC hit's, for the first).
  let tableRights: u32 = startTableRights;
  while (true) {
    shift = 12 + 9 * (level - 1);
    const entryGpa = base | (((address >> <u64>shift) & 0x1ff) << 3);
    let entryAddress = entryGpa;
    if (sizeof<Nest>() == sizeof<NestCpu>()) {
      if (!hostTables) {
        if (!translateNestedInline(cpu, nestedMode, entryGpa, tableNeed, tableAccessBits, FOR_TABLE, 0)) {
          radixGpa = entryGpa;
          stop = STOP_NESTED;
          break;
        }
        entryAddress = nestedHpa;
        tableRights = nestedRights;
      }
      hostTables = false;
    } else if (sizeof<Nest>() == sizeof<NestIo>()) {
      // A first-level table in guest-physical space: its entry's address goes through the second level
      // first (a read; the A/D write-back needs no second walk, MODEL §13.4).
      const ok = ioSecondLevel(entryGpa, false);
      refs += radixRefs;
      cycles += radixCycles;
      if (!ok) {
        radixGpa = entryGpa;
        stop = STOP_NESTED;
        break;
      }
      entryAddress = ioSecondLevelFrame | (entryGpa & ((<u64>1 << <u64>radixShift) - 1));
    }
    if (unit == UNIT_IOMMU && entryAddress >= radixMemTop) {
      stop = STOP_BEYOND;
      break;
    }
    e = readPhys64(entryAddress);
    refs++;
    cycles += unit == UNIT_CPU ? priceReference(cpu, entryAddress) : priceUncoreReference(entryAddress);
    const slot = slots + <usize>(used++ * slotSize);
    store<u64>(slot, entryAddress, RADIX_HPA);
    store<u64>(slot, e, RADIX_ENTRY);
    if (sizeof<Nest>() == sizeof<NestCpu>()) {
      store<u64>(slot, entryGpa, RADIX_GPA);
      store<u32>(slot, tableRights, RADIX_TABLE_RIGHTS);
    }
    let next: u32 = level - 1;
    let leaf = false;
    if (format == FMT_X86 || format == FMT_NPT) {
      if ((e & PTE_P) == 0) {
        stop = STOP_NOT_PRESENT;
        break;
      }
      if (x86Reserved(e, level, format == FMT_NPT ? M_NXE : radixX86Mode, radixAddressReserved, radixGbPages)) {
        stop = STOP_RESERVED;
        break;
      }
      rights &= format == FMT_NPT ? nptRights(e) : N_R | N_X | <u32>(e & PTE_RW);
      user = user && (e & PTE_US) != 0;
      accessedAll &= e;
      leaf = x86IsLeaf(e, level);
    } else if (format == FMT_EPT) {
      if (!eptPresent(e)) {
        stop = STOP_NOT_PRESENT;
        break;
      }
      if (eptMisconfigured(e, level, radixAddressReserved, true, radixGbPages)) {
        stop = STOP_RESERVED;
        break;
      }
      rights &= eptRights(e);
      accessedAll &= e;
      leaf = eptIsLeaf(e, level);
    } else if (format == FMT_VTD_SL) {
      if (!slPresent(e)) {
        stop = STOP_NOT_PRESENT;
        break;
      }
      if (slReserved(e, level, radixAddressReserved, radixCapabilities)) {
        stop = STOP_RESERVED;
        break;
      }
      rights &= <u32>e & 3;
      leaf = slIsLeaf(e, level);
    } else {
      if ((e & IOPTE_PR) == 0) {
        stop = STOP_NOT_PRESENT;
        break;
      }
      if (iopteReserved(e, radixAddressReserved)) {
        stop = STOP_RESERVED;
        break;
      }
      rights &= iopteRights(e);
      next = iopteNextLevel(e);
      if (next == 0) {
        leaf = true;
      } else if (next == 7) {
        // The page is larger than this level's entries and smaller than the whole table.
        const encoded = iopteEncodedShift(e);
        if (encoded <= shift || encoded >= shift + 9) {
          stop = STOP_RESERVED;
          break;
        }
        shift = encoded;
        leaf = true;
      } else if (next >= level) {
        stop = STOP_RESERVED;
        break;
      } else if (!skippedBitsClear(address, level, next)) {
        // Level skipping: the index bits of the levels skipped over must be zero.
        stop = STOP_SKIPPED;
        break;
      }
    }
    if (unit == UNIT_IOMMU) {
      store<u32>(slot, level, RADIX_LEVEL);
      store<u32>(slot, leaf ? level - 1 : next, RADIX_NEXT_LEVEL);
      store<u32>(slot, (rights & (N_R | N_W)) | (user ? RADIX_IO_USER : 0), RADIX_RIGHTS_SO_FAR);
    }
    if (leaf) break;
    base = e & ADDRESS_MASK;
    level = next;
  }
  radixLevel = level;
  radixEntry = e;
  radixUsed = used;
  radixRefs = refs;
  radixCycles = cycles;
  radixRights = rights;
  radixUser = user;
  radixAccessedAll = accessedAll;
  radixShift = shift;
  return stop;
}

/** Whether the index bits of the levels between a level-`level` entry and its next table are zero. */
@inline export function skippedBitsClear(address: u64, level: u32, next: u32): bool {
  const low = 12 + 9 * next;
  const high = 12 + 9 * (level - 1);
  return ((address >> <u64>low) & ((<u64>1 << <u64>(high - low)) - 1)) == 0;
}

/** Host frame of the last ioSecondLevel translation (radixShift gives its size, radixRights its rights). */
export let ioSecondLevelFrame: u64 = 0;

/** Why the last ioSecondLevel failed: a STOP_* reason. */
export let ioSecondLevelStop: u32 = 0;

/**
 * VT-d second-level translation of a guest-physical address for nested (PGTT=3) walks, from
 * radixIoNestedRoot, with its own scratch so the first-level walk's entries survive. False on a fault.
 */
export function ioSecondLevel(gpa: u64, write: bool): bool {
  const stop = walkRadix<NestNone>(
    FMT_VTD_SL,
    UNIT_IOMMU,
    0,
    radixIoNestedRoot & ADDRESS_MASK,
    radixIoNestedLevels,
    true,
    gpa,
    N_R | N_W,
    true,
    IOMMU_BASE + IO_NESTED_WALK_SCRATCH,
    32,
    0,
    0,
    0,
    N_ALL,
  );
  ioSecondLevelStop = stop;
  if (stop != STOP_LEAF) return false;
  if ((radixRights & (write ? N_W : N_R)) == 0) {
    ioSecondLevelStop = STOP_RIGHTS;
    return false;
  }
  ioSecondLevelFrame = radixEntry & ADDRESS_MASK & ~((<u64>1 << <u64>radixShift) - 1);
  return true;
}

// --- the nested dimension ---------------------------------------------------------------------------

/** Why the nested dimension is translating: a guest paging-structure access or the final address. */
const FOR_TABLE: bool = false;
const FOR_FINAL: bool = true;

// Outputs of the last nested translation.
let nestedHpa: u64 = 0;
let nestedRights: u32 = 0;
let nestedSizeCode: u32 = 0;
let nestedDirty: bool = false;
let nestedFault: u32 = 0;
let nestedError: u64 = 0;

// The nested context of the CPU whose walk is in progress, loaded once per walk, not per GPA.
let nestedTop: u32 = 4;
let nestedRootBase: u64 = 0;
let nestedRootTag: u32 = 0;
let nestedTrackDirty: bool = false;
let nestedTlbDesc: usize = 0;
let nestedTlbOn: bool = false;
let nestedPscOn: bool = false;

function loadNestedContext(cpu: u32): void {
  const block = cpuBlock(cpu);
  nestedTop = load<u32>(block + R_NESTED_LEVELS);
  nestedRootBase = load<u64>(block + R_NESTED_ROOT) & ADDRESS_MASK;
  nestedRootTag = load<u32>(block + R_ROOT_TAG);
  nestedTrackDirty = load<u32>(block + R_NESTED_AD) != 0;
  nestedTlbDesc = levelDesc(cpu, TlbLevel.Nested);
  nestedTlbOn = levelPresent(nestedTlbDesc);
  nestedPscOn = load<u32>(block + R_NPSC_ANY) != 0;
  radixAddressReserved = physReservedMask(load<u32>(CTRL_BASE + CFG_MAXPHYADDR));
  radixGbPages = load<u32>(CTRL_BASE + CFG_GBPAGES) != 0;
}

/** Bit 3 of a nested PSC entry's value: U/S held at every level above (NPT; always set for EPT). */
const NPSC_USER: u64 = 8;

@inline function nestedSlot(i: u32): usize {
  return CTRL_BASE + NESTED_SCRATCH + i * NESTED_SLOT;
}

/**
 * EPT violation exit qualification (SDM 28.2.1, Table 28-7): the access in bits 2:0, the AND of the EPT
 * entries' R/W/X in bits 5:3, bit 7 (the linear address is valid: always, walks start from one), bit 8
 * (final translation rather than a guest paging-structure access) and, for final translations, the
 * guest's U/S, R/W and XD in bits 9-11.
 */
@inline function eptQualification(accessBits: u32, rights: u32, final: bool, guestAttrs: u64): u64 {
  let q = <u64>(accessBits | ((rights & N_ALL) << 3) | (1 << 7));
  if (final) {
    q |= 1 << 8;
    if ((guestAttrs & A_US) != 0) q |= 1 << 9;
    if ((guestAttrs & A_RW) != 0) q |= 1 << 10;
    if ((guestAttrs & A_XD) != 0) q |= 1 << 11;
  }
  return q;
}

/** #NPF EXITINFO1 (APM 15.25.6): P, W, U (always), RSVD, ID, then bit 32 final or bit 33 table access. */
@inline function npfInfo(present: bool, write: bool, reserved: bool, fetch: bool, final: bool): u64 {
  let info: u64 = 1 << 2;
  if (present) info |= 1;
  if (write) info |= 2;
  if (reserved) info |= 8;
  if (fetch) info |= 16;
  info |= final ? <u64>1 << 32 : <u64>1 << 33;
  return info;
}

/**
 * Translates guest-physical `gpa` through the nested dimension. `need` holds the N_* rights the access
 * requires and `accessBits` its EPT qualification bits 2:0. Returns false on a nested fault (then
 * nestedFault/nestedError say which). Adds its references to `walkNestedRefs` and cycles to `walkCycles`.
 */
@inline function translateNestedInline(
  cpu: u32,
  nestedMode: u32,
  gpa: u64,
  need: u32,
  accessBits: u32,
  final: bool,
  guestAttrs: u64,
): bool {
  const rootTag = nestedRootTag;
  const trackDirty = nestedTrackDirty;
  const isWrite = (need & N_W) != 0;
  const ntlb = nestedTlbDesc;
  if (nestedTlbOn) {
    const hit = lookup(ntlb, gpa, 0, rootTag);
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
        nestedHpa = (load<u64>(hit, E_FRAME) & ~ATTR_MASK) | (gpa & ((<u64>1 << (12 + 9 * <u64>sizeCode)) - 1));
        return true;
      }
    }
  }
  nestedWalks++;
  const isEpt = nestedMode == NestedMode.Ept;
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

  // A walk from the root may repeat one the memo holds for this 2 MiB region: the same entries down to
  // the page table (or to a large leaf), the same lines, nothing to update. Only the 4K leaf is read
  // and checked again; if anything about it needs the full walk (a fault, an A/D update), nothing has
  // been priced yet and the full walk runs instead.
  // Guest page-table pages and final addresses have memos of their own: a handful of table pages serve
  // every walk and are remembered whole, by 4 KiB page; final addresses spread over all of the guest's
  // memory, and are remembered down to the page table, by 2 MiB region.
  const fromRoot = level == top;
  const keyShift: u64 = final == FOR_TABLE ? 12 : 21;
  const memo = nestedMemoSlot(gpa, final);
  const context = nestedMemoContext(nestedMode);
  if (fromRoot && load<u64>(memo, NM_KEY) == (gpa >> keyShift) + 1 && load<u64>(memo, NM_CONTEXT) == context) {
    if (load<u64>(memo, NM_GENERATION) == memoryGeneration()) {
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
        if (isEpt) {
          valid = eptPresent(leaf) && !eptMisconfigured(leaf, 1, radixAddressReserved, true, radixGbPages);
          memoRights &= eptRights(leaf);
        } else {
          valid = (leaf & PTE_P) != 0 && !x86Reserved(leaf, 1, M_NXE, radixAddressReserved, radixGbPages);
          memoRights &= nptRights(leaf);
          userOk = userOk && (leaf & PTE_US) != 0;
        }
        const leafDirty = (leaf & (isEpt ? EPT_D : PTE_D)) != 0;
        const leafAccessed = (leaf & (isEpt ? EPT_A : PTE_A)) != 0;
        dirty = !trackDirty || leafDirty;
        settled = !trackDirty || ((flags & NMF_ALL_ACCESSED) != 0 && leafAccessed && (!isWrite || leafDirty));
        frame = leaf & ADDRESS_MASK;
      }
      if (valid && settled && userOk && (memoRights & need) == need) {
        for (let i: u32 = 0; i < stored; i++) {
          cycles += priceReference(cpu, load<u64>(memo + NM_ADDRESSES + (i << 3)));
        }
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
        walkNestedRefs += used;
        walkCycles += cycles;
        finishNested(cpu, isEpt, gpa, sizeCode, used, frame, memoRights, dirty, N_ALL, true);
        return true;
      }
    }
  }

  // What the walk starts from (all, or a PSC hit's accumulation): its own PSC fills build on it.
  const startRights = rights;
  const startUser = user;
  const stop = walkNestedTables(isEpt, cpu, base, level, gpa, rights, user);
  const used = radixUsed;
  const e = radixEntry;
  level = radixLevel;
  rights = radixRights;
  user = radixUser;
  const accessedBit = isEpt ? EPT_A : PTE_A;
  const accessedAll = radixAccessedAll & accessedBit;
  walkNestedRefs += radixRefs;
  walkCycles += cycles + radixCycles;
  let fault: u32 = 0;
  let error: u64 = 0;
  if (stop == STOP_NOT_PRESENT) {
    fault = isEpt ? WALK_EPT_VIOLATION : WALK_NPF;
    error = isEpt
      ? eptQualification(accessBits, 0, final, guestAttrs)
      : npfInfo(false, isWrite, false, (need & N_X) != 0, final);
  } else if (stop == STOP_RESERVED) {
    // EPT: a misconfiguration. NPT: a #NPF with RSVD (the host runs with EFER.NXE, so XD is never reserved).
    fault = isEpt ? WALK_EPT_MISCONFIG : WALK_NPF;
    error = isEpt ? 0 : npfInfo(true, isWrite, true, (need & N_X) != 0, final);
  } else if (!user || (rights & need) != need) {
    if (isEpt) {
      fault = WALK_EPT_VIOLATION;
      error = eptQualification(accessBits, rights, final, guestAttrs);
    } else {
      // Every nested access is a user access, so U=1 is needed at every level (APM 15.25.5).
      fault = WALK_NPF;
      error = npfInfo(true, isWrite, false, (need & N_X) != 0, final);
    }
  }
  if (fault != 0) {
    nestedFault = fault;
    nestedError = error;
    return false;
  }

  // Accessed in every entry used, dirty in the leaf on a write: EPT bits 8/9 when EPTP enables them,
  // the x86 A/D bits for NPT.
  let dirty = !trackDirty;
  const dirtyBit = isEpt ? EPT_D : PTE_D;
  if (trackDirty) {
    // Usually every entry is already accessed (and the leaf dirty): then there is nothing to write.
    const settled = accessedAll != 0 && (!isWrite || (e & dirtyBit) != 0);
    for (let i: u32 = 0; !settled && i < used; i++) {
      const s = nestedSlot(i);
      const old = load<u64>(s, 8);
      let updated = old | accessedBit;
      if (i == used - 1 && isWrite) updated |= dirtyBit;
      if (updated != old) {
        const address = load<u64>(s);
        writeBacked64(address, updated);
        store<u64>(s, updated, 8);
        bump(S_AD_UPDATES);
        walkCycles += priceReference(cpu, address);
      }
    }
    dirty = (load<u64>(nestedSlot(used - 1), 8) & dirtyBit) != 0;
  }

  const sizeCode = level - 1;
  const frame = e & ADDRESS_MASK & ~pageMaskOf(sizeCode);
  if (fromRoot) {
    // Remember the walk with the entries as they are now (after any A/D update): a table page's whole,
    // a final address's down to the page table unless it ends at a large leaf.
    const large = final == FOR_TABLE || sizeCode > 0;
    const stored = large ? used : used - 1;
    let allAccessed = accessedBit;
    let storedRights: u32 = N_ALL;
    let storedUser = true;
    for (let i: u32 = 0; i < stored; i++) {
      const s = nestedSlot(i);
      const entry = load<u64>(s, 8);
      allAccessed &= entry;
      storedRights &= isEpt ? eptRights(entry) : nptRights(entry);
      if (!isEpt && (entry & PTE_US) == 0) storedUser = false;
      store<u64>(memo + NM_ADDRESSES + (i << 3), load<u64>(s));
      store<u64>(memo + NM_ENTRIES + (i << 3), entry);
    }
    const leafDirty = (load<u64>(nestedSlot(used - 1), 8) & dirtyBit) != 0;
    store<u64>(memo, (gpa >> keyShift) + 1, NM_KEY);
    store<u64>(memo, context, NM_CONTEXT);
    store<u64>(memo, memoryGeneration(), NM_GENERATION);
    store<u8>(memo, <u8>stored, NM_USED);
    store<u8>(memo, <u8>sizeCode, NM_SIZE_CODE);
    store<u8>(memo, <u8>storedRights, NM_RIGHTS);
    const flags =
      (storedUser ? NMF_USER : 0) |
      (allAccessed != 0 ? NMF_ALL_ACCESSED : 0) |
      (large && leafDirty ? NMF_LEAF_DIRTY : 0) |
      (large ? NMF_LARGE : 0);
    store<u8>(memo, <u8>flags, NM_FLAGS);
    store<u64>(memo, large ? frame : load<u64>(nestedSlot(stored - 1), 8) & ADDRESS_MASK, NM_FRAME);
  }
  finishNested(cpu, isEpt, gpa, sizeCode, used, frame, rights, dirty, startRights, startUser);
  return true;
}

/** The nested dimension's radix walk: EPT or NPT tables, host-physical, priced by the CPU's caches. */
function walkNestedTables(isEpt: bool, cpu: u32, base: u64, level: u32, gpa: u64, rights: u32, user: bool): u32 {
  if (isEpt) {
    return walkRadix<NestNone>(FMT_EPT, UNIT_CPU, cpu, base, level, true, gpa, rights, user, CTRL_BASE + NESTED_SCRATCH, NESTED_SLOT, 0, 0, 0, N_ALL);
  }
  return walkRadix<NestNone>(FMT_NPT, UNIT_CPU, cpu, base, level, true, gpa, rights, user, CTRL_BASE + NESTED_SCRATCH, NESTED_SLOT, 0, 0, 0, N_ALL);
}

/** translateNestedInline as one function, for the call sites off the hot loop. */
function translateNested(
  cpu: u32,
  nestedMode: u32,
  gpa: u64,
  need: u32,
  accessBits: u32,
  final: bool,
  guestAttrs: u64,
): bool {
  return translateNestedInline(cpu, nestedMode, gpa, need, accessBits, final, guestAttrs);
}

@inline function pageMaskOf(sizeCode: u32): u64 {
  return (<u64>1 << (12 + 9 * <u64>sizeCode)) - 1;
}

@inline function nestedMemoSlot(gpa: u64, final: bool): usize {
  const index = <u32>(gpa >> (final ? 21 : 12)) & (NESTED_MEMO_SLOTS - 1);
  return NESTED_MEMO_BASE + (final ? NESTED_MEMO_SLOTS * NESTED_MEMO_SIZE : 0) + <usize>index * NESTED_MEMO_SIZE;
}

/**
 * The end of a successful nested walk whose entries are in the nested scratch: nested PSC fills, the
 * nested TLB fill and the outputs. `startRights`/`startUser` are what the walk started from.
 */
@inline function finishNested(
  cpu: u32,
  isEpt: bool,
  gpa: u64,
  sizeCode: u32,
  used: u32,
  frame: u64,
  rights: u32,
  dirty: bool,
  startRights: u32,
  startUser: bool,
): void {
  const rootTag = nestedRootTag;
  const level = sizeCode + 1;
  if (nestedPscOn) {
    // Nested PSC entries carry the rights (and, for NPT, U/S) accumulated down to them in their low bits.
    let sofar: u32 = startRights;
    let userSofar = startUser;
    for (let i: u32 = 0; i + 1 < used; i++) {
      const entry = load<u64>(nestedSlot(i), 8);
      sofar &= isEpt ? eptRights(entry) : nptRights(entry);
      if (!isEpt && (entry & PTE_US) == 0) userSofar = false;
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

// --- the guest dimension ----------------------------------------------------------------------------

/** Guest walk scratch: per level read, the entry's host and guest-physical addresses, value, rights. */
@inline function slot(i: u32): usize {
  return CTRL_BASE + WALK_SCRATCH + i * WALK_SLOT;
}
const SLOT_HPA: u32 = 0;
const SLOT_ENTRY: u32 = 8;
const SLOT_RIGHTS: u32 = 16;
const SLOT_GPA: u32 = 24;
const SLOT_TABLE_RIGHTS: u32 = 32;

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

function finishFault(fault: u32, error: u64, gpa: u64, refs: u32, cycles: u32): void {
  walkFault = fault;
  walkError = error;
  walkGpa = gpa;
  walkRefs = refs;
  walkCycles += cycles;
  walkFrame = 0;
  walkAttrs = 0;
}

/** The nested fault of the last translateNested, as the walk's outcome. */
function finishNestedFault(gpa: u64, refs: u32, cycles: u32): void {
  finishFault(nestedFault, nestedError, gpa, refs, cycles);
}

@inline function walkMemoSlot(la: u64): usize {
  return WALK_MEMO_BASE + <usize>(<u32>(la >> 21) & (WALK_MEMO_SLOTS - 1)) * WALK_MEMO_SIZE;
}

/** The nested context a memo of nested references is valid for: root, mode, depth and A/D tracking. */
@inline function nestedMemoContext(nestedMode: u32): u64 {
  return nestedRootBase | nestedMode | (nestedTop << 2) | (nestedTrackDirty ? 32 : 0);
}

/**
 * Fills the walk memo from the walk just made (its scratch holds `levels` entries above the page table).
 * Under a nested dimension each table page's nested references come from the table-page memo, which
 * must hold them for this memory generation; else, or when the walk updated memory, nothing is kept.
 */
function rememberWalk(memo: usize, la: u64, rootContext: u64, nestedContext: u64, levels: u32, virtualized: bool): void {
  const generation = memoryGeneration();
  if (virtualized) {
    for (let i: u32 = 0; i < levels; i++) {
      const gpa = load<u64>(slot(i), SLOT_GPA);
      const nested = nestedMemoSlot(gpa, FOR_TABLE);
      if (
        load<u64>(nested, NM_KEY) != (gpa >> 12) + 1 ||
        load<u64>(nested, NM_CONTEXT) != (nestedContext & 0xfffffffffffff03f) ||
        load<u64>(nested, NM_GENERATION) != generation
      ) {
        return;
      }
    }
  }
  for (let i: u32 = 0; i < levels; i++) {
    const s = slot(i);
    const m = memo + WM_LEVEL_BASE + i * WM_LEVEL_SIZE;
    store<u64>(m, load<u64>(s, SLOT_HPA), WML_HPA);
    store<u64>(m, load<u64>(s, SLOT_ENTRY), WML_ENTRY);
    if (virtualized) {
      const gpa = load<u64>(s, SLOT_GPA);
      const nested = nestedMemoSlot(gpa, FOR_TABLE);
      const n = <u32>load<u8>(nested, NM_USED);
      store<u64>(m, gpa, WML_GPA);
      store<u32>(m, load<u32>(s, SLOT_TABLE_RIGHTS), WML_TABLE_RIGHTS);
      store<u32>(m, n, WML_NESTED_COUNT);
      for (let j: u32 = 0; j < n; j++) store<u64>(m + WML_NESTED + (j << 3), load<u64>(nested + NM_ADDRESSES + (j << 3)));
    }
  }
  store<u64>(memo, (la >> 21) + 1, WM_KEY);
  store<u64>(memo, rootContext, WM_ROOT);
  store<u64>(memo, nestedContext, WM_NESTED);
  store<u64>(memo, generation, WM_GENERATION);
  store<u32>(memo, levels, WM_LEVELS);
}

/** x86-64 4- or 5-level walk of `la` for CPU `cpu`, two-dimensional when the CPU runs a guest. */
export function walkX86(cpu: u32, la: u64, kind: u32, implicit: bool): void {
  const nestedMode = load<u32>(cpuBlock(cpu) + R_NESTED_MODE);
  // One body, compiled twice: the one-dimensional copy loses every nested branch and store.
  if (nestedMode == NestedMode.None) walkOneDimension(cpu, la, kind, implicit);
  else walkTwoDimensions(cpu, la, kind, implicit, nestedMode);
  flushCounts();
}

function walkOneDimension(cpu: u32, la: u64, kind: u32, implicit: bool): void {
  walkBody<NestNone>(cpu, la, kind, implicit, NestedMode.None);
}

function walkTwoDimensions(cpu: u32, la: u64, kind: u32, implicit: bool, nestedMode: u32): void {
  walkBody<NestCpu>(cpu, la, kind, implicit, nestedMode);
}

@inline function walkBody<Nest>(cpu: u32, la: u64, kind: u32, implicit: bool, nestedMode: u32): void {
  const virtualized = sizeof<Nest>() == sizeof<NestCpu>();
  const cpuMode = mode(cpu);
  const block = cpuBlock(cpu);
  const currentPcid = pcid(cpu);
  const vmTag = load<u32>(block + R_VMTAG);
  const isEpt = nestedMode == NestedMode.Ept;
  const nestedAd = load<u32>(block + R_NESTED_AD) != 0;
  const top: u32 = (cpuMode & M_LA57) != 0 ? 5 : 4;
  radixX86Mode = cpuMode;
  radixAddressReserved = physReservedMask(load<u32>(CTRL_BASE + CFG_MAXPHYADDR));
  radixGbPages = load<u32>(CTRL_BASE + CFG_GBPAGES) != 0;

  // Guest paging-structure reads need R; with EPT A/D on they count as writes (SDM 29.3.3.2), and NPT
  // treats them as read-modify-writes (KVM's PFERR_NESTED_GUEST_PAGE).
  const tableNeed: u32 = isEpt ? (nestedAd ? N_R | N_W : N_R) : N_R | N_W;
  const tableAccessBits: u32 = isEpt && nestedAd ? 3 : isEpt ? 1 : 3;

  const xdMask: u64 = (cpuMode & M_NXE) != 0 ? A_XD : 0;
  if (virtualized) loadNestedContext(cpu);
  walkNestedRefs = 0;
  walkCycles = 0;
  let cycles: u32 = 0;
  let level = top;
  let base = reg(cpu, R_CR3) & ADDRESS_MASK;
  let baseIsHost = !virtualized;
  let tableRights: u32 = N_ALL;
  let rights: u64 = A_RW | A_US;

  // Deepest paging-structure cache first: a PDE-cache hit leaves one reference to make. Under a
  // nested dimension the entries are combined ones: they hold the next table's host address.
  if (load<u32>(block + R_PSC_ANY) != 0) {
    const hit = probePsc(cpu, false, la, top, currentPcid, vmTag);
    if (hit != 0) {
      const value = load<u64>(hit, E_FRAME);
      base = value & ADDRESS_MASK;
      rights = value & (A_RW | A_US | A_XD);
      tableRights = <u32>(value >> 3) & N_ALL;
      baseIsHost = true;
      level = pscHitLevel - 1;
      cycles += load<u32>(CTRL_BASE + CFG_PSC_LATENCY);
    }
  }

  // A walk from the top with no cache in between may repeat one the walk memo holds for this 2 MiB
  // region: price and count what it read down to the page-directory entry, then walk the page table.
  const fromTop = level == top && (!virtualized || (!nestedTlbOn && !nestedPscOn));
  const walkMemo = walkMemoSlot(la);
  const rootContext = (reg(cpu, R_CR3) & ADDRESS_MASK) | ((cpuMode & M_LA57) != 0 ? 1 : 0) | (xdMask != 0 ? 2 : 0);
  const nestedContext = virtualized ? nestedMemoContext(nestedMode) | (<u64>tableNeed << 6) : 0;
  let prefix: u32 = 0;
  if (
    fromTop &&
    load<u64>(walkMemo, WM_KEY) == (la >> 21) + 1 &&
    load<u64>(walkMemo, WM_ROOT) == rootContext &&
    load<u64>(walkMemo, WM_NESTED) == nestedContext &&
    load<u64>(walkMemo, WM_GENERATION) == memoryGeneration()
  ) {
    prefix = load<u32>(walkMemo, WM_LEVELS);
    for (let i: u32 = 0; i < prefix; i++) {
      const m = walkMemo + WM_LEVEL_BASE + i * WM_LEVEL_SIZE;
      const s = slot(i);
      if (virtualized) {
        const n = load<u32>(m, WML_NESTED_COUNT);
        for (let j: u32 = 0; j < n; j++) cycles += priceReference(cpu, load<u64>(m + WML_NESTED + (j << 3)));
        walkNestedRefs += n;
        nestedWalks++;
        store<u64>(s, load<u64>(m, WML_GPA), SLOT_GPA);
        store<u32>(s, load<u32>(m, WML_TABLE_RIGHTS), SLOT_TABLE_RIGHTS);
      }
      const hpa = load<u64>(m, WML_HPA);
      cycles += priceReference(cpu, hpa);
      store<u64>(s, hpa, SLOT_HPA);
      store<u64>(s, load<u64>(m, WML_ENTRY), SLOT_ENTRY);
    }
    base = load<u64>(slot(prefix - 1), SLOT_ENTRY) & ADDRESS_MASK;
    level = top - prefix;
  }

  // The radix walk of the guest's tables, each table address through the nested dimension first (its
  // translation inlined: four of a walk's five nested translations are of guest paging-structure pages).
  const stop = walkRadix<Nest>(
    FMT_X86,
    UNIT_CPU,
    cpu,
    base,
    level,
    baseIsHost && prefix == 0,
    la,
    N_ALL,
    true,
    CTRL_BASE + WALK_SCRATCH + prefix * WALK_SLOT,
    WALK_SLOT,
    nestedMode,
    tableNeed,
    tableAccessBits,
    tableRights,
  );
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
    finishFault(WALK_NOT_PRESENT, x86ErrorCode(kind, implicit, cpuMode, false, false), 0, refs, cycles);
    return;
  }
  if (stop == STOP_RESERVED) {
    finishFault(WALK_RESERVED, x86ErrorCode(kind, implicit, cpuMode, true, true), 0, refs, cycles);
    return;
  }
  // The rights down to each entry in TLB attribute form (kept for the PSC fills), and whether every
  // non-leaf entry allowed writes (shadow-stack pages need it).
  const accessedAll = radixAccessedAll & PTE_A;
  let nonLeafWritable = (rights & A_RW) != 0;
  for (let i: u32 = 0; i < used; i++) {
    const s = slot(i);
    const entry = load<u64>(s, SLOT_ENTRY);
    rights = combine(rights, entry, xdMask);
    store<u64>(s, rights, SLOT_RIGHTS);
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
    finishFault(WALK_PROTECTION, code, 0, refs, cycles);
    return;
  }

  // A in every entry this walk read, D in the leaf on a write; each update is a locked RMW of the line.
  // Without EPT A/D, writing a guest entry needs EPT write permission for its page (SDM 29.3.3.2).
  const isWrite = kind == AccessKind.Write || kind == AccessKind.ShadowStackWrite;
  const needsUpdate = (accessedAll & PTE_A) == 0 || (isWrite && (e & PTE_D) == 0);
  if (needsUpdate && isEpt && !nestedAd) {
    for (let i: u32 = 0; i < used; i++) {
      const s = slot(i);
      const old = load<u64>(s, SLOT_ENTRY);
      const wants = (old & PTE_A) == 0 || (i == used - 1 && isWrite && (old & PTE_D) == 0);
      if (wants && (load<u32>(s, SLOT_TABLE_RIGHTS) & N_W) == 0) {
        const gpa = load<u64>(s, SLOT_GPA);
        finishFault(WALK_EPT_VIOLATION, eptQualification(2, load<u32>(s, SLOT_TABLE_RIGHTS), false, 0), gpa, refs, cycles);
        return;
      }
    }
  }
  for (let i: u32 = 0; needsUpdate && i < used; i++) {
    const s = slot(i);
    const old = load<u64>(s, SLOT_ENTRY);
    let updated = old | PTE_A;
    if (i == used - 1 && isWrite) updated |= PTE_D;
    if (updated != old) {
      const address = load<u64>(s, SLOT_HPA);
      writeBacked64(address, updated);
      store<u64>(s, updated, SLOT_ENTRY);
      bump(S_AD_UPDATES);
      cycles += priceReference(cpu, address);
    }
  }
  if ((load<u64>(slot(used - 1), SLOT_ENTRY) & PTE_D) != 0) attrs |= A_DIRTY;

  // The final guest-physical address goes through the nested dimension last (Bochs order: the guest
  // walk, with its A/D updates, completes first).
  const guestMask = (<u64>1 << (12 + 9 * <u64>guestSizeCode)) - 1;
  const guestFrame = e & ADDRESS_MASK & ~guestMask;
  let sizeCode = guestSizeCode;
  let frame = guestFrame;
  let deny: u32 = 0;
  if (virtualized) {
    const finalGpa = guestFrame | (la & guestMask);
    const need: u32 = kind == AccessKind.Fetch ? N_X : isWrite ? N_W : N_R;
    const accessBits: u32 = kind == AccessKind.Fetch ? 4 : isWrite ? 2 : 1;
    if (!translateNested(cpu, nestedMode, finalGpa, need, accessBits, FOR_FINAL, attrs)) {
      finishNestedFault(finalGpa, refs, cycles);
      return;
    }
    // The combined entry maps the smaller of the two pages (a 2M guest page on 4K host pages is 4K).
    if (nestedSizeCode < sizeCode) sizeCode = nestedSizeCode;
    frame = nestedHpa & ~((<u64>1 << (12 + 9 * <u64>sizeCode)) - 1);
    deny = ((~nestedRights & N_ALL) | (nestedDirty ? 0 : DENY_CLEAN >> DENY_SHIFT)) << DENY_SHIFT;
  }

  // Cache every non-leaf entry read, with the rights accumulated down to it (SDM 4.10.3.1). Under a
  // nested dimension the value is the next table's host address and that page's nested rights.
  if (load<u32>(block + R_PSC_ANY) != 0) {
    for (let i: u32 = 0; i + 1 < used; i++) {
      const entryLevel = level + (used - 1 - i);
      const desc = pscDesc(cpu, entryLevel);
      if (!pscPresent(desc)) continue;
      const s = slot(i);
      const next = slot(i + 1);
      const nextTable = virtualized ? load<u64>(next, SLOT_HPA) & ADDRESS_MASK : load<u64>(s, SLOT_ENTRY) & ADDRESS_MASK;
      const value = nextTable | load<u64>(s, SLOT_RIGHTS) | (<u64>(virtualized ? load<u32>(next, SLOT_TABLE_RIGHTS) : 0) << 3);
      pscFill(desc, la, entryLevel, value, currentPcid, vmTag);
    }
  }

  // Remember a walk from the top that ended at a page table, once nothing in it needs updating.
  if (fromTop && prefix == 0 && guestSizeCode == 0) rememberWalk(walkMemo, la, rootContext, nestedContext, used - 1, virtualized);

  walkFault = WALK_OK;
  walkError = 0;
  walkGpa = 0;
  walkSizeCode = sizeCode;
  walkFrame = frame;
  walkAttrs = attrs;
  walkDeny = deny;
  walkRefs = refs;
  walkCycles += cycles;
}

/** Guest-physical to host-physical for the host's own use (tests, the hypervisor's emulation). */
export function nestedProbe(cpu: u32, gpa: u64, need: u32): u64 {
  walkNestedRefs = 0;
  walkCycles = 0;
  const nestedMode = load<u32>(cpuBlock(cpu) + R_NESTED_MODE);
  if (nestedMode == NestedMode.None) return gpa;
  loadNestedContext(cpu);
  const accessBits: u32 = (need & N_X) != 0 ? 4 : (need & N_W) != 0 ? 2 : 1;
  const ok = translateNested(cpu, nestedMode, gpa, need, accessBits, FOR_FINAL, 0);
  flushCounts();
  if (!ok) {
    walkFault = nestedFault;
    walkError = nestedError;
    return ~(<u64>0);
  }
  walkFault = WALK_OK;
  return nestedHpa;
}

export { DENY_R };
