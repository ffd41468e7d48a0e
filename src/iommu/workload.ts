// The dma-nic, dma-nvme and dma-gpu workloads: the configured devices run I/O operations through the
// configured IOMMU and driver mode, on the host's machine and memory. The devices are a DMA source and
// the IOMMU a DMA unit of the host (host/hooks.ts): each batch of operations maps its buffers, the host
// runs every DMA request of the batch through the core in one call, then the operations complete
// (unmapping, which is where strict and deferred invalidation differ) and the host drains the faults.
import type { ResolvedConfig } from "../config/config.js";
import * as L from "../core/layout.js";
import { type Machine, MemvirtError } from "../core/machine.js";
import { PAGE_SHIFT, type PageSize } from "../core/types.js";
import type { FrameAllocator } from "../guest/frames.js";
import type { DmaSource } from "../host/hooks.js";
import type { Host } from "../host/host.js";
import type { Vm } from "../hypervisor/vm.js";
import { Rng } from "../util/random.js";
import { drain, type Steps } from "../util/steps.js";
import type { DmaWorkloadName } from "../workload/catalog.js";
import type { IommuConfig } from "./config.js";
import {
  createDevices,
  type DeviceKind,
  type DeviceSpec,
  type DmaBuffers,
  type DmaDevice,
  FaultyNic,
  type MappedBuffer,
  type Misbehaviour,
  type Operation,
  requesterIds,
} from "./devices.js";
import { type Domain, IommuDriver } from "./driver.js";
import { type DrainedFaults, Iommu, type IommuHardwareConfig } from "./hardware.js";
import type { IommuReport } from "./report.js";
import { formatBdf } from "./tables.js";

export { DMA_WORKLOADS, type DmaWorkloadName, isDmaWorkload } from "../workload/catalog.js";
export type { IommuReport } from "./report.js";

const KIND_OF: Record<DmaWorkloadName, DeviceKind> = {
  "dma-nic": "nic",
  "dma-nvme": "nvme",
  "dma-gpu": "gpu",
  // NICs that misbehave (FaultyNic).
  "dma-faulty": "nic",
};

export interface DmaWorkloadSpec {
  name: DmaWorkloadName;
  /** I/O operations: packets, block commands or 64 KiB copies. */
  operations: number;
  seed: number;
}

/** What the host hands a DMA workload: its machine and memory, and its loop for DMA traffic. */
export interface DmaPlatform {
  host: Pick<Host, "runDma" | "dmaBatch">;
  machine: Machine;
  config: ResolvedConfig;
  /** Host frames for IOMMU tables and host DMA buffers. */
  hostFrames: FrameAllocator;
  /** Host-physical addresses at and above this have no memory. */
  memoryTop: bigint;
  /** The VM that pass-through assigns devices to, and its guest kernel's frame allocator. */
  vm?: { vm: Vm; guestFrames: FrameAllocator };
}

/** Operations per batch: a NAPI-like budget, small enough that one batch's requests fit the buffer. */
const BATCH_OPERATIONS = 64;

export function hardwareConfig(iommu: IommuConfig, memoryTop: bigint): IommuHardwareConfig {
  return {
    kind: iommu.kind,
    supportedAw: [1, 2, 3],
    largePages: { "2M": iommu.largePages, "1G": iommu.largePages },
    snoopControl: false,
    memoryTop,
    iotlb: iommu.iotlb,
    contextCache: iommu.contextCache,
    psc: iommu.psc,
    faultRecords: iommu.faultRecords,
  };
}

/** A DMA workload set up on its platform: its batches as steps, and its report whenever asked. */
export interface DmaRun {
  /** One batch of operations per step, yielding the operations it completed. */
  steps(): Steps<void>;
  report(): IommuReport;
}

export function runDmaWorkload(platform: DmaPlatform, spec: DmaWorkloadSpec): IommuReport {
  const run = startDmaWorkload(platform, spec);
  drain(run.steps());
  return run.report();
}

