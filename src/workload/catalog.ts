// Every workload `--workload` names, by family, with the options each family takes: light data, so the
// command line lists and checks them without loading a generator, the IOMMU or the overcommitted host.
// A new workload is a name in its family's list; a new family is an entry in WORKLOAD_FAMILIES (and
// its runner in cli/run.ts).
import { WORKLOAD_NAMES } from "./synthetic.js";

/** Device DMA through the IOMMU (iommu/workload.ts): `--records` counts I/O operations. */
export const DMA_WORKLOADS = ["dma-nic", "dma-nvme", "dma-gpu", "dma-faulty"] as const;
export type DmaWorkloadName = (typeof DMA_WORKLOADS)[number];

/** I/O operations a DMA workload runs when `--records` does not say. */
export const DEFAULT_DMA_OPERATIONS = 100_000;

/** A guest kernel changing its page tables (workload/churn.ts): system calls between the accesses. */
export const CHURN_WORKLOADS = ["pt-churn", "mmap-churn", "threads-shootdown"] as const;
export type ChurnWorkloadName = (typeof CHURN_WORKLOADS)[number];

/** Default footprints: a short-lived program's memory; the server's heap; the threads' shared region. */
export const CHURN_FOOTPRINT: Record<ChurnWorkloadName, number> = {
  "pt-churn": 2 ** 20,
  "mmap-churn": 16 * 2 ** 20,
  "threads-shootdown": 8 * 2 ** 20,
};

export function isChurnWorkload(name: string | undefined): name is ChurnWorkloadName {
  return (CHURN_WORKLOADS as readonly string[]).includes(name ?? "");
}

/** Several VMs on the overcommitted host (workload/multivm.ts). */
export const MULTI_VM_WORKLOADS = ["identical-vms", "cloud-mix", "memory-hog"] as const;
export type MultiVmWorkloadName = (typeof MULTI_VM_WORKLOADS)[number];

export type WorkloadFamily = "synthetic" | "churn" | "dma" | "multi-vm";

/** The `memvirt run` options that describe a workload, and which family takes which. */
export const WORKLOAD_OPTIONS = [
  "records",
  "footprint",
  "stride",
  "zipf",
  "writeFraction",
  "seed",
  "vms",
  "pagesPerVm",
  "sharedFraction",
  "zeroFraction",
  "seconds",
  "timeline",
  "checkInvariants",
] as const;
export type WorkloadOption = (typeof WORKLOAD_OPTIONS)[number];

/** The options that shape one synthetic access stream. */
const SYNTHETIC_SHAPE: readonly WorkloadOption[] = ["footprint", "stride", "zipf"];

export interface WorkloadFamilyEntry {
  family: WorkloadFamily;
  /** How the playground's list and `--help` name the family. */
  label: string;
  names: readonly string[];
  options: readonly WorkloadOption[];
  /** What `--records` counts for this family, and its default. */
  records: { unit: string; default: string };
}

export const WORKLOAD_FAMILIES: readonly WorkloadFamilyEntry[] = [
  {
    family: "synthetic",
    label: "Synthetic",
    names: WORKLOAD_NAMES,
    options: ["records", "footprint", "stride", "zipf", "writeFraction", "seed"],
    records: { unit: "records", default: "1,000,000" },
  },
  {
    family: "churn",
    label: "Guest kernel changing its page tables",
    names: CHURN_WORKLOADS,
    options: ["records", "footprint", "writeFraction", "seed"],
    records: { unit: "records", default: "1,000,000" },
  },
  {
    family: "dma",
    label: "Devices (DMA through the IOMMU)",
    names: DMA_WORKLOADS,
    options: ["records", "seed"],
    records: { unit: "operations", default: "100,000" },
  },
  {
    family: "multi-vm",
    label: "Several VMs, overcommitted host",
    names: MULTI_VM_WORKLOADS,
    // Everything but the shape of one synthetic stream: each VM runs its own.
    options: WORKLOAD_OPTIONS.filter((option) => !SYNTHETIC_SHAPE.includes(option)),
    records: { unit: "records", default: "the workload's" },
  },
];

/** Every workload name, in the order `--help` lists them. */
export const WORKLOAD_CHOICES: readonly string[] = WORKLOAD_FAMILIES.flatMap((entry) => entry.names);

export function familyOf(name: string): WorkloadFamilyEntry | undefined {
  return WORKLOAD_FAMILIES.find((entry) => entry.names.includes(name));
}

export function isDmaWorkload(name: string | undefined): name is DmaWorkloadName {
  return (DMA_WORKLOADS as readonly string[]).includes(name ?? "");
}
