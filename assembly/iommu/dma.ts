// Device DMA through the IOMMU (docs/iommu.md; docs/MODEL.md §13.3): each request is translated (context
// cache, then IOTLB, then the IO walk), faults are reported, and the data moves only when the translation
// succeeded. The host fills a batch of requests and one call runs them all, as replay.ts does for CPU
// records, so V8 optimises the loop between calls rather than per request.
import {
  CFG_DMA_BASE,
  CFG_MAXPHYADDR,
  DMA_CAPACITY,
  CTRL_BASE,
  DMA_ADDR,
  DMA_BAD,
  DMA_DATA,
  DMA_F_DATA,
  DMA_F_PASID,
  DMA_F_TRANSLATED,
  DMA_F_WRITE,
  DMA_FLAGS,
  DMA_HPA,
  DMA_PASID_LENGTH,
  DMA_RECORD_SIZE,
  DMA_SID,
  DMA_STATUS,
  DMA_UNSUPPORTED,
  IO_IOTLB_LATENCY,
  IO_KIND,
  IO_MEM_TOP,
  IO_ROOT,
  IoFault,
  IommuKind,
  IOMMU_BASE,
} from "../constants";
import {
  IOFMT_AMDVI,
  IOFMT_VTD_FL,
  IOFMT_VTD_SL,
  IO_R,
  IO_W,
  SLOT_ENTRY,
  SLOT_LEVEL,
  SLOT_NEXT_LEVEL,
  SLOT_RIGHTS,
  ioWalk,
  ioWalkAdUpdates,
  ioWalkCause,
  ioWalkCycles,
  ioWalkFrame,
  ioWalkFrom,
  ioWalkPresent,
  ioWalkRecorded,
  ioWalkRefs,
  ioWalkRights,
  ioWalkShift,
  scratch,
} from "../mmu/iowalk";
import { ADDRESS_MASK } from "../cpu";
import { skippedBitsClear } from "../formats/amdvi";
import { RTADDR_SMT } from "../formats/vtd";
import { regionOnDemand } from "../heap";
import { memoryChanged } from "../memo";
import { backFrame, readPhys64 } from "../phys";
import {
  S_AD_UPDATES,
  S_IO_BYTES,
  S_IO_CC,
  S_IO_CONTEXT_REFS,
  S_IO_CYCLES,
  S_IO_IOTLB,
  S_IO_PSC,
  S_IO_TRANSLATIONS,
  S_IO_UNTRANSLATED,
  S_IO_WALK_REFS,
  S_IO_WALKS,
  add,
  bump,
} from "../stats";
import {
  CI_ATS,
  CI_FPD,
  CI_IR,
  CI_IW,
  CK_AMD_NO_TABLE,
  CK_AMD_UNTRANSLATED,
  CK_FIRST_LEVEL,
  CK_NESTED,
  CK_PASSTHROUGH,
  CK_SECOND_LEVEL,
  RESOLVED,
  infoKind,
  infoLevels,
  infoNestedLevels,
  resolveContext,
  resolveCycles,
  resolveDomain,
  resolveFpd,
  resolveRefs,
} from "./context";
import { reportFault } from "./faults";
import {
  C_DOMAIN,
  C_INFO,
  C_NESTED_ROOT,
  C_PASID,
  C_ROOT,
  ANY,
  ccFill,
  ccLookup,
  ccPresent,
  iotlbEntryAddress,
  iotlbEntryRights,
  iotlbFill,
  iotlbLookup,
  iotlbPresent,
  ioPscFill,
  ioPscLevel,
  ioPscLookup,
  ioPscPresent,
  ioPscValue,
} from "./iotlb";
import { PASID_TAG } from "./queue";

// Outputs of the last translation.
export let dmaStatus: u32 = 0;
export let dmaAddress: u64 = 0;
export let dmaCycles: u32 = 0;
export let dmaRefs: u32 = 0;

/**
 * Translates one request. Returns 0 with dmaAddress set, or the fault cause (reported already).
 * Statistics count it as one translation.
 */
