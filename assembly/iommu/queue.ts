// Invalidation (docs/iommu.md; docs/MODEL.md §13.6): VT-d's queued-invalidation descriptors and AMD-Vi's
// command buffer. Both are rings of 16-byte entries in host memory that software fills and hands over
// by moving the tail; the IOMMU consumes them in order, up to the tail or the first entry it rejects.
import {
  AMD_COMWAIT_INT,
  FSTS_IQE,
  IO_FSTS,
  IO_KIND,
  IO_QUEUE_BASE,
  IO_QUEUE_ENTRIES,
  IO_QUEUE_HEAD,
  IO_QUEUE_TAIL,
  IO_STATUS,
  IoInvalidation,
  IommuKind,
  IOMMU_BASE,
} from "../constants";
import { readPhys64, writePhys64 } from "../phys";
import { S_IO_INVALIDATIONS, bump } from "../stats";
import { EVENT_ILLEGAL_COMMAND_ERROR, appendEvent } from "./faults";
import { ANY, ccInvalidate, iotlbInvalidate, ioPscInvalidate } from "./iotlb";

/** The largest VT-d address mask (CAP.MAMV): page-selective invalidations cover up to 2^18 pages. */
const MAX_ADDRESS_MASK: u32 = 18;
/** IOTLB entries of PASID-granular (scalable-mode) translations carry the PASID with this bit. */
export const PASID_TAG: u32 = 0x80000000;

/** Writes a 32-bit value at a 4-byte-aligned host-physical address (a read-modify-write of its qword). */
function writePhys32(pa: u64, value: u32): void {
  const qword = pa & ~<u64>7;
  const old = readPhys64(qword);
  const shift = (pa & 4) << 3;
  writePhys64(qword, (old & ~(<u64>0xffffffff << shift)) | (<u64>value << shift));
}

/** Consumes the queue from its head to the new tail. Returns false when an entry was rejected. */
export function processQueue(tail: u32): bool {
  const entries = load<u32>(IOMMU_BASE + IO_QUEUE_ENTRIES);
  if (entries == 0) return false;
  store<u32>(IOMMU_BASE + IO_QUEUE_TAIL, tail % entries);
  const amd = load<u32>(IOMMU_BASE + IO_KIND) == IommuKind.Amdvi;
  const base = load<u64>(IOMMU_BASE + IO_QUEUE_BASE);
  let head = load<u32>(IOMMU_BASE + IO_QUEUE_HEAD);
  while (head != tail % entries) {
    const address = base + (<u64>head << 4);
    const q0 = readPhys64(address);
    const q1 = readPhys64(address + 8);
    const accepted = amd ? amdCommand(q0, q1) : vtdDescriptor(q0, q1);
    if (!accepted) {
      bump(S_IO_INVALIDATIONS + IoInvalidation.Rejected);
      // VT-d stops with IQH on the bad descriptor and FSTS.IQE set; AMD-Vi logs ILLEGAL_COMMAND_ERROR.
      if (amd) appendEvent(EVENT_ILLEGAL_COMMAND_ERROR << 60, address);
      else store<u32>(IOMMU_BASE + IO_FSTS, load<u32>(IOMMU_BASE + IO_FSTS) | FSTS_IQE);
      store<u32>(IOMMU_BASE + IO_QUEUE_HEAD, head);
      return false;
    }
    head = (head + 1) % entries;
  }
  store<u32>(IOMMU_BASE + IO_QUEUE_HEAD, head);
  return true;
}

/** Page-selective range of a VT-d IOTLB descriptor: ADDR (qword 1, 63:12) aligned down to 2^AM pages. */
@inline function maskedRange(q1: u64): u64 {
  return <u64>1 << (12 + (q1 & 0x3f));
}