/** Sets the workload up (devices, driver, mappings) without running an operation. */
export function startDmaWorkload(platform: DmaPlatform, spec: DmaWorkloadSpec): DmaRun {
  const { machine, config } = platform;
  const iommu = config.iommu;
  const kind = KIND_OF[spec.name];
  const specs: DeviceSpec[] = config.devices.filter((d) => d.kind === kind);
  if (config.devices.length > 0 && specs.length === 0)
    throw new MemvirtError(`config key "devices": no "${kind}" device for workload ${spec.name}`);
  if (specs.length === 0) specs.push({ kind, sid: 0x0100, virtualFunctions: 0 });
  const used = new Set(config.devices.concat(specs).flatMap(requesterIds));
  const unassigned = spec.name === "dma-faulty" ? unusedRequester(specs[0].sid, used) : undefined;
  const devices: DmaDevice[] = specs.flatMap((device) => createDevices(device, unassigned));
  if (iommu.mode === "passthrough" && !platform.vm)
    throw new MemvirtError(
      'config key "iommu.mode": "passthrough" assigns devices to a VM; set "mode" to "ept", "npt", "shadow" or "pv"',
    );
  if (iommu.mode === "passthrough") {
    // VFIO maps all of guest memory at assignment, one IOMMU entry per backing page.
    const entries = config.guest.memory / 2 ** PAGE_SHIFT[config.host.pageSize];
    if (entries > 2 ** 20)
      throw new MemvirtError(
        `config key "host.pageSize": pass-through maps all ${config.guest.memory} bytes of guest memory into the IOMMU, ${entries} entries with ${config.host.pageSize} backing; use "2M" or "1G", or a smaller guest.memory`,
      );
  }
  const driver = new IommuDriver(machine, platform.hostFrames, {
    hardware: hardwareConfig(iommu, platform.memoryTop),
    mode: iommu.mode,
    scalable: iommu.scalable,
    firstLevel: iommu.firstLevel,
    levels: iommu.levels,
    flushQueue: iommu.flushQueue,
    costs: { pteCycles: iommu.pteCycles, invalidationCycles: iommu.invalidationCycles },
    // The platform's requester ids: every function of the buses its devices sit on.
    lastRequester: Math.max(...used) | 0xff,
  });
  const buffers =
    iommu.mode === "passthrough"
      ? passthroughBuffers(driver, devices, platform)
      : hostBuffers(driver, devices, platform);
  const traffic = new DmaTraffic(devices, buffers, new Rng(spec.seed ^ 0x10_3d_a7), spec.operations);
  function* steps(): Steps<void> {
    let before = 0;
    while (platform.host.dmaBatch(driver.iommu, traffic) > 0) {
      yield traffic.done - before;
      before = traffic.done;
    }
  }
  return { steps, report: () => dmaReport(spec, iommu, driver, devices, traffic) };
}

function dmaReport(
  spec: DmaWorkloadSpec,
  iommu: IommuConfig,
  driver: IommuDriver,
  devices: DmaDevice[],
  traffic: DmaTraffic,
): IommuReport {
  const { done, requests, completed } = traffic;
  driver.flush();
  const stats = driver.iommu.stats();
  const seconds = (stats.cycles + driver.stats.cycles) / (iommu.clockMHz * 1e6);
  const round = (value: number) => (Number.isFinite(value) ? +value.toFixed(3) : 0);
  return {
    kind: driver.enabled ? iommu.kind : "off",
    mode: iommu.mode,
    scalable: iommu.scalable,
    workload: spec.name,
    devices: devices.map((d) => d.name),
    operations: done,
    requests,
    completed,
    ...stats,
    iotlbHitRate: round(stats.iotlb.hits / Math.max(1, stats.iotlb.hits + stats.iotlb.misses)),
    refsPerMiss: round(stats.walkRefs / Math.max(1, stats.iotlb.misses)),
    cyclesPerTranslation: round(stats.cycles / Math.max(1, stats.translations)),
    translationsPerSecond: seconds > 0 ? Math.round(stats.translations / seconds) : null,
    driver: { ...driver.stats },
    ...faultSections(driver.iommu.drained, devices),
  };
}

/** The fault log, when faults were drained, and the rogue requests of misbehaving devices. */
function faultSections(
  drained: DrainedFaults,
  devices: readonly DmaDevice[],
): Pick<IommuReport, "faultLog" | "rogueRequests"> {
  const sections: Pick<IommuReport, "faultLog" | "rogueRequests"> = {};
  if (drained.records > 0 || Object.keys(drained.events).length > 0)
    sections.faultLog = { ...drained, events: { ...drained.events }, first: [...drained.first] };
  for (const device of devices) {
    if (!(device instanceof FaultyNic)) continue;
    sections.rogueRequests ??= { unmappedIova: 0, readOnlyWrite: 0, unassignedRequester: 0 };
    for (const [name, n] of Object.entries(device.rogue)) sections.rogueRequests[name as Misbehaviour] += n;
  }
  return sections;
}

