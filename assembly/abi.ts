// The exports the host sees, and nothing else. Set-up calls lay the configured structures out in
// their regions and validate geometry; every hot-path loop lives behind `replay` and `parseText`.
import {
  AD_BASE,
  AD_POLICY,
  AD_RNG,
  AD_SETS_LOG2,
  AD_SIZEMASK,
  AD_WAYS,
  ARRAY_DESC_SIZE,
  CACHE_DESC_SIZE,
  CACHE_LINE_SIZE,
  CD_BASE,
  CD_CPU_STRIDE,
  CD_LATENCY,
  CD_PRESENT,
  CD_SETS_LOG2,
  CD_WAYS,
  CFG_CACHE_DESC,
  CFG_CPUS,
  NestedMode,
  CFG_DRAM_LATENCY,
  CFG_EPT_EXECUTE_ONLY,
  CFG_GBPAGES,
  CFG_MAXPHYADDR,
  CFG_PSC_LATENCY,
  CTRL_BASE,
  CTRL_SIZE,
  NESTED_MODE_COUNT,
  FRAME_MEMO_BASE,
  HEAP_BASE,
  IO_CC_ENTRY_SIZE,
  IO_IOTLB_ENTRY_SIZE,
  IO_PSC_ENTRY_SIZE,
  CFG_MEM_LIMIT_PAGES,
  POLICY_COUNT,
  MAX_CPUS,
  MAX_TLB_ARRAYS,
  PD_PRESENT,
  PSC_ENTRY_SIZE,
  R_IN_GUEST,
  R_PML,
  R_PML_INDEX,
  R_NESTED_AD,
  R_NESTED_LEVELS,
  R_NESTED_MODE,
  R_NESTED_ROOT,
  R_NPSC_ANY,
  R_PSC_ANY,
  R_ROOT_TAG,
  R_VMTAG,
  R_VPID,
  RESULT_BASE,
  RS_CYCLES,
  RS_ERROR,
  RS_FAULT,
  RS_GPA,
  RS_NESTED_REFS,
  RS_PA,
  RS_PAGE_SHIFT,
  RS_REFS,
  STATIC_END,
  TL_ARRAYS,
  TL_COUNT,
  TL_EMPTY_SIZES,
  TL_LATENCY,
  TL_PRESENT,
  TL_SIZEMASK,
  TLB_ENTRY_SIZE,
  IommuKind,
  FaultType,
  SetupError,
} from "./constants";
import {
  IO_CC_DESC,
  IO_CC_MAX_ENTRIES,
  IO_DESC_PRESENT,
  IO_EVENT_BASE,
  IO_EVENT_ENTRIES,
  IO_EVENT_HEAD,
  IO_EVENT_TAIL,
  IO_FAULT_RECORDS,
  IO_FLAGS,
  IO_FSTS,
  IO_IOTLB_DESC,
  IO_IOTLB_LATENCY,
  IO_IOTLB_MAX_ENTRIES,
  IO_PSC_DESC,
  IO_PSC_MAX_ENTRIES,
  IO_KIND,
  IO_MAX_FAULT_RECORDS,
  IO_MEM_TOP,
  IO_QUEUE_BASE,
  IO_QUEUE_ENTRIES,
  IO_QUEUE_HEAD,
  IO_QUEUE_TAIL,
  IO_ROOT,
  IO_SAGAW,
  IO_STATUS,
  IommuKind,
  IOMMU_BASE,
  IOMMU_SIZE,
} from "./constants";
import { EPTP_AD, EPTP_MEMTYPE_MASK, EPTP_WALK_SHIFT } from "./formats/ept";
import { ADDRESS_MASK, cpuBlock, recomputeMode, setRegister } from "./cpu";
import { clearFaultRecord } from "./iommu/faults";
import { dmaAddress, dmaBatch, dmaCycles, dmaRefs, translateDma } from "./iommu/dma";
import { ANY, ccInvalidate, iotlbInvalidate, ioPscInvalidate } from "./iommu/iotlb";
import { processQueue } from "./iommu/queue";
import { vmTransition } from "./mmu/invalidate";
import * as inv from "./mmu/invalidate";
import { contextFor, resetContexts, rootTagFor } from "./mmu/context";
import { npscDesc, pscDesc } from "./mmu/psc";
import { resetClock, splitmix64 } from "./mmu/setassoc";
import { levelDesc, validEntries } from "./mmu/tlb";
import {
  access,
  accessCycles,
  accessError,
  accessGpa,
  accessPa,
  accessRefs,
  accessSizeCode,
} from "./mmu/translate";
import { nestedProbe, walkError, walkFault, walkNestedRefs, walkX86 } from "./mmu/walk";
import { allocate, heapTop, resetHeap, setMemoryLimit } from "./heap";
import { allocateMemos } from "./memo";
import * as phys from "./phys";
import { restoreModuleGlobals, saveModuleGlobals, snapshotScratch } from "./snapshot";
import { completePending, histogramBucket, resetReplay } from "./replay";
import { S_ACCESSES, S_HISTOGRAM, add, bump, chargeHandler, clearStats } from "./stats";
import { beginTrace, endTrace, traceBuffer, traceCount, traceDropped } from "./timing/trace";

