// The IOMMU's radix walk (SPEC.md A.7; MODEL.md §13): one loop over three entry formats, the VT-d
// second-level format, the VT-d first-level format (the CPU's x86-64 entries) and the AMD-Vi I/O page
// table with level skipping. The formats differ only in the small functions of formats/vtd.ts,
// formats/x86.ts and formats/amdvi.ts. VT-d nested translation (PASID entry PGTT=3) is the same loop
// twice over: every first-level table address, and the final address, go through a second-level walk,
// as the CPU's two-dimensional walk does with EPT.
import {
  CFG_MAXPHYADDR,
  CTRL_BASE,
  IO_F_1G,
  IO_FLAGS,
  IO_MEM_TOP,
  IO_WALK_SCRATCH,
  IOF_ENTRY_ACCESS,
  IOF_ENTRY_RESERVED,
  IOF_NO_READ,
  IOF_NO_WRITE,
  IOF_PAGE_NOT_PRESENT,
  IOMMU_BASE,
  M_NXE,
} from "../constants";
import { ADDRESS_MASK } from "../cpu";
import { IOPTE_PR, iopteEncodedShift, iopteNextLevel, iopteReserved, iopteRights } from "../formats/amdvi";
import { slIsLeaf, slPresent, slReserved } from "../formats/vtd";
import { PTE_A, PTE_D, PTE_P, PTE_RW, PTE_US, physReservedMask, x86IsLeaf, x86Reserved } from "../formats/x86";
import { readPhys64, writeBacked64 } from "../phys";
import { priceUncoreReference } from "../timing/cache";

export const IOFMT_VTD_SL: u32 = 0;
export const IOFMT_VTD_FL: u32 = 1;
export const IOFMT_AMDVI: u32 = 2;

/** Rights of a translation: bit 0 read, bit 1 write. */
export const IO_R: u32 = 1;
export const IO_W: u32 = 2;

// Outputs of the last walk.
/** 0, or the fault cause (IOF_*). */
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

// Configuration read once per top-level walk.
let memTop: u64 = 0;
let addressReserved: u64 = 0;
let capabilities: u32 = 0;

/**
 * Scratch slot per entry read: u64 address, u64 entry, u32 level, u32 level of the next table, u32
 * rights after the entry (IO_R, IO_W, and IO_USER: U/S so far). First-level walks record for their A/D
 * update; single-dimension walks record for the paging-structure cache fills.
 */
@inline export function scratch(i: u32): usize {
  return IOMMU_BASE + IO_WALK_SCRATCH + (i << 5);
}
export const SLOT_ENTRY: u32 = 8;
export const SLOT_LEVEL: u32 = 16;
export const SLOT_NEXT_LEVEL: u32 = 20;
export const SLOT_RIGHTS: u32 = 24;
/** U/S held at every first-level entry so far (a paging-structure cache keeps it with the rights). */
export const IO_USER: u32 = 4;

/** Entries the last single-dimension walk recorded in the scratch (0 for nested walks). */
export let ioWalkRecorded: u32 = 0;
let recording = false;

/**
 * Walks `iova` from the table at `root` with `top` levels, for a read or a write. With `nestedLevels`
 * nonzero (first-level format only), table addresses and the final address are guest-physical and go
 * through a second-level walk from `nestedRoot`. With `record`, a single-dimension walk leaves its entries
 * in the scratch for the paging-structure cache. Returns true on a translation.
 */
export function ioWalk(
  format: u32,
  root: u64,
  top: u32,
  iova: u64,
  write: bool,
  nestedRoot: u64,
  nestedLevels: u32,
  record: bool,
): bool {
  memTop = load<u64>(IOMMU_BASE + IO_MEM_TOP);
  addressReserved = physReservedMask(load<u32>(CTRL_BASE + CFG_MAXPHYADDR));
  capabilities = load<u32>(IOMMU_BASE + IO_FLAGS);
  ioWalkAdUpdates = 0;
  // Only a paging-structure cache needs the directory entries recorded (first level records anyway).
  recording = record && nestedLevels == 0;
  return walkLevels(format, root & ADDRESS_MASK, top, IO_R | IO_W | IO_USER, iova, write, nestedRoot, nestedLevels);
}

/**
 * A single-dimension walk that starts below the top, from a paging-structure cache hit: the table at
 * `base` is at `level`, and `rights` (IO_R, IO_W, IO_USER) were accumulated above it.
 */
export function ioWalkFrom(format: u32, base: u64, level: u32, rights: u32, iova: u64, write: bool): bool {
  memTop = load<u64>(IOMMU_BASE + IO_MEM_TOP);
  addressReserved = physReservedMask(load<u32>(CTRL_BASE + CFG_MAXPHYADDR));
  capabilities = load<u32>(IOMMU_BASE + IO_FLAGS);
  ioWalkAdUpdates = 0;
  recording = true;
  return walkLevels(format, base, level, rights, iova, write, 0, 0);
}

