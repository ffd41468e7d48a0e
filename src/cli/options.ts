// The options `memvirt run` and `compare` share, checked where they enter (numbers and integers in
// their ranges, a synthetic workload's spec within the guest's address space), and how they become a
// workload and the config several VMs run with. Browser-safe: the playground reads the same flags from
// its URL and form and turns them into the same specs, with the same checks and messages. The options
// that name files (the config, a preset, outputs) are read in cli/files.ts.
import { ConfigError, parseBytes, type ResolvedConfig } from "../config/config.js";
import { MemvirtError } from "../core/errors.js";
import type { BuildName } from "../core/wasm.js";
import { hasNestedTables } from "../hypervisor/config.js";
import { defaultOvercommit } from "../overcommit/config.js";
import type { TraceFormatOption } from "../trace/formats.js";
import {
  CHURN_FOOTPRINT,
  DEFAULT_DMA_OPERATIONS,
  isChurnWorkload,
  WORKLOAD_FAMILIES,
} from "../workload/catalog.js";
import { defaultMultiVmOptions, type MultiVmOptions, type MultiVmWorkloadName } from "../workload/multivm.js";
import type { HostWorkloadSpec } from "../workload/run.js";
import { DEFAULT_BASE, type WorkloadName } from "../workload/synthetic.js";

/** Every --workload, by family: the CLI's choices and the playground's list. */
export const WORKLOAD_GROUPS: readonly { label: string; names: readonly string[] }[] = WORKLOAD_FAMILIES.map(
  ({ label, names }) => ({ label, names }),
);

export interface RunOptions {
  config?: string;
  preset?: string;
  printConfig?: boolean;
  vms?: string;
  pagesPerVm?: string;
  sharedFraction?: string;
  zeroFraction?: string;
  seconds?: string;
  timeline?: string;
  checkInvariants?: boolean;
  /** One trace per VM (`--trace` repeated); one trace runs on one guest. */
  trace?: string[];
  format?: TraceFormatOption;
  workload?: string;
  records?: string;
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
  forceTrace?: boolean;
  build: BuildName;
}

/** The flag of an option key: `writeFraction` is `--write-fraction`. */
export const flagName = (key: string) => `--${key.replace(/[A-Z]/g, (c) => `-${c.toLowerCase()}`)}`;

/** A number from `min` to `max`, or undefined when the flag is absent. */
export function numberOption(
  value: string | undefined,
  name: string,
  min: number,
  max: number,
): number | undefined {
  if (value === undefined) return undefined;
  const n = value.trim() === "" ? Number.NaN : Number(value);
  if (!Number.isFinite(n) || n < min || n > max) {
    throw new MemvirtError(`--${name}: must be a number from ${min} to ${max}, got "${value}"`);
  }
  return n;
}

/** A whole number from `min` to `max`, or undefined when the flag is absent. */
export function integerOption(
  value: string | undefined,
  name: string,
  min: number,
  max: number,
): number | undefined {
  const n = numberOption(value, name, min, max);
  if (n !== undefined && !Number.isInteger(n))
    throw new MemvirtError(`--${name}: must be a whole number, got "${value}"`);
  return n;
}

/** The user half of the guest's address space: 2^47 bytes with 4-level paging, 2^56 with 5-level. */
export function userSpaceBytes(levels: 4 | 5): number {
  return 2 ** (levels === 5 ? 56 : 47);
}

const units = (bytes: number) =>
  bytes >= 2 ** 50
    ? `${bytes / 2 ** 50} PiB`
    : bytes >= 2 ** 40
      ? `${bytes / 2 ** 40} TiB`
      : `${bytes} bytes`;

/** A byte size flag (`256M`, `1G`, `4096`), naming the flag when it is not one. */
function bytesOption(value: string, name: string): number {
  try {
    return parseBytes(value, `--${name}`);
  } catch (error) {
    if (error instanceof ConfigError)
      throw new MemvirtError(`--${name}: must be a byte size such as 4096, 64K or 256M, got "${value}"`);
    throw error;
  }
}