/** The first function on `sid`'s bus, from `sid` on, that no device uses (a requester nobody attached). */
function unusedRequester(sid: number, used: ReadonlySet<number>): number {
  for (let candidate = sid + 1; candidate < ((sid >> 8) + 1) << 8; candidate++)
    if (!used.has(candidate)) return candidate;
  throw new MemvirtError(`config key "devices": bus ${formatBdf(sid).slice(0, 2)} has no free requester id`);
}

/** The devices' I/O operations as DMA traffic: NAPI-like batches, each operation's requests in turn. */
class DmaTraffic implements DmaSource {
  done = 0;
  requests = 0;
  completed = 0;
  private batch: Operation[] = [];

  constructor(
    private readonly devices: DmaDevice[],
    private readonly buffers: DmaBuffers,
    private readonly rng: Rng,
    private readonly operations: number,
  ) {
    for (const device of devices) device.start(buffers);
  }

  fill(records: () => DataView): number {
    this.batch = [];
    while (this.done < this.operations && this.batch.length < BATCH_OPERATIONS) {
      this.batch.push(this.devices[this.done % this.devices.length].next(this.buffers, this.rng));
      this.done++;
    }
    // Mapping may have grown linear memory: take the record view only now.
    const view = records();
    let count = 0;
    for (const operation of this.batch)
      for (const request of operation.requests) Iommu.writeRecord(view, count++, request);
    return count;
  }

  results(view: DataView, count: number): void {
    for (let i = 0; i < count; i++)
      if (view.getUint8(i * L.DMA_RECORD_SIZE + L.DMA_STATUS) === 0) this.completed++;
    this.requests += count;
    for (const operation of this.batch) operation.complete();
  }
}

const bytesOf = (size: PageSize) => 1n << BigInt(PAGE_SHIFT[size]);

function releaseBacking(machine: Machine, page: bigint, size: PageSize): void {
  for (let offset = 0n; offset < bytesOf(size); offset += 4096n) machine.releaseFrame((page + offset) >> 12n);
}

/** The host's own DMA: every device in a domain of its own (an IOMMU group per function). */
function hostBuffers(driver: IommuDriver, devices: DmaDevice[], platform: DmaPlatform): DmaBuffers {
  const domains = new Map<number, Domain>();
  for (const device of devices) {
    const domain = driver.newDomain();
    domains.set(device.sid, domain);
    driver.attach(device.sid, domain);
  }
  const frames = platform.hostFrames;
  return {
    map(sid, count, write, size = "4K"): MappedBuffer {
      const pages = Array.from({ length: count }, () => frames.alloc(size));
      const domain = domains.get(sid) as Domain;
      const start = driver.mapPages(domain, pages, write, size);
      const bus = driver.enabled ? pages.map((_, i) => start + BigInt(i) * bytesOf(size)) : pages;
      return { bus, pages, size };
    },
    unmap(sid, buffer): void {
      driver.unmapPages(domains.get(sid) as Domain, buffer.bus[0], buffer.pages.length, buffer.size);
      for (const page of buffer.pages) {
        releaseBacking(platform.machine, page, buffer.size);
        frames.release(page, buffer.size);
      }
    },
  };
}

/** VFIO: the devices belong to the VM; its guest driver hands them guest-physical buffers. */
function passthroughBuffers(driver: IommuDriver, devices: DmaDevice[], platform: DmaPlatform): DmaBuffers {
  const { vm, guestFrames } = platform.vm as NonNullable<DmaPlatform["vm"]>;
  driver.assignToVm(
    devices.map((d) => d.sid),
    vm,
  );
  return {
    map(_sid, count, _write, size = "4K"): MappedBuffer {
      const pages = Array.from({ length: count }, () => guestFrames.alloc(size));
      return { bus: pages, pages, size };
    },
    unmap(_sid, buffer): void {
      for (const page of buffer.pages) guestFrames.release(page, buffer.size);
    },
  };
}

/** A one-line description of the devices for the table. */
export function describeDevices(devices: readonly DeviceSpec[]): string {
  return devices
    .map((d) => `${d.kind} ${formatBdf(d.sid)}${d.virtualFunctions ? ` +${d.virtualFunctions} VFs` : ""}`)
    .join(", ");
}

/** The platform on a host: its VM's host memory when it runs one, else the native kernel's frames. */
export function platformOf(host: Host): DmaPlatform {
  const { config, machine } = host;
  const guest = host.guests[0];
  if (!guest.vm || !host.memory)
    return { host, machine, config, hostFrames: guest.os.frames, memoryTop: BigInt(config.guest.memory) };
  return {
    host,
    machine,
    config,
    hostFrames: host.memory.frames,
    memoryTop: BigInt(config.host.memory),
    vm: { vm: guest.vm, guestFrames: guest.os.frames },
  };
}