/** Whether the index bits of the levels between a level-`level` entry and its next table are zero. */
@inline export function skippedBitsClear(iova: u64, level: u32, next: u32): bool {
  const low = 12 + 9 * next;
  const high = 12 + 9 * (level - 1);
  return ((iova >> <u64>low) & ((<u64>1 << <u64>(high - low)) - 1)) == 0;
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
  nestedRoot: u64,
  nestedLevels: u32,
): bool {
  const vtd = format != IOFMT_AMDVI;
  // VT-d reports a missing entry as the permission the request lacked (R=W=0 is "not present").
  const notPresent = vtd ? (write ? IOF_NO_WRITE : IOF_NO_READ) : IOF_PAGE_NOT_PRESENT;
  let base = root;
  let level = top;
  let rights: u32 = startRights & (IO_R | IO_W);
  let user = (startRights & IO_USER) != 0;
  let refs: u32 = 0;
  let cycles: u32 = 0;
  let used: u32 = 0;
  let leafShift: u32 = 12;
  let e: u64 = 0;
  let accessedAll: u64 = PTE_A;
  while (true) {
    const shift = 12 + 9 * (level - 1);
    let entryAddress = base | (((iova >> <u64>shift) & 0x1ff) << 3);
    if (nestedLevels != 0) {
      // The first-level table is in guest-physical space: its entry's address goes through the
      // second level first (a read; the A/D write-back below needs no second walk, as in MODEL §13.4).
      const ok = walkLevels(0, nestedRoot & ADDRESS_MASK, nestedLevels, IO_R | IO_W | IO_USER, entryAddress, false, 0, 0);
      refs += ioWalkRefs;
      cycles += ioWalkCycles;
      if (!ok) return fault(ioWalkCause, ioWalkPresent, refs, cycles);
      entryAddress = ioWalkFrame | (entryAddress & ((<u64>1 << <u64>ioWalkShift) - 1));
    }
    if (entryAddress >= memTop) return fault(IOF_ENTRY_ACCESS, false, refs, cycles);
    e = readPhys64(entryAddress);
    refs++;
    cycles += priceUncoreReference(entryAddress);
    const slot = scratch(used);
    if (recording || format == IOFMT_VTD_FL) {
      store<u64>(slot, entryAddress);
      store<u64>(slot, e, SLOT_ENTRY);
      store<u32>(slot, level, SLOT_LEVEL);
      store<u32>(slot, level - 1, SLOT_NEXT_LEVEL);
      used++;
    }
    if (format == IOFMT_VTD_SL) {
      if (!slPresent(e)) return fault(notPresent, false, refs, cycles);
      if (slReserved(e, level, addressReserved, capabilities)) return fault(IOF_ENTRY_RESERVED, true, refs, cycles);
      rights &= <u32>e & 3;
      if (slIsLeaf(e, level)) {
        leafShift = shift;
        break;
      }
    } else if (format == IOFMT_VTD_FL) {
      if ((e & PTE_P) == 0) return fault(notPresent, false, refs, cycles);
      // Device requests run with the host's EFER.NXE set (XD is never reserved) and the 1G capability.
      if (x86Reserved(e, level, M_NXE, addressReserved, (capabilities & IO_F_1G) != 0)) {
        return fault(IOF_ENTRY_RESERVED, true, refs, cycles);
      }
      if ((e & PTE_RW) == 0) rights &= IO_R;
      if ((e & PTE_US) == 0) user = false;
      accessedAll &= e;
      if (x86IsLeaf(e, level)) {
        leafShift = shift;
        break;
      }
    } else {
      if ((e & IOPTE_PR) == 0) return fault(notPresent, false, refs, cycles);
      if (iopteReserved(e, addressReserved)) return fault(IOF_ENTRY_RESERVED, true, refs, cycles);
      rights &= iopteRights(e);
      const next = iopteNextLevel(e);
      if (next == 0) {
        leafShift = shift;
        break;
      }
      if (next == 7) {
        // The page is larger than this level's entries and smaller than the whole table.
        const encoded = iopteEncodedShift(e);
        if (encoded <= <u32>shift || encoded >= <u32>shift + 9) return fault(IOF_ENTRY_RESERVED, true, refs, cycles);
        leafShift = encoded;
        break;
      }
      if (next >= level) return fault(IOF_ENTRY_RESERVED, true, refs, cycles);
      // Level skipping: the next table is at level `next`; the index bits of the levels skipped over
      // must be zero, or no translation exists for the address.
      if (!skippedBitsClear(iova, level, next)) return fault(notPresent, false, refs, cycles);
      store<u32>(slot, next, SLOT_NEXT_LEVEL);
      store<u32>(slot, rights | (user ? IO_USER : 0), SLOT_RIGHTS);
      base = e & ADDRESS_MASK;
      level = next;
      continue;
    }
    store<u32>(slot, rights | (user ? IO_USER : 0), SLOT_RIGHTS);
    base = e & ADDRESS_MASK;
    level--;
  }

  // First-level translations are user requests (requests without a privilege attribute): U/S must be set
  // at every level, and read access comes with presence.
  if (!user) rights = 0;
  if ((rights & (write ? IO_W : IO_R)) == 0) return fault(write ? IOF_NO_WRITE : IOF_NO_READ, true, refs, cycles);

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
  if (nestedLevels != 0) {
    const gpa = frame | (iova & pageMask);
    const ok = walkLevels(0, nestedRoot & ADDRESS_MASK, nestedLevels, IO_R | IO_W | IO_USER, gpa, write, 0, 0);
    refs += ioWalkRefs;
    cycles += ioWalkCycles;
    if (!ok) return fault(ioWalkCause, ioWalkPresent, refs, cycles);
    // The combined translation maps the smaller of the two pages, with the rights of both.
    if (ioWalkShift < leafShift) leafShift = ioWalkShift;
    rights &= ioWalkRights;
    frame = (ioWalkFrame | (gpa & ((<u64>1 << <u64>ioWalkShift) - 1))) & ~((<u64>1 << <u64>leafShift) - 1);
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
