// The ground floor of the configuration: JSON shapes and the checks every section uses, each failing
// with a message that names the key (a ConfigError, exit code 2). Sections (the machine's, the
// guest's, the hypervisor's, the IOMMU's, overcommit's) validate themselves with these; config.ts
// composes them.
import { MemvirtError } from "../core/machine.js";
import { POLICIES, type Policy, type SetAssocConfig } from "../core/types.js";

export type Json = null | boolean | number | string | Json[] | { [key: string]: Json };
export type JsonObject = { [key: string]: Json };

export class ConfigError extends MemvirtError {}

/** Every replacement policy the core has (its Policy enumeration). */
export { POLICIES };

export function fail(key: string, why: string): never {
  throw new ConfigError(`config key "${key}": ${why}`);
}

export function isObject(value: Json | undefined): value is JsonObject {
  return typeof value === "object" && value !== null && !Array.isArray(value);
}

/** `value` as an object, or a failure naming `key`. */
export function object(value: Json | undefined, key: string): JsonObject {
  if (!isObject(value)) fail(key, "must be an object");
  return value;
}

/** Rejects keys outside `allowed`, naming the first one (`path` "" is the top level). */
export function onlyKeys(object: JsonObject, path: string, allowed: readonly string[]): void {
  for (const key of Object.keys(object)) {
    if (!allowed.includes(key)) {
      fail(path ? `${path}.${key}` : key, `unknown key (allowed here: ${allowed.join(", ")})`);
    }
  }
}

export function integer(value: Json | undefined, key: string, min: number, max: number): number {
  if (typeof value !== "number" || !Number.isInteger(value) || value < min || value > max) {
    fail(key, `must be an integer from ${min} to ${max}, got ${JSON.stringify(value)}`);
  }
  return value;
}

/** A number from `min` to `max` (an integer when `int`), or `fallback` when absent. */
export function number(
  value: Json | undefined,
  key: string,
  fallback: number,
  min: number,
  max: number,
  int = false,
): number {
  if (value === undefined) return fallback;
  if (typeof value !== "number" || value < min || value > max || (int && !Number.isInteger(value)))
    fail(
      key,
      `must be ${int ? "an integer" : "a number"} from ${min} to ${max}, got ${JSON.stringify(value)}`,
    );
  return value;
}

export function flag(value: Json | undefined, key: string, fallback: boolean): boolean {
  if (value === undefined) return fallback;
  if (typeof value !== "boolean") fail(key, "must be true or false");
  return value;
}

export function oneOf<T extends string | number>(
  value: Json | undefined,
  key: string,
  options: readonly T[],
): T {
  if (!options.includes(value as T)) {
    fail(
      key,
      `must be one of ${options.map((o) => JSON.stringify(o)).join(", ")}, got ${JSON.stringify(value)}`,
    );
  }
  return value as T;
}

const SIZE_UNITS: Record<string, number> = { "": 1, K: 2 ** 10, M: 2 ** 20, G: 2 ** 30, T: 2 ** 40 };

/** Byte sizes as numbers or strings like "64G", "32K", "8MiB". */
export function parseBytes(value: Json | undefined, key: string): number {
  if (typeof value === "number" && Number.isInteger(value) && value > 0) return value;
  if (typeof value === "string") {
    const match = /^(\d+)\s*([KMGT]?)(i?B)?$/i.exec(value.trim());
    if (match) return Number(match[1]) * SIZE_UNITS[match[2].toUpperCase()];
  }
  fail(key, `must be a byte size such as 4096, "32K" or "64G", got ${JSON.stringify(value)}`);
}

/** Where a set-associative structure's missing keys come from, and how large it may be. */
export interface GeometryDefaults {
  entries?: number;
  /** Ways when the key is absent, given the entries. */
  ways: (entries: number) => number;
  policy: Policy;
  max: number;
}

/**
 * The geometry of any set-associative structure (TLB arrays, paging-structure caches, the IOMMU's
 * caches): sets = entries / ways must be a power of two, and ways cannot exceed entries. `extra` names
 * keys the caller reads itself (a latency).
 */
export function setAssociative(
  object: JsonObject,
  key: string,
  defaults: GeometryDefaults,
  extra: readonly string[] = [],
): SetAssocConfig {
  onlyKeys(object, key, ["entries", "ways", "policy", ...extra]);
  const entries = integer(object.entries ?? defaults.entries ?? null, `${key}.entries`, 1, defaults.max);
  const ways = integer(object.ways ?? defaults.ways(entries), `${key}.ways`, 1, defaults.max);
  if (ways > entries) fail(`${key}.ways`, `${ways} ways is more than the ${entries} entries`);
  const sets = entries / ways;
  if (!Number.isInteger(sets) || (sets & (sets - 1)) !== 0) {
    fail(
      key,
      `${entries} entries / ${ways} ways = ${+sets.toFixed(2)} sets; the set count must be a power of two`,
    );
  }
  const policy = oneOf(object.policy ?? defaults.policy, `${key}.policy`, POLICIES);
  return { entries, ways, policy };
}

/** A switchable section: `false` is off, `true` or absent takes the defaults, an object configures it. */
export function section(value: Json | undefined, key: string): JsonObject | false | undefined {
  if (value === undefined) return undefined;
  if (value === false) return false;
  if (value === true) return {};
  return object(value, key);
}
