// The IOMMU's walks (docs/iommu.md; docs/MODEL.md §13), all the one radix walk (mmu/radix.ts): VT-d
// second-level tables (VtdSecondLevel), VT-d first-level tables (the CPU's X86 entries) and AMD-Vi I/O
// page tables with level skipping (AmdVi), priced as uncore references. VT-d nested translation (PASID
// entry PGTT=3) runs it in two dimensions: every first-level table address, and the final address, go
// through a second-level walk, as the CPU's two-dimensional walk does with EPT. What is the IOMMU's own
// is here: fault causes, the rights check, first-level A/D updates and the outputs.
import {
  CFG_MAXPHYADDR,
  CTRL_BASE,
  IO_F_1G,
  IO_FLAGS,
  IO_MEM_TOP,
  IO_NESTED_WALK_SCRATCH,
  IO_WALK_SCRATCH,
  IoFault,
  IOMMU_BASE,
  M_NXE,
} from "../constants";
import { ADDRESS_MASK } from "../cpu";
import { AmdVi } from "../formats/amdvi";
import {
  Native,
  STOP_BEYOND,
  STOP_LEAF,
  STOP_NESTED,
  STOP_RESERVED,
  STOP_RIGHTS,
  format,
  setCapabilities,
} from "../formats/format";
import { VtdSecondLevel } from "../formats/vtd";
import { PTE_A, PTE_D, X86, physReservedMask } from "../formats/x86";
import { writeBacked64 } from "../phys";
import { priceUncoreReference } from "../timing/cache";
import {
  NOWHERE,
  RADIX_ENTRY,
  RADIX_IO_USER,
  RADIX_LEVEL,
  RADIX_NEXT_LEVEL,
  RADIX_RIGHTS_SO_FAR,
  radixAccessedAll,
  radixCycles,
  radixEntry,
  radixRefs,
  radixRights,
  radixShift,
  radixUsed,
  radixUser,
  walkRadix,
} from "./radix";

export const IOFMT_VTD_SL: u32 = 0;
export const IOFMT_VTD_FL: u32 = 1;
export const IOFMT_AMDVI: u32 = 2;

/** Rights of a translation: bit 0 read, bit 1 write. */
export const IO_R: u32 = 1;
export const IO_W: u32 = 2;

// Outputs of the last walk.
/** 0, or the fault cause (IoFault). */
export let ioWalkCause: u32 = 0;
/** Whether the entry the fault was found at was present (AMD-Vi's PR flag). */
export let ioWalkPresent: bool = false;
/** Host-physical frame of the page, aligned to its size, and log2 of the size. */
export let ioWalkFrame: u64 = 0;
export let ioWalkShift: u32 = 12;
export let ioWalkRights: u32 = 0;
export let ioWalkRefs: u32 = 0;
export let ioWalkCycles: u32 = 0;
/** Accessed/dirty write-backs of the last walk (first-level entries only). */
export let ioWalkAdUpdates: u32 = 0;

/**
 * Scratch slot per entry read: u64 address, u64 entry, u32 level, u32 level of the next table, u32
 * rights after the entry (IO_R, IO_W, and IO_USER: U/S so far). First-level walks record for their A/D
 * update; single-dimension walks record for the paging-structure cache fills.
 */
@inline export function scratch(i: u32): usize {
  return IOMMU_BASE + IO_WALK_SCRATCH + (i << 5);
}
const SLOT_SIZE: u32 = 32;
export const SLOT_ENTRY: u32 = RADIX_ENTRY;
export const SLOT_LEVEL: u32 = RADIX_LEVEL;
export const SLOT_NEXT_LEVEL: u32 = RADIX_NEXT_LEVEL;
export const SLOT_RIGHTS: u32 = RADIX_RIGHTS_SO_FAR;
/** U/S held at every first-level entry so far (a paging-structure cache keeps it with the rights). */
export const IO_USER: u32 = RADIX_IO_USER;

/** Host-physical addresses at and above this have no memory (IO_MEM_TOP, loaded per request). */
let memTop: u64 = 0;

/**
 * Tables the IOMMU reads (a space of mmu/radix.ts): it has no caches of its own, and memory ends at
 * memTop. With N = Native they are host-physical; with N = VtdSecondLevel they are the first-level
 * tables of a nested (PGTT=3) context, guest-physical, so each entry's address goes through a
 * second-level walk first (a read; the A/D write-back needs no second walk, MODEL §13.4), whose
 * references and cycles count in the walk's own.
 */
