// The guest kernel's anonymous demand fault, run in the core (docs/MODEL.md §10). A not-present #PF
// inside a region the kernel pages in on demand takes no decision software must make: the kernel
// allocates the next free frame, creates the page tables missing above it (each from its allocator,
// in walk order, the new entry granting P, RW and US so the leaf alone decides, as Linux does for user
// tables) and installs the leaf. Where the host allows it, it publishes in the demand-paging region
// what that handler reads; the core then does exactly the stores the handler would, charges its
// cycles, counts the exit as the host would, and logs the fault so the host can account it (frames,
// tables, statistics) between calls. Anything else (a region it does not know, an empty pool, a full
// log, a larger page in the way) exits as before, so the host's handler stays the reference.
import {
  CFG_DEMAND_BASE,
  CFG_MAXPHYADDR,
  CTRL_BASE,
  DC_ROOT,
  DC_VMA_COUNT,
  DEMAND_CPU_SIZE,
  DEMAND_LOG_CAPACITY,
  DEMAND_LOG_SIZE,
  DEMAND_POOL_CAPACITY,
  DEMAND_REGION_SIZE,
  DEMAND_VMA_SIZE,
  DEMAND_VMAS,
  DL_CPU,
  DL_ERROR,
  DL_FRAME,
  DL_LINEAR,
  DL_SIZE_CODE,
  DL_TABLE_COUNT,
  DL_TABLES,
  DL_TOP_LEVEL,
  DM_CPUS,
  DM_ENABLED,
  DM_FAULT_CYCLES,
  DM_LEVELS,
  DM_LOG,
  DM_LOG_COUNT,
  DM_POOL_FRAMES,
  DM_POOLS,
  DM_TABLE_POOL,
  DM_VMAS,
  DV_END,
  DV_FLAGS,
  DV_SIZE_CODE,
  DV_START,
  ExitReason,
} from "./constants";
import { PTE_P, PTE_PS, PTE_RW, PTE_US } from "./formats/x86";
import { regionOnDemand } from "./heap";
import { backFrame, readPhys64, writePhys64 } from "./phys";
import { S_EXIT_REASONS, S_EXITS, bump, chargeHandler } from "./stats";

/** #PF error-code bits the handler reads. */
const PF_P: u64 = 1;
const PF_W: u64 = 2;
const PF_RSVD: u64 = 8;
const PF_ID: u64 = 16;
const PTE_XD: u64 = <u64>1 << 63;
const ADDRESS_MASK: u64 = 0x000f_ffff_ffff_f000;
/** The handler's category of charged cycles: the guest kernel's. */
const CYCLES_GUEST_KERNEL: u32 = 0;

/** The region, allocated when the host first asks for it; 0 when memory cannot hold it. */
export function demandRegion(): usize {
  return regionOnDemand(CFG_DEMAND_BASE, DEMAND_REGION_SIZE, 64);
}

/** The region when the host has enabled in-core demand paging, else 0 (one load on the fault path). */
@inline export function demandEnabled(): usize {
  const base = <usize>load<u32>(CTRL_BASE + CFG_DEMAND_BASE);
  return base != 0 && load<u32>(base + DM_ENABLED) != 0 ? base : 0;
}

@inline function poolLeft(base: usize, pool: u32): u32 {
  const p = base + DM_POOLS + (pool << 3);
  return load<u32>(p) - load<u32>(p, 4);
}

/** Frame `index` of the pool, counted from the first published. */
@inline function poolFrame(base: usize, pool: u32, index: u32): u64 {
  return load<u64>(base + DM_POOL_FRAMES + (<usize>(pool * DEMAND_POOL_CAPACITY + index) << 3));
}

/** How many frames of the pool are taken. */
@inline function poolTaken(base: usize, pool: u32): u32 {
  return load<u32>(base + DM_POOLS + (pool << 3), 4);
}

/** The pool's next frame; the caller has checked it has one. */
@inline function takeFrame(base: usize, pool: u32): u64 {
  const taken = poolTaken(base, pool);
  store<u32>(base + DM_POOLS + (pool << 3), taken + 1, 4);
  return poolFrame(base, pool, taken);
}

@inline function entryAddress(table: u64, la: u64, level: u32): u64 {
  return table + (((la >> (12 + 9 * <u64>(level - 1))) & 0x1ff) << 3);
}

/**
 * Handles the #PF just taken on `cpu` at `la` with error code `error`, when it is an anonymous demand
 * fault the published state covers. Returns whether it did (the record is then retried, as after the
 * host's handler); false leaves every byte as it was, and the fault exits.
 */
