// The "iommu" section and the "devices" list of a run's config: validated here with messages that
// name the key (exit code 2), and defaulted to a VT-d IOMMU in strict mode.
import {
  fail,
  flag,
  integer,
  isObject,
  type Json,
  type JsonObject,
  oneOf,
  onlyKeys,
  setAssociative,
} from "../config/validate.js";
import type { SetAssocConfig } from "../core/types.js";
import type { DeviceSpec } from "./devices.js";
import {
  DEVICE_KINDS,
  type DeviceKind,
  IOMMU_KINDS,
  IOMMU_MODES,
  type IommuKind,
  type IommuMode,
} from "./kinds.js";
import { formatBdf, parseBdf } from "./tables.js";

export interface IommuConfig {
  kind: IommuKind;
  mode: IommuMode;
  /** VT-d scalable mode; with `firstLevel` DMA domains use first-level (x86-format) tables. */
  scalable: boolean;
  firstLevel: boolean;
  levels: 3 | 4 | 5;
  largePages: boolean;
  iotlb: (SetAssocConfig & { latency: number }) | null;
  contextCache: SetAssocConfig | null;
  psc: SetAssocConfig | null;
  faultRecords: number;
  flushQueue: number;
  pteCycles: number;
  invalidationCycles: number;
  /** Clock that turns cycles into seconds for the translations-per-second figures. */
  clockMHz: number;
}

export function defaultIommuConfig(): IommuConfig {
  return {
    kind: "vtd",
    mode: "strict",
    scalable: false,
    firstLevel: false,
    levels: 4,
    largePages: true,
    iotlb: { entries: 128, ways: 8, policy: "lru", latency: 2 },
    contextCache: { entries: 64, ways: 4, policy: "lru" },
    psc: { entries: 32, ways: 4, policy: "lru" },
    faultRecords: 8,
    flushQueue: 256,
    pteCycles: 60,
    invalidationCycles: 2000,
    clockMHz: 2600,
  };
}

/** The IOMMU's caches: a missing way count is min(entries, the default's ways). */
function cacheGeometry(
  value: Json | undefined,
  key: string,
  fallback: SetAssocConfig,
  max: number,
  withLatency: boolean,
): (SetAssocConfig & { latency: number }) | null {
  if (value === null || value === false) return null;
  const object: JsonObject =
    value === undefined ? {} : isObject(value) ? value : fail(key, "must be an object or null");
  const geometry = setAssociative(
    object,
    key,
    {
      entries: fallback.entries,
      ways: (entries) => Math.min(entries, fallback.ways),
      policy: fallback.policy,
      max,
    },
    withLatency ? ["latency"] : [],
  );
  return { ...geometry, latency: integer(object.latency ?? 2, `${key}.latency`, 0, 1000) };
}

export function resolveIommu(value: Json | undefined): IommuConfig {
  const base = defaultIommuConfig();
  if (value === undefined) return base;
  if (!isObject(value)) fail("iommu", "must be an object");
  onlyKeys(value, "iommu", [
    "kind",
    "mode",
    "scalable",
    "firstLevel",
    "levels",
    "largePages",
    "iotlb",
    "contextCache",
    "psc",
    "faultRecords",
    "flushQueue",
    "pteCycles",
    "invalidationCycles",
    "clockMHz",
  ]);
  const kind = oneOf<IommuKind>(value.kind ?? base.kind, "iommu.kind", IOMMU_KINDS);
  const scalable = flag(value.scalable, "iommu.scalable", base.scalable);
  const firstLevel = flag(value.firstLevel, "iommu.firstLevel", base.firstLevel);
  if (kind === "amdvi" && scalable) fail("iommu.scalable", 'scalable mode is VT-d only ("kind": "vtd")');
  if (firstLevel && !scalable) fail("iommu.firstLevel", "first-level tables need VT-d scalable mode");
  const levels = oneOf(value.levels ?? base.levels, "iommu.levels", [3, 4, 5] as const);
  if (firstLevel && levels === 3) fail("iommu.levels", "first-level tables have 4 or 5 levels");
  const iotlb = cacheGeometry(value.iotlb, "iommu.iotlb", base.iotlb as SetAssocConfig, 4096, true);
  const contextCache = cacheGeometry(
    value.contextCache,
    "iommu.contextCache",
    base.contextCache as SetAssocConfig,
    512,
    false,
  );
  const psc = cacheGeometry(value.psc, "iommu.psc", base.psc as SetAssocConfig, 2048, false);
  return {
    kind,
    mode: oneOf<IommuMode>(value.mode ?? base.mode, "iommu.mode", IOMMU_MODES),
    scalable,
    firstLevel,
    levels,
    largePages: flag(value.largePages, "iommu.largePages", base.largePages),
    iotlb,
    contextCache: contextCache
      ? { entries: contextCache.entries, ways: contextCache.ways, policy: contextCache.policy }
      : null,
    psc: psc ? { entries: psc.entries, ways: psc.ways, policy: psc.policy } : null,
    faultRecords: integer(value.faultRecords ?? base.faultRecords, "iommu.faultRecords", 1, 256),
    flushQueue: integer(value.flushQueue ?? base.flushQueue, "iommu.flushQueue", 1, 1 << 16),
    pteCycles: integer(value.pteCycles ?? base.pteCycles, "iommu.pteCycles", 0, 1e9),
    invalidationCycles: integer(
      value.invalidationCycles ?? base.invalidationCycles,
      "iommu.invalidationCycles",
      0,
      1e9,
    ),
    clockMHz: integer(value.clockMHz ?? base.clockMHz, "iommu.clockMHz", 1, 100000),
  };
}

export function resolveDevices(value: Json | undefined): DeviceSpec[] {
  if (value === undefined) return [];
  if (!Array.isArray(value)) fail("devices", "must be a list of devices");
  const used = new Set<number>();
  return value.map((item, i) => {
    const key = `devices[${i}]`;
    if (!isObject(item)) fail(key, 'must be an object such as {"kind": "nic", "bdf": "01:00.0"}');
    onlyKeys(item, key, ["kind", "bdf", "virtualFunctions"]);
    const kind = oneOf<DeviceKind>(item.kind ?? null, `${key}.kind`, DEVICE_KINDS);
    const sid = typeof item.bdf === "string" ? parseBdf(item.bdf) : undefined;
    if (sid === undefined)
      fail(
        `${key}.bdf`,
        `must be a PCI address "bus:device.function" such as "01:00.0", got ${JSON.stringify(item.bdf)}`,
      );
    const virtualFunctions = integer(item.virtualFunctions ?? 0, `${key}.virtualFunctions`, 0, 255);
    for (let id = sid; id <= sid + virtualFunctions; id++) {
      if (id > 0xffff) fail(`${key}.virtualFunctions`, "the virtual functions run past requester id ff:1f.7");
      if (used.has(id)) fail(`${key}.bdf`, `requester id ${formatBdf(id)} is used by another device`);
      used.add(id);
    }
    return { kind, sid, virtualFunctions };
  });
}

/** The "devices" list as JSON that resolveDevices reads back to exactly `devices`. */
export function devicesToJson(devices: readonly DeviceSpec[]): Json {
  return devices.map((device) => ({
    kind: device.kind,
    bdf: formatBdf(device.sid),
    virtualFunctions: device.virtualFunctions,
  }));
}
