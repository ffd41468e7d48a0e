// AMD's nested page tables (APM Vol. 2 §15.25; docs/ept-npt.md §NPT and the VMCB): x86-64 entries read as the nested
// dimension of a two-dimensional walk, every access a user access with the host's NXE, and the #NPF
// EXITINFO1 their faults report.
import { M_NXE, NestedMode, WalkFault } from "../constants";
import { N_R, N_W, N_X } from "./ept";
import { NEXT_LEAF, STOP_NOT_PRESENT, STOP_RESERVED, addressReserved, gbPages, levelShift } from "./format";
import { PTE_A, PTE_D, PTE_P, PTE_US, x86IsLeaf, x86Reserved } from "./x86";

/** NPT entries are x86 entries walked as user accesses with the host's NXE (always on here). */
@inline export function nptRights(e: u64): u32 {
  return N_R | (<u32>e & N_W) | ((e >> 63) != 0 ? 0 : N_X);
}

/** #NPF EXITINFO1 (APM 15.25.6): P, W, U (always), RSVD, ID, then bit 32 final or bit 33 table access. */
@inline export function npfInfo(present: bool, write: bool, reserved: bool, fetch: bool, final: bool): u64 {
  let info: u64 = 1 << 2;
  if (present) info |= 1;
  if (write) info |= 2;
  if (reserved) info |= 8;
  if (fetch) info |= 16;
  info |= final ? <u64>1 << 32 : <u64>1 << 33;
  return info;
}

/** NPT entries as the nested dimension reads them (formats/format.ts). */
@final @unmanaged export class Npt {
  @inline present(e: u64): bool {
    return (e & PTE_P) != 0;
  }
  /** The host runs with EFER.NXE, so XD is never reserved. */
  @inline reserved(e: u64, level: u32): bool {
    return x86Reserved(e, level, M_NXE, addressReserved, gbPages);
  }
  @inline rights(e: u64): u32 {
    return nptRights(e);
  }
  /** Every nested access is a user access, so U=1 is needed at every level (APM 15.25.5). */
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
  @inline get nested(): bool {
    return true;
  }
  @inline get mode(): u32 {
    return NestedMode.Npt;
  }
  /** Guest paging-structure accesses are read-modify-writes (KVM's PFERR_NESTED_GUEST_PAGE). */
  @inline tableNeed(trackDirty: bool): u32 {
    return N_R | N_W;
  }
  @inline fault(stop: u32): u32 {
    return WalkFault.Npf;
  }
  /** A not-present entry clears P; a reserved bit sets RSVD; missing rights leave P set. */
  @inline faultError(stop: u32, rights: u32, accessBits: u32, need: u32, final: bool, guestAttrs: u64): u64 {
    return npfInfo(stop != STOP_NOT_PRESENT, (need & N_W) != 0, stop == STOP_RESERVED, (need & N_X) != 0, final);
  }
}
