// The options `memvirt run` and `compare` share, and how they become a workload and the config
// several VMs run with. Browser-safe: the playground reads the same flags from its URL and form and
// turns them into the same specs, with the same checks and messages.
import { parseBytes, type ResolvedConfig } from "../config/config.js";
import { MemvirtError } from "../core/errors.js";
import type { BuildName } from "../core/wasm.js";
import { hasNestedTables } from "../hypervisor/config.js";
import { DMA_WORKLOADS } from "../iommu/workload.js";
import { defaultOvercommit } from "../overcommit/config.js";
import { OvercommitHost } from "../overcommit/host.js";
import type { TraceFormatOption } from "../trace/source.js";
import {
  CHURN_FOOTPRINT,
  CHURN_WORKLOADS,
  type ChurnWorkloadName,
  isChurnWorkload,
} from "../workload/churn.js";
import {
  defaultMultiVmOptions,
  MULTI_VM_WORKLOADS,
  MultiVm,
  type MultiVmOptions,
  type MultiVmWorkloadName,
} from "../workload/multivm.js";
import type { HostWorkloadSpec } from "../workload/run.js";
import { WORKLOAD_NAMES, type WorkloadName } from "../workload/synthetic.js";

/** Every --workload, by kind: the CLI's choices and the playground's list. */
export const WORKLOAD_GROUPS: readonly { label: string; names: readonly string[] }[] = [
  { label: "Synthetic", names: WORKLOAD_NAMES },
  { label: "Guest kernel changing its page tables", names: CHURN_WORKLOADS },
  { label: "Devices (DMA through the IOMMU)", names: DMA_WORKLOADS },
  { label: "Several VMs, overcommitted host", names: MULTI_VM_WORKLOADS },
];

export interface RunOptions {
  config?: string;
  vms?: string;
  pagesPerVm?: string;
  sharedFraction?: string;
  zeroFraction?: string;
  seconds?: string;
  timeline?: string;
  checkInvariants?: boolean;
  /** One trace per VM (`--trace` repeated); one trace runs on one guest. */
  trace?: string[];
  format: TraceFormatOption;
  workload?: WorkloadName | ChurnWorkloadName;
  records?: string;
  /** Default: 256M, or the churn workload's own (CHURN_FOOTPRINT). */
  footprint?: string;
  stride?: string;
  zipf?: string;
  writeFraction?: string;
  seed?: string;
  json?: boolean;
  csv?: boolean;
  report?: string;
  quiet?: boolean;
  checkpoint?: string;
  checkpointEvery?: string;
  resume?: string;
  build: BuildName;
}

export function numberOption(
  value: string | undefined,
  name: string,
  min: number,
  max: number,
): number | undefined {
  if (value === undefined) return undefined;
  const n = Number(value);
  if (!Number.isFinite(n) || n < min || n > max) {
    throw new MemvirtError(`--${name}: must be a number from ${min} to ${max}, got "${value}"`);
  }
  return n;
}

/** The workload flags: what a workload, its seed and its size are made of. */
export type WorkloadFlags = Pick<
  RunOptions,
  | "workload"
  | "records"
  | "footprint"
  | "stride"
  | "zipf"
  | "writeFraction"
  | "seed"
  | "vms"
  | "pagesPerVm"
  | "sharedFraction"
  | "zeroFraction"
  | "seconds"
>;

/** --seed, or the config's seed. */
export function seedOf(options: WorkloadFlags, config: ResolvedConfig): number {
  return numberOption(options.seed, "seed", 0, 2 ** 32 - 1) ?? config.seed;
}

/** The documented default of --records for workloads (multi-VM workloads have their own). */
export const DEFAULT_RECORDS = 1_000_000;

/** The dma-* workloads: --records counts I/O operations (packets, commands, copies), by default as
 * many as a workload has records. */
export function dmaOperations(options: WorkloadFlags): number {
  return Math.floor(numberOption(options.records, "records", 1, 2 ** 32) ?? DEFAULT_RECORDS);
}

