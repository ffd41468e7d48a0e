// PCI devices that issue DMA: a NIC with receive and transmit descriptor rings, an NVMe-like block
// device with submission/completion queues and PRP (scatter-gather) lists, and a GPU-like bulk copier.
// SR-IOV virtual functions are devices of their own with their own requester ids. A device turns one
// I/O operation into the PCIe memory requests it would issue (each at most 4 KiB, never crossing a 4 KiB
// boundary), against buffers its driver mapped for it.
import type { PageSize } from "../core/types.js";
import type { Rng } from "../util/random.js";
import type { DmaRequest } from "./hardware.js";
import type { DeviceKind } from "./kinds.js";
import { formatBdf } from "./tables.js";

export { DEVICE_KINDS, type DeviceKind } from "./kinds.js";

export interface DeviceSpec {
  kind: DeviceKind;
  /** Requester id of the physical function. */
  sid: number;
  /** SR-IOV virtual functions: requester ids sid + 1 .. sid + n (VF offset 1, stride 1). */
  virtualFunctions: number;
}

/** What a device needs from its driver: buffers it can address, mapped and unmapped per operation. */
export interface DmaBuffers {
  /**
   * Maps `count` fresh pages of `size` for device `sid`; returns each page's bus address (contiguous
   * behind an IOMMU, the pages themselves without one) and the pages.
   */
  map(sid: number, count: number, write: boolean, size?: PageSize): MappedBuffer;
  unmap(sid: number, buffer: MappedBuffer): void;
}

export interface MappedBuffer {
  bus: bigint[];
  pages: bigint[];
  size: PageSize;
}

/** One operation's requests and the work to do once the device completed them. */
export interface Operation {
  requests: DmaRequest[];
  complete(): void;
}

/** Splits [bus, bus + bytes) into requests that stay inside 4 KiB pages. */
export function requestsFor(
  sid: number,
  bus: bigint,
  bytes: number,
  write: boolean,
  data?: bigint,
): DmaRequest[] {
  const requests: DmaRequest[] = [];
  let address = bus;
  let left = bytes;
  while (left > 0) {
    const room = 4096 - Number(address & 0xfffn);
    const length = Math.min(room, left);
    requests.push({ sid, address, write, length, ...(data !== undefined ? { data } : {}) });
    address += BigInt(length);
    left -= length;
  }
  return requests;
}

export abstract class DmaDevice {
  protected operations = 0;

  constructor(
    readonly kind: DeviceKind,
    readonly sid: number,
    readonly virtualFunction: boolean,
  ) {}

  get name(): string {
    return `${this.kind} ${formatBdf(this.sid)}${this.virtualFunction ? " (VF)" : ""}`;
  }

  /** Maps the device's long-lived structures (rings, queues, bulk buffers). */
  abstract start(buffers: DmaBuffers): void;
  abstract next(buffers: DmaBuffers, rng: Rng): Operation;
}

const RING_ENTRIES = 256;
const PACKET_BYTES = 1500;

/** A NIC: receive packets are written into freshly mapped buffers, transmit packets read from them. */
export class Nic extends DmaDevice {
  private rxRing = 0n;
  private txRing = 0n;
  private rxIndex = 0;
  private txIndex = 0;

  start(buffers: DmaBuffers): void {
    this.rxRing = buffers.map(this.sid, 1, true).bus[0];
    this.txRing = buffers.map(this.sid, 1, true).bus[0];
  }

  next(buffers: DmaBuffers, _rng?: Rng): Operation {
    const packet = BigInt(++this.operations);
    const receive = this.operations % 2 === 1;
    const ring = receive ? this.rxRing : this.txRing;
    const index = receive ? this.rxIndex++ % RING_ENTRIES : this.txIndex++ % RING_ENTRIES;
    const descriptor = ring + BigInt(index * 16);
    const buffer = buffers.map(this.sid, 1, receive);
    const requests = [
      { sid: this.sid, address: descriptor, write: false, length: 16 },
      ...requestsFor(this.sid, buffer.bus[0], PACKET_BYTES, receive, receive ? packet : undefined),
      { sid: this.sid, address: descriptor, write: true, length: 16, data: packet },
    ];
    return {
      requests,
      complete: () => buffers.unmap(this.sid, buffer),
    };
  }
}

/** What the dma-faulty workload's device does wrong. */
export const MISBEHAVIOURS = ["unmappedIova", "readOnlyWrite", "unassignedRequester"] as const;
export type Misbehaviour = (typeof MISBEHAVIOURS)[number];

/** An I/O virtual address no driver maps (256 GiB: above every IOVA and guest memory here). */
export const UNMAPPED_IOVA = 0x40_0000_0000n;

/**
 * A NIC that misbehaves: every 16th operation (a transmit) it also issues one rogue write, chosen at
 * random: to an IOVA nobody mapped, into the packet buffer its driver mapped for the device to read
 * only, or under a requester id nobody attached (a function of its own device that was never set up,
 * as a buggy or malicious device can spoof). Behind an IOMMU each is refused and reported; without one
 * each lands in memory.
 */
export class FaultyNic extends Nic {
  readonly rogue: Record<Misbehaviour, number> = {
    unmappedIova: 0,
    readOnlyWrite: 0,
    unassignedRequester: 0,
  };

  constructor(
    kind: DeviceKind,
    sid: number,
    virtualFunction: boolean,
    /** A requester id on this device's bus that no device uses. */
    private readonly unassigned: number,
  ) {
    super(kind, sid, virtualFunction);
  }