function vtdDescriptor(q0: u64, q1: u64): bool {
  const type = <u32>q0 & 0xf;
  const granularity = <u32>(q0 >> 4) & 3;
  const domain = <u32>(q0 >> 16) & 0xffff;
  if (type == 1) {
    // Context-cache invalidation: global, domain, or device (source id with a function mask).
    if (granularity == 1) {
      ccInvalidate(ANY, ANY, 0, ANY);
      bump(S_IO_INVALIDATIONS + IoInvalidation.ContextGlobal);
    } else if (granularity == 2) {
      ccInvalidate(domain, ANY, 0, ANY);
      bump(S_IO_INVALIDATIONS + IoInvalidation.ContextDomain);
    } else if (granularity == 3) {
      const sid = <u32>(q0 >> 32) & 0xffff;
      const fm = <u32>(q0 >> 48) & 3;
      // FM masks the low function-number bits from the top: 1 ignores bit 2, 2 bits 2:1, 3 bits 2:0.
      const sidMask = (7 << (3 - fm)) & 7;
      ccInvalidate(ANY, sid, sidMask, ANY);
      bump(S_IO_INVALIDATIONS + IoInvalidation.ContextDevice);
    } else return false;
    return true;
  }
  if (type == 2) {
    if (granularity == 1) {
      iotlbInvalidate(ANY, ANY, 0, 0);
      ioPscInvalidate(ANY, ANY);
      bump(S_IO_INVALIDATIONS + IoInvalidation.IotlbGlobal);
    } else if (granularity == 2) {
      iotlbInvalidate(domain, ANY, 0, 0);
      ioPscInvalidate(domain, ANY);
      bump(S_IO_INVALIDATIONS + IoInvalidation.IotlbDomain);
    } else if (granularity == 3) {
      if (<u32>(q1 & 0x3f) > MAX_ADDRESS_MASK) return false;
      const size = maskedRange(q1);
      iotlbInvalidate(domain, ANY, q1 & ~(size - 1), size);
      // IH (qword 1 bit 6) says only leaves changed: the paging-structure caches may stay.
      if ((q1 & 0x40) == 0) ioPscInvalidate(domain, ANY);
      bump(S_IO_INVALIDATIONS + IoInvalidation.IotlbPage);
    } else return false;
    return true;
  }
  if (type == 5) {
    // Invalidation wait: with SW (bit 5), write the status data (63:32) to the address in qword 1.
    if ((q0 & 0x20) != 0) writePhys32(q1 & ~<u64>3, <u32>(q0 >> 32));
    bump(S_IO_INVALIDATIONS + IoInvalidation.Wait);
    return true;
  }
  if (type == 6) {
    // PASID-based IOTLB invalidation: all of (domain, PASID), or a page range of it.
    const pasid = <u32>(q0 >> 32) & 0xfffff;
    if (granularity == 2) {
      iotlbInvalidate(domain, PASID_TAG | pasid, 0, 0);
      ioPscInvalidate(domain, PASID_TAG | pasid);
    } else if (granularity == 3) {
      if (<u32>(q1 & 0x3f) > MAX_ADDRESS_MASK) return false;
      const size = maskedRange(q1);
      iotlbInvalidate(domain, PASID_TAG | pasid, q1 & ~(size - 1), size);
      if ((q1 & 0x40) == 0) ioPscInvalidate(domain, PASID_TAG | pasid);
    } else return false;
    bump(S_IO_INVALIDATIONS + IoInvalidation.PasidIotlb);
    return true;
  }
  if (type == 7) {
    // PASID-cache invalidation: domain-selective, PASID-selective, or global.
    const pasid = <u32>(q0 >> 32) & 0xfffff;
    if (granularity == 0) ccInvalidate(domain, ANY, 0, ANY);
    else if (granularity == 1) ccInvalidate(domain, ANY, 0, pasid);
    else if (granularity == 3) ccInvalidate(ANY, ANY, 0, ANY);
    else return false;
    bump(S_IO_INVALIDATIONS + IoInvalidation.PasidCache);
    return true;
  }
  // 3 (device-TLB) and 4 (interrupt entry cache): this IOMMU has no device-TLB or interrupt-remapping
  // support (ECAP.DT = ECAP.IR = 0), so they are invalid like any unknown type.
  return false;
}

function amdCommand(q0: u64, q1: u64): bool {
  const opcode = <u32>(q0 >> 60);
  if (opcode == 1) {
    // COMPLETION_WAIT: S (bit 0) stores qword 1 at the address in 51:3; I (bit 1) raises ComWaitInt.
    if ((q0 & 1) != 0) writePhys64(q0 & 0x000ffffffffffff8, q1);
    if ((q0 & 2) != 0) store<u32>(IOMMU_BASE + IO_STATUS, load<u32>(IOMMU_BASE + IO_STATUS) | AMD_COMWAIT_INT);
    bump(S_IO_INVALIDATIONS + IoInvalidation.Wait);
    return true;
  }
  if (opcode == 2) {
    ccInvalidate(ANY, <u32>q0 & 0xffff, 0, ANY);
    bump(S_IO_INVALIDATIONS + IoInvalidation.DeviceTableEntry);
    return true;
  }
  if (opcode == 3) {
    // INVALIDATE_IOMMU_PAGES: DomainID in 47:32; S (qword 1 bit 0) makes the address encode a range by
    // its run of ones from bit 12, as Next Level 7 does; all ones up to bit 62 means the whole domain.
    const domain = <u32>(q0 >> 32) & 0xffff;
    const address = q1 & ~<u64>0xfff;
    // PDE (qword 1 bit 1): the directory entries changed too, so the paging-structure caches go.
    if ((q1 & 2) != 0) ioPscInvalidate(domain, ANY);
    if ((q1 & 1) == 0) iotlbInvalidate(domain, ANY, address, 4096);
    else {
      const zero = <u32>ctz(~(address | 0xfff));
      if (zero >= 63) iotlbInvalidate(domain, ANY, 0, 0);
      else {
        const size = <u64>1 << (<u64>zero + 1);
        iotlbInvalidate(domain, ANY, address & ~(size - 1), size);
      }
    }
    bump(S_IO_INVALIDATIONS + IoInvalidation.IommuPages);
    return true;
  }
  if (opcode == 8) {
    ccInvalidate(ANY, ANY, 0, ANY);
    iotlbInvalidate(ANY, ANY, 0, 0);
    ioPscInvalidate(ANY, ANY);
    bump(S_IO_INVALIDATIONS + IoInvalidation.InvalidateAll);
    return true;
  }
  // INVALIDATE_IOTLB_PAGES (4) and INVALIDATE_INTERRUPT_TABLE (5) need device IOTLBs and interrupt
  // remapping, which this IOMMU does not have; other opcodes are undefined.
  return false;
}