@final @unmanaged class IoTables<N> {
  @inline locate(cpu: u32, address: u64, first: bool): u64 {
    if (format<N>().nested) {
      if (!ioSecondLevel(address, false)) return NOWHERE;
      return ioSecondLevelFrame | (address & ((<u64>1 << <u64>radixShift) - 1));
    }
    return address;
  }
  @inline extraRefs(): u32 {
    return format<N>().nested ? radixRefs : 0;
  }
  @inline extraCycles(): u32 {
    return format<N>().nested ? radixCycles : 0;
  }
  @inline beyond(hpa: u64): bool {
    return hpa >= memTop;
  }
  @inline price(cpu: u32, hpa: u64): u32 {
    return priceUncoreReference(hpa);
  }
  @inline record(slot: usize, address: u64): void {}
  @inline get iommu(): bool {
    return true;
  }
}

/** The second-level tables' root and depth, for nested walks. */
let nestedRoot: u64 = 0;
let nestedLevels: u32 = 0;
/** Host frame of the last ioSecondLevel translation (radixShift gives its size, radixRights its rights). */
let ioSecondLevelFrame: u64 = 0;
/** Why the last ioSecondLevel failed: a STOP_* reason. */
let ioSecondLevelStop: u32 = 0;

/**
 * VT-d second-level translation of a guest-physical address for nested (PGTT=3) walks, with its own
 * scratch so the first-level walk's entries survive. False on a fault.
 */
function ioSecondLevel(gpa: u64, write: bool): bool {
  const stop = walkRadix<VtdSecondLevel, IoTables<Native>>(
    0,
    nestedRoot & ADDRESS_MASK,
    nestedLevels,
    gpa,
    IO_R | IO_W,
    true,
    IOMMU_BASE + IO_NESTED_WALK_SCRATCH,
    SLOT_SIZE,
  );
  ioSecondLevelStop = stop;
  if (stop != STOP_LEAF) return false;
  if ((radixRights & (write ? IO_W : IO_R)) == 0) {
    ioSecondLevelStop = STOP_RIGHTS;
    return false;
  }
  ioSecondLevelFrame = radixEntry & ADDRESS_MASK & ~((<u64>1 << <u64>radixShift) - 1);
  return true;
}

/** Entries the last single-dimension walk recorded in the scratch (0 for nested walks). */
export let ioWalkRecorded: u32 = 0;
let recording = false;

/**
 * Walks `iova` from the table at `root` with `top` levels, for a read or a write. With `secondLevels`
 * nonzero (first-level format only), table addresses and the final address are guest-physical and go
 * through a second-level walk from `secondRoot`. With `record`, a single-dimension walk leaves its
 * entries in the scratch for the paging-structure cache. Returns true on a translation.
 */
export function ioWalk(
  format: u32,
  root: u64,
  top: u32,
  iova: u64,
  write: bool,
  secondRoot: u64,
  secondLevels: u32,
  record: bool,
): bool {
  loadWalkSettings();
  // Only a paging-structure cache needs the directory entries recorded (first level records anyway).
  recording = record && secondLevels == 0;
  return walkLevels(format, root & ADDRESS_MASK, top, IO_R | IO_W | IO_USER, iova, write, secondRoot, secondLevels);
}

/**
 * A single-dimension walk that starts below the top, from a paging-structure cache hit: the table at
 * `base` is at `level`, and `rights` (IO_R, IO_W, IO_USER) were accumulated above it.
 */
export function ioWalkFrom(format: u32, base: u64, level: u32, rights: u32, iova: u64, write: bool): bool {
  loadWalkSettings();
  recording = true;
  return walkLevels(format, base, level, rights, iova, write, 0, 0);
}

/** The walk's settings for a device request: host NXE and the 1G capability for first-level tables. */
function loadWalkSettings(): void {
  memTop = load<u64>(IOMMU_BASE + IO_MEM_TOP);
  const capabilities = load<u32>(IOMMU_BASE + IO_FLAGS);
  setCapabilities(physReservedMask(load<u32>(CTRL_BASE + CFG_MAXPHYADDR)), (capabilities & IO_F_1G) != 0, M_NXE, capabilities);
  ioWalkAdUpdates = 0;
}

/**
 * The radix walk in the request's format (a first-level walk over second-level tables when `nested`):
 * one line per format.
 */
function radix(format: u32, base: u64, level: u32, rights: u32, iova: u64, nested: bool): u32 {
  const r = rights & (IO_R | IO_W);
  const user = (rights & IO_USER) != 0;
  if (nested) return ioRadix<X86, IoTables<VtdSecondLevel>>(base, level, iova, r, user);
  if (format == IOFMT_VTD_SL) return ioRadix<VtdSecondLevel, IoTables<Native>>(base, level, iova, r, user);
  if (format == IOFMT_VTD_FL) return ioRadix<X86, IoTables<Native>>(base, level, iova, r, user);
  return ioRadix<AmdVi, IoTables<Native>>(base, level, iova, r, user);
}

