// AMD-Vi structures (AMD IOMMU spec §2.2; docs/iommu.md): the 32-byte device-table entry and the
// I/O page-table entry, whose Next Level field lets a table point past levels (level skipping) and
// whose value 7 encodes a page size in the address bits.
import { NEXT_LEAF, NEXT_RESERVED, NEXT_SKIPPED, addressReserved, levelShift } from "./format";

// --- device-table entry -------------------------------------------------------------------------------
export const DTE_V: u64 = 1;
export const DTE_TV: u64 = 2;
export const DTE_IR: u64 = 1 << 61;
export const DTE_IW: u64 = 1 << 62;
/** q1 bit 32 (DTE bit 96): I, the device may send ATS translated requests. */
export const DTE_I_HIGH: u64 = <u64>1 << 32;
@inline export function dteMode(q0: u64): u32 {
  return <u32>(q0 >> 9) & 7;
}
@inline export function dteDomain(q1: u64): u32 {
  return <u32>q1 & 0xffff;
}
/** Reserved in this model (no guest translation, no dirty tracking): q0 bits 8:2 and 63, address bits. */
@inline export function dteReserved(q0: u64, addressReserved: u64): bool {
  return (q0 & 0x1fc) != 0 || (q0 >> 63) != 0 || (q0 & addressReserved) != 0;
}

// --- I/O page-table entry ------------------------------------------------------------------------------
export const IOPTE_PR: u64 = 1;
export const IOPTE_IR: u64 = 1 << 61;
export const IOPTE_IW: u64 = 1 << 62;
@inline export function iopteNextLevel(e: u64): u32 {
  return <u32>(e >> 9) & 7;
}
/** Reserved: bits 58:52 and address bits beyond MAXPHYADDR. */
@inline export function iopteReserved(e: u64, addressReserved: u64): bool {
  return (e & 0x07f0000000000000) != 0 || (e & addressReserved) != 0;
}
/** Rights as bit 0 read, bit 1 write. */
@inline export function iopteRights(e: u64): u32 {
  return <u32>(e >> 61) & 3;
}
/**
 * log2 of the page size a Next Level 7 entry encodes: the run of ones from address bit 12 ends at the
 * first zero bit z, and the page is 2^(z+1) bytes.
 */
@inline export function iopteEncodedShift(e: u64): u32 {
  return <u32>ctz(~(e | 0xfff)) + 1;
}

/** Whether the index bits of the levels between a level-`level` entry and its next table are zero. */
@inline export function skippedBitsClear(address: u64, level: u32, next: u32): bool {
  const low = 12 + 9 * next;
  const high = 12 + 9 * (level - 1);
  return ((address >> <u64>low) & ((<u64>1 << <u64>(high - low)) - 1)) == 0;
}

/** I/O page-table entries as the IOMMU reads them (formats/format.ts), with level skipping. */
@final @unmanaged export class AmdVi {
  @inline present(e: u64): bool {
    return (e & IOPTE_PR) != 0;
  }
  @inline reserved(e: u64, level: u32): bool {
    return iopteReserved(e, addressReserved);
  }
  @inline rights(e: u64): u32 {
    return iopteRights(e);
  }
  @inline user(e: u64): bool {
    return true;
  }
  /**
   * Next Level 0 maps a page of this level's size; 7 a page whose size the address bits encode, larger
   * than this level's entries and smaller than the whole table; else the next table's level, below this
   * one, with the index bits of the levels skipped over all zero.
   */
  @inline next(e: u64, level: u32, address: u64): u32 {
    const next = iopteNextLevel(e);
    if (next == 0) return NEXT_LEAF;
    if (next == 7) {
      const encoded = iopteEncodedShift(e);
      const shift = levelShift(level);
      return encoded <= shift || encoded >= shift + 9 ? NEXT_RESERVED : NEXT_LEAF;
    }
    if (next >= level) return NEXT_RESERVED;
    return skippedBitsClear(address, level, next) ? next : NEXT_SKIPPED;
  }
  @inline get skips(): bool {
    return true;
  }
  @inline pageShift(e: u64, level: u32): u32 {
    return iopteNextLevel(e) == 7 ? iopteEncodedShift(e) : levelShift(level);
  }
  @inline get accessed(): u64 {
    return 0;
  }
  @inline get dirty(): u64 {
    return 0;
  }
}
