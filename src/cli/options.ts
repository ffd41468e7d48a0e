// The options `memvirt run` and `compare` share, and how they become a config and a workload.
import { readFileSync } from "node:fs";
import { defaultConfig, parseBytes, parseConfigText, type ResolvedConfig } from "../config/config.js";
import { MemvirtError } from "../core/machine.js";
import type { BuildName } from "../core/wasm.js";
import type { TraceFormatOption } from "../trace/source.js";
import type { WorkloadName, WorkloadSpec } from "../workload/synthetic.js";

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
  workload?: WorkloadName;
  records?: string;
  footprint: string;
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

export function loadConfig(path: string | undefined): ResolvedConfig {
  if (!path) return defaultConfig();
  let text: string;
  try {
    text = readFileSync(path, "utf8");
  } catch (error) {
    throw new MemvirtError(`${path}: cannot read the config: ${(error as Error).message}`);
  }
  return parseConfigText(text, path);
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

export function workloadSpec(options: RunOptions, seed: number): WorkloadSpec {
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

/** Commander's accumulator for an option given several times. */
export function collect(value: string, previous: string[] = []): string[] {
  return [...previous, value];
}
