// Fault reporting (docs/iommu.md; docs/MODEL.md §13.5). VT-d writes 128-bit fault records into its
// fault-recording registers, a ring the host drains by clearing each record's F bit; a fault that finds
// the next record still full sets FSTS.PFO and is lost. AMD-Vi appends 16-byte events to an event log
// in host memory; a full log sets EventOverflow and drops the event.
import {
  AMD_EVENT_OVERFLOW,
  FSTS_PFO,
  FSTS_PPF,
  IO_EVENT_BASE,
  IO_EVENT_ENTRIES,
  IO_EVENT_HEAD,
  IO_EVENT_TAIL,
  IO_FAULT_RECORD_BASE,
  IO_FAULT_RECORDS,
  IO_FSTS,
  IO_KIND,
  IO_STATUS,
  IoFault,
  IommuKind,
  IOMMU_BASE,
} from "../constants";
import { writePhys64 } from "../phys";
import { S_IO_FAULTS, S_IO_OVERFLOWS, S_IO_RECORDED, bump } from "../stats";

/** VT-d fault reason recorded for IoFault.PasidEntry (docs/iommu.md §VT-d: fault records and fault reasons). */
export const VTD_REASON_PASID_ENTRY: u64 = 0x58;

// AMD-Vi event codes and IO_PAGE_FAULT flags (docs/iommu.md §AMD-Vi: event log).
export const EVENT_ILLEGAL_DEV_TABLE_ENTRY: u64 = 1;
export const EVENT_IO_PAGE_FAULT: u64 = 2;
export const EVENT_DEV_TAB_HARDWARE_ERROR: u64 = 3;
export const EVENT_PAGE_TAB_HARDWARE_ERROR: u64 = 4;
export const EVENT_ILLEGAL_COMMAND_ERROR: u64 = 5;
export const EVENT_FLAG_PR: u64 = 0x010;
export const EVENT_FLAG_RW: u64 = 0x020;
export const EVENT_FLAG_RZ: u64 = 0x080;
export const EVENT_FLAG_TR: u64 = 0x100;

/**
 * Reports a DMA fault of cause `cause`. `present` says whether the faulting entry was present (AMD-Vi
 * PR), `translated` whether the request was an ATS translated request, `suppressed` whether a present
 * entry had FPD set (VT-d only: the fault is counted but not recorded).
 */
export function reportFault(
  cause: u32,
  sid: u32,
  hasPasid: bool,
  pasid: u32,
  address: u64,
  write: bool,
  translated: bool,
  present: bool,
  domain: u32,
  suppressed: bool,
): void {
  bump(S_IO_FAULTS + cause);
  if (load<u32>(IOMMU_BASE + IO_KIND) == IommuKind.Amdvi) {
    let code = EVENT_IO_PAGE_FAULT;
    if (cause == IoFault.IllegalDeviceTableEntry) code = EVENT_ILLEGAL_DEV_TABLE_ENTRY;
    else if (cause == IoFault.ContextAccessFailed) code = EVENT_DEV_TAB_HARDWARE_ERROR;
    else if (cause == IoFault.EntryAccessFailed) code = EVENT_PAGE_TAB_HARDWARE_ERROR;
    let flags: u64 = 0;
    if (write) flags |= EVENT_FLAG_RW;
    if (translated) flags |= EVENT_FLAG_TR;
    if (code == EVENT_IO_PAGE_FAULT) {
      if (present) flags |= EVENT_FLAG_PR;
      if (cause == IoFault.EntryReserved) flags |= EVENT_FLAG_RZ;
    }
    // dword0 DeviceID, dword1 DomainID in 15:0, flags in 27:16 and the code in 31:28; qword 1 the address.
    const q0 = <u64>sid | (<u64>domain << 32) | (flags << 48) | (code << 60);
    appendEvent(q0, address);
    return;
  }
  if (suppressed) return;
  const records = load<u32>(IOMMU_BASE + IO_FAULT_RECORDS);
  if (records == 0) return;
  const fsts = load<u32>(IOMMU_BASE + IO_FSTS);
  const index = (fsts >> 8) & 0xff;
  const record = IOMMU_BASE + IO_FAULT_RECORD_BASE + (index << 4);
  if ((load<u64>(record, 8) >> 63) != 0) {
    // The next record still holds a fault software has not cleared: primary fault overflow.
    store<u32>(IOMMU_BASE + IO_FSTS, fsts | FSTS_PFO);
    bump(S_IO_OVERFLOWS);
    return;
  }
  const reason: u64 = cause == IoFault.PasidEntry ? VTD_REASON_PASID_ENTRY : <u64>cause;
  // FI 63:12; then SID 79:64, PP 95, FR 103:96, PV 123:104, AT 125:124, T 126 (1 = read), F 127.
  let hi = <u64>sid | (reason << 32) | (<u64>1 << 63);
  if (hasPasid) hi |= (<u64>1 << 31) | (<u64>(pasid & 0xfffff) << 40);
  if (translated) hi |= <u64>2 << 60;
  if (!write) hi |= <u64>1 << 62;
  store<u64>(record, address & ~<u64>0xfff);
  store<u64>(record, hi, 8);
  const next = (index + 1) % records;
  store<u32>(IOMMU_BASE + IO_FSTS, (fsts & ~0xff00) | (next << 8) | FSTS_PPF);
  bump(S_IO_RECORDED);
}

/** Appends an AMD-Vi event at the log's tail, unless the log is full or not set up. */
export function appendEvent(q0: u64, q1: u64): void {
  const entries = load<u32>(IOMMU_BASE + IO_EVENT_ENTRIES);
  if (entries == 0) return;
  const head = load<u32>(IOMMU_BASE + IO_EVENT_HEAD);
  const tail = load<u32>(IOMMU_BASE + IO_EVENT_TAIL);
  const next = (tail + 1) % entries;
  const slot = load<u64>(IOMMU_BASE + IO_EVENT_BASE) + (<u64>tail << 4);
  if (next == head || writePhys64(slot, q0) != 0 || writePhys64(slot + 8, q1) != 0) {
    store<u32>(IOMMU_BASE + IO_STATUS, load<u32>(IOMMU_BASE + IO_STATUS) | AMD_EVENT_OVERFLOW);
    bump(S_IO_OVERFLOWS);
    return;
  }
  store<u32>(IOMMU_BASE + IO_EVENT_TAIL, next);
  bump(S_IO_RECORDED);
}

/** Software clears fault record `index` (writes 1 to its F bit); PPF stays while any record is full. */
export function clearFaultRecord(index: u32): void {
  const records = load<u32>(IOMMU_BASE + IO_FAULT_RECORDS);
  if (index >= records) return;
  const record = IOMMU_BASE + IO_FAULT_RECORD_BASE + (index << 4);
  store<u64>(record, load<u64>(record, 8) & ~(<u64>1 << 63), 8);
  let pending = false;
  for (let i: u32 = 0; i < records; i++) {
    if ((load<u64>(IOMMU_BASE + IO_FAULT_RECORD_BASE + (i << 4), 8) >> 63) != 0) pending = true;
  }
  const fsts = load<u32>(IOMMU_BASE + IO_FSTS);
  store<u32>(IOMMU_BASE + IO_FSTS, pending ? fsts | FSTS_PPF : fsts & ~FSTS_PPF);
}
