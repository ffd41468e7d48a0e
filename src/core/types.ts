// Normalised machine configuration and results shared by the core wrapper and the reference model.
// The user-facing config (src/config) is validated and lowered into these shapes.

import type { PolicyName } from "./layout.js";

export type PageSize = "4K" | "2M" | "1G";
/** A replacement policy, by the name the core's Policy enumeration gives it. */
export type Policy = PolicyName;
/** Every replacement policy the core has. */
export { POLICY_NAMES as POLICIES } from "./layout.js";

export const PAGE_SIZES: readonly PageSize[] = ["4K", "2M", "1G"];
export const PAGE_SHIFT: Record<PageSize, number> = { "4K": 12, "2M": 21, "1G": 30 };

export interface TlbArrayConfig {
  sizes: PageSize[];
  entries: number;
  ways: number;
  policy: Policy;
}

export interface TlbLevelConfig {
  arrays: TlbArrayConfig[];
  /** Cycles charged whenever this level is probed. */
  latency: number;
}

export interface SetAssocConfig {
  entries: number;
  ways: number;
  policy: Policy;
}

export interface PscConfig {
  pml5: SetAssocConfig | null;
  pml4: SetAssocConfig | null;
  pdpte: SetAssocConfig | null;
  pde: SetAssocConfig | null;
  /** Cycles charged once when a walk starts from a PSC hit. */
  latency: number;
}

export interface CacheLevelConfig {
  /** Bytes. */
  size: number;
  ways: number;
  latency: number;
}

export interface CacheConfig {
  l1: CacheLevelConfig | null;
  l2: CacheLevelConfig | null;
  llc: CacheLevelConfig | null;
  dramLatency: number;
}

export interface MachineConfig {
  cpus: number;
  /** MAXPHYADDR, 36..52. */
  maxPhyAddr: number;
  /** 1 GiB pages supported (CPUID PDPE1GB). */
  gbPages: boolean;
  /**
   * EPT execute-only translations supported (IA32_VMX_EPT_VPID_CAP bit 0). Absent: true. False: an EPT
   * entry with permissions 100b is an EPT misconfiguration.
   */
  eptExecuteOnly?: boolean;
  /** Seed of every random replacement policy. */
  seed: number;
  tlb: { l1d: TlbLevelConfig | null; l1i: TlbLevelConfig | null; l2: TlbLevelConfig | null };
  psc: PscConfig;
  cache: CacheConfig;
  /** The nested (guest-physical -> host-physical) TLB used under EPT/NPT; absent or null: none. */
  nestedTlb?: TlbLevelConfig | null;
  /** Paging-structure caches of the nested dimension; absent or null: none. */
  nestedPsc?: PscConfig | null;
}

// The core's AccessKind and FaultType enumerations (generated as plain objects, which per-file
// transpilers such as vitest's and esbuild's can import).
/** Record kind byte flag: implicit supervisor-mode access. */
export { AccessKind, FaultType, KIND_IMPLICIT as IMPLICIT } from "./layout.js";

export const PFEC = {
  P: 1 << 0,
  W: 1 << 1,
  U: 1 << 2,
  RSVD: 1 << 3,
  ID: 1 << 4,
  PK: 1 << 5,
  SS: 1 << 6,
} as const;

export interface Regs {
  cr0: bigint;
  cr3: bigint;
  cr4: bigint;
  efer: bigint;
  pkru: number;
  pkrs: number;
  rflags: bigint;
  cpl: number;
}

export const CR0_WP = 1n << 16n;
export const CR0_PG = 1n << 31n;
export const CR4_PGE = 1n << 7n;
export const CR4_LA57 = 1n << 12n;
export const CR4_PCIDE = 1n << 17n;
export const CR4_SMEP = 1n << 20n;
export const CR4_SMAP = 1n << 21n;
export const CR4_PKE = 1n << 22n;
export const CR4_CET = 1n << 23n;
export const CR4_PKS = 1n << 24n;
export const EFER_LMA = 1n << 10n;
export const EFER_NXE = 1n << 11n;
export const RFLAGS_AC = 1n << 18n;

export interface AccessResult {
  /** FaultType: 0 translated, 14 #PF, 13 #GP; under a nested dimension 48 EPT violation, 49 EPT
   * misconfiguration, 0x400 #NPF. */
  fault: number;
  /** Physical address when translated. */
  pa: bigint;
  /** #PF error code, EPT exit qualification or #NPF EXITINFO1 (0 for #GP and success). */
  errorCode: number;
  /** Guest-physical address of a nested fault. */
  gpa?: bigint;
  /** References made in the nested dimension (included in refs). */
  nestedRefs?: number;
  /** Page size of the translation that was used (bytes), 0 on fault. */
  pageSize: number;
  /** Page-walk references made (0 on a TLB hit). */
  refs: number;
  cycles: number;
}

/** Statistics, nested as docs/MODEL.md §11 names them. */
export interface Stats {
  accesses: number;
  cycles: number;
  tlb: Record<"l1d" | "l1i" | "l2", { hits: number; misses: number }>;
  walks: number;
  walkRefs: number;
  faultedWalks: number;
  faultedWalkRefs: number;
  adUpdates: number;
  /** Writes that hit a clean TLB entry and walked to set D (MODEL.md §4). */
  dirtyAssists: number;
  psc: Record<"pml5" | "pml4" | "pdpte" | "pde", { hits: number; misses: number }>;
  cache: { l1: { hits: number }; l2: { hits: number }; llc: { hits: number }; dram: number };
  faults: { notPresent: number; reserved: number; protection: number; pkey: number; gp: number };
  pages: Record<PageSize, number>;
  histogram: number[];
}