export { replay, setBudget, translateBatch } from "./replay";
export { dmaBuffer } from "./iommu/dma";
export { demandRegion } from "./demand";
export {
  parseText,
  textBuffer,
  sniffText,
  textEofSeen,
  textResetEof,
  textParseError,
  textParseErrorLine,
  textParsedBytes,
  textParsedLines,
} from "./trace/text";

let seed: u64 = 0;
let rngIndex: u64 = 0;

/** Copies every lasting WebAssembly global into the snapshot scratch block; returns its address.
 *  The host reads SNAPSHOT_SCRATCH_SIZE bytes there. */
export function saveCoreGlobals(): usize {
  let p = saveModuleGlobals(snapshotScratch);
  store<u64>(p, seed); p += 8;
  store<u64>(p, rngIndex);
  return snapshotScratch;
}

/** The inverse of saveCoreGlobals, after the host has written the bytes back to the block (whose
 *  address saveCoreGlobals returns; it is static data, the same in every instance of one build).
 *  False, with nothing restored, when the block was saved by a core with another memory layout. */
export function restoreCoreGlobals(): bool {
  const at = restoreModuleGlobals(snapshotScratch);
  if (at == 0) return false;
  let p = at;
  seed = load<u64>(p); p += 8;
  rngIndex = load<u64>(p);
  return true;
}

/** Set by the first machineInit of this instance. */
let initialized = false;

/** Resets the whole machine: configuration, registers, caches, memory directory, statistics. */
export function machineInit(
  cpus: u32,
  maxPhyAddr: u32,
  gbPages: bool,
  dirLog2: u32,
  memLimitPages: u32,
  rngSeed: u64,
  eptExecuteOnly: bool,
): i32 {
  if (<usize>__heap_base > STATIC_END) return SetupError.RegionFull;
  if (cpus == 0 || cpus > MAX_CPUS || maxPhyAddr < 32 || maxPhyAddr > 52 || dirLog2 < 4 || dirLog2 > 26) {
    return SetupError.BadArgument;
  }
  // A fresh instance's linear memory is all zero: clearing it again would touch (and make resident)
  // every page it has, for nothing. Only a second init clears what the first one used.
  if (initialized) {
    const top = heapTop();
    memory.fill(CTRL_BASE, 0, CTRL_SIZE);
    memory.fill(FRAME_MEMO_BASE, 0, HEAP_BASE - FRAME_MEMO_BASE);
    memory.fill(HEAP_BASE, 0, top - HEAP_BASE);
  }
  initialized = true;
  store<u32>(CTRL_BASE + CFG_CPUS, cpus);
  store<u32>(CTRL_BASE + CFG_MAXPHYADDR, maxPhyAddr);
  store<u32>(CTRL_BASE + CFG_GBPAGES, gbPages ? 1 : 0);
  store<u32>(CTRL_BASE + CFG_EPT_EXECUTE_ONLY, eptExecuteOnly ? 1 : 0);
  store<u32>(CTRL_BASE + CFG_MEM_LIMIT_PAGES, memLimitPages);
  setMemoryLimit(memLimitPages);
  resetHeap();
  seed = rngSeed;
  rngIndex = 0;
  resetClock();
  resetReplay();
  resetContexts();
  clearStats();
  if (!allocateMemos(cpus) || !phys.physInit(dirLog2)) return SetupError.OutOfMemory;
  for (let cpu: u32 = 0; cpu < cpus; cpu++) recomputeMode(cpu);
  return 0;
}

/** A sized region for `bytes` (64-byte aligned, as every array's entries are), or 0. */
@inline function region(bytes: u64): usize {
  return bytes > 0xffff_0000 ? 0 : allocate(<usize>bytes, 64);
}