export function workloadSpec(options: WorkloadFlags, seed: number): HostWorkloadSpec {
  const records = numberOption(options.records ?? String(DEFAULT_RECORDS), "records", 1, 2 ** 40) ?? 0;
  const footprint =
    options.footprint === undefined
      ? isChurnWorkload(options.workload)
        ? CHURN_FOOTPRINT[options.workload]
        : 256 * 2 ** 20
      : parseBytes(options.footprint, "--footprint");
  if (isChurnWorkload(options.workload))
    return {
      name: options.workload,
      records: Math.floor(records),
      footprint,
      writeFraction: numberOption(options.writeFraction, "write-fraction", 0, 1),
      seed,
    };
  return {
    name: options.workload as WorkloadName,
    records: Math.floor(records),
    footprint,
    stride: numberOption(options.stride, "stride", 8, 2 ** 40),
    zipfS: numberOption(options.zipf, "zipf", 0, 10),
    writeFraction: numberOption(options.writeFraction, "write-fraction", 0, 1),
    seed,
  };
}

export function multiVmOptions(options: WorkloadFlags, seed: number) {
  const spec = defaultMultiVmOptions(options.workload as MultiVmWorkloadName);
  spec.seed = seed;
  spec.vms = numberOption(options.vms, "vms", 1, 16) ?? spec.vms;
  spec.pagesPerVm = numberOption(options.pagesPerVm, "pages-per-vm", 16, 2 ** 24) ?? spec.pagesPerVm;
  spec.sharedFraction = numberOption(options.sharedFraction, "shared-fraction", 0, 1) ?? spec.sharedFraction;
  spec.zeroFraction = numberOption(options.zeroFraction, "zero-fraction", 0, 1) ?? spec.zeroFraction;
  spec.records = numberOption(options.records, "records", 0, 2 ** 40) ?? spec.records;
  spec.seconds = numberOption(options.seconds, "seconds", 0, 1e6) ?? spec.seconds;
  spec.writeFraction = numberOption(options.writeFraction, "write-fraction", 0, 1) ?? spec.writeFraction;
  if (!Number.isInteger(spec.vms)) throw new MemvirtError("--vms: must be an integer");
  if (!Number.isInteger(spec.pagesPerVm)) throw new MemvirtError("--pages-per-vm: must be an integer");
  spec.records = Math.floor(spec.records);
  return spec;
}

/**
 * The config several VMs run with: the mode must fill nested tables (the host's memory management
 * edits them); without an "overcommit" section, its defaults on 4K host pages.
 */
export function multiVmConfig(base: ResolvedConfig, what: string): ResolvedConfig {
  const config = { ...base };
  if (!hasNestedTables(config.mode)) throw new MemvirtError(`config key "mode": ${what} need "ept" or "npt"`);
  if (config.guest.pageSize !== "4K")
    throw new MemvirtError(
      `config key "guest.pageSize": ${what} page the guest in 4 KiB pages (the host tracks each): use "4K"`,
    );
  if (!config.overcommit) {
    if (config.host.pageSize !== "4K")
      throw new MemvirtError(`config key "host.pageSize": ${what} reclaim 4 KiB pages: use "4K"`);
    config.overcommit = defaultOvercommit();
  }
  return config;
}

/**
 * A multi-VM workload on the overcommitted host, run to its end or to a stop on bad input (`failure`,
 * whose statistics so far the host still holds). `prepare` sees the host before it runs.
 */
export function runMultiVmWorkload(
  base: ResolvedConfig,
  options: WorkloadFlags,
  seed: number,
  hostOptions: { build?: BuildName; checkInvariants?: boolean } = {},
  prepare?: (host: OvercommitHost, spec: MultiVmOptions) => void,
): { host: OvercommitHost; spec: MultiVmOptions; failure?: MemvirtError } {
  const config = multiVmConfig(base, "the multi-VM workloads");
  const spec = multiVmOptions(options, seed);
  const host = new OvercommitHost(config, new MultiVm(spec), hostOptions);
  prepare?.(host, spec);
  try {
    host.run();
  } catch (error) {
    if (!(error instanceof MemvirtError)) throw error;
    return { host, spec, failure: error };
  }
  return { host, spec };
}

/** Commander's accumulator for an option given several times. */
export function collect(value: string, previous: string[] = []): string[] {
  return [...previous, value];
}
