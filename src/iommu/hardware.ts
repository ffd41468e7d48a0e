// The host's typed view of the IOMMU in the core (docs/iommu.md; docs/MODEL.md §13): programming its
// registers, feeding its invalidation queue or command buffer, draining fault records and events, and
// running device DMA requests through it in batches.
import * as L from "../core/layout.js";
import { type Machine, MemvirtError, policyCode } from "../core/machine.js";
import * as S from "../core/stats-layout.js";
import type { SetAssocConfig } from "../core/types.js";
/** The IOMMUs the core models (its IommuKind codes, but for none). */
import type { IommuKind } from "./kinds.js";
import { formatBdf } from "./tables.js";

export { IOMMU_KINDS, type IommuKind } from "./kinds.js";
/** Fault causes by code (the VT-d reasons 1..0xD, then the PASID-entry and AMD-Vi-only causes). */
export const FAULT_CAUSES = L.IO_FAULT_NAMES;
export type FaultCause = L.IoFaultName;

export const INVALIDATION_TYPES = L.IO_INVALIDATION_NAMES;

export interface IommuHardwareConfig {
  kind: IommuKind | "none";
  /** VT-d CAP.SAGAW: the AW values (1: 3 levels, 2: 4, 3: 5) the hardware supports. */
  supportedAw: number[];
  largePages: { "2M": boolean; "1G": boolean };
  snoopControl: boolean;
  /** Host-physical addresses at and above this have no memory: structure reads there fail. */
  memoryTop: bigint;
  iotlb: (SetAssocConfig & { latency: number }) | null;
  contextCache: SetAssocConfig | null;
  /** Paging-structure cache of non-leaf I/O page-table entries (absent: every walk starts at the top). */
  psc?: SetAssocConfig | null;
  /** VT-d fault-recording registers (CAP.NFR + 1). */
  faultRecords: number;
}

export interface DmaRequest {
  sid: number;
  address: bigint;
  write: boolean;
  /** Bytes, 1..4096, not crossing a 4 KiB boundary (one PCIe request). */
  length?: number;
  pasid?: number;
  /** An ATS translated request: the address is host-physical already. */
  translated?: boolean;
  /** Data: a write stores it in every qword it covers; a read returns the first qword in `data`. */
  data?: bigint;
}

export interface DmaResult {
  /** 0, a fault cause code, DMA_BAD (malformed) or DMA_UNSUPPORTED (no memory at the address). */
  status: number;
  cause: FaultCause | "bad" | "unsupported" | "none";
  hpa: bigint;
  data: bigint;
}

export interface FaultRecord {
  index: number;
  reason: number;
  sid: number;
  address: bigint;
  write: boolean;
  pasid?: number;
  translated: boolean;
}

export interface IommuEvent {
  code: number;
  deviceId: number;
  domain: number;
  flags: number;
  address: bigint;
}

/** AMD-Vi event codes (dword 1 bits 31:28). */
export const EVENT_CODES: Record<number, string> = {
  1: "ILLEGAL_DEV_TABLE_ENTRY",
  2: "IO_PAGE_FAULT",
  3: "DEV_TAB_HARDWARE_ERROR",
  4: "PAGE_TAB_HARDWARE_ERROR",
  5: "ILLEGAL_COMMAND_ERROR",
};

/** IO_PAGE_FAULT flag bits (dword 1 bits 27:16) by name. */
const EVENT_FLAGS: [string, number][] = [
  ["I", 0x008],
  ["PR", 0x010],
  ["RW", 0x020],
  ["RZ", 0x080],
  ["TR", 0x100],
];

/** One fault as software's handler read it: a VT-d fault record or an AMD-Vi event. */
export type DrainedFault =
  | {
      record: "vtd";
      reason: number;
      cause: string;
      source: string;
      address: string;
      access: "read" | "write";
    }
  | { event: string; device: string; domain: number; address: string; flags: string[] };

/** What the fault handler drained: VT-d fault records, AMD-Vi events by code, and the first few. */
export interface DrainedFaults {
  records: number;
  events: Record<string, number>;
  first: DrainedFault[];
}

/** Faults the handler keeps decoded in full (the rest are counted). */
const KEPT_FAULTS = 8;