  next(buffers: DmaBuffers, rng: Rng): Operation {
    const operation = super.next(buffers);
    if (this.operations % 16 !== 0) return operation;
    const misbehaviour = MISBEHAVIOURS[rng.below(MISBEHAVIOURS.length)];
    this.rogue[misbehaviour]++;
    // The packet buffer of this (transmit) operation, mapped for the device to read.
    const buffer = operation.requests[1].address & ~0xfffn;
    const data = BigInt(this.operations);
    const rogue: DmaRequest =
      misbehaviour === "unmappedIova"
        ? {
            sid: this.sid,
            address: UNMAPPED_IOVA + BigInt(this.operations % 512) * 64n,
            write: true,
            length: 64,
            data,
          }
        : misbehaviour === "readOnlyWrite"
          ? { sid: this.sid, address: buffer, write: true, length: 64, data }
          : { sid: this.unassigned, address: buffer, write: true, length: 64, data };
    return { requests: [...operation.requests, rogue], complete: operation.complete };
  }
}

const BLOCK_PAGES = 4;
const NVME_QUEUE_ENTRIES = 64;

/** An NVMe-like block device: each command carries a PRP list of scattered pages. */
export class Nvme extends DmaDevice {
  private submissionQueue = 0n;
  private completionQueue = 0n;
  private prpLists = 0n;
  private head = 0;

  start(buffers: DmaBuffers): void {
    this.submissionQueue = buffers.map(this.sid, 1, false).bus[0];
    this.completionQueue = buffers.map(this.sid, 1, true).bus[0];
    this.prpLists = buffers.map(this.sid, 1, false).bus[0];
  }

  next(buffers: DmaBuffers, rng: Rng): Operation {
    const command = ++this.operations;
    const slot = this.head++ % NVME_QUEUE_ENTRIES;
    // A block read makes the device write memory; a block write makes it read memory.
    const blockRead = rng.next() < 0.5;
    const data = buffers.map(this.sid, BLOCK_PAGES, blockRead);
    const requests: DmaRequest[] = [
      { sid: this.sid, address: this.submissionQueue + BigInt(slot * 64), write: false, length: 64 },
      // PRP1 is in the command; the other pages come from the PRP list (8 bytes per entry).
      {
        sid: this.sid,
        address: this.prpLists + BigInt(slot * 64),
        write: false,
        length: 8 * (BLOCK_PAGES - 1),
      },
    ];
    for (let page = 0; page < BLOCK_PAGES; page++) {
      requests.push(
        ...requestsFor(this.sid, data.bus[page], 4096, blockRead, blockRead ? BigInt(command) : undefined),
      );
    }
    requests.push({
      sid: this.sid,
      address: this.completionQueue + BigInt(slot * 16),
      write: true,
      length: 16,
      data: BigInt(command),
    });
    return { requests, complete: () => buffers.unmap(this.sid, data) };
  }
}

const GPU_BUFFER_PAGES_2M = 16;
const COPY_BYTES = 64 * 1024;

/** A GPU-like copy engine: copies 64 KiB chunks between two large buffers mapped once with 2M pages. */
export class Gpu extends DmaDevice {
  private source: bigint[] = [];
  private destination: bigint[] = [];
  private offset = 0;

  start(buffers: DmaBuffers): void {
    this.source = buffers.map(this.sid, GPU_BUFFER_PAGES_2M, false, "2M").bus;
    this.destination = buffers.map(this.sid, GPU_BUFFER_PAGES_2M, true, "2M").bus;
  }

  private static at(pages: bigint[], offset: number): bigint {
    const large = 2 * 1024 * 1024;
    return pages[Math.floor(offset / large)] + BigInt(offset % large);
  }

  next(): Operation {
    const chunk = BigInt(++this.operations);
    const at = this.offset;
    this.offset = (this.offset + COPY_BYTES) % (GPU_BUFFER_PAGES_2M * 2 * 1024 * 1024);
    const requests: DmaRequest[] = [];
    for (let page = 0; page < COPY_BYTES; page += 4096) {
      requests.push({ sid: this.sid, address: Gpu.at(this.source, at + page), write: false, length: 4096 });
      requests.push({
        sid: this.sid,
        address: Gpu.at(this.destination, at + page),
        write: true,
        length: 4096,
        data: chunk,
      });
    }
    return { requests, complete: () => {} };
  }
}

/** The requester ids of a spec's functions: the physical one, then its virtual functions. */
export function requesterIds(spec: DeviceSpec): number[] {
  return Array.from({ length: spec.virtualFunctions + 1 }, (_, i) => spec.sid + i);
}

/**
 * The physical function and its virtual functions for a spec; with `unassigned`, NICs misbehave,
 * spoofing that requester id (the dma-faulty workload).
 */
export function createDevices(spec: DeviceSpec, unassigned?: number): DmaDevice[] {
  const make = (sid: number, vf: boolean): DmaDevice =>
    spec.kind === "nic"
      ? unassigned === undefined
        ? new Nic("nic", sid, vf)
        : new FaultyNic("nic", sid, vf, unassigned)
      : spec.kind === "nvme"
        ? new Nvme("nvme", sid, vf)
        : new Gpu("gpu", sid, vf);
  return requesterIds(spec).map((sid) => make(sid, sid !== spec.sid));
}