/** One format's walk, a function of its own: the four in one function crowd each other's registers. */
function ioRadix<F, S>(base: u64, level: u32, iova: u64, rights: u32, user: bool): u32 {
  return walkRadix<F, S>(0, base, level, iova, rights, user, IOMMU_BASE + IO_WALK_SCRATCH, SLOT_SIZE);
}

/** The fault of a failed second-level translation, for a read (table entries) or the request's access. */
function secondLevelFault(write: bool, refs: u32, cycles: u32): bool {
  const stop = ioSecondLevelStop;
  if (stop == STOP_RESERVED) return fault(IoFault.EntryReserved, true, refs, cycles);
  if (stop == STOP_BEYOND) return fault(IoFault.EntryAccessFailed, false, refs, cycles);
  return fault(write ? IoFault.NoWrite : IoFault.NoRead, stop == STOP_RIGHTS, refs, cycles);
}

function fault(cause: u32, present: bool, refs: u32, cycles: u32): bool {
  ioWalkCause = cause;
  ioWalkPresent = present;
  ioWalkRefs = refs;
  ioWalkCycles = cycles;
  return false;
}

function walkLevels(
  format: u32,
  root: u64,
  top: u32,
  startRights: u32,
  iova: u64,
  write: bool,
  secondRoot: u64,
  secondLevels: u32,
): bool {
  const vtd = format != IOFMT_AMDVI;
  // VT-d reports a missing entry as the permission the request lacked (R=W=0 is "not present").
  const notPresent = vtd ? (write ? IoFault.NoWrite : IoFault.NoRead) : IoFault.PageNotPresent;
  nestedRoot = secondRoot;
  nestedLevels = secondLevels;
  const stop = radix(format, root, top, startRights, iova, secondLevels != 0);
  let refs = radixRefs;
  let cycles = radixCycles;
  const used = radixUsed;
  const e = radixEntry;
  let leafShift = radixShift;
  let rights = radixRights & (IO_R | IO_W);
  const user = radixUser;
  const accessedAll = radixAccessedAll & PTE_A;
  if (stop == STOP_NESTED) return secondLevelFault(false, refs, cycles);
  if (stop == STOP_BEYOND) return fault(IoFault.EntryAccessFailed, false, refs, cycles);
  if (stop == STOP_RESERVED) return fault(IoFault.EntryReserved, true, refs, cycles);
  if (stop != STOP_LEAF) return fault(notPresent, false, refs, cycles);

  // First-level translations are user requests (requests without a privilege attribute): U/S must be set
  // at every level, and read access comes with presence.
  if (!user) rights = 0;
  if ((rights & (write ? IO_W : IO_R)) == 0) return fault(write ? IoFault.NoWrite : IoFault.NoRead, true, refs, cycles);

  const pageMask = (<u64>1 << <u64>leafShift) - 1;
  let frame = e & ADDRESS_MASK & ~pageMask;
  if (format == IOFMT_VTD_FL) {
    // A in every first-level entry used, D in the leaf on a write (VT-d first-level A/D, like the CPU's).
    const settled = accessedAll != 0 && (!write || (e & PTE_D) != 0);
    for (let i: u32 = 0; !settled && i < used; i++) {
      const old = load<u64>(scratch(i), SLOT_ENTRY);
      let updated = old | PTE_A;
      if (i == used - 1 && write) updated |= PTE_D;
      if (updated != old) {
        const address = load<u64>(scratch(i));
        writeBacked64(address, updated);
        store<u64>(scratch(i), updated, SLOT_ENTRY);
        ioWalkAdUpdates++;
        cycles += priceUncoreReference(address);
      }
    }
  }
  if (secondLevels != 0) {
    const gpa = frame | (iova & pageMask);
    const ok = ioSecondLevel(gpa, write);
    refs += radixRefs;
    cycles += radixCycles;
    if (!ok) return secondLevelFault(write, refs, cycles);
    // The combined translation maps the smaller of the two pages, with the rights of both.
    const shift = radixShift;
    if (shift < leafShift) leafShift = shift;
    rights &= radixRights;
    frame = (ioSecondLevelFrame | (gpa & ((<u64>1 << <u64>shift) - 1))) & ~((<u64>1 << <u64>leafShift) - 1);
  }
  ioWalkRecorded = recording ? used : 0;
  ioWalkCause = 0;
  ioWalkPresent = true;
  ioWalkFrame = frame;
  ioWalkShift = leafShift;
  ioWalkRights = rights;
  ioWalkRefs = refs;
  ioWalkCycles = cycles;
  return true;
}