export interface IommuStats {
  translations: number;
  iotlb: { hits: number; misses: number };
  contextCache: { hits: number; misses: number };
  psc: { hits: number; misses: number };
  walks: number;
  walkRefs: number;
  contextRefs: number;
  untranslated: number;
  bytes: number;
  cycles: number;
  faults: Record<string, number>;
  faultsRecorded: number;
  faultOverflows: number;
  invalidations: Record<string, number>;
}

function statusName(status: number): DmaResult["cause"] {
  if (status === L.DMA_BAD) return "bad";
  if (status === L.DMA_UNSUPPORTED) return "unsupported";
  return FAULT_CAUSES[status] ?? "none";
}

export class Iommu {
  private queueTail = 0;
  private queueEntries = 0;
  private queueBase = 0n;

  constructor(
    readonly machine: Machine,
    readonly config: IommuHardwareConfig,
  ) {
    const core = machine.core;
    const sagaw = config.supportedAw.reduce((mask, aw) => mask | (1 << aw), 0);
    const flags =
      (config.largePages["2M"] ? L.IO_F_2M : 0) |
      (config.largePages["1G"] ? L.IO_F_1G : 0) |
      (config.snoopControl ? L.IO_F_SNOOP : 0);
    this.check(
      core.iommuInit(
        L.IOMMU_KIND_NAMES.indexOf(config.kind),
        sagaw,
        flags,
        config.memoryTop,
        config.iotlb?.latency ?? 0,
        config.faultRecords,
      ),
      "iommu",
    );
    if (config.iotlb) {
      const { entries, ways, policy } = config.iotlb;
      this.check(core.iommuIotlb(entries, ways, policyCode(policy)), "iommu.iotlb");
    }
    if (config.psc) {
      const { entries, ways, policy } = config.psc;
      this.check(core.iommuPsc(entries, ways, policyCode(policy)), "iommu.psc");
    }
    if (config.contextCache) {
      const { entries, ways, policy } = config.contextCache;
      this.check(core.iommuContextCache(entries, ways, policyCode(policy)), "iommu.contextCache");
    }
  }

  private check(code: number, key: string): void {
    if (code === 0) return;
    const why =
      code === -1
        ? "entries/ways must give a power-of-two number of sets"
        : code === -2
          ? "too many entries for the core's IOMMU region"
          : "invalid argument";
    throw new MemvirtError(`config key "${key}": ${why}`);
  }

  private view(): DataView {
    const memory = this.machine.memory;
    return new DataView(memory.buffer, memory.byteOffset, memory.byteLength);
  }

  private reg32(offset: number): number {
    return this.view().getUint32(L.IOMMU_BASE + offset, true);
  }

  // --- registers -------------------------------------------------------------------------------------

  /** VT-d RTADDR (bit 10: scalable mode) or the AMD-Vi device-table base. */
  setRoot(value: bigint): void {
    this.machine.core.iommuSetRoot(value);
  }

  /** The VT-d fault status register (PFO 0, PPF 1, IQE 4, FRI 15:8). */
  get faultStatus(): number {
    return this.reg32(L.IO_FSTS);
  }

  /** The AMD-Vi status register (EventOverflow 0, ComWaitInt 2). */
  get status(): number {
    return this.reg32(L.IO_STATUS);
  }

  clearStatus(bits: number): void {
    this.machine.core.iommuClearStatus(bits);
  }

  // --- invalidation queue / command buffer ------------------------------------------------------------

  /** A ring of `entries` 16-byte descriptors at host-physical `base`. */
  setQueue(base: bigint, entries: number): void {
    this.queueBase = base;
    this.queueEntries = entries;
    this.queueTail = 0;
    this.machine.core.iommuSetQueue(base, entries);
  }

  get queueHead(): number {
    return this.reg32(L.IO_QUEUE_HEAD);
  }

  /**
   * Writes descriptors (VT-d) or commands (AMD-Vi) at the tail and moves the tail past them. Returns
   * false when the IOMMU rejected one (VT-d FSTS.IQE, AMD-Vi ILLEGAL_COMMAND_ERROR).
   */
  submit(entries: readonly (readonly [bigint, bigint])[]): boolean {
    if (this.queueEntries === 0) throw new MemvirtError("IOMMU queue is not set up", 1);
    if (entries.length >= this.queueEntries)
      throw new MemvirtError("more descriptors than the queue holds", 1);
    for (const [q0, q1] of entries) {
      const address = this.queueBase + BigInt(this.queueTail) * 16n;
      this.machine.writePhys64(address, q0);
      this.machine.writePhys64(address + 8n, q1);
      this.queueTail = (this.queueTail + 1) % this.queueEntries;
    }
    const accepted = this.machine.core.iommuQueueTail(this.queueTail) !== 0;
    // After a rejection software restarts from the IOMMU's head (past the bad entry, once fixed).
    if (!accepted) this.queueTail = this.queueHead;
    return accepted;
  }

