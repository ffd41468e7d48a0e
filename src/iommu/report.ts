// What a DMA workload reports about the IOMMU, its driver and the devices, and its rows in the run
// table: data and formatting only, so a report reads it without loading the IOMMU's model.

import { count } from "../util/count.js";
import type { Misbehaviour } from "./devices.js";
import type { DriverStats } from "./driver.js";
import type { DrainedFaults, IommuStats } from "./hardware.js";

export interface IommuReport extends IommuStats {
  kind: string;
  mode: string;
  scalable: boolean;
  workload: string;
  devices: string[];
  operations: number;
  requests: number;
  /** Requests that completed without a fault. */
  completed: number;
  iotlbHitRate: number;
  refsPerMiss: number;
  cyclesPerTranslation: number;
  /** Translations per second of simulated time spent translating and in the driver (null when none). */
  translationsPerSecond: number | null;
  driver: DriverStats;
  /** Present when the fault handler drained any: VT-d fault records, AMD-Vi events, the first few. */
  faultLog?: DrainedFaults;
  /** dma-faulty: the rogue requests the devices issued, by misbehaviour. */
  rogueRequests?: Record<Misbehaviour, number>;
}

/** Rows for the rogue requests and the fault records and events the handler read. */
function faultRows(report: IommuReport): [string, string][] {
  const rows: [string, string][] = [];
  if (report.rogueRequests)
    rows.push([
      "rogue requests",
      `unmapped IOVA ${count(report.rogueRequests.unmappedIova)}, write to a read-only mapping ${count(report.rogueRequests.readOnlyWrite)}, unassigned requester ${count(report.rogueRequests.unassignedRequester)}`,
    ]);
  const log = report.faultLog;
  if (!log) return rows;
  // VT-d logs fault records, AMD-Vi events: each names what its IOMMU logs.
  const logged =
    report.kind === "amdvi"
      ? Object.entries(log.events).map(([name, n]) => `${count(n)} ${name} events`)
      : [`${count(log.records)} VT-d fault records`];
  rows.push(["fault log", logged.join(", ") || "none"]);
  for (const fault of log.first.slice(0, 4)) {
    rows.push([
      "",
      "record" in fault
        ? `fault record: reason ${fault.reason} (${fault.cause}), source ${fault.source}, ${fault.access} of ${fault.address}`
        : `event ${fault.event}: device ${fault.device}, domain ${fault.domain}, address ${fault.address}${fault.flags.length ? `, ${fault.flags.join(" ")}` : ""}`,
    ]);
  }
  return rows;
}

/** Rows of the run table for the IOMMU. */
export function iommuRows(report: IommuReport): [string, string][] {
  const list = (record: Record<string, number>) =>
    Object.entries(record)
      .map(([name, n]) => `${name} ${count(n)}`)
      .join(", ") || "none";
  return [
    [
      "iommu",
      `${report.kind}${report.scalable ? " (scalable mode)" : ""}, ${report.mode}; ${report.devices.join(", ")}`,
    ],
    [
      "DMA requests",
      `${count(report.requests)} for ${count(report.operations)} operations, ${count(report.completed)} completed, ${count(report.bytes)} bytes`,
    ],
    [
      "DMA translations",
      `${count(report.translations)}; ${count(report.untranslated)} requests passed untranslated (pass-through context, ATS, or no IOMMU)`,
    ],
    [
      "IOTLB",
      `${count(report.iotlb.hits)} hits, ${count(report.iotlb.misses)} misses (hit rate ${(report.iotlbHitRate * 100).toFixed(1)}%)`,
    ],
    ["context cache", `${count(report.contextCache.hits)} hits, ${count(report.contextCache.misses)} misses`],
    ["IO PSC", `${count(report.psc.hits)} hits, ${count(report.psc.misses)} misses`],
    [
      "IO walks",
      `${count(report.walks)} (${count(report.walkRefs)} references, ${report.refsPerMiss} per IOTLB miss)`,
    ],
    ["invalidations", list(report.invalidations)],
    ["DMA faults", `${list(report.faults)} (${count(report.faultsRecorded)} recorded)`],
    ...faultRows(report),
    [
      "IOMMU cycles",
      `${count(report.cycles)} (${report.cyclesPerTranslation} per translation); driver ${count(report.driver.cycles)}`,
    ],
  ];
}
