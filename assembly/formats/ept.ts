// The Intel EPT entry format (SDM Vol. 3C §29.3.2; docs/ept-npt.md §EPT entries) and the AMD NPT reading of
// the x86 format (APM Vol. 2 §15.25; docs/ept-npt.md §NPT and the VMCB), as the nested dimension of a
// two-dimensional walk sees them. Both are reduced to nested rights N_R/N_W/N_X (an AND over the levels).

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

/** NPT entries are x86 entries walked as user accesses with the host's NXE (always on here). */
@inline export function nptRights(e: u64): u32 {
  return N_R | (<u32>e & N_W) | ((e >> 63) != 0 ? 0 : N_X);
}