@inline function log2Exact(n: u32): i32 {
  if (n == 0 || (n & (n - 1)) != 0) return -1;
  return <i32>ctz(n);
}

function nextRngState(): u64 {
  const state = splitmix64(seed + rngIndex++);
  return state == 0 ? 1 : state;
}

function initArray(desc: usize, base: usize, setsLog2: u32, ways: u32, sizeMask: u32, policy: u32): void {
  store<u32>(desc + AD_BASE, <u32>base);
  store<u32>(desc + AD_SETS_LOG2, setsLog2);
  store<u32>(desc + AD_WAYS, ways);
  store<u16>(desc + AD_SIZEMASK, <u16>sizeMask);
  store<u16>(desc + AD_POLICY, <u16>policy);
  store<u64>(desc + AD_RNG, nextRngState());
}

/** Enables TLB level `level` (0 l1d, 1 l1i, 2 l2, 3 nested) of a CPU with a probe latency. */
export function tlbLevel(cpu: u32, level: u32, latency: u32): i32 {
  if (level > 3) return SetupError.BadArgument;
  const desc = levelDesc(cpu, level);
  store<u32>(desc + TL_PRESENT, 1);
  store<u32>(desc + TL_LATENCY, latency);
  return 0;
}

/** Appends an array holding the page sizes in `sizeMask` (bit 0 4K, 1 2M, 2 1G) to a TLB level. */
export function tlbArray(cpu: u32, level: u32, sizeMask: u32, entries: u32, ways: u32, policy: u32): i32 {
  if (level > 3 || sizeMask == 0 || sizeMask > 7 || policy >= POLICY_COUNT) return SetupError.BadArgument;
  const desc = levelDesc(cpu, level);
  const count = load<u32>(desc + TL_COUNT);
  if (count >= MAX_TLB_ARRAYS) return SetupError.RegionFull;
  if (ways == 0 || entries % ways != 0) return SetupError.Geometry;
  const setsLog2 = log2Exact(entries / ways);
  if (setsLog2 < 0) return SetupError.Geometry;
  const base = region(<u64>entries * TLB_ENTRY_SIZE);
  if (base == 0) return SetupError.OutOfMemory;
  initArray(desc + TL_ARRAYS + count * ARRAY_DESC_SIZE, base, <u32>setsLog2, ways, sizeMask, policy);
  store<u32>(desc + TL_COUNT, count + 1);
  store<u32>(desc + TL_SIZEMASK, load<u32>(desc + TL_SIZEMASK) | sizeMask);
  store<u32>(desc + TL_EMPTY_SIZES, load<u32>(desc + TL_EMPTY_SIZES) | sizeMask);
  return 0;
}

/** Enables the paging-structure cache for paging level `level` (5..2), of the nested dimension if `nested`. */
export function pscCache(cpu: u32, level: u32, entries: u32, ways: u32, policy: u32, nested: bool): i32 {
  if (level < 2 || level > 5 || policy >= POLICY_COUNT) return SetupError.BadArgument;
  if (ways == 0 || entries % ways != 0) return SetupError.Geometry;
  const setsLog2 = log2Exact(entries / ways);
  if (setsLog2 < 0) return SetupError.Geometry;
  const base = region(<u64>entries * PSC_ENTRY_SIZE);
  if (base == 0) return SetupError.OutOfMemory;
  const desc = nested ? npscDesc(cpu, level) : pscDesc(cpu, level);
  initArray(desc, base, <u32>setsLog2, ways, 0, policy);
  store<u32>(desc + PD_PRESENT, 1);
  store<u32>(cpuBlock(cpu) + (nested ? R_NPSC_ANY : R_PSC_ANY), 1);
  return 0;
}

export function setPscLatency(cycles: u32): void {
  store<u32>(CTRL_BASE + CFG_PSC_LATENCY, cycles);
}

