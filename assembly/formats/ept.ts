// The Intel EPT entry format (SDM Vol. 3C §29.3.2; docs/ept-npt.md §EPT entries), as the nested dimension of a
// two-dimensional walk reads it, and the EPT-violation exit qualification its faults report. Entries are
// reduced to nested rights N_R/N_W/N_X (an AND over the levels), shared with NPT (npt.ts).
import { NestedMode, WalkFault } from "../constants";
import { A_RW, A_US, A_XD } from "../mmu/tlb";
import { NEXT_LEAF, STOP_NOT_PRESENT, STOP_RESERVED, addressReserved, eptExecuteOnly, gbPages, levelShift } from "./format";

export const N_R: u32 = 1;
export const N_W: u32 = 2;
export const N_X: u32 = 4;
export const N_ALL: u32 = 7;

export const EPT_R: u64 = 1 << 0;
export const EPT_W: u64 = 1 << 1;
export const EPT_X: u64 = 1 << 2;
export const EPT_LARGE: u64 = 1 << 7;
export const EPT_A: u64 = 1 << 8;
export const EPT_D: u64 = 1 << 9;

/** EPTP fields. */
export const EPTP_MEMTYPE_MASK: u64 = 7;
export const EPTP_WALK_SHIFT: u64 = 3;
export const EPTP_AD: u64 = 1 << 6;

// Walk outcomes of an EPT entry.
export const EPT_OK: u32 = 0;
export const EPT_NOT_PRESENT: u32 = 1;
export const EPT_MISCONFIG: u32 = 2;

/** Present: any of R, W, X (SDM 29.3.2; MBEC's user-execute bit is not modelled). */
@inline export function eptPresent(e: u64): bool {
  return (e & 7) != 0;
}

/**
 * Misconfigured (SDM 29.3.3.1): write without read (W or W+X), execute-only where unsupported, a
 * reserved bit (bits 6:3 in non-leaf entries, bit 7 in PML4E/PML5E, a large page where none is allowed,
 * the low address bits of a large page, address bits at or above MAXPHYADDR), or a leaf memory type of
 * 2, 3 or 7.
 */
@inline export function eptMisconfigured(e: u64, level: u32, addressReserved: u64, executeOnly: bool, gbPages: bool): bool {
  // The common case in one test: a readable non-leaf entry below the PML4 with clean reserved bits.
  if ((e & (0xf8 | addressReserved)) == 0 && (e & 1) != 0 && level < 4 && level > 1) return false;
  // And a readable 4K leaf with clean address bits and a valid memory type (0, 1, 4, 5 or 6).
  if (level == 1 && (e & (1 | addressReserved)) == 1 && ((0x73 >> <u32>((e >> 3) & 7)) & 1) != 0) return false;
  const rwx = <u32>(e & 7);
  if ((rwx & 3) == 2) return true;
  if (rwx == 4 && !executeOnly) return true;
  if ((e & addressReserved) != 0) return true;
  const large = (e & EPT_LARGE) != 0;
  if (level >= 4 && large) return true;
  if (level == 3 && large && !gbPages) return true;
  const leaf = level == 1 || large;
  if (!leaf) return (e & 0x78) != 0;
  const memoryType = <u32>((e >> 3) & 7);
  if (memoryType == 2 || memoryType == 3 || memoryType == 7) return true;
  if (level == 2 && large && (e & 0x1ff000) != 0) return true;
  if (level == 3 && large && (e & 0x3ffff000) != 0) return true;
  return false;
}

@inline export function eptIsLeaf(e: u64, level: u32): bool {
  return level == 1 || (level <= 3 && (e & EPT_LARGE) != 0);
}

@inline export function eptRights(e: u64): u32 {
  return <u32>(e & 7);
}

/**
 * EPT violation exit qualification (SDM 28.2.1, Table 28-7): the access in bits 2:0, the AND of the EPT
 * entries' R/W/X in bits 5:3, bit 7 (the linear address is valid: always, walks start from one), bit 8
 * (final translation rather than a guest paging-structure access) and, for final translations, the
 * guest's U/S, R/W and XD in bits 9-11.
 */
@inline export function eptQualification(accessBits: u32, rights: u32, final: bool, guestAttrs: u64): u64 {
  let q = <u64>(accessBits | ((rights & N_ALL) << 3) | (1 << 7));
  if (final) {
    q |= 1 << 8;
    if ((guestAttrs & A_US) != 0) q |= 1 << 9;
    if ((guestAttrs & A_RW) != 0) q |= 1 << 10;
    if ((guestAttrs & A_XD) != 0) q |= 1 << 11;
  }
  return q;
}

/** EPT entries as the nested dimension reads them (formats/format.ts). */
@final @unmanaged export class Ept {
  @inline present(e: u64): bool {
    return eptPresent(e);
  }
  @inline reserved(e: u64, level: u32): bool {
    return eptMisconfigured(e, level, addressReserved, eptExecuteOnly, gbPages);
  }
  @inline rights(e: u64): u32 {
    return eptRights(e);
  }
  @inline user(e: u64): bool {
    return true;
  }
  @inline next(e: u64, level: u32, address: u64): u32 {
    return eptIsLeaf(e, level) ? NEXT_LEAF : level - 1;
  }
  @inline get skips(): bool {
    return false;
  }
  @inline pageShift(e: u64, level: u32): u32 {
    return levelShift(level);
  }
  @inline get accessed(): u64 {
    return EPT_A;
  }
  @inline get dirty(): u64 {
    return EPT_D;
  }
  @inline get nested(): bool {
    return true;
  }
  @inline get mode(): u32 {
    return NestedMode.Ept;
  }
  /** Guest paging-structure reads need R; with EPT A/D on they count as writes (SDM 29.3.3.2). */
  @inline tableNeed(trackDirty: bool): u32 {
    return trackDirty ? N_R | N_W : N_R;
  }
  /** A misconfiguration is its own exit; everything else is an EPT violation. */
  @inline fault(stop: u32): u32 {
    return stop == STOP_RESERVED ? WalkFault.EptMisconfig : WalkFault.EptViolation;
  }
  @inline faultError(stop: u32, rights: u32, accessBits: u32, need: u32, final: bool, guestAttrs: u64): u64 {
    if (stop == STOP_RESERVED) return 0;
    return eptQualification(accessBits, stop == STOP_NOT_PRESENT ? 0 : rights, final, guestAttrs);
  }
}
