// The host's IOMMU driver, shaped like Linux's iommu-dma layer over intel-iommu and amd_iommu:
// domains with their own I/O page tables and IOVA space, dma_map/dma_unmap with strict invalidation
// (invalidate before the IOVA is reused) or deferred invalidation (a flush queue drained by one
// domain-wide invalidation, as iommu.strict=0 does), and VFIO-style pass-through that gives a device
// to a VM with the VM's guest-physical to host-physical map. Every change reaches the hardware through
// its tables in physical memory and its invalidation queue or command buffer.
import { type Machine, MemvirtError } from "../core/machine.js";
import { PAGE_SHIFT, type PageSize } from "../core/types.js";
import type { Vm } from "../hypervisor/vm.js";
import { Iommu, type IommuHardwareConfig } from "./hardware.js";
import type { IommuMode } from "./kinds.js";
import { AmdDeviceTable, type HostFrames, IoPageTable, type IoTableFormat, VtdRootTable } from "./tables.js";

export { IOMMU_MODES, type IommuMode } from "./kinds.js";

export interface DriverCosts {
  /** CPU cycles to write one I/O page-table leaf (map or unmap). */
  pteCycles: number;
  /** CPU cycles to submit a batch of invalidation descriptors and wait for its completion. */
  invalidationCycles: number;
}

export interface DriverSetup {
  hardware: IommuHardwareConfig;
  mode: IommuMode;
  /** VT-d scalable mode (PASID tables); domains then use `firstLevel` or second-level tables. */
  scalable: boolean;
  firstLevel: boolean;
  /** I/O page-table depth (VT-d AW = levels - 2; AMD-Vi DTE mode). */
  levels: 3 | 4 | 5;
  /** Deferred mode: unmaps queued before one domain-wide invalidation (Linux's IOVA_FQ_SIZE). */
  flushQueue: number;
  costs: DriverCosts;
  /**
   * The highest requester id on the platform (what ACPI's IVRS tells Linux as last_bdf): AMD-Vi device
   * table entries up to it start valid and blocking, so a requester nobody attached cannot DMA.
   */
  lastRequester?: number;
}

export interface DriverStats {
  maps: number;
  unmaps: number;
  pagesMapped: number;
  pagesUnmapped: number;
  invalidationBatches: number;
  descriptors: number;
  flushQueueFlushes: number;
  cycles: number;
}

export class Domain {
  readonly devices = new Set<number>();
  private nextIova = 0x10_0000n;
  private readonly freeIovas = new Map<string, bigint[]>();

  constructor(
    readonly id: number,
    readonly table: IoPageTable | undefined,
  ) {}

  /** An IOVA range of `bytes`, aligned to `align` (Linux's rcaches keep freed ranges by size). */
  allocIova(bytes: bigint, align: bigint): bigint {
    const key = `${bytes}:${align}`;
    const reused = this.freeIovas.get(key)?.pop();
    if (reused !== undefined) return reused;
    const base = (this.nextIova + align - 1n) & ~(align - 1n);
    this.nextIova = base + bytes;
    return base;
  }

  freeIova(base: bigint, bytes: bigint, align: bigint): void {
    const key = `${bytes}:${align}`;
    let list = this.freeIovas.get(key);
    if (!list) {
      list = [];
      this.freeIovas.set(key, list);
    }
    list.push(base);
  }
}

interface PendingUnmap {
  domain: Domain;
  iova: bigint;
  bytes: bigint;
  align: bigint;
}

const QUEUE_ENTRIES = 256;
const PASID_FOR_DMA = 0;

export class IommuDriver {
  readonly iommu: Iommu;
  readonly stats: DriverStats = {
    maps: 0,
    unmaps: 0,
    pagesMapped: 0,
    pagesUnmapped: 0,
    invalidationBatches: 0,
    descriptors: 0,
    flushQueueFlushes: 0,
    cycles: 0,
  };
  private readonly vtd?: VtdRootTable;
  private readonly amd?: AmdDeviceTable;
  private readonly statusAddress: bigint = 0n;
  private waitSequence = 0n;
  private nextDomainId = 1;
  private readonly flushQueue: PendingUnmap[] = [];
  readonly domainOf = new Map<number, Domain>();

