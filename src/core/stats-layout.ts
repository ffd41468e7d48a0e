// Mirror of the statistics indexes in assembly/stats.ts, checked by test/core/layout.test.ts.

export const S_ACCESSES = 0;
export const S_CYCLES = 1;
export const S_TLB = 2;
export const S_WALKS = 8;
export const S_WALK_REFS = 9;
export const S_FAULTED_WALKS = 10;
export const S_FAULTED_WALK_REFS = 11;
export const S_AD_UPDATES = 12;
export const S_PSC = 13;
export const S_CACHE = 21;
export const S_DRAM = 24;
export const S_FAULT_NOT_PRESENT = 25;
export const S_FAULT_RESERVED = 26;
export const S_FAULT_PROTECTION = 27;
export const S_FAULT_PKEY = 28;
export const S_FAULT_GP = 29;
export const S_PAGES = 30;
export const S_EXITS = 33;
export const S_HANDLER_CYCLES = 34;
export const HANDLER_CATEGORIES = 8;
export const S_HISTOGRAM = 64;
export const HISTOGRAM_BUCKETS = 32;
export const S_COUNT = 96;
