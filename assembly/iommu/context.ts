// Resolving a requester to its translation context (docs/iommu.md; docs/MODEL.md §13.2): VT-d's root and
// context tables (legacy mode), the scalable-mode context entry, PASID directory and PASID-table
// entry, or AMD-Vi's device-table entry. The result is what the context cache holds: the domain, the
// kind of translation, its table roots and levels, and the fault-processing flags.
import {
  CFG_MAXPHYADDR,
  CTRL_BASE,
  IO_KIND,
  IO_MEM_TOP,
  IO_ROOT,
  IO_SAGAW,
  IoFault,
  IommuKind,
  IOMMU_BASE,
  IO_CC_ENTRY_SIZE,
} from "../constants";
import { ADDRESS_MASK } from "../cpu";
import { DTE_I_HIGH, DTE_IR, DTE_IW, DTE_TV, DTE_V, dteDomain, dteMode, dteReserved } from "../formats/amdvi";
import {
  CTX_FPD,
  CTX_P,
  PGTT_FIRST,
  PGTT_NESTED,
  PGTT_PASSTHROUGH,
  PGTT_SECOND,
  RTADDR_SMT,
  SCTX_DTE,
  SCTX_PASIDE,
  TT_DEVICE_TLB,
  TT_PASSTHROUGH,
  contextAW,
  contextDID,
  contextLegacyReserved,
  contextTT,
  pasidAW,
  pasidDirReserved,
  pasidEntryReserved,
  pasidFLPM,
  pasidPGTT,
  rootLegacyReserved,
  rootScalableReserved,
  scalableContextPdts,
  scalableContextReserved,
} from "../formats/vtd";
import { physReservedMask } from "../formats/x86";
import { readPhys64 } from "../phys";
import { priceUncoreReference } from "../timing/cache";
import { ANY, C_DOMAIN, C_INFO, C_NESTED_ROOT, C_PASID, C_ROOT, C_SID } from "./iotlb";

// Kinds of translation a context selects.
export const CK_SECOND_LEVEL: u32 = 0;
export const CK_FIRST_LEVEL: u32 = 1;
export const CK_NESTED: u32 = 2;
export const CK_PASSTHROUGH: u32 = 3;
export const CK_AMD_WALK: u32 = 4;
/** AMD-Vi DTE mode 0: untranslated, with the DTE's IR/IW permissions. */
export const CK_AMD_UNTRANSLATED: u32 = 5;
/** AMD-Vi DTE with V=1 and TV=0: no page table, so untranslated requests are aborted. */
export const CK_AMD_NO_TABLE: u32 = 6;

// Info word: levels 2:0, kind 5:3, FPD 6, IR 7, IW 8, ATS (translated requests allowed) 9, nested levels 14:12.
export const CI_FPD: u32 = 1 << 6;
export const CI_IR: u32 = 1 << 7;
export const CI_IW: u32 = 1 << 8;
export const CI_ATS: u32 = 1 << 9;
@inline export function infoLevels(info: u32): u32 {
  return info & 7;
}
@inline export function infoKind(info: u32): u32 {
  return (info >> 3) & 7;
}
@inline export function infoNestedLevels(info: u32): u32 {
  return (info >> 12) & 7;
}

/** Where a miss builds the context before it is cached (an entry-shaped scratch). */
export const RESOLVED: usize = IOMMU_BASE + 0x200;

// Outputs of the last resolution besides the context itself.
/** Fault processing disabled by a present entry read before the fault (FPD). */
export let resolveFpd: bool = false;
/** The domain known when the fault happened (AMD-Vi events carry it), else 0. */
export let resolveDomain: u32 = 0;
export let resolveRefs: u32 = 0;
export let resolveCycles: u32 = 0;

let memTop: u64 = 0;
let addressReserved: u64 = 0;

@inline function reference(address: u64): void {
  resolveRefs++;
  resolveCycles += priceUncoreReference(address);
}

function finish(domain: u32, info: u32, root: u64, nestedRoot: u64, sid: u32, pasid: u32): u32 {
  store<u64>(RESOLVED, root, C_ROOT);
  store<u64>(RESOLVED, nestedRoot, C_NESTED_ROOT);
  store<u32>(RESOLVED, domain, C_DOMAIN);
  store<u32>(RESOLVED, info, C_INFO);
  store<u32>(RESOLVED, sid, C_SID);
  store<u32>(RESOLVED, pasid, C_PASID);
  return 0;
}

