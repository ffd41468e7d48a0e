// The workload flags of `memvirt run` and `compare` turned into workload specs, with the CLI's range
// checks and messages. Browser-safe: the playground reads the same values from its URL and form.
import type { ResolvedConfig } from "../config/config.js";
import { parseBytes } from "../config/config.js";
import { MemvirtError } from "../core/errors.js";
import { defaultOvercommit } from "../overcommit/config.js";
import { defaultMultiVmOptions, type MultiVmWorkloadName } from "../workload/multivm.js";
import type { WorkloadName, WorkloadSpec } from "../workload/synthetic.js";

/** The flags as commander gives them: text, or undefined when not given. */
export interface WorkloadFlags {
  workload?: string;
  records?: string;
  footprint: string;
  stride?: string;
  zipf?: string;
  writeFraction?: string;
  seed?: string;
  vms?: string;
  pagesPerVm?: string;
  sharedFraction?: string;
  zeroFraction?: string;
  seconds?: string;
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

/** --seed, or the config's seed. */
export function seedOf(options: WorkloadFlags, config: ResolvedConfig): number {
  return numberOption(options.seed, "seed", 0, 2 ** 32 - 1) ?? config.seed;
}

export function workloadSpec(options: WorkloadFlags, seed: number): WorkloadSpec {
  const records = numberOption(options.records ?? "1000000", "records", 1, 2 ** 40) ?? 0;
  return {
    name: options.workload as WorkloadName,
    records: Math.floor(records),
    footprint: parseBytes(options.footprint, "--footprint"),
    stride: numberOption(options.stride, "stride", 8, 2 ** 40),
    zipfS: numberOption(options.zipf, "zipf", 0, 10),
    writeFraction: numberOption(options.writeFraction, "write-fraction", 0, 1),
    seed,
  };
}

/** The dma-* workloads: --records counts I/O operations (packets, commands, copies). */
export function dmaOperations(options: WorkloadFlags): number {
  return Math.floor(numberOption(options.records, "records", 1, 2 ** 32) ?? 0);
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

/** The config a multi-VM workload runs with: the overcommit section's defaults when it has none. */
export function overcommitConfig(base: ResolvedConfig): ResolvedConfig {
  const config = { ...base };
  if (!config.overcommit) {
    // A multi-VM workload always runs on the overcommitted host; without the section, its defaults.
    if (config.mode !== "ept" && config.mode !== "npt")
      throw new MemvirtError('config key "mode": the multi-VM workloads need "ept" or "npt"');
    if (config.host.pageSize !== "4K")
      throw new MemvirtError(
        'config key "host.pageSize": the multi-VM workloads reclaim 4 KiB pages: use "4K"',
      );
    config.overcommit = defaultOvercommit();
  }
  return config;
}