/** Enables data-cache level `level` (0 l1, 1 l2: one per CPU; 2 llc: shared). */
export function cacheLevel(level: u32, size: u32, ways: u32, latency: u32): i32 {
  if (level > 2) return SetupError.BadArgument;
  const lines = size >> 6;
  if (ways == 0 || lines % ways != 0 || (size & 63) != 0) return SetupError.Geometry;
  const setsLog2 = log2Exact(lines / ways);
  if (setsLog2 < 0) return SetupError.Geometry;
  const copies = level == 2 ? 1 : load<u32>(CTRL_BASE + CFG_CPUS);
  const bytes = lines * CACHE_LINE_SIZE;
  const base = region(<u64>bytes * copies);
  if (base == 0) return SetupError.OutOfMemory;
  const desc = CTRL_BASE + CFG_CACHE_DESC + level * CACHE_DESC_SIZE;
  store<u32>(desc + CD_PRESENT, 1);
  store<u32>(desc + CD_SETS_LOG2, <u32>setsLog2);
  store<u32>(desc + CD_WAYS, ways);
  store<u32>(desc + CD_LATENCY, latency);
  store<u32>(desc + CD_BASE, <u32>base);
  store<u32>(desc + CD_CPU_STRIDE, level == 2 ? 0 : bytes);
  return 0;
}

export function setDramLatency(cycles: u32): void {
  store<u32>(CTRL_BASE + CFG_DRAM_LATENCY, cycles);
}

// --- registers and instructions ---------------------------------------------------------------------

/** Raw register load (offset R_*), without the flushes of the instruction that writes it. */
export function setReg(cpu: u32, offset: u32, value: u64): void {
  setRegister(cpu, offset, value);
}

export function movCr3(cpu: u32, value: u64): void {
  inv.movCr3(cpu, value);
}

export function movCr4(cpu: u32, value: u64): bool {
  return inv.movCr4(cpu, value);
}

export function invlpg(cpu: u32, la: u64): void {
  inv.invlpg(cpu, la);
}

export function invpcid(cpu: u32, type: u32, pcid: u32, la: u64): bool {
  return inv.invpcid(cpu, type, pcid, la);
}

export function flushAll(cpu: u32): void {
  inv.flushAll(cpu);
}

// --- physical memory ---------------------------------------------------------------------------------

export function writePhys64(pa: u64, value: u64): i32 {
  return phys.writePhys64(pa, value);
}

export function readPhys64(pa: u64): u64 {
  return phys.readPhys64(pa & ~7);
}

export function releaseFrame(frame: u64): void {
  phys.releaseFrame(frame);
}

export function backedFrames(): u32 {
  return phys.backedFrames();
}

// --- single accesses and batches ---------------------------------------------------------------------

/**
 * Translates one access outside any batch (the embedding API). The result block holds the outcome;
 * statistics count it like a record, histogram included.
 */
export function translate(cpu: u32, la: u64, kindByte: u32, retry: bool): u32 {
  const result = access(cpu, la, kindByte, !retry);
  store<u32>(RESULT_BASE + RS_FAULT, result);
  store<u64>(RESULT_BASE + RS_ERROR, accessError);
  store<u64>(RESULT_BASE + RS_GPA, result >= <u32>FaultType.EptViolation ? accessGpa : 0);
  store<u32>(RESULT_BASE + RS_NESTED_REFS, walkNestedRefsOf(result));
  store<u32>(RESULT_BASE + RS_PAGE_SHIFT, result == FaultType.None ? 12 + 9 * accessSizeCode : 0);
  store<u32>(RESULT_BASE + RS_REFS, accessRefs);
  store<u64>(RESULT_BASE + RS_PA, result == FaultType.None ? accessPa : 0);
  store<u64>(RESULT_BASE + RS_CYCLES, accessCycles);
  bump(S_HISTOGRAM + histogramBucket(accessCycles));
  return result;
}

/** Embedders driving `translate` themselves count their completed accesses here. */
export function countAccesses(n: u32): void {
  add(S_ACCESSES, n);
}

export function completePendingRecord(): void {
  completePending();
}

export function chargeCycles(cycles: u64, category: u32): void {
  chargeHandler(cycles, category);
}

export function resetStats(): void {
  clearStats();
}

export function tlbValidEntries(cpu: u32, level: u32): u32 {
  return validEntries(levelDesc(cpu, level));
}

/**
 * `translate` with every page-table reference it makes recorded in order (timing/trace.ts), for
 * showing one walk. The access costs and counts what it would untraced. Returns the references
 * recorded; `traceReferences` gives where they are.
 */
export function traceTranslate(cpu: u32, la: u64, kindByte: u32): u32 {
  beginTrace(cpu);
  translate(cpu, la, kindByte, false);
  endTrace();
  return traceCount;
}

/** The last traced access's references (TRACE_ENTRY_SIZE bytes each), and how many did not fit. */
export function traceReferences(): usize {
  return traceBuffer;
}

