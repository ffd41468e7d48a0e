// Per-CPU architectural registers, kept in the CPU's control block so the host can read them
// through its views. `mode` caches the bits the hot path tests, recomputed on every register write.
import {
  CPU_BASE,
  CPU_STRIDE,
  CTRL_BASE,
  M_AC,
  M_LA57,
  M_LMA,
  M_NXE,
  M_PCIDE,
  M_PGE,
  M_PKE,
  M_PKS,
  M_SMAP,
  M_SMEP,
  M_USER,
  M_WP,
  R_CPL,
  R_CR0,
  R_CR3,
  R_CR4,
  R_EFER,
  R_MODE,
  R_PCID,
  R_RFLAGS,
} from "./constants";
import { translationsChanged } from "./memo";

export const CR0_WP: u64 = 1 << 16;
export const CR4_PAE: u64 = 1 << 5;
export const CR4_PGE: u64 = 1 << 7;
export const CR4_LA57: u64 = 1 << 12;
export const CR4_PCIDE: u64 = 1 << 17;
export const CR4_SMEP: u64 = 1 << 20;
export const CR4_SMAP: u64 = 1 << 21;
export const CR4_PKE: u64 = 1 << 22;
export const CR4_PKS: u64 = 1 << 24;
export const EFER_LMA: u64 = 1 << 10;
export const EFER_NXE: u64 = 1 << 11;
export const RFLAGS_AC: u64 = 1 << 18;
export const CR3_NOFLUSH: u64 = 1 << 63;
export const ADDRESS_MASK: u64 = 0x000ffffffffff000;

@inline export function cpuBlock(cpu: u32): usize {
  return CTRL_BASE + CPU_BASE + cpu * CPU_STRIDE;
}

@inline export function reg(cpu: u32, offset: u32): u64 {
  return load<u64>(cpuBlock(cpu) + offset);
}

@inline export function mode(cpu: u32): u32 {
  return load<u32>(cpuBlock(cpu) + R_MODE);
}

@inline export function pcid(cpu: u32): u32 {
  return load<u32>(cpuBlock(cpu) + R_PCID);
}

export function recomputeMode(cpu: u32): void {
  const block = cpuBlock(cpu);
  const cr0 = load<u64>(block + R_CR0);
  const cr4 = load<u64>(block + R_CR4);
  const efer = load<u64>(block + R_EFER);
  let m: u32 = 0;
  if (load<u64>(block + R_CPL) == 3) m |= M_USER;
  if ((cr0 & CR0_WP) != 0) m |= M_WP;
  if ((cr4 & CR4_SMEP) != 0) m |= M_SMEP;
  if ((cr4 & CR4_SMAP) != 0) m |= M_SMAP;
  if ((load<u64>(block + R_RFLAGS) & RFLAGS_AC) != 0) m |= M_AC;
  if ((cr4 & CR4_PKE) != 0) m |= M_PKE;
  if ((cr4 & CR4_PKS) != 0) m |= M_PKS;
  if ((efer & EFER_NXE) != 0) m |= M_NXE;
  if ((efer & EFER_LMA) != 0) m |= M_LMA;
  if ((cr4 & CR4_LA57) != 0) m |= M_LA57;
  if ((cr4 & CR4_PCIDE) != 0) m |= M_PCIDE;
  if ((cr4 & CR4_PGE) != 0) m |= M_PGE;
  store<u32>(block + R_MODE, m);
  translationsChanged();
  const cr3 = load<u64>(block + R_CR3);
  store<u32>(block + R_PCID, (m & M_PCIDE) != 0 ? <u32>(cr3 & 0xfff) : 0);
}

/** Raw register load, without the flushes an instruction would cause (machine set-up, checkpoints). */
export function setRegister(cpu: u32, offset: u32, value: u64): void {
  store<u64>(cpuBlock(cpu) + offset, offset == R_CR3 ? value & ~CR3_NOFLUSH : value);
  recomputeMode(cpu);
}

/** Canonical: bits 63:47 (4-level) or 63:56 (5-level) all equal. */
@inline export function isCanonical(la: u64, cpuMode: u32): bool {
  const top = (cpuMode & M_LA57) != 0 ? 56 : 47;
  const high = <i64>la >> top;
  return high == 0 || high == -1;
}