  // --- faults ----------------------------------------------------------------------------------------

  /** The VT-d fault records with F set, in register order. */
  faultRecords(): FaultRecord[] {
    const view = this.view();
    const count = this.reg32(L.IO_FAULT_RECORDS);
    const records: FaultRecord[] = [];
    for (let index = 0; index < count; index++) {
      const at = L.IOMMU_BASE + L.IO_FAULT_RECORD_BASE + index * 16;
      const lo = view.getBigUint64(at, true);
      const hi = view.getBigUint64(at + 8, true);
      if (hi >> 63n === 0n) continue;
      records.push({
        index,
        address: lo,
        sid: Number(hi & 0xffffn),
        reason: Number((hi >> 32n) & 0xffn),
        write: ((hi >> 62n) & 1n) === 0n,
        translated: ((hi >> 60n) & 3n) === 2n,
        ...(((hi >> 31n) & 1n) === 1n ? { pasid: Number((hi >> 40n) & 0xfffffn) } : {}),
      });
    }
    return records;
  }

  clearFaultRecord(index: number): void {
    this.machine.core.iommuClearFaultRecord(index);
  }

  /** What drainFaults has read so far. */
  readonly drained: DrainedFaults = { records: 0, events: {}, first: [] };

  /**
   * Software's interrupt handler: reads and clears every fault record, and consumes the event log,
   * keeping count of both (and the first few decoded) in `drained`.
   */
  drainFaults(): void {
    const hex = (address: bigint) => `0x${address.toString(16)}`;
    const keep = (fault: DrainedFault) => {
      if (this.drained.first.length < KEPT_FAULTS) this.drained.first.push(fault);
    };
    for (const record of this.faultRecords()) {
      this.drained.records++;
      keep({
        record: "vtd",
        reason: record.reason,
        cause: record.reason === 0x58 ? "pasidEntry" : (FAULT_CAUSES[record.reason] ?? "unknown"),
        source: formatBdf(record.sid),
        address: hex(record.address),
        access: record.write ? "write" : "read",
      });
      this.clearFaultRecord(record.index);
    }
    for (const event of this.takeEvents()) {
      const name = EVENT_CODES[event.code] ?? `code ${event.code}`;
      this.drained.events[name] = (this.drained.events[name] ?? 0) + 1;
      keep({
        event: name,
        device: formatBdf(event.deviceId),
        domain: event.domain,
        address: hex(event.address),
        flags: EVENT_FLAGS.filter(([, bit]) => (event.flags & bit) !== 0).map(([flag]) => flag),
      });
    }
  }

  /** An AMD-Vi event log of `entries` 16-byte events at host-physical `base`. */
  setEventLog(base: bigint, entries: number): void {
    this.machine.core.iommuSetEventLog(base, entries);
  }

  /** Reads the events from the log's head to its tail and consumes them (moves the head). */
  takeEvents(): IommuEvent[] {
    const entries = this.reg32(L.IO_EVENT_ENTRIES);
    if (entries === 0) return [];
    const base = this.view().getBigUint64(L.IOMMU_BASE + L.IO_EVENT_BASE, true);
    let head = this.reg32(L.IO_EVENT_HEAD);
    const tail = this.reg32(L.IO_EVENT_TAIL);
    const events: IommuEvent[] = [];
    while (head !== tail) {
      const q0 = this.machine.readPhys64(base + BigInt(head) * 16n);
      const q1 = this.machine.readPhys64(base + BigInt(head) * 16n + 8n);
      events.push({
        code: Number(q0 >> 60n),
        flags: Number((q0 >> 48n) & 0xfffn),
        domain: Number((q0 >> 32n) & 0xffffn),
        deviceId: Number(q0 & 0xffffn),
        address: q1,
      });
      head = (head + 1) % entries;
    }
    this.machine.core.iommuSetEventHead(head);
    return events;
  }

  // --- DMA -------------------------------------------------------------------------------------------