  constructor(
    readonly machine: Machine,
    readonly frames: HostFrames,
    readonly setup: DriverSetup,
  ) {
    const enabled = setup.mode !== "off" && setup.hardware.kind !== "none";
    this.iommu = new Iommu(machine, enabled ? setup.hardware : { ...setup.hardware, kind: "none" });
    if (!enabled) return;
    if (setup.hardware.kind === "vtd") {
      this.vtd = new VtdRootTable(machine, frames, setup.scalable);
      this.iommu.setRoot(this.vtd.rtaddr);
    } else {
      this.amd = new AmdDeviceTable(machine, frames);
      // init_device_table_dma: V and TV set, no translation and no IR/IW: an unattached requester's
      // DMA is refused (an IO_PAGE_FAULT) instead of passing untranslated, as V=0 would let it.
      for (let sid = 0; sid <= (setup.lastRequester ?? -1); sid++)
        this.amd.setDte(sid, { mode: 0, domain: 0, read: false, write: false });
      this.iommu.setRoot(this.amd.base);
      this.iommu.setEventLog(frames.alloc("4K"), 256);
    }
    this.iommu.setQueue(frames.alloc("4K"), QUEUE_ENTRIES);
    this.statusAddress = frames.alloc("4K");
  }

  get enabled(): boolean {
    return this.vtd !== undefined || this.amd !== undefined;
  }

  private get format(): IoTableFormat {
    if (this.amd) return "amdvi";
    return this.setup.scalable && this.setup.firstLevel ? "vtd-fl" : "vtd-sl";
  }

  /** A new DMA domain with an empty I/O page table. */
  newDomain(): Domain {
    const levels = this.format === "vtd-fl" ? (this.setup.levels === 5 ? 5 : 4) : this.setup.levels;
    const table = this.enabled ? new IoPageTable(this.machine, this.frames, this.format, levels) : undefined;
    return new Domain(this.nextDomainId++, table);
  }

  /** Points device `sid` at `domain` (context entry, PASID entry or DTE) and drops cached state. */
  attach(sid: number, domain: Domain): void {
    this.domainOf.get(sid)?.devices.delete(sid);
    this.domainOf.set(sid, domain);
    domain.devices.add(sid);
    if (!this.enabled || !domain.table) return;
    const levels = domain.table.levels;
    if (this.vtd && !this.setup.scalable) {
      this.vtd.setContext(sid, { domain: domain.id, aw: levels - 2, root: domain.table.root });
    } else if (this.vtd) {
      const firstLevel = this.format === "vtd-fl";
      this.vtd.setPasidEntry(sid, PASID_FOR_DMA, {
        domain: domain.id,
        pgtt: firstLevel ? 1 : 2,
        aw: levels - 2,
        secondLevelRoot: firstLevel ? 0n : domain.table.root,
        firstLevelRoot: firstLevel ? domain.table.root : 0n,
        firstLevels: levels === 5 ? 5 : 4,
      });
    } else if (this.amd) {
      this.amd.setDte(sid, { mode: levels, root: domain.table.root, domain: domain.id });
    }
    this.invalidateDevice(sid, domain);
  }

  // --- invalidation ----------------------------------------------------------------------------------

  private submit(descriptors: [bigint, bigint][]): void {
    // Every batch ends with a wait whose status write tells software the batch has completed.
    this.waitSequence++;
    const wait: [bigint, bigint] = this.amd
      ? [(1n << 60n) | this.statusAddress | 1n, this.waitSequence]
      : [5n | (1n << 5n) | (this.waitSequence << 32n), this.statusAddress];
    if (!this.iommu.submit([...descriptors, wait]))
      throw new MemvirtError("the IOMMU rejected an invalidation descriptor", 1);
    const status = this.machine.readPhys64(this.statusAddress);
    const seen = this.amd ? status : status & 0xffff_ffffn;
    if (seen !== (this.waitSequence & (this.amd ? (1n << 64n) - 1n : 0xffff_ffffn)))
      throw new MemvirtError("IOMMU invalidation wait did not complete", 1);
    this.stats.invalidationBatches++;
    this.stats.descriptors += descriptors.length + 1;
    this.stats.cycles += this.setup.costs.invalidationCycles;
  }