export function translateDma(sid: u32, flags: u32, pasid: u32, iova: u64): u32 {
  const write = (flags & DMA_F_WRITE) != 0;
  const hasPasid = (flags & DMA_F_PASID) != 0;
  const translated = (flags & DMA_F_TRANSLATED) != 0;
  dmaRefs = 0;
  dmaCycles = load<u32>(IOMMU_BASE + IO_IOTLB_LATENCY);
  const kind = load<u32>(IOMMU_BASE + IO_KIND);
  if (kind == IommuKind.None) {
    // No IOMMU: the bus address is the host-physical address.
    bump(S_IO_UNTRANSLATED);
    dmaAddress = iova;
    dmaCycles = 0;
    return 0;
  }
  bump(S_IO_TRANSLATIONS);
  // Only scalable-mode VT-d resolves per PASID; elsewhere the PASID of a request is not looked at.
  const perPasid = kind != IommuKind.Amdvi && (load<u64>(IOMMU_BASE + IO_ROOT) & RTADDR_SMT) != 0;
  const key: u64 = perPasid && hasPasid ? 1 | (<u64>sid << 1) | (<u64>1 << 17) | (<u64>(pasid & 0xfffff) << 18) : 1 | (<u64>sid << 1);
  let context: usize = ccPresent() ? ccLookup(key) : 0;
  if (context != 0) bump(S_IO_CC);
  else {
    bump(S_IO_CC + 1);
    const cause = resolveContext(sid, hasPasid, pasid);
    dmaRefs += resolveRefs;
    dmaCycles += resolveCycles;
    add(S_IO_CONTEXT_REFS, resolveRefs);
    if (cause != 0) return fail(cause, sid, hasPasid, pasid, iova, write, translated, false, resolveDomain, resolveFpd);
    context = ccPresent() ? ccFill(key, RESOLVED) : RESOLVED;
  }
  const info = load<u32>(context, C_INFO);
  const domain = load<u32>(context, C_DOMAIN);
  const fpd = (info & CI_FPD) != 0;
  const contextKind = infoKind(info);
  if (translated) {
    // ATS translated requests carry a host-physical address from the device's own TLB; only a context
    // that enables device TLBs lets them through (VT-d reason 0xD otherwise).
    if ((info & CI_ATS) == 0) return fail(IoFault.TranslationTypeBlocked, sid, hasPasid, pasid, iova, write, true, true, domain, fpd);
    bump(S_IO_UNTRANSLATED);
    dmaAddress = iova;
    return 0;
  }
  if (contextKind == CK_PASSTHROUGH) {
    bump(S_IO_UNTRANSLATED);
    dmaAddress = iova;
    return 0;
  }
  if (contextKind == CK_AMD_NO_TABLE) {
    return fail(IoFault.InvalidContext, sid, hasPasid, pasid, iova, write, false, false, domain, fpd);
  }
  const amdRights: u32 = ((info & CI_IR) != 0 ? IO_R : 0) | ((info & CI_IW) != 0 ? IO_W : 0);
  if (contextKind == CK_AMD_UNTRANSLATED) {
    if ((amdRights & (write ? IO_W : IO_R)) == 0) {
      return fail(write ? IoFault.NoWrite : IoFault.NoRead, sid, hasPasid, pasid, iova, write, false, true, domain, fpd);
    }
    bump(S_IO_UNTRANSLATED);
    dmaAddress = iova;
    return 0;
  }

  // A walk: the input address must fit the tables' width (AMD-Vi mode 6 covers all 64 bits).
  const levels = infoLevels(info);
  if (levels < 6 && (iova >> (12 + 9 * <u64>levels)) != 0) {
    return fail(IoFault.AddressBeyondWidth, sid, hasPasid, pasid, iova, write, false, false, domain, fpd);
  }
  const requester = perPasid ? PASID_TAG | load<u32>(context, C_PASID) : sid;
  const need = write ? IO_W : IO_R;
  if (iotlbPresent()) {
    const hit = iotlbLookup(iova, domain, requester);
    if (hit != 0 && (iotlbEntryRights(hit) & need) != 0) {
      bump(S_IO_IOTLB);
      dmaAddress = iotlbEntryAddress(hit, iova);
      return 0;
    }
    bump(S_IO_IOTLB + 1);
  }
  const amd = contextKind != CK_SECOND_LEVEL && contextKind != CK_FIRST_LEVEL && contextKind != CK_NESTED;
  const format = amd ? IOFMT_AMDVI : contextKind == CK_SECOND_LEVEL ? IOFMT_VTD_SL : IOFMT_VTD_FL;
  const nestedLevels = contextKind == CK_NESTED ? infoNestedLevels(info) : 0;
  // The paging-structure cache serves single-dimension walks: the deepest cached directory entry
  // lets the walk start below the top.
  const pscOn = nestedLevels == 0 && ioPscPresent();
  let ok: bool;
  let pscHit: usize = 0;
  if (pscOn) {
    pscHit = ioPscLookup(iova, levels, domain, requester);
    bump(S_IO_PSC + (pscHit != 0 ? 0 : 1));
  }
  if (pscHit != 0) {
    const value = ioPscValue(pscHit);
    const next = <u32>(value >> 3) & 7;
    // A cached entry that skips levels still needs the skipped index bits of this address clear.
    if (!skippedBitsClear(iova, ioPscLevel, next)) {
      bump(S_IO_WALKS);
      return fail(IoFault.PageNotPresent, sid, hasPasid, pasid, iova, write, false, false, domain, fpd);
    }
    ok = ioWalkFrom(format, value & ADDRESS_MASK, next, <u32>value & 7, iova, write);
  } else {
    ok = ioWalk(format, load<u64>(context, C_ROOT), levels, iova, write, load<u64>(context, C_NESTED_ROOT), nestedLevels, pscOn);
  }
  bump(S_IO_WALKS);
  add(S_IO_WALK_REFS, ioWalkRefs);
  add(S_AD_UPDATES, ioWalkAdUpdates);
  dmaRefs += ioWalkRefs;
  dmaCycles += ioWalkCycles;
  if (!ok) return fail(ioWalkCause, sid, hasPasid, pasid, iova, write, false, ioWalkPresent, domain, fpd);
  let rights = ioWalkRights;
  if (amd) {
    // AMD-Vi ANDs the DTE's IR/IW into the page tables' permissions.
    rights &= amdRights;
    if ((rights & need) == 0) {
      return fail(write ? IoFault.NoWrite : IoFault.NoRead, sid, hasPasid, pasid, iova, write, false, true, domain, fpd);
    }
  }
  if (pscOn) {
    // Every directory entry this walk read (all but the leaf), with the rights accumulated through it.
    for (let i: u32 = 0; i + 1 < ioWalkRecorded; i++) {
      const slot = scratch(i);
      const value =
        (load<u64>(slot, SLOT_ENTRY) & ADDRESS_MASK) |
        <u64>load<u32>(slot, SLOT_RIGHTS) |
        (<u64>load<u32>(slot, SLOT_NEXT_LEVEL) << 3);
      ioPscFill(iova, load<u32>(slot, SLOT_LEVEL), value, domain, requester);
    }
  }
  if (iotlbPresent()) iotlbFill(iova, ioWalkShift, ioWalkFrame, rights, domain, requester);
  dmaAddress = ioWalkFrame | (iova & ((<u64>1 << <u64>ioWalkShift) - 1));
  return 0;
}