export function traceReferencesDropped(): u32 {
  return traceDropped;
}

/** One page walk with no TLB lookup and no fill, for measuring the walker alone. Returns the fault kind. */
export function walkOnly(cpu: u32, la: u64, kind: u32): u32 {
  walkX86(cpu, la, kind, false);
  return walkFault;
}

/** Nested references of the last access (0 on a TLB hit, which leaves walkNestedRefs stale). */
function walkNestedRefsOf(result: u32): u32 {
  return accessRefs == 0 ? 0 : walkNestedRefs;
}

// --- virtualization ------------------------------------------------------------------------------------

/**
 * Enters guest mode on a CPU: `nestedMode` NestedMode.None (shadow or paravirtual paging: the hardware
 * walks the tables CR3 names), NestedMode.Ept with `root` the EPTP as the VMCS holds it (memory type in
 * bits 2:0, walk length minus one in bits 5:3, A/D enable in bit 6: SDM 25.6.11), or NestedMode.Npt
 * with `root` nCR3 walked with the host's `nptLevels`; `vpid` is the VPID or ASID (0: VPIDs off).
 * Returns the context id, or a negative error: the VM-entry checks of SDM 27.2.1.1 on the EPTP refuse
 * it as hardware would.
 */
export function vmEnter(cpu: u32, nestedMode: u32, root: u64, nptLevels: u32, vpid: u32): i32 {
  if (nestedMode >= NESTED_MODE_COUNT || vpid > 0xffff) return SetupError.BadArgument;
  const block = cpuBlock(cpu);
  let rootTag: i32 = 0;
  let levels: u32 = 0;
  let nestedAd = false;
  if (nestedMode == NestedMode.Ept) {
    const memoryType = <u32>(root & EPTP_MEMTYPE_MASK);
    if (memoryType != 0 && memoryType != 6) return SetupError.EptpMemoryType;
    levels = <u32>((root >> EPTP_WALK_SHIFT) & 7) + 1;
    if (levels != 4 && levels != 5) return SetupError.EptpWalkLength;
    if ((root & 0xf80) != 0 || root >> load<u32>(CTRL_BASE + CFG_MAXPHYADDR) != 0) return SetupError.RootReserved;
    nestedAd = (root & EPTP_AD) != 0;
  } else if (nestedMode == NestedMode.Npt) {
    if (nptLevels != 4 && nptLevels != 5) return SetupError.BadArgument;
    if (root >> load<u32>(CTRL_BASE + CFG_MAXPHYADDR) != 0) return SetupError.RootReserved;
    levels = nptLevels;
    // NPT keeps A/D in nested entries always.
    nestedAd = true;
  }
  if (nestedMode != NestedMode.None) {
    rootTag = rootTagFor(root & ADDRESS_MASK);
    if (rootTag < 0) return SetupError.RegionFull;
  }
  const context = contextFor(vpid, <u32>rootTag);
  if (context < 0) return SetupError.RegionFull;
  store<u32>(block + R_NESTED_MODE, nestedMode);
  store<u32>(block + R_NESTED_LEVELS, levels);
  store<u64>(block + R_NESTED_ROOT, root);
  store<u32>(block + R_ROOT_TAG, <u32>rootTag);
  store<u32>(block + R_VPID, vpid);
  store<u32>(block + R_NESTED_AD, nestedAd ? 1 : 0);
  store<u32>(block + R_VMTAG, <u32>context);
  store<u32>(block + R_IN_GUEST, 1);
  recomputeMode(cpu);
  vmTransition(cpu);
  return context;
}

/**
 * The VMCS's page-modification logging (SDM 29.3.6) for the guest `cpu` runs: "enable PML" with the
 * PML address `address` and the PML index `index`. The VM-entry checks (SDM 27.2.1.1): PML needs EPT,
 * and an address with bits 11:0 clear and none at or above MAXPHYADDR. The log page is backed here.
 */
export function enablePml(cpu: u32, address: u64, index: u32): i32 {
  const block = cpuBlock(cpu);
  if (index > 0xffff) return SetupError.BadArgument;
  if (load<u32>(block + R_NESTED_MODE) != NestedMode.Ept) return SetupError.PmlAddress;
  if ((address & 0xfff) != 0 || address >> load<u32>(CTRL_BASE + CFG_MAXPHYADDR) != 0) return SetupError.PmlAddress;
  if (phys.backFrame(address >> 12) == 0) return SetupError.OutOfMemory;
  store<u64>(block + R_PML, address | 1);
  store<u32>(block + R_PML_INDEX, index);
  return 0;
}

