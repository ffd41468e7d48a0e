// Statistics block: u64 counters at fixed indexes from STATS_BASE. The host reads them through one
// BigUint64Array view, by the indexes scripts/generate-layout.mjs copies into src/core/stats-layout.ts.
import { STATS_BASE } from "./constants";

export const S_ACCESSES: u32 = 0;
export const S_CYCLES: u32 = 1;
/** TLB level l (0 l1d, 1 l1i, 2 l2): hits at S_TLB + 2l, misses at S_TLB + 2l + 1. */
export const S_TLB: u32 = 2;
export const S_WALKS: u32 = 8;
export const S_WALK_REFS: u32 = 9;
export const S_FAULTED_WALKS: u32 = 10;
export const S_FAULTED_WALK_REFS: u32 = 11;
export const S_AD_UPDATES: u32 = 12;
/** PSC for level L (5..2): hits at S_PSC + 2(5-L), misses at +1. */
export const S_PSC: u32 = 13;
/** Cache hits: l1, l2, llc; then DRAM accesses. */
export const S_CACHE: u32 = 21;
export const S_DRAM: u32 = 24;
export const S_FAULT_NOT_PRESENT: u32 = 25;
export const S_FAULT_RESERVED: u32 = 26;
export const S_FAULT_PROTECTION: u32 = 27;
export const S_FAULT_PKEY: u32 = 28;
export const S_FAULT_GP: u32 = 29;
/** Successful walks by page size: 4K, 2M, 1G. */
export const S_PAGES: u32 = 30;
export const S_EXITS: u32 = 33;
/** Cycles charged by software handlers, by category (S_HANDLER_CYCLES + category, 8 categories). */
export const S_HANDLER_CYCLES: u32 = 34;
export const HANDLER_CATEGORIES: u32 = 8;
/** References of the nested dimension, included in walkRefs (and faultedWalkRefs). */
export const S_NESTED_REFS: u32 = 42;
export const S_FAULTED_NESTED_REFS: u32 = 43;
/** Nested (GPA -> HPA) TLB hits and misses. */
export const S_NTLB: u32 = 44;
/** Nested PSC for level L (5..2): hits at S_NPSC + 2(5-L), misses at +1. */
export const S_NPSC: u32 = 46;
/** Nested walks made (each a GPA translated by walking the nested tables). */
export const S_NESTED_WALKS: u32 = 54;
/** D-bit assists: writes that hit a TLB entry whose D flag (guest, or nested) was clear, and walked to set it. */
export const S_D_ASSISTS: u32 = 55;
/** Page-modification logging (SDM 29.3.6): guest-physical addresses the CPUs logged, and the cycles of their writes. */
export const S_PML_LOGGED: u32 = 56;
export const S_PML_CYCLES: u32 = 57;
export const S_HISTOGRAM: u32 = 64;
export const HISTOGRAM_BUCKETS: u32 = 32;
/** Exits by reason (ExitReason codes, EXIT_REASONS slots). */
export const S_EXIT_REASONS: u32 = 96;
/** IOMMU: DMA requests translated (completed or faulted), IOTLB hits and misses, walks and their refs. */
export const S_IO_TRANSLATIONS: u32 = 112;
export const S_IO_IOTLB: u32 = 113;
export const S_IO_WALKS: u32 = 115;
export const S_IO_WALK_REFS: u32 = 116;
/** Context-cache hits and misses, and the root/context/PASID/device-table references of the misses. */
export const S_IO_CC: u32 = 117;
export const S_IO_CONTEXT_REFS: u32 = 119;
export const S_IO_CYCLES: u32 = 120;
/** Requests that needed no walk: pass-through contexts and ATS translated requests. */
export const S_IO_UNTRANSLATED: u32 = 121;
export const S_IO_BYTES: u32 = 122;
/** Faults recorded (VT-d fault records or AMD-Vi events written) and faults lost to overflow. */
export const S_IO_RECORDED: u32 = 123;
export const S_IO_OVERFLOWS: u32 = 124;
/** IO paging-structure cache: one hit or one miss per walk that probed it. */
export const S_IO_PSC: u32 = 125;
/** Faults by cause (IoFault codes, IO_FAULT_CAUSES slots). */
export const S_IO_FAULTS: u32 = 128;
/** Invalidations by type (IoInvalidation codes, 16 slots). */
export const S_IO_INVALIDATIONS: u32 = 160;
export const S_COUNT: u32 = 176;

@inline export function bump(index: u32): void {
  const p = STATS_BASE + (index << 3);
  store<u64>(p, load<u64>(p) + 1);
}

@inline export function add(index: u32, n: u64): void {
  const p = STATS_BASE + (index << 3);
  store<u64>(p, load<u64>(p) + n);
}

export function clearStats(): void {
  memory.fill(STATS_BASE, 0, S_COUNT << 3);
}

/** Software (exit handlers, the guest kernel) charges its work: total cycles and its category. */
export function chargeHandler(cycles: u64, category: u32): void {
  add(S_CYCLES, cycles);
  add(S_HANDLER_CYCLES + (category < HANDLER_CATEGORIES ? category : HANDLER_CATEGORIES - 1), cycles);
}