  /** The DMA record buffer: DMA_CAPACITY records of DMA_RECORD_SIZE bytes. */
  recordView(): DataView {
    return this.machine.dmaBuffer();
  }

  /** Writes request `request` as record `index` of the buffer. */
  static writeRecord(view: DataView, index: number, request: DmaRequest): void {
    const at = index * L.DMA_RECORD_SIZE;
    const length = request.length ?? 8;
    if (!Number.isInteger(length) || length < 1 || length > 4096)
      throw new MemvirtError(`DMA request length ${length}: must be 1..4096 bytes`, 1);
    view.setBigUint64(at + L.DMA_ADDR, BigInt.asUintN(64, request.address), true);
    view.setBigUint64(at + L.DMA_DATA, BigInt.asUintN(64, request.data ?? 0n), true);
    view.setBigUint64(at + L.DMA_HPA, 0n, true);
    view.setUint16(at + L.DMA_SID, request.sid, true);
    view.setUint8(
      at + L.DMA_FLAGS,
      (request.write ? L.DMA_F_WRITE : 0) |
        (request.pasid !== undefined ? L.DMA_F_PASID : 0) |
        (request.translated ? L.DMA_F_TRANSLATED : 0) |
        (request.data !== undefined ? L.DMA_F_DATA : 0),
    );
    view.setUint8(at + L.DMA_STATUS, 0);
    view.setUint32(at + L.DMA_PASID_LENGTH, ((request.pasid ?? 0) & 0xfffff) | ((length - 1) << 20), true);
  }

  static readResult(view: DataView, index: number): DmaResult {
    const at = index * L.DMA_RECORD_SIZE;
    const status = view.getUint8(at + L.DMA_STATUS);
    return {
      status,
      cause: statusName(status),
      hpa: view.getBigUint64(at + L.DMA_HPA, true),
      data: view.getBigUint64(at + L.DMA_DATA, true),
    };
  }

  /** Runs records [0, count) already written to the buffer, in one call. */
  runRecords(count: number): void {
    this.machine.core.dmaRun(0, count);
  }

  /** Runs requests through the IOMMU in batches and returns each one's outcome. */
  dma(requests: readonly DmaRequest[]): DmaResult[] {
    const results: DmaResult[] = [];
    for (let start = 0; start < requests.length; start += L.DMA_CAPACITY) {
      const batch = requests.slice(start, start + L.DMA_CAPACITY);
      let view = this.recordView();
      for (let i = 0; i < batch.length; i++) Iommu.writeRecord(view, i, batch[i]);
      this.runRecords(batch.length);
      view = this.recordView();
      for (let i = 0; i < batch.length; i++) results.push(Iommu.readResult(view, i));
    }
    return results;
  }

  /** Drops every cached context and translation (host helper; software uses the queue). */
  flushAll(): void {
    this.machine.core.iommuFlushAll();
  }

  stats(): IommuStats {
    const c = (i: number) => this.machine.counter(i);
    const faults: Record<string, number> = {};
    for (let code = 1; code < FAULT_CAUSES.length; code++) {
      const n = c(S.S_IO_FAULTS + code);
      if (n > 0) faults[FAULT_CAUSES[code]] = n;
    }
    const invalidations: Record<string, number> = {};
    INVALIDATION_TYPES.forEach((name, i) => {
      const n = c(S.S_IO_INVALIDATIONS + i);
      if (n > 0) invalidations[name] = n;
    });
    return {
      translations: c(S.S_IO_TRANSLATIONS),
      iotlb: { hits: c(S.S_IO_IOTLB), misses: c(S.S_IO_IOTLB + 1) },
      contextCache: { hits: c(S.S_IO_CC), misses: c(S.S_IO_CC + 1) },
      psc: { hits: c(S.S_IO_PSC), misses: c(S.S_IO_PSC + 1) },
      walks: c(S.S_IO_WALKS),
      walkRefs: c(S.S_IO_WALK_REFS),
      contextRefs: c(S.S_IO_CONTEXT_REFS),
      untranslated: c(S.S_IO_UNTRANSLATED),
      bytes: c(S.S_IO_BYTES),
      cycles: c(S.S_IO_CYCLES),
      faults,
      faultsRecorded: c(S.S_IO_RECORDED),
      faultOverflows: c(S.S_IO_OVERFLOWS),
      invalidations,
    };
  }
}