function fail(
  cause: u32,
  sid: u32,
  hasPasid: bool,
  pasid: u32,
  iova: u64,
  write: bool,
  translated: bool,
  present: bool,
  domain: u32,
  suppressed: bool,
): u32 {
  reportFault(cause, sid, hasPasid, pasid, iova, write, translated, present, domain, suppressed);
  return cause;
}

/**
 * The DMA request buffer: DMA_CAPACITY records, a sized region allocated when first asked for (machines
 * without devices never have one). Returns its address, or 0 when memory cannot hold it.
 */
export function dmaBuffer(): usize {
  return regionOnDemand(CFG_DMA_BASE, <usize>DMA_CAPACITY * DMA_RECORD_SIZE, 4096);
}

/**
 * Runs DMA records [start, end). Each is translated and, when it succeeds and carries data, moves it:
 * a write stores the record's data in every qword the request covers, a read returns the first one.
 * Returns the number of records run.
 */
export function dmaBatch(start: u32, end: u32): u32 {
  const records = dmaBuffer();
  if (records == 0) return 0;
  const memTop = load<u64>(IOMMU_BASE + IO_MEM_TOP);
  const maxPhy = load<u32>(CTRL_BASE + CFG_MAXPHYADDR);
  let cycles: u64 = 0;
  let bytes: u64 = 0;
  for (let i = start; i < end; i++) {
    const r = records + <usize>i * DMA_RECORD_SIZE;
    const iova = load<u64>(r, DMA_ADDR);
    const flags = <u32>load<u8>(r, DMA_FLAGS);
    const word = load<u32>(r, DMA_PASID_LENGTH);
    const length = (word >> 20) + 1;
    // One PCIe request never crosses a 4 KiB boundary.
    if ((iova & 0xfff) + <u64>length > 4096) {
      store<u8>(r, <u8>DMA_BAD, DMA_STATUS);
      continue;
    }
    const status = translateDma(<u32>load<u16>(r, DMA_SID), flags, word & 0xfffff, iova);
    cycles += dmaCycles;
    if (status != 0) {
      store<u8>(r, <u8>status, DMA_STATUS);
      store<u64>(r, 0, DMA_HPA);
      continue;
    }
    const hpa = dmaAddress;
    store<u64>(r, hpa, DMA_HPA);
    if (hpa >= memTop || hpa + <u64>length > memTop || (hpa >> <u64>maxPhy) != 0) {
      store<u8>(r, <u8>DMA_UNSUPPORTED, DMA_STATUS);
      continue;
    }
    store<u8>(r, 0, DMA_STATUS);
    bytes += length;
    if ((flags & DMA_F_DATA) == 0) continue;
    if ((flags & DMA_F_WRITE) != 0) {
      const frame = backFrame(hpa >> 12);
      if (frame == 0) {
        store<u8>(r, <u8>DMA_UNSUPPORTED, DMA_STATUS);
        continue;
      }
      const data = load<u64>(r, DMA_DATA);
      const first = hpa & 0xff8;
      const last = (hpa + <u64>length - 1) & 0xff8;
      for (let offset = first; offset <= last; offset += 8) store<u64>(frame + <usize>offset, data);
      // A device may write page tables (a guest's, or with the IOMMU off any host table): memos of
      // memory contents must see it.
      memoryChanged();
    } else {
      store<u64>(r, readPhys64(hpa & ~<u64>7), DMA_DATA);
    }
  }
  add(S_IO_CYCLES, cycles);
  add(S_IO_BYTES, bytes);
  return end - start;
}


