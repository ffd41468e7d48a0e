// The options commands share, checked where they enter: numbers and integers in their ranges, a config
// from a file and a preset, a synthetic workload's spec within the guest's address space, and output
// files that can be written before any work is done.
import { closeSync, openSync, readFileSync, statSync, unlinkSync } from "node:fs";
import {
  ConfigError,
  mergeConfig,
  parseBytes,
  type ResolvedConfig,
  resolveConfig,
} from "../config/config.js";
import type { Json } from "../config/validate.js";
import { MemvirtError } from "../core/errors.js";
import type { BuildName } from "../core/wasm.js";
import type { TraceFormatOption } from "../trace/formats.js";
import { DEFAULT_BASE, type WorkloadName, type WorkloadSpec } from "../workload/synthetic.js";
import { presetConfig } from "./presets.js";

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

/**
 * The config a run starts from: the preset's (`--preset NAME`), with the config file's keys laid over it
 * (`--config FILE`), resolved and checked key by key; the built-in default with neither. `defaults`
 * lies under both (a run's own defaults, such as EPT for several VMs).
 */
export function loadConfig(path: string | undefined, preset?: string, defaults: Json = {}): ResolvedConfig {
  const base = mergeConfig(defaults, preset ? presetConfig(preset) : {});
  if (!path) return resolveConfig(base);
  let text: string;
  try {
    text = readFileSync(path, "utf8");
  } catch (error) {
    throw new MemvirtError(`${path}: cannot read the config: ${(error as Error).message}`);
  }
  let json: Json;
  try {
    json = JSON.parse(text) as Json;
  } catch (error) {
    throw new ConfigError(`${path}: not valid JSON: ${(error as Error).message}`);
  }
  try {
    return resolveConfig(mergeConfig(base, json));
  } catch (error) {
    if (error instanceof ConfigError)
      throw new ConfigError(`${path}${preset ? ` (over preset ${preset})` : ""}: ${error.message}`);
    throw error;
  }
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

/**
 * A synthetic workload's spec from the flags, each checked: the footprint must be a whole number of
 * 8-byte accesses (64-byte lines for pointer-chase) inside the user half of the guest's address space.
 */
export function workloadSpec(options: RunOptions, seed: number, levels: 4 | 5): WorkloadSpec {
  const name = options.workload as WorkloadName;
  const records = integerOption(options.records ?? "1000000", "records", 1, 2 ** 40) as number;
  const footprint = bytesOption(options.footprint ?? "256M", "footprint");
  const unit = name === "pointer-chase" ? 64 : 8;
  if (footprint < unit)
    throw new MemvirtError(`--footprint: must be at least ${unit} bytes, got "${options.footprint}"`);
  if (footprint % unit !== 0)
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
  const stride = integerOption(options.stride, "stride", 8, 2 ** 40);
  if (stride !== undefined && stride % 8 !== 0)
    throw new MemvirtError(`--stride: must be a multiple of 8 bytes, got ${stride}`);
  return {
    name,
    records,
    footprint,
    stride,
    zipfS: numberOption(options.zipf, "zipf", 0, 10),
    writeFraction: numberOption(options.writeFraction, "write-fraction", 0, 1),
    seed,
  };
}

/** The seed flag (a workload's), or the config's. */
export function seedOption(value: string | undefined, config: ResolvedConfig): number {
  return integerOption(value, "seed", 0, 2 ** 32 - 1) ?? config.seed;
}

/**
 * Fails, naming the flag, when `path` cannot be written: a directory, a missing folder, no permission.
 * Checked before a run starts, so a typo does not throw its work away at the end. Leaves nothing behind.
 */
export function checkOutput(path: string, flag: string): void {
  const fail = (why: string): never => {
    throw new MemvirtError(`${flag} ${path}: cannot write: ${why}`);
  };
  let exists = false;
  try {
    const stat = statSync(path);
    exists = true;
    if (stat.isDirectory()) fail("it is a directory");
  } catch (error) {
    if (error instanceof MemvirtError) throw error;
  }
  try {
    if (exists) closeSync(openSync(path, "r+"));
    else {
      closeSync(openSync(path, "wx"));
      unlinkSync(path);
    }
  } catch (error) {
    fail((error as Error).message);
  }
}