/** The PML index of `cpu` (VMREAD of the guest-state field). */
export function pmlIndex(cpu: u32): u32 {
  return load<u32>(cpuBlock(cpu) + R_PML_INDEX);
}

/** Sets the PML index of `cpu` (VMWRITE), as a VMM does after draining the log. */
export function setPmlIndex(cpu: u32, index: u32): void {
  store<u32>(cpuBlock(cpu) + R_PML_INDEX, index & 0xffff);
}

/** Back to the host context (VPID 0, no nested dimension). */
export function vmLeave(cpu: u32): void {
  const block = cpuBlock(cpu);
  vmTransition(cpu);
  store<u64>(block + R_PML, 0);
  store<u32>(block + R_NESTED_MODE, NestedMode.None);
  store<u32>(block + R_ROOT_TAG, 0);
  store<u32>(block + R_VPID, 0);
  store<u32>(block + R_VMTAG, 0);
  store<u32>(block + R_IN_GUEST, 0);
  recomputeMode(cpu);
}

/** A VM exit and entry around host work: flushes VPID 0 when VPIDs are off. */
export function vmExitEntry(cpu: u32): void {
  vmTransition(cpu);
}

export function invept(cpu: u32, type: u32, eptp: u64): bool {
  return inv.invept(cpu, type, eptp);
}

export function invvpid(cpu: u32, type: u32, vpid: u32, la: u64): bool {
  return inv.invvpid(cpu, type, vpid, la);
}

export function tlbControl(cpu: u32, value: u32): bool {
  return inv.tlbControl(cpu, value);
}

/** Guest-physical -> host-physical through the CPU's nested dimension, or ~0 on a nested fault. */
export function translateGuestPhysical(cpu: u32, gpa: u64, need: u32): u64 {
  return nestedProbe(cpu, gpa, need);
}

/** The last nested probe's fault (WALK_*), and its qualification or EXITINFO1. */
export function lastWalkFault(): u32 {
  return walkFault;
}

export function lastWalkError(): u64 {
  return walkError;
}

// --- the IOMMU ---------------------------------------------------------------------------------------

/**
 * Resets the IOMMU: `kind` IommuKind.None, IommuKind.Vtd or IommuKind.Amdvi; `sagaw` the supported VT-d AW values
 * (bit mask); `flags` IO_F_*; structure and data accesses at or above `memTop` fail; `faultRecords`
 * VT-d fault-recording registers.
 */
export function iommuInit(kind: u32, sagaw: u32, flags: u32, memTop: u64, iotlbLatency: u32, faultRecords: u32): i32 {
  if (kind > <u32>IommuKind.Amdvi || faultRecords > IO_MAX_FAULT_RECORDS) return SetupError.BadArgument;
  memory.fill(IOMMU_BASE, 0, IOMMU_SIZE);
  store<u32>(IOMMU_BASE + IO_KIND, kind);
  store<u32>(IOMMU_BASE + IO_SAGAW, sagaw);
  store<u32>(IOMMU_BASE + IO_FLAGS, flags);
  store<u64>(IOMMU_BASE + IO_MEM_TOP, memTop);
  store<u32>(IOMMU_BASE + IO_IOTLB_LATENCY, iotlbLatency);
  store<u32>(IOMMU_BASE + IO_FAULT_RECORDS, faultRecords);
  return 0;
}

function ioArray(desc: usize, entries: u32, ways: u32, policy: u32, max: u32, entrySize: u32): i32 {
  if (policy >= POLICY_COUNT) return SetupError.BadArgument;
  if (ways == 0 || entries % ways != 0) return SetupError.Geometry;
  const setsLog2 = log2Exact(entries / ways);
  if (setsLog2 < 0) return SetupError.Geometry;
  if (entries > max) return SetupError.RegionFull;
  const base = region(<u64>entries * entrySize);
  if (base == 0) return SetupError.OutOfMemory;
  initArray(desc, base, <u32>setsLog2, ways, 0, policy);
  store<u32>(desc + IO_DESC_PRESENT, 1);
  return 0;
}