export function demandFault(base: usize, cpu: u32, la: u64, error: u64): bool {
  if ((error & (PF_P | PF_RSVD)) != 0) return false;
  const cpuBlock = base + DM_CPUS + <usize>cpu * DEMAND_CPU_SIZE;
  const vmaCount = load<u32>(cpuBlock + DC_VMA_COUNT);
  // The first region holding `la`, as the kernel's find_vma in a sorted list.
  const vmas = base + DM_VMAS + <usize>cpu * DEMAND_VMAS * DEMAND_VMA_SIZE;
  let vma: usize = 0;
  for (let v: u32 = 0; v < vmaCount; v++) {
    const candidate = vmas + <usize>v * DEMAND_VMA_SIZE;
    if (la >= load<u64>(candidate + DV_START) && la < load<u64>(candidate + DV_END)) {
      vma = candidate;
      break;
    }
  }
  if (vma == 0) return false;
  const flags = load<u64>(vma + DV_FLAGS);
  // A write needs a writable region, a fetch an executable one; otherwise the host delivers SIGSEGV.
  if ((error & PF_W) != 0 && (flags & PTE_RW) == 0) return false;
  if ((error & PF_ID) != 0 && (flags & PTE_XD) != 0) return false;
  const sizeCode = load<u32>(vma + DV_SIZE_CODE);
  const leafLevel = sizeCode + 1;
  const pageBase = la & ~((<u64>1 << (12 + 9 * <u64>sizeCode)) - 1);
  const levels = load<u32>(base + DM_LEVELS);

  // Find, without changing anything, where the tables end: the level whose entry is missing.
  let table = load<u64>(cpuBlock + DC_ROOT);
  let missing: u32 = 0;
  for (let level = levels; level > leafLevel; level--) {
    const entry = readPhys64(entryAddress(table, pageBase, level));
    if ((entry & PTE_P) == 0) {
      missing = level;
      break;
    }
    // A larger page in the way is the host handler's error to report.
    if ((entry & PTE_PS) != 0) return false;
    table = entry & ADDRESS_MASK;
  }
  const newTables: u32 = missing == 0 ? 0 : missing - leafLevel;
  const tablePool = load<u32>(base + DM_TABLE_POOL);
  const logCount = load<u32>(base + DM_LOG_COUNT);
  if (logCount >= DEMAND_LOG_CAPACITY) return false;
  if (tablePool == sizeCode) {
    if (poolLeft(base, sizeCode) < 1 + newTables) return false;
  } else if (poolLeft(base, sizeCode) < 1 || poolLeft(base, tablePool) < newTables) {
    return false;
  }
  // Every frame a store will land in must be backed first, so no store can fail halfway: the table
  // the first new entry goes in, and each new table.
  const maxPhyAddr = <u64>load<u32>(CTRL_BASE + CFG_MAXPHYADDR);
  const leafFrame = poolFrame(base, sizeCode, poolTaken(base, sizeCode));
  // Tables follow the leaf in the allocator's order when both come from one pool.
  const firstTable = poolTaken(base, tablePool) + (tablePool == sizeCode ? 1 : 0);
  if (leafFrame >> maxPhyAddr != 0 || backFrame(table >> 12) == 0) return false;
  for (let t: u32 = 0; t < newTables; t++) {
    const frame = poolFrame(base, tablePool, firstTable + t);
    if (frame >> maxPhyAddr != 0 || backFrame(frame >> 12) == 0) return false;
  }

  // The handler's stores, in its order: the leaf's frame first, then each missing table top down.
  const log = base + DM_LOG + <usize>logCount * DEMAND_LOG_SIZE;
  const frame = takeFrame(base, sizeCode);
  let level = missing;
  for (let t: u32 = 0; t < newTables; t++, level--) {
    const child = takeFrame(base, tablePool);
    writePhys64(entryAddress(table, pageBase, level), child | PTE_P | PTE_RW | PTE_US);
    store<u64>(log + DL_TABLES + (<usize>t << 3), child);
    table = child;
  }
  writePhys64(entryAddress(table, pageBase, leafLevel), frame | flags);
  chargeHandler(<u64>load<u32>(base + DM_FAULT_CYCLES), CYCLES_GUEST_KERNEL);
  // The fault is an exit all the same: the host's handler ran, only not in JavaScript.
  bump(S_EXITS);
  bump(S_EXIT_REASONS + ExitReason.PageFault);
  store<u64>(log + DL_LINEAR, la);
  store<u64>(log + DL_ERROR, error);
  store<u64>(log + DL_FRAME, frame);
  store<u32>(log + DL_CPU, cpu);
  store<u32>(log + DL_SIZE_CODE, sizeCode);
  store<u32>(log + DL_TABLE_COUNT, newTables);
  store<u32>(log + DL_TOP_LEVEL, missing);
  store<u32>(base + DM_LOG_COUNT, logCount + 1);
  return true;
}
