// The x86-64 paging-entry format (SDM Vol. 3A §4.5; docs/x86-paging.md): where the bits sit, which are
// reserved, what makes a leaf, and the access-rights rules (§4.6) that TLB hits and walks share.
import {
  AccessKind,
  M_AC,
  M_NXE,
  M_PKE,
  M_PKS,
  M_SMAP,
  M_SMEP,
  M_USER,
  M_WP,
} from "../constants";
import { A_PKEY_SHIFT, A_RW, A_SS, A_US, A_XD } from "../mmu/tlb";
import { N_R, N_X } from "./ept";
import { NEXT_LEAF, addressReserved, gbPages, levelShift, x86Mode } from "./format";

export const PTE_P: u64 = 1 << 0;
export const PTE_RW: u64 = 1 << 1;
export const PTE_US: u64 = 1 << 2;
export const PTE_A: u64 = 1 << 5;
export const PTE_D: u64 = 1 << 6;
export const PTE_PS: u64 = 1 << 7;
export const PTE_G: u64 = 1 << 8;
export const PTE_XD: u64 = 1 << 63;

/** Low bits of a large leaf's address field that must be zero (bit 12 is PAT there). */
const LARGE_2M_RESERVED: u64 = 0x1fe000;
const LARGE_1G_RESERVED: u64 = 0x3fffe000;

/** #PF error-code bits (SDM 4.7). */
export const PF_P: u32 = 1 << 0;
export const PF_W: u32 = 1 << 1;
export const PF_U: u32 = 1 << 2;
export const PF_RSVD: u32 = 1 << 3;
export const PF_ID: u32 = 1 << 4;
export const PF_PK: u32 = 1 << 5;
export const PF_SS: u32 = 1 << 6;

/** Bits [maxPhyAddr, 51]: an address bit the machine does not have. */
@inline export function physReservedMask(maxPhyAddr: u32): u64 {
  return ((<u64>1 << 52) - 1) & ~((<u64>1 << maxPhyAddr) - 1);
}

/** Whether a present entry at `level` (5..1) has a reserved bit set (SDM 4.5.4, Table 4-20). */
@inline export function x86Reserved(e: u64, level: u32, cpuMode: u32, addressReserved: u64, gbPages: bool): bool {
  if ((e & addressReserved) != 0) return true;
  if ((e & PTE_XD) != 0 && (cpuMode & M_NXE) == 0) return true;
  if (level >= 2 && (e & PTE_PS) != 0) {
    if (level >= 4) return true;
    if (level == 3) return !gbPages || (e & LARGE_1G_RESERVED) != 0;
    return (e & LARGE_2M_RESERVED) != 0;
  }
  return false;
}

@inline export function x86IsLeaf(e: u64, level: u32): bool {
  return level == 1 || (e & PTE_PS) != 0;
}

/**
 * x86-64 entries as the CPU reads its own tables and VT-d reads first-level tables (formats/format.ts).
 * XD is not a right here: the CPU combines it into the translation's attributes itself.
 */
@final @unmanaged export class X86 {
  @inline present(e: u64): bool {
    return (e & PTE_P) != 0;
  }
  @inline reserved(e: u64, level: u32): bool {
    return x86Reserved(e, level, x86Mode, addressReserved, gbPages);
  }
  @inline rights(e: u64): u32 {
    return N_R | N_X | <u32>(e & PTE_RW);
  }
  @inline user(e: u64): bool {
    return (e & PTE_US) != 0;
  }
  @inline next(e: u64, level: u32, address: u64): u32 {
    return x86IsLeaf(e, level) ? NEXT_LEAF : level - 1;
  }
  @inline get skips(): bool {
    return false;
  }
  @inline pageShift(e: u64, level: u32): u32 {
    return levelShift(level);
  }
  @inline get accessed(): u64 {
    return PTE_A;
  }
  @inline get dirty(): u64 {
    return PTE_D;
  }
}

export const ACCESS_FAULT: u32 = 1 << 31;

/**
 * Access-rights check (SDM 4.6) on effective rights `attrs` (A_RW, A_US, A_XD, A_SS, pkey). Returns 0
 * when the access is allowed, else ACCESS_FAULT with PF_PK when a protection key denied it: the SDM
 * defines PK by the key conditions alone, so it is reported even when another check failed too.
 */
@inline export function x86AccessCheck(kind: u32, implicit: bool, cpuMode: u32, attrs: u64, pkru: u32, pkrs: u32): u32 {
  const user = (cpuMode & M_USER) != 0 && !implicit;
  const isWrite = kind == AccessKind.Write || kind == AccessKind.ShadowStackWrite;
  const shadowStack = kind >= <u32>AccessKind.ShadowStackRead;
  const userPage = (attrs & A_US) != 0;
  const writable = (attrs & A_RW) != 0;
  let fault = false;
  if (shadowStack) {
    // Shadow-stack accesses need a shadow-stack page of their own privilege (SDM 4.6.1).
    fault = (attrs & A_SS) == 0 || userPage != user;
  } else {
    if (user) {
      fault = !userPage || (isWrite && !writable);
    } else {
      fault = isWrite && !writable && (cpuMode & M_WP) != 0;
    }
    if (kind == AccessKind.Fetch) {
      if ((attrs & A_XD) != 0) fault = true;
      if (!user && userPage && (cpuMode & M_SMEP) != 0) fault = true;
    } else if (!user && userPage && (cpuMode & M_SMAP) != 0 && (implicit || (cpuMode & M_AC) == 0)) {
      fault = true;
    }
  }
  let keyDenied = false;
  if (kind != AccessKind.Fetch) {
    let rights: u32 = 0;
    const key = <u32>(attrs >> A_PKEY_SHIFT) & 0xf;
    if (userPage && (cpuMode & M_PKE) != 0) rights = (pkru >> (key << 1)) & 3;
    else if (!userPage && (cpuMode & M_PKS) != 0) rights = (pkrs >> (key << 1)) & 3;
    keyDenied =
      (rights & 1) != 0 || ((rights & 2) != 0 && isWrite && !shadowStack && (user || (cpuMode & M_WP) != 0));
  }
  if (!fault && !keyDenied) return 0;
  return ACCESS_FAULT | (keyDenied ? PF_PK : 0);
}

/** The #PF error code for a fault of this access; `present` is false for a not-present fault. */
@inline export function x86ErrorCode(kind: u32, implicit: bool, cpuMode: u32, present: bool, reserved: bool): u32 {
  let code: u32 = 0;
  if (present) code |= PF_P;
  if (kind == AccessKind.Write || kind == AccessKind.ShadowStackWrite) code |= PF_W;
  if ((cpuMode & M_USER) != 0 && !implicit) code |= PF_U;
  if (reserved) code |= PF_RSVD;
  if (kind == AccessKind.Fetch && (cpuMode & (M_SMEP | M_NXE)) != 0) code |= PF_ID;
  if (kind >= <u32>AccessKind.ShadowStackRead) code |= PF_SS;
  return code;
}