/** Whether VT-d supports the AW value (CAP.SAGAW bit AW). */
@inline function awSupported(aw: u32): bool {
  return aw < 8 && ((load<u32>(IOMMU_BASE + IO_SAGAW) >> aw) & 1) != 0;
}

/**
 * Resolves requester `sid` (with `pasid` when `hasPasid`) into RESOLVED. Returns 0, or the fault cause;
 * resolveFpd, resolveDomain, resolveRefs and resolveCycles describe the structure reads.
 */
export function resolveContext(sid: u32, hasPasid: bool, pasid: u32): u32 {
  memory.fill(RESOLVED, 0, IO_CC_ENTRY_SIZE);
  resolveFpd = false;
  resolveDomain = 0;
  resolveRefs = 0;
  resolveCycles = 0;
  memTop = load<u64>(IOMMU_BASE + IO_MEM_TOP);
  addressReserved = physReservedMask(load<u32>(CTRL_BASE + CFG_MAXPHYADDR));
  if (load<u32>(IOMMU_BASE + IO_KIND) == IommuKind.Amdvi) return resolveAmd(sid);
  return resolveVtd(sid, hasPasid, pasid);
}

function resolveVtd(sid: u32, hasPasid: bool, pasid: u32): u32 {
  const rtaddr = load<u64>(IOMMU_BASE + IO_ROOT);
  const scalable = (rtaddr & RTADDR_SMT) != 0;
  const bus = sid >> 8;
  const devfn = sid & 0xff;
  const rootAddress = (rtaddr & ADDRESS_MASK) + (<u64>bus << 4);
  if (rootAddress >= memTop) return IoFault.RootAccessFailed;
  const lo = readPhys64(rootAddress);
  const hi = readPhys64(rootAddress + 8);
  reference(rootAddress);
  if (!scalable) {
    if ((lo & 1) == 0) return IoFault.RootNotPresent;
    if (rootLegacyReserved(lo, hi, addressReserved)) return IoFault.RootReserved;
    const contextAddress = (lo & ADDRESS_MASK) + (<u64>devfn << 4);
    if (contextAddress >= memTop) return IoFault.ContextAccessFailed;
    const clo = readPhys64(contextAddress);
    const chi = readPhys64(contextAddress + 8);
    reference(contextAddress);
    if ((clo & CTX_P) == 0) return IoFault.ContextNotPresent;
    // From here the context entry's FPD governs whether faults are recorded.
    resolveFpd = (clo & CTX_FPD) != 0;
    resolveDomain = contextDID(chi);
    if (contextLegacyReserved(clo, chi, addressReserved)) return IoFault.ContextReserved;
    const tt = contextTT(clo);
    if (tt == 3) return IoFault.InvalidContext;
    const aw = contextAW(chi);
    let info = resolveFpd ? CI_FPD : 0;
    if (tt == TT_DEVICE_TLB) info |= CI_ATS;
    if (tt == TT_PASSTHROUGH) return finish(contextDID(chi), info | (CK_PASSTHROUGH << 3), 0, 0, sid, ANY);
    if (!awSupported(aw)) return IoFault.InvalidContext;
    info |= (aw + 2) | (CK_SECOND_LEVEL << 3);
    return finish(contextDID(chi), info, clo & ADDRESS_MASK, 0, sid, ANY);
  }

  // Scalable mode: the low half of the root entry serves devfn 0-127, the high half 128-255.
  const half = devfn < 128 ? lo : hi;
  if ((half & 1) == 0) return IoFault.RootNotPresent;
  if (rootScalableReserved(half, addressReserved)) return IoFault.RootReserved;
  const contextAddress = (half & ADDRESS_MASK) + (<u64>(devfn & 0x7f) << 5);
  if (contextAddress >= memTop) return IoFault.ContextAccessFailed;
  const q0 = readPhys64(contextAddress);
  const q1 = readPhys64(contextAddress + 8);
  const q2 = readPhys64(contextAddress + 16);
  const q3 = readPhys64(contextAddress + 24);
  reference(contextAddress);
  if ((q0 & CTX_P) == 0) return IoFault.ContextNotPresent;
  resolveFpd = (q0 & CTX_FPD) != 0;
  if (scalableContextReserved(q0, q1, q2, q3, addressReserved)) return IoFault.ContextReserved;
  if (hasPasid && (q0 & SCTX_PASIDE) == 0) return IoFault.InvalidContext;
  // Requests without a PASID are translated with the context's RID_PASID.
  const effective = hasPasid ? pasid & 0xfffff : <u32>q1 & 0xfffff;
  const directoryIndex = effective >> 6;
  if (directoryIndex >= <u32>1 << (scalableContextPdts(q0) + 7)) return IoFault.PasidEntry;
  const directoryAddress = (q0 & ADDRESS_MASK) + (<u64>directoryIndex << 3);
  if (directoryAddress >= memTop) return IoFault.PasidEntry;
  const de = readPhys64(directoryAddress);
  reference(directoryAddress);
  if ((de & 1) == 0) return IoFault.PasidEntry;
  if ((de & CTX_FPD) != 0) resolveFpd = true;
  if (pasidDirReserved(de, addressReserved)) return IoFault.PasidEntry;
  const entryAddress = (de & ADDRESS_MASK) + (<u64>(effective & 0x3f) << 6);
  if (entryAddress >= memTop) return IoFault.PasidEntry;
  const p0 = readPhys64(entryAddress);
  const p1 = readPhys64(entryAddress + 8);
  const p2 = readPhys64(entryAddress + 16);
  reference(entryAddress);
  if ((p0 & 1) == 0) return IoFault.PasidEntry;
  if ((p0 & CTX_FPD) != 0) resolveFpd = true;
  resolveDomain = <u32>p1 & 0xffff;
  if (pasidEntryReserved(p0, p1, p2, addressReserved)) return IoFault.PasidEntry;
  let info = resolveFpd ? CI_FPD : 0;
  if ((q0 & SCTX_DTE) != 0) info |= CI_ATS;
  const domain = <u32>p1 & 0xffff;
  const pgtt = pasidPGTT(p0);
  const flpm = pasidFLPM(p2);
  const aw = pasidAW(p0);
  const firstLevels: u32 = flpm == 0 ? 4 : 5;
  if ((pgtt == PGTT_FIRST || pgtt == PGTT_NESTED) && flpm > 1) return IoFault.PasidEntry;
  if ((pgtt == PGTT_SECOND || pgtt == PGTT_NESTED) && !awSupported(aw)) return IoFault.PasidEntry;
  if (pgtt == PGTT_FIRST) {
    return finish(domain, info | firstLevels | (CK_FIRST_LEVEL << 3), p2 & ADDRESS_MASK, 0, sid, effective);
  }
  if (pgtt == PGTT_SECOND) {
    return finish(domain, info | (aw + 2) | (CK_SECOND_LEVEL << 3), p0 & ADDRESS_MASK, 0, sid, effective);
  }
  if (pgtt == PGTT_NESTED) {
    info |= firstLevels | (CK_NESTED << 3) | ((aw + 2) << 12);
    return finish(domain, info, p2 & ADDRESS_MASK, p0 & ADDRESS_MASK, sid, effective);
  }
  if (pgtt == PGTT_PASSTHROUGH) return finish(domain, info | (CK_PASSTHROUGH << 3), 0, 0, sid, effective);
  return IoFault.PasidEntry;
}

