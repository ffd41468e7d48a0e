// Intel VT-d structures (VT-d spec chapter 9; docs/iommu.md): root entries, legacy and scalable-mode
// context entries, PASID directory and table entries, and the second-level paging entry. Each check is
// a small function so the one IO walk (mmu/iowalk.ts) and the context resolution stay format-neutral.
import { ADDRESS_MASK } from "../cpu";
import { NEXT_LEAF, addressReserved, ioCapabilities, levelShift } from "./format";

/** RTADDR bit 10: the root table holds scalable-mode root entries. */
export const RTADDR_SMT: u64 = 1 << 10;

// --- root entry (16 bytes per bus) ------------------------------------------------------------------
/** Legacy: P in bit 0, the context-table pointer in 63:12, bits 11:1 and the whole high qword reserved. */
@inline export function rootLegacyReserved(lo: u64, hi: u64, addressReserved: u64): bool {
  return (lo & 0xffe) != 0 || (lo & addressReserved) != 0 || hi != 0;
}

/** Scalable: each half (low for devfn < 128, high for the rest) has P in bit 0 and a pointer in 63:12. */
@inline export function rootScalableReserved(half: u64, addressReserved: u64): bool {
  return (half & 0xffe) != 0 || (half & addressReserved) != 0;
}

// --- legacy context entry (16 bytes per devfn) ------------------------------------------------------
export const CTX_P: u64 = 1;
export const CTX_FPD: u64 = 2;
@inline export function contextTT(lo: u64): u32 {
  return <u32>(lo >> 2) & 3;
}
@inline export function contextAW(hi: u64): u32 {
  return <u32>hi & 7;
}
@inline export function contextDID(hi: u64): u32 {
  return <u32>(hi >> 8) & 0xffff;
}
/** Reserved: low bits 11:4 and address bits beyond MAXPHYADDR; high bits 7:3 and 63:24. */
@inline export function contextLegacyReserved(lo: u64, hi: u64, addressReserved: u64): bool {
  return (lo & 0xff0) != 0 || (lo & addressReserved) != 0 || (hi & 0xffffffffff0000f8) != 0;
}
export const TT_TRANSLATE: u32 = 0;
export const TT_DEVICE_TLB: u32 = 1;
export const TT_PASSTHROUGH: u32 = 2;

// --- scalable-mode context entry (32 bytes, 128 per table) ---------------------------------------
/** q0: P 0, FPD 1, DTE 2 (device TLB), PASIDE 3, PDTS 11:9, PASID-directory pointer 63:12. */
export const SCTX_DTE: u64 = 4;
export const SCTX_PASIDE: u64 = 8;
@inline export function scalableContextPdts(q0: u64): u32 {
  return <u32>(q0 >> 9) & 7;
}
/** Reserved: q0 bits 8:5 and address bits; q1 above RID_PASID (19:0); q2 and q3 entirely. */
@inline export function scalableContextReserved(q0: u64, q1: u64, q2: u64, q3: u64, addressReserved: u64): bool {
  return (q0 & 0x1e0) != 0 || (q0 & addressReserved) != 0 || (q1 >> 20) != 0 || q2 != 0 || q3 != 0;
}

// --- PASID directory entry (8 bytes) and PASID-table entry (64 bytes) ------------------------------
/** Directory entry: P 0, FPD 1, PASID-table pointer 63:12; bits 11:2 reserved. */
@inline export function pasidDirReserved(e: u64, addressReserved: u64): bool {
  return (e & 0xffc) != 0 || (e & addressReserved) != 0;
}
export const PGTT_FIRST: u32 = 1;
export const PGTT_SECOND: u32 = 2;
export const PGTT_NESTED: u32 = 3;
export const PGTT_PASSTHROUGH: u32 = 4;
/** q0: P 0, FPD 1, AW 4:2, PGTT 8:6, SLPTPTR 63:12. */
@inline export function pasidAW(q0: u64): u32 {
  return <u32>(q0 >> 2) & 7;
}
@inline export function pasidPGTT(q0: u64): u32 {
  return <u32>(q0 >> 6) & 7;
}
/** q2: FLPM 3:2 (0 = 4-level, 1 = 5-level first-level tables), FLPTPTR 63:12. */
@inline export function pasidFLPM(q2: u64): u32 {
  return <u32>(q2 >> 2) & 3;
}
/** Reserved here: q0 bits 11:9 and address bits, q1 above the DID, q2 bits 11:4 (and 1:0) and address bits. */
@inline export function pasidEntryReserved(q0: u64, q1: u64, q2: u64, addressReserved: u64): bool {
  return (
    (q0 & 0xe00) != 0 ||
    (q0 & addressReserved) != 0 ||
    (q1 >> 16) != 0 ||
    (q2 & 0xff3) != 0 ||
    (q2 & addressReserved) != 0
  );
}

// --- second-level paging entry -------------------------------------------------------------------
export const SL_R: u64 = 1;
export const SL_W: u64 = 2;
export const SL_PS: u64 = 1 << 7;
export const SL_SNP: u64 = 1 << 11;

/** Present means R or W (X alone is not a present entry). */
@inline export function slPresent(e: u64): bool {
  return (e & 3) != 0;
}

/**
 * Reserved (fault reason 0xC): address bits beyond MAXPHYADDR; PS at levels 4 and 5, at level 3
 * without 1G support and at level 2 without 2M support; the low address bits of a large leaf; bits
 * 6:3 of a non-leaf entry; SNP (bit 11) without snoop control.
 */
@inline export function slReserved(e: u64, level: u32, addressReserved: u64, flags: u32): bool {
  if ((e & addressReserved) != 0) return true;
  if ((e & SL_SNP) != 0 && (flags & 4) == 0) return true;
  const large = (e & SL_PS) != 0;
  if (large) {
    if (level >= 4) return true;
    if (level == 3) return (flags & 2) == 0 || (e & 0x3ffff000) != 0;
    if (level == 2) return (flags & 1) == 0 || (e & 0x1ff000) != 0;
  }
  if (level > 1 && !large) return (e & 0x78) != 0;
  return false;
}

@inline export function slIsLeaf(e: u64, level: u32): bool {
  return level == 1 || (e & SL_PS) != 0;
}

/** Second-level entries as the IOMMU reads them (formats/format.ts): no U/S, no A/D in this model. */
@final @unmanaged export class VtdSecondLevel {
  @inline present(e: u64): bool {
    return slPresent(e);
  }
  @inline reserved(e: u64, level: u32): bool {
    return slReserved(e, level, addressReserved, ioCapabilities);
  }
  /** R and W in bits 0 and 1, where N_R and N_W are. */
  @inline rights(e: u64): u32 {
    return <u32>e & 3;
  }
  @inline user(e: u64): bool {
    return true;
  }
  @inline next(e: u64, level: u32, address: u64): u32 {
    return slIsLeaf(e, level) ? NEXT_LEAF : level - 1;
  }
  @inline get skips(): bool {
    return false;
  }
  @inline pageShift(e: u64, level: u32): u32 {
    return levelShift(level);
  }
  @inline get accessed(): u64 {
    return 0;
  }
  @inline get dirty(): u64 {
    return 0;
  }
  /** It translates the tables of another dimension too (VT-d nested translation, PGTT=3). */
  @inline get nested(): bool {
    return true;
  }
}

export { ADDRESS_MASK };
