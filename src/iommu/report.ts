// What a DMA workload reports about the IOMMU, its driver and the devices, and its rows in the run
// table: data and formatting only, so a report reads it without loading the IOMMU's model.
import type { DriverStats } from "./driver.js";
import type { IommuStats } from "./hardware.js";

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
}

const count = (n: number) => n.toLocaleString("en-US");

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
    [
      "IOMMU cycles",
      `${count(report.cycles)} (${report.cyclesPerTranslation} per translation); driver ${count(report.driver.cycles)}`,
    ],
  ];
}