  private invalidateDevice(sid: number, domain: Domain): void {
    if (this.amd) {
      this.submit([[(2n << 60n) | BigInt(sid), 0n], this.amdPages(domain, 0n, 0n)]);
      return;
    }
    const did = BigInt(domain.id);
    if (this.setup.scalable) {
      this.submit([
        [7n | (1n << 4n) | (did << 16n) | (BigInt(PASID_FOR_DMA) << 32n), 0n],
        [1n | (3n << 4n) | (did << 16n) | (BigInt(sid) << 32n), 0n],
        this.vtdIotlb(domain, 0n, 0n),
      ]);
    } else {
      this.submit([
        [1n | (3n << 4n) | (did << 16n) | (BigInt(sid) << 32n), 0n],
        this.vtdIotlb(domain, 0n, 0n),
      ]);
    }
  }

  /** VT-d IOTLB invalidation of a range (bytes 0: the whole domain). First-level domains use type 6. */
  private vtdIotlb(domain: Domain, iova: bigint, bytes: bigint): [bigint, bigint] {
    const did = BigInt(domain.id) << 16n;
    const drain = (1n << 6n) | (1n << 7n);
    const pasidBased = this.setup.scalable && this.format === "vtd-fl";
    if (bytes === 0n) {
      return pasidBased
        ? [6n | (2n << 4n) | did | (BigInt(PASID_FOR_DMA) << 32n), 0n]
        : [2n | (2n << 4n) | did | drain, 0n];
    }
    const { base, mask } = alignedBlock(iova, bytes);
    if (mask > 18) return this.vtdIotlb(domain, 0n, 0n);
    // IH: an unmap clears leaves only (tables are never freed), so the paging-structure caches stay.
    const ih = 1n << 6n;
    return pasidBased
      ? [6n | (3n << 4n) | did | (BigInt(PASID_FOR_DMA) << 32n), base | BigInt(mask) | ih]
      : [2n | (3n << 4n) | did | drain, base | BigInt(mask) | ih];
  }

  /** AMD-Vi INVALIDATE_IOMMU_PAGES for a range (bytes 0: the whole domain). */
  private amdPages(domain: Domain, iova: bigint, bytes: bigint): [bigint, bigint] {
    const q0 = (3n << 60n) | (BigInt(domain.id) << 32n);
    // The whole domain, directory entries included (PDE): after an attach its tables may be new.
    if (bytes === 0n) return [q0, 0x7fff_ffff_ffff_f000n | 2n | 1n];
    const { base, mask } = alignedBlock(iova, bytes);
    if (mask === 0) return [q0, base];
    // S=1: the run of ones from bit 12 encodes the size, 2^(12 + mask).
    return [q0, base | (((1n << BigInt(11 + mask)) - 1n) & ~0xfffn) | 1n];
  }

  private invalidateRange(domain: Domain, iova: bigint, bytes: bigint): void {
    this.submit([this.amd ? this.amdPages(domain, iova, bytes) : this.vtdIotlb(domain, iova, bytes)]);
  }

  // --- the DMA API -----------------------------------------------------------------------------------