/** Largest footprint pointer-chase's 32-bit line permutation covers. */
const MAX_CHASE_FOOTPRINT = 2 ** 38;

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
  return integerOption(options.seed, "seed", 0, 2 ** 32 - 1) ?? config.seed;
}

/** The dma-* workloads: --records counts I/O operations (packets, commands, copies). */
export function dmaOperations(options: WorkloadFlags): number {
  return integerOption(options.records, "records", 1, 2 ** 32) ?? DEFAULT_DMA_OPERATIONS;
}

/**
 * A synthetic or churn workload's spec from the flags, each checked: the footprint must be a whole
 * number of 8-byte accesses (64-byte lines for pointer-chase; a 4 KiB page for a churn workload, which
 * maps it) inside the user half of the guest's address space. A churn workload's footprint defaults to
 * its own (CHURN_FOOTPRINT), a synthetic one's to 256 MiB.
 */
export function workloadSpec(options: WorkloadFlags, seed: number, levels: 4 | 5): HostWorkloadSpec {
  const name = options.workload as WorkloadName;
  const churn = isChurnWorkload(options.workload);
  const records = integerOption(options.records ?? "1000000", "records", 1, 2 ** 40) as number;
  const footprint =
    options.footprint === undefined && churn && isChurnWorkload(options.workload)
      ? CHURN_FOOTPRINT[options.workload]
      : bytesOption(options.footprint ?? "256M", "footprint");
  // A churn workload maps its footprint by pages (at least one); a synthetic one touches it by accesses.
  const unit = churn ? 4096 : name === "pointer-chase" ? 64 : 8;
  if (footprint < unit)
    throw new MemvirtError(`--footprint: must be at least ${unit} bytes, got "${options.footprint}"`);
  if (!churn && footprint % unit !== 0)
    throw new MemvirtError(
      `--footprint: ${footprint} bytes is not a whole number of ${unit}-byte ${unit === 64 ? "lines" : "accesses"}`,
    );
  const room = userSpaceBytes(levels) - Number(DEFAULT_BASE);
  if (footprint > room)
    throw new MemvirtError(
      `--footprint: ${units(footprint)} does not fit the guest's user address space (${units(room)} from 0x${DEFAULT_BASE.toString(16)} with ${levels}-level paging${levels === 4 ? '; "guest": {"levels": 5} gives 64 PiB' : ""})`,
    );
  if (name === "pointer-chase" && footprint > MAX_CHASE_FOOTPRINT)
    throw new MemvirtError(`--footprint: pointer-chase covers at most 256 GiB, got ${units(footprint)}`);
  const writeFraction = numberOption(options.writeFraction, "write-fraction", 0, 1);
  if (isChurnWorkload(options.workload))
    return { name: options.workload, records, footprint, writeFraction, seed };
  const stride = integerOption(options.stride, "stride", 8, 2 ** 40);
  if (stride !== undefined && stride % 8 !== 0)
    throw new MemvirtError(`--stride: must be a multiple of 8 bytes, got ${stride}`);
  return {
    name,
    records,
    footprint,
    stride,
    zipfS: numberOption(options.zipf, "zipf", 0, 10),
    writeFraction,
    seed,
  };
}

export function multiVmOptions(options: WorkloadFlags, seed: number): MultiVmOptions {
  const spec = defaultMultiVmOptions(options.workload as MultiVmWorkloadName);
  spec.seed = seed;
  spec.vms = integerOption(options.vms, "vms", 1, 16) ?? spec.vms;
  spec.pagesPerVm = integerOption(options.pagesPerVm, "pages-per-vm", 16, 2 ** 24) ?? spec.pagesPerVm;
  spec.sharedFraction = numberOption(options.sharedFraction, "shared-fraction", 0, 1) ?? spec.sharedFraction;
  spec.zeroFraction = numberOption(options.zeroFraction, "zero-fraction", 0, 1) ?? spec.zeroFraction;
  spec.records = integerOption(options.records, "records", 0, 2 ** 40) ?? spec.records;
  spec.seconds = numberOption(options.seconds, "seconds", 0, 1e6) ?? spec.seconds;
  spec.writeFraction = numberOption(options.writeFraction, "write-fraction", 0, 1) ?? spec.writeFraction;
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