function resolveAmd(sid: u32): u32 {
  const dteAddress = (load<u64>(IOMMU_BASE + IO_ROOT) & ADDRESS_MASK) + (<u64>sid << 5);
  if (dteAddress >= memTop) return IoFault.ContextAccessFailed;
  const q0 = readPhys64(dteAddress);
  const q1 = readPhys64(dteAddress + 8);
  reference(dteAddress);
  // V=0: the entry is not valid and the IOMMU passes the device's requests through untranslated.
  if ((q0 & DTE_V) == 0) return finish(0, CK_PASSTHROUGH << 3, 0, 0, sid, ANY);
  const domain = dteDomain(q1);
  resolveDomain = domain;
  let info: u32 = 0;
  if ((q0 & DTE_IR) != 0) info |= CI_IR;
  if ((q0 & DTE_IW) != 0) info |= CI_IW;
  if ((q1 & DTE_I_HIGH) != 0) info |= CI_ATS;
  // TV=0: the translation fields are not valid, so nothing in them is checked.
  if ((q0 & DTE_TV) == 0) return finish(domain, info | (CK_AMD_NO_TABLE << 3), 0, 0, sid, ANY);
  if (dteReserved(q0, addressReserved)) return IoFault.IllegalDeviceTableEntry;
  const mode = dteMode(q0);
  if (mode == 7) return IoFault.IllegalDeviceTableEntry;
  if (mode == 0) return finish(domain, info | (CK_AMD_UNTRANSLATED << 3), 0, 0, sid, ANY);
  return finish(domain, info | mode | (CK_AMD_WALK << 3), q0 & ADDRESS_MASK, 0, sid, ANY);
}