  /**
   * dma_map: makes host-physical pages visible to `domain`'s devices and returns the bus address of
   * the first byte. `pages` are the host frames (each 4 KiB, or all 2 MiB-aligned for `size` "2M").
   */
  mapPages(domain: Domain, pages: readonly bigint[], write: boolean, size: PageSize = "4K"): bigint {
    if (!this.enabled) return pages[0];
    const table = domain.table;
    if (!table) throw new MemvirtError(`domain ${domain.id} has no page table`, 1);
    const pageBytes = 1n << BigInt(PAGE_SHIFT[size]);
    const bytes = BigInt(pages.length) * pageBytes;
    const iova = domain.allocIova(bytes, pageBytes);
    pages.forEach((page, i) => {
      table.map(iova + BigInt(i) * pageBytes, page, size, { read: true, write });
    });
    this.stats.maps++;
    this.stats.pagesMapped += pages.length;
    this.stats.cycles += pages.length * this.setup.costs.pteCycles;
    return iova;
  }

  /** dma_unmap of what mapPages returned: strict invalidates now, deferred queues the IOVA. */
  unmapPages(domain: Domain, iova: bigint, count: number, size: PageSize = "4K"): void {
    if (!this.enabled) return;
    const table = domain.table;
    if (!table) return;
    const pageBytes = 1n << BigInt(PAGE_SHIFT[size]);
    for (let i = 0; i < count; i++) table.unmap(iova + BigInt(i) * pageBytes);
    this.stats.unmaps++;
    this.stats.pagesUnmapped += count;
    this.stats.cycles += count * this.setup.costs.pteCycles;
    const bytes = BigInt(count) * pageBytes;
    if (this.setup.mode === "deferred") {
      this.flushQueue.push({ domain, iova, bytes, align: pageBytes });
      if (this.flushQueue.length >= this.setup.flushQueue) this.flush();
      return;
    }
    this.invalidateRange(domain, iova, bytes);
    domain.freeIova(iova, bytes, pageBytes);
  }

  /** Drains the deferred flush queue: one domain-wide invalidation per domain, then the IOVAs are free. */
  flush(): void {
    if (this.flushQueue.length === 0) return;
    const domains = new Set(this.flushQueue.map((entry) => entry.domain));
    const descriptors = [...domains].map((domain) =>
      this.amd ? this.amdPages(domain, 0n, 0n) : this.vtdIotlb(domain, 0n, 0n),
    );
    this.submit(descriptors);
    for (const entry of this.flushQueue) entry.domain.freeIova(entry.iova, entry.bytes, entry.align);
    this.flushQueue.length = 0;
    this.stats.flushQueueFlushes++;
  }

  // --- pass-through (VFIO) -------------------------------------------------------------------------------

  /**
   * Gives devices to a VM: one domain maps every memslot of the VM guest-physical to host-physical, with
   * the VM's backing page size where the IOMMU supports it, as VFIO pins and maps guest memory.
   * Device DMA addresses are then guest-physical.
   */
  assignToVm(sids: readonly number[], vm: Vm): Domain {
    const domain = this.newDomain();
    if (this.enabled && domain.table) {
      let size: PageSize = vm.backingPageSize;
      if (size === "1G" && !this.setup.hardware.largePages["1G"]) size = "2M";
      if (size === "2M" && !this.setup.hardware.largePages["2M"]) size = "4K";
      const step = 1n << BigInt(PAGE_SHIFT[size]);
      for (const slot of vm.memslots) {
        for (let gpa = slot.base; gpa < slot.base + slot.size; gpa += step) {
          domain.table.map(gpa, vm.hostAddress(gpa), size, { read: true, write: !slot.readonly });
          this.stats.pagesMapped++;
          this.stats.cycles += this.setup.costs.pteCycles;
        }
      }
      this.stats.maps++;
    }
    for (const sid of sids) this.attach(sid, domain);
    return domain;
  }
}

/** The smallest naturally aligned block of 2^mask pages covering [iova, iova + bytes). */
export function alignedBlock(iova: bigint, bytes: bigint): { base: bigint; mask: number } {
  const last = iova + bytes - 1n;
  let mask = 0;
  while (iova >> BigInt(12 + mask) !== last >> BigInt(12 + mask)) mask++;
  return { base: (iova >> BigInt(12 + mask)) << BigInt(12 + mask), mask };
}