/** Gives the IOMMU an IOTLB of `entries` entries in `ways` ways (every page size shares it). */
export function iommuIotlb(entries: u32, ways: u32, policy: u32): i32 {
  return ioArray(IOMMU_BASE + IO_IOTLB_DESC, entries, ways, policy, IO_IOTLB_MAX_ENTRIES, IO_IOTLB_ENTRY_SIZE);
}

/** Gives the IOMMU a context cache (VT-d context and PASID entries, AMD-Vi device-table entries). */
export function iommuContextCache(entries: u32, ways: u32, policy: u32): i32 {
  return ioArray(IOMMU_BASE + IO_CC_DESC, entries, ways, policy, IO_CC_MAX_ENTRIES, IO_CC_ENTRY_SIZE);
}

/** Gives the IOMMU a paging-structure cache of non-leaf I/O page-table entries. */
export function iommuPsc(entries: u32, ways: u32, policy: u32): i32 {
  return ioArray(IOMMU_BASE + IO_PSC_DESC, entries, ways, policy, IO_PSC_MAX_ENTRIES, IO_PSC_ENTRY_SIZE);
}

/** VT-d: RTADDR (bit 10 selects scalable mode); AMD-Vi: the device-table base. */
export function iommuSetRoot(value: u64): void {
  store<u64>(IOMMU_BASE + IO_ROOT, value);
}

/** Sets up the invalidation queue (VT-d) or command buffer (AMD-Vi): empty, head = tail = 0. */
export function iommuSetQueue(base: u64, entries: u32): void {
  store<u64>(IOMMU_BASE + IO_QUEUE_BASE, base & ADDRESS_MASK);
  store<u32>(IOMMU_BASE + IO_QUEUE_ENTRIES, entries);
  store<u32>(IOMMU_BASE + IO_QUEUE_HEAD, 0);
  store<u32>(IOMMU_BASE + IO_QUEUE_TAIL, 0);
}

/** Software moves the queue tail: the IOMMU consumes the new entries. False when one was rejected. */
export function iommuQueueTail(tail: u32): bool {
  return processQueue(tail);
}

/** Sets up the AMD-Vi event log: empty, head = tail = 0. */
export function iommuSetEventLog(base: u64, entries: u32): void {
  store<u64>(IOMMU_BASE + IO_EVENT_BASE, base & ADDRESS_MASK);
  store<u32>(IOMMU_BASE + IO_EVENT_ENTRIES, entries);
  store<u32>(IOMMU_BASE + IO_EVENT_HEAD, 0);
  store<u32>(IOMMU_BASE + IO_EVENT_TAIL, 0);
}

/** Software consumed events up to `head`. */
export function iommuSetEventHead(head: u32): void {
  const entries = load<u32>(IOMMU_BASE + IO_EVENT_ENTRIES);
  store<u32>(IOMMU_BASE + IO_EVENT_HEAD, entries == 0 ? 0 : head % entries);
}

/** Software clears VT-d fault record `index` (F is write-1-to-clear). */
export function iommuClearFaultRecord(index: u32): void {
  clearFaultRecord(index);
}

/** Write-1-to-clear of status bits: VT-d FSTS (PFO, IQE) or the AMD-Vi status register. */
export function iommuClearStatus(bits: u32): void {
  store<u32>(IOMMU_BASE + IO_FSTS, load<u32>(IOMMU_BASE + IO_FSTS) & ~bits);
  store<u32>(IOMMU_BASE + IO_STATUS, load<u32>(IOMMU_BASE + IO_STATUS) & ~bits);
}

/** Drops every IOTLB and context-cache entry (a host helper, not a descriptor). */
export function iommuFlushAll(): void {
  ccInvalidate(ANY, ANY, 0, ANY);
  iotlbInvalidate(ANY, ANY, 0, 0);
  ioPscInvalidate(ANY, ANY);
}

/** Runs DMA records [start, end) of the DMA buffer. */
export function dmaRun(start: u32, end: u32): u32 {
  return dmaBatch(start, end);
}

/** One DMA translation outside a batch: returns 0 or the fault cause; see iommuLast*. */
export function iommuTranslate(sid: u32, flags: u32, pasid: u32, iova: u64): u32 {
  const status = translateDma(sid, flags, pasid, iova);
  store<u64>(RESULT_BASE + RS_PA, status == 0 ? dmaAddress : 0);
  store<u64>(RESULT_BASE + RS_CYCLES, dmaCycles);
  store<u32>(RESULT_BASE + RS_REFS, dmaRefs);
  return status;
}
