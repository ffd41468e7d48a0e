// The radix page walk (SDM 4.5, 29.3; APM 15.25; VT-d 3.6-3.8; AMD IOMMU 2.2), written once for every
// entry format and every place tables live, as KVM's paging_tmpl.h is. `walkRadix<F, S>` takes the
// entry format F (formats/format.ts: X86, Npt, Ept, VtdSecondLevel, AmdVi) and the table space S as
// type arguments; both are field-less classes whose inlined methods the loop calls, so each
// instantiation is compiled with only its own rules. The spaces:
//
//   CpuTables<Native>  host-physical tables a CPU reads, priced by its caches (native walks, and the
//                      nested dimension's own tables; mmu/nested.ts)
//   CpuTables<N>       guest-physical tables behind a CPU's nested dimension of format N (mmu/nested.ts)
//   IoTables<Native>   host-physical tables the IOMMU reads, priced in the uncore (mmu/iowalk.ts)
//   IoTables<VtdSecondLevel>  guest-physical first-level tables behind VT-d's second level
//
// A space has these members:
//
//   locate(cpu, address: u64, first: bool): u64   where the entry at `address` (the walk's first when
//                                    `first`) is in host memory, or NOWHERE when its nested translation failed
//   extraRefs(): u32, extraCycles(): u32   references and cycles of that translation that count in the
//                                    walk's own (the IOMMU's second level; a CPU counts them apart)
//   beyond(hpa: u64): bool           no memory behind the entry's address
//   price(cpu, hpa: u64): u32        cycles to read the entry's line
//   record(slot: usize, address: u64) what else the walk's caller keeps of each entry
//   iommu: bool                      the slots take the IOMMU's layout (level, next level, rights so far)
import { ADDRESS_MASK } from "../cpu";
import {
  NEXT_LEAF,
  NEXT_RESERVED,
  NEXT_SKIPPED,
  STOP_BEYOND,
  STOP_LEAF,
  STOP_NESTED,
  STOP_NOT_PRESENT,
  STOP_RESERVED,
  STOP_SKIPPED,
  format,
  levelShift,
} from "../formats/format";
import { N_R, N_W } from "../formats/ept";
import { readPhys64 } from "../phys";

/** What `locate` returns when the entry's address could not be translated. */
export const NOWHERE: u64 = ~(<u64>0);

// Outputs of the last radix walk.
export let radixLevel: u32 = 0;
export let radixEntry: u64 = 0;
export let radixUsed: u32 = 0;
export let radixRefs: u32 = 0;
export let radixCycles: u32 = 0;
/** N_R/N_W/N_X ANDed over the entries (x86: R/W only, XD is the CPU's to combine). */
export let radixRights: u32 = 0;
/** U/S held at every entry read (formats without U/S: as the walk started). */
export let radixUser: bool = true;
/** The AND of every entry read (the caller masks its format's accessed bit). */
export let radixAccessedAll: u64 = 0;
/** log2 of the leaf's page size. */
export let radixShift: u32 = 12;
/** With STOP_NESTED: the guest-physical address whose translation failed. */
export let radixGpa: u64 = 0;

/** Scratch fields every slot has: the entry's host address and value. */
export const RADIX_HPA: u32 = 0;
export const RADIX_ENTRY: u32 = 8;
/** IOMMU slots also keep the entry's level, the next table's level and the rights so far (with IO_USER). */
export const RADIX_LEVEL: u32 = 16;
export const RADIX_NEXT_LEVEL: u32 = 20;
export const RADIX_RIGHTS_SO_FAR: u32 = 24;
/** The IOMMU's user bit in RADIX_RIGHTS_SO_FAR (next to N_R and N_W). */
export const RADIX_IO_USER: u32 = 4;

/**
 * The one radix walk (docs/MODEL.md §3, §12, §13). From the `level`-level table at `base`, reads one
 * entry per level along `address`: where the entry is (the space's nested translation, for guest
 * tables), the read and its price, then the format's presence, reserved-bit, rights and next-level
 * rules. `rights` and `user` are what the levels above granted. Every entry read goes into the caller's
 * scratch (`slots`, `slotSize` bytes each). Returns a STOP_* reason; the radix* globals hold the rest.
 */
@inline export function walkRadix<F, S>(
  cpu: u32,
  base: u64,
  level: u32,
  address: u64,
  rights: u32,
  user: bool,
  slots: usize,
  slotSize: u32,
): u32 {
  const entries = format<F>();
  const space = changetype<S>(0);
  let refs: u32 = 0;
  let cycles: u32 = 0;
  let used: u32 = 0;
  let e: u64 = 0;
  let accessedAll: u64 = ~(<u64>0);
  let shift: u32 = 12;
  let stop: u32 = STOP_LEAF;
  while (true) {
    shift = levelShift(level);
    const entryAddress = base | (((address >> <u64>shift) & 0x1ff) << 3);
    const hpa = space.locate(cpu, entryAddress, used == 0);
    refs += space.extraRefs();
    cycles += space.extraCycles();
    if (hpa == NOWHERE) {
      radixGpa = entryAddress;
      stop = STOP_NESTED;
      break;
    }
    if (space.beyond(hpa)) {
      stop = STOP_BEYOND;
      break;
    }
    e = readPhys64(hpa);
    refs++;
    cycles += space.price(cpu, hpa);
    const slot = slots + <usize>(used++ * slotSize);
    store<u64>(slot, hpa, RADIX_HPA);
    store<u64>(slot, e, RADIX_ENTRY);
    space.record(slot, entryAddress);
    if (!entries.present(e)) {
      stop = STOP_NOT_PRESENT;
      break;
    }
    if (entries.reserved(e, level)) {
      stop = STOP_RESERVED;
      break;
    }
    rights &= entries.rights(e);
    user = user && entries.user(e);
    accessedAll &= e;
    const next = entries.next(e, level, address);
    if (entries.skips) {
      if (next == NEXT_RESERVED) {
        stop = STOP_RESERVED;
        break;
      }
      if (next == NEXT_SKIPPED) {
        stop = STOP_SKIPPED;
        break;
      }
    }
    if (space.iommu) {
      store<u32>(slot, level, RADIX_LEVEL);
      store<u32>(slot, next == NEXT_LEAF ? level - 1 : next, RADIX_NEXT_LEVEL);
      store<u32>(slot, (rights & (N_R | N_W)) | (user ? RADIX_IO_USER : 0), RADIX_RIGHTS_SO_FAR);
    }
    if (next == NEXT_LEAF) {
      shift = entries.pageShift(e, level);
      break;
    }
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
