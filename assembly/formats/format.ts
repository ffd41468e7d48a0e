// What every paging-entry format gives the one radix walk (mmu/radix.ts), as KVM's paging_tmpl.h asks
// of each PTTYPE. A format is a class without fields, used only as a type argument: the walk calls its
// methods on `format<F>()`, and since each method is inlined, every instantiation of the walk keeps
// only its own format's rules. Each format is one module (x86.ts, npt.ts, ept.ts, vtd.ts, amdvi.ts)
// with these members:
//
//   present(e: u64): bool                      the entry maps something
//   reserved(e: u64, level: u32): bool         a reserved bit is set (EPT: the entry is misconfigured)
//   rights(e: u64): u32                        N_R | N_W | N_X it grants (ANDed over the levels)
//   user(e: u64): bool                         U/S (formats without it: true)
//   next(e: u64, level: u32, address: u64): u32 the level of the table it points to, NEXT_LEAF when it
//                                              maps a page, NEXT_RESERVED / NEXT_SKIPPED on a format error
//   skips: bool                                `next` can skip levels or fail (AMD-Vi): else it is
//                                              always NEXT_LEAF or level - 1
//   pageShift(e: u64, level: u32): u32         log2 of the page a leaf maps
//   accessed: u64, dirty: u64                  its A and D bits (0: the format has none)
//
// The formats of a CPU's nested dimension (EPT, NPT) add what the nested walk reports:
//
//   nested: bool                               true (mmu/nested.ts's Native, standing for no nested
//                                              dimension, has only this member, false)
//   mode: u32                                  its NestedMode code
//   tableNeed(trackDirty: bool): u32           rights a guest paging-structure access needs
//   fault(stop: u32): u32                      the walk fault (WalkFault) a stopped walk raises
//   faultError(stop, rights, accessBits, need, final, guestAttrs): u64   its qualification or EXITINFO1
//
// What the machine supports decides some reserved bits; the walk's caller sets it below.
import { M_NXE } from "../constants";

/**
 * No nested dimension, in place of a nested format: the tables a walk reads are host-physical. Code
 * that the nested formats' members need is under `if (format<N>().nested)`, which the compiler
 * resolves, so nothing else of a format is asked of it.
 */
@final @unmanaged export class Native {
  @inline get nested(): bool {
    return false;
  }
}

/** The (zero-size) instance of format `F` whose methods the walk calls. */
@inline export function format<F>(): F {
  return changetype<F>(0);
}

/** Why the radix walk stopped (its return value). */
export const STOP_LEAF: u32 = 0;
export const STOP_NOT_PRESENT: u32 = 1;
/** A reserved bit, or for EPT a misconfiguration. */
export const STOP_RESERVED: u32 = 2;
/** The nested translation of a table address failed (the nested walk's outputs say how). */
export const STOP_NESTED: u32 = 3;
/** IOMMU only: an entry address with no memory behind it. */
export const STOP_BEYOND: u32 = 4;
/** AMD-Vi only: index bits of the levels a Next Level field skipped are not zero. */
export const STOP_SKIPPED: u32 = 5;
/** Set by callers that check the leaf's rights: they lack the access. */
export const STOP_RIGHTS: u32 = 6;

/** Returned by `next`: the entry maps a page. */
export const NEXT_LEAF: u32 = 0;
/** Returned by `next`: the entry's level information is invalid (a reserved-bit fault). */
export const NEXT_RESERVED: u32 = 0xfe;
/** Returned by `next`: AMD-Vi level skipping over index bits that are not zero. */
export const NEXT_SKIPPED: u32 = 0xff;

// The machine's capabilities, as the reserved-bit rules read them; each walk's caller sets them.
/** Address bits [MAXPHYADDR, 51], reserved in every format. */
export let addressReserved: u64 = 0;
/** 1 GiB pages allowed (the CPU's PDPE1GB, or VT-d's CAP.SLLPS bit 1). */
export let gbPages: bool = true;
/** The walking CPU's mode bits: without M_NXE, an x86 entry's XD bit is reserved. */
export let x86Mode: u32 = M_NXE;
/** EPT execute-only translations supported (machine.eptExecuteOnly): without it, 100b is a misconfiguration. */
export let eptExecuteOnly: bool = true;
/** VT-d capability bits (IO_F_*): large pages and snoop control in second-level entries. */
export let ioCapabilities: u32 = 0;

/** Sets what the reserved-bit rules read (`mode` only matters to x86-64 entries). */
@inline export function setCapabilities(reserved: u64, gigabytePages: bool, mode: u32, capabilities: u32): void {
  addressReserved = reserved;
  gbPages = gigabytePages;
  x86Mode = mode;
  ioCapabilities = capabilities;
}

/** log2 of the page a leaf at `level` maps in the 4-KiB, 9-bits-a-level radix formats. */
@inline export function levelShift(level: u32): u32 {
  return 12 + 9 * (level - 1);
}
