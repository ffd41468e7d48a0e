// The user-facing configuration: parsing, validation with messages that name the key, defaults
// (a Skylake-class core, docs/tlb-geometry.md), and lowering into the core's MachineConfig.
import { MemvirtError } from "../core/machine.js";
import {
  type CacheLevelConfig,
  type MachineConfig,
  PAGE_SHIFT,
  PAGE_SIZES,
  type PageSize,
  POLICIES,
  type SetAssocConfig,
  type TlbArrayConfig,
  type TlbLevelConfig,
} from "../core/types.js";
import type { DirtyLogMode } from "../hypervisor/tdp.js";
import { DEFAULT_COSTS, EXIT_REASON_NAMES, type HypervisorCosts } from "../hypervisor/technique.js";
import { defaultIommuConfig, type IommuConfig, resolveDevices, resolveIommu } from "../iommu/config.js";
import type { DeviceSpec } from "../iommu/devices.js";
import { type OvercommitConfig, resolveOvercommit } from "../overcommit/config.js";

export type Mode = "native" | "ept" | "npt" | "shadow" | "pv";
export const MODES: readonly Mode[] = ["native", "ept", "npt", "shadow", "pv"];
export type FramePolicy = "sequential" | "random";

export interface GuestConfig {
  levels: 4 | 5;
  pageSize: PageSize;
  /** How the guest OS hands out physical frames. */
  frames: FramePolicy;
  /** Guest physical memory in bytes. */
  memory: number;
  /** Cycles the guest kernel spends on a demand-paging fault (entry, allocation, return). */
  faultCycles: number;
  /** Use PCIDs for address spaces (CR4.PCIDE) so context switches keep TLB entries. */
  pcid: boolean;
  /** Mark the kernel's pages global (CR4.PGE). */
  globalPages: boolean;
  /** Processes sharing the CPUs: each has its own address space (and PCID) over the same addresses. */
  processes: number;
  /** Records each process runs before the scheduler switches to the next (0: never switch). */
  quantum: number;
}

/** The host under a virtualized guest: its paging depth (EPT/NPT levels), backing pages and memory. */
export interface HostConfig {
  levels: 4 | 5;
  /** Backing page size of guest memory: "4K", "2M" (THP) or "1G" (hugetlbfs). */
  pageSize: PageSize;
  memory: number;
}

export interface HypervisorConfig {
  costs: HypervisorCosts;
  /** Tag guest TLB entries with a VPID/ASID; off, every VM exit and entry flushes them. */
  vpid: boolean;
  /** EPTP bit 6: the hardware keeps A/D flags in EPT entries. */
  eptAccessedDirty: boolean;
  dirtyLog: DirtyLogMode;
  /** Simulated cycles between dirty-log harvests (KVM_GET_DIRTY_LOG by the VMM), from budget exits. */
  dirtyLogIntervalCycles: number;
  /** Shadow MMU: pages before the oldest are zapped (KVM's n_max_mmu_pages; 0: 20 per mille of guest pages, min 64). */
  maxShadowPages: number;
  /** Shadow MMU: keep leaf shadow pages unsync instead of write-protecting their guest tables. */
  unsync: boolean;
}

export interface ResolvedConfig {
  mode: Mode;
  seed: number;
  guest: GuestConfig;
  machine: MachineConfig;
  memory: { backedFramesLog2: number; limitMiB: number };
  host: HostConfig;
  hypervisor: HypervisorConfig;
  /** The IOMMU and the DMA devices the dma-* workloads drive. */
  iommu: IommuConfig;
  devices: DeviceSpec[];
  /** Memory overcommit (balloon, KSM, zswap, swap, controller); set when the config has the section. */
  overcommit?: OvercommitConfig;
}

export class ConfigError extends MemvirtError {}

type Json = null | boolean | number | string | Json[] | { [key: string]: Json };
type JsonObject = { [key: string]: Json };

// --- defaults: Skylake-class (docs/tlb-geometry.md) ------------------------------------------------

export function skylakeTlb(): MachineConfig["tlb"] {
  const array = (sizes: PageSize[], entries: number, ways: number): TlbArrayConfig => ({
    sizes,
    entries,
    ways,
    policy: "lru",
  });
  return {
    l1d: { latency: 1, arrays: [array(["4K"], 64, 4), array(["2M"], 32, 4), array(["1G"], 4, 4)] },
    l1i: { latency: 1, arrays: [array(["4K"], 128, 8), array(["2M"], 8, 8)] },
    l2: { latency: 8, arrays: [array(["4K", "2M"], 1536, 12), array(["1G"], 16, 4)] },
  };
}

export function defaultPsc(): MachineConfig["psc"] {
  const cache = (entries: number, ways: number): SetAssocConfig => ({ entries, ways, policy: "lru" });
  return { latency: 2, pml5: cache(2, 2), pml4: cache(2, 2), pdpte: cache(4, 4), pde: cache(32, 4) };
}

export function defaultCache(): MachineConfig["cache"] {
  return {
    l1: { size: 32 * 1024, ways: 8, latency: 4 },
    l2: { size: 256 * 1024, ways: 4, latency: 12 },
    llc: { size: 8 * 1024 * 1024, ways: 16, latency: 44 },
    dramLatency: 250,
  };
}

export function defaultConfig(): ResolvedConfig {
  return {
    mode: "native",
    seed: 1,
    guest: {
      levels: 4,
      pageSize: "4K",
      frames: "sequential",
      memory: 64 * 2 ** 30,
      faultCycles: 1500,
      pcid: true,
      globalPages: true,
      processes: 1,
      quantum: 0,
    },
    machine: {
      cpus: 1,
      maxPhyAddr: 46,
      gbPages: true,
      eptExecuteOnly: true,
      seed: 1,
      tlb: skylakeTlb(),
      psc: defaultPsc(),
      cache: defaultCache(),
      nestedTlb: defaultNestedTlb(),
      nestedPsc: defaultPsc(),
    },
    memory: { backedFramesLog2: 20, limitMiB: 0 },
    host: { levels: 4, pageSize: "4K", memory: 256 * 2 ** 30 },
    hypervisor: {
      costs: { ...DEFAULT_COSTS },
      vpid: true,
      eptAccessedDirty: true,
      dirtyLog: "off",
      dirtyLogIntervalCycles: 10_000_000,
      maxShadowPages: 0,
      unsync: true,
    },
    iommu: defaultIommuConfig(),
    devices: [],
  };
}

/** The nested TLB used under EPT/NPT by default: one 64-entry 4-way array for every page size. */
export function defaultNestedTlb(): TlbLevelConfig {
  return { latency: 1, arrays: [{ sizes: ["4K", "2M", "1G"], entries: 64, ways: 4, policy: "lru" }] };
}

// --- validation helpers -------------------------------------------------------------------------

function isObject(value: Json | undefined): value is JsonObject {
  return typeof value === "object" && value !== null && !Array.isArray(value);
}

function fail(key: string, why: string): never {
  throw new ConfigError(`config key "${key}": ${why}`);
}

function onlyKeys(object: JsonObject, path: string, allowed: readonly string[]): void {
  for (const key of Object.keys(object)) {
    if (!allowed.includes(key)) {
      fail(path ? `${path}.${key}` : key, `unknown key (allowed here: ${allowed.join(", ")})`);
    }
  }
}

function integer(value: Json, key: string, min: number, max: number): number {
  if (typeof value !== "number" || !Number.isInteger(value) || value < min || value > max) {
    fail(key, `must be an integer from ${min} to ${max}, got ${JSON.stringify(value)}`);
  }
  return value;
}

function oneOf<T extends string | number>(value: Json, key: string, options: readonly T[]): T {
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
export function parseBytes(value: Json, key: string): number {
  if (typeof value === "number" && Number.isInteger(value) && value > 0) return value;
  if (typeof value === "string") {
    const match = /^(\d+)\s*([KMGT]?)(i?B)?$/i.exec(value.trim());
    if (match) return Number(match[1]) * SIZE_UNITS[match[2].toUpperCase()];
  }
  fail(key, `must be a byte size such as 4096, "32K" or "64G", got ${JSON.stringify(value)}`);
}

/** Sets = entries / ways must be a power of two, and ways cannot exceed entries. */
function geometry(object: JsonObject, key: string, fallback?: SetAssocConfig): SetAssocConfig {
  onlyKeys(object, key, ["entries", "ways", "policy"]);
  const entries = integer(object.entries ?? fallback?.entries ?? null, `${key}.entries`, 1, 1 << 20);
  const ways = integer(object.ways ?? fallback?.ways ?? Math.min(entries, 4), `${key}.ways`, 1, 1 << 20);
  if (ways > entries) fail(`${key}.ways`, `${ways} ways is more than the ${entries} entries`);
  const sets = entries / ways;
  if (!Number.isInteger(sets) || (sets & (sets - 1)) !== 0) {
    fail(
      key,
      `${entries} entries / ${ways} ways = ${+sets.toFixed(2)} sets; the set count must be a power of two`,
    );
  }
  const policy = oneOf(object.policy ?? fallback?.policy ?? "lru", `${key}.policy`, POLICIES);
  return { entries, ways, policy };
}

function tlbLevel(
  value: Json | undefined,
  key: string,
  fallback: TlbLevelConfig | null,
): TlbLevelConfig | null {
  if (value === undefined) return fallback;
  if (value === null || value === false) return null;
  if (!isObject(value)) fail(key, "must be an object, or null to switch the level off");
  const latency = integer(value.latency ?? fallback?.latency ?? 1, `${key}.latency`, 0, 1000);
  if ("arrays" in value) {
    onlyKeys(value, key, ["arrays", "latency"]);
    const arrays = value.arrays;
    if (!Array.isArray(arrays) || arrays.length === 0 || arrays.length > 4) {
      fail(`${key}.arrays`, "must be a list of 1 to 4 arrays");
    }
    const seen = new Set<PageSize>();
    return {
      latency,
      arrays: arrays.map((array, index) => {
        const arrayKey = `${key}.arrays[${index}]`;
        if (!isObject(array)) fail(arrayKey, "must be an object {sizes, entries, ways, policy}");
        const { sizes, ...rest } = array;
        if (!Array.isArray(sizes) || sizes.length === 0)
          fail(`${arrayKey}.sizes`, 'must list page sizes, e.g. ["4K","2M"]');
        const list = sizes.map((size, i) => oneOf(size, `${arrayKey}.sizes[${i}]`, PAGE_SIZES));
        for (const size of list) {
          if (seen.has(size)) fail(`${arrayKey}.sizes`, `${size} is already held by an earlier array`);
          seen.add(size);
        }
        return { sizes: list, ...geometry(rest, arrayKey) };
      }),
    };
  }
  if (PAGE_SIZES.some((size) => size in value)) {
    onlyKeys(value, key, [...PAGE_SIZES, "latency"]);
    const arrays: TlbArrayConfig[] = [];
    for (const size of PAGE_SIZES) {
      const spec = value[size];
      if (spec === undefined || spec === null) continue;
      if (!isObject(spec)) fail(`${key}.${size}`, "must be an object {entries, ways, policy} or null");
      arrays.push({ sizes: [size], ...geometry(spec, `${key}.${size}`) });
    }
    if (arrays.length === 0) return null;
    return { latency, arrays };
  }
  onlyKeys(value, key, ["entries", "ways", "policy", "latency"]);
  if (value.entries === undefined && value.ways === undefined && value.policy === undefined) {
    return fallback ? { ...fallback, latency } : null;
  }
  const shape = geometry(
    { entries: value.entries, ways: value.ways, policy: value.policy } as JsonObject,
    key,
  );
  // One geometry for the level means an array of that geometry for each page size.
  return { latency, arrays: PAGE_SIZES.map((size) => ({ sizes: [size], ...shape })) };
}

function psc(value: Json | undefined, fallback: MachineConfig["psc"]): MachineConfig["psc"] {
  if (value === undefined || value === true) return fallback;
  const off = { latency: fallback.latency, pml5: null, pml4: null, pdpte: null, pde: null };
  if (value === false || value === null) return off;
  if (!isObject(value)) fail("psc", "must be false, true or an object");
  onlyKeys(value, "psc", ["latency", "pml5", "pml4", "pdpte", "pde"]);
  const result: MachineConfig["psc"] = { ...fallback };
  result.latency = integer(value.latency ?? fallback.latency, "psc.latency", 0, 1000);
  for (const level of ["pml5", "pml4", "pdpte", "pde"] as const) {
    const spec = value[level];
    if (spec === undefined) continue;
    if (spec === null || spec === false) {
      result[level] = null;
      continue;
    }
    if (!isObject(spec)) fail(`psc.${level}`, "must be an object {entries, ways, policy} or null");
    result[level] = geometry(spec, `psc.${level}`, fallback[level] ?? undefined);
  }
  return result;
}

function cacheLevel(
  value: Json | undefined,
  key: string,
  fallback: CacheLevelConfig | null,
): CacheLevelConfig | null {
  if (value === undefined) return fallback;
  if (value === null || value === false) return null;
  if (!isObject(value)) fail(key, "must be an object {size, ways, latency} or null");
  onlyKeys(value, key, ["size", "ways", "latency"]);
  const size = value.size === undefined ? (fallback?.size ?? 32768) : parseBytes(value.size, `${key}.size`);
  const ways = integer(value.ways ?? fallback?.ways ?? 8, `${key}.ways`, 1, 64);
  const latency = integer(value.latency ?? fallback?.latency ?? 4, `${key}.latency`, 0, 100000);
  const sets = size / 64 / ways;
  if (!Number.isInteger(sets) || (sets & (sets - 1)) !== 0) {
    fail(
      key,
      `${size} bytes / 64-byte lines / ${ways} ways = ${+sets.toFixed(2)} sets; must be a power of two`,
    );
  }
  return { size, ways, latency };
}

function cache(value: Json | undefined, fallback: MachineConfig["cache"]): MachineConfig["cache"] {
  if (value === undefined) return fallback;
  if (value === null || value === false)
    return { l1: null, l2: null, llc: null, dramLatency: fallback.dramLatency };
  if (!isObject(value)) fail("cache", "must be an object or false");
  onlyKeys(value, "cache", ["l1", "l2", "llc", "dram"]);
  return {
    l1: cacheLevel(value.l1, "cache.l1", fallback.l1),
    l2: cacheLevel(value.l2, "cache.l2", fallback.l2),
    llc: cacheLevel(value.llc, "cache.llc", fallback.llc),
    dramLatency: integer(value.dram ?? fallback.dramLatency, "cache.dram", 0, 100000),
  };
}

/** Validates a parsed JSON config and fills in defaults. */
export function resolveConfig(input: Json): ResolvedConfig {
  const base = defaultConfig();
  if (input === null || input === undefined) return base;
  if (!isObject(input)) fail("(top level)", "the config must be a JSON object");
  onlyKeys(input, "", [
    "mode",
    "seed",
    "cpus",
    "guest",
    "tlb",
    "psc",
    "cache",
    "machine",
    "memory",
    "host",
    "hypervisor",
    "nestedTlb",
    "nestedPsc",
    "iommu",
    "devices",
    "overcommit",
    "$schema",
    "comment",
  ]);
  const mode = oneOf(input.mode ?? "native", "mode", MODES);
  const seed = integer(input.seed ?? base.seed, "seed", 0, 2 ** 32 - 1);
  const machine = { ...base.machine, seed };
  machine.cpus = integer(input.cpus ?? 1, "cpus", 1, 16);
  if (input.machine !== undefined) {
    if (!isObject(input.machine)) fail("machine", "must be an object");
    onlyKeys(input.machine, "machine", ["maxPhyAddr", "gbPages", "eptExecuteOnly"]);
    machine.maxPhyAddr = integer(
      input.machine.maxPhyAddr ?? machine.maxPhyAddr,
      "machine.maxPhyAddr",
      36,
      52,
    );
    if (input.machine.gbPages !== undefined) {
      if (typeof input.machine.gbPages !== "boolean") fail("machine.gbPages", "must be true or false");
      machine.gbPages = input.machine.gbPages;
    }
    if (input.machine.eptExecuteOnly !== undefined) {
      if (typeof input.machine.eptExecuteOnly !== "boolean")
        fail("machine.eptExecuteOnly", "must be true or false");
      machine.eptExecuteOnly = input.machine.eptExecuteOnly;
    }
  }
  const guest = { ...base.guest };
  if (input.guest !== undefined) {
    if (!isObject(input.guest)) fail("guest", "must be an object");
    const g = input.guest;
    onlyKeys(g, "guest", [
      "levels",
      "pageSize",
      "frames",
      "memory",
      "faultCycles",
      "pcid",
      "globalPages",
      "processes",
      "quantum",
    ]);
    guest.processes = integer(g.processes ?? guest.processes, "guest.processes", 1, 4095);
    guest.quantum = integer(g.quantum ?? guest.quantum, "guest.quantum", 0, 2 ** 31);
    guest.levels = oneOf(g.levels ?? guest.levels, "guest.levels", [4, 5] as const);
    guest.pageSize = oneOf(g.pageSize ?? guest.pageSize, "guest.pageSize", PAGE_SIZES);
    guest.frames = oneOf(g.frames ?? guest.frames, "guest.frames", ["sequential", "random"] as const);
    if (g.memory !== undefined) guest.memory = parseBytes(g.memory, "guest.memory");
    guest.faultCycles = integer(g.faultCycles ?? guest.faultCycles, "guest.faultCycles", 0, 1e9);
    for (const flag of ["pcid", "globalPages"] as const) {
      if (g[flag] === undefined) continue;
      if (typeof g[flag] !== "boolean") fail(`guest.${flag}`, "must be true or false");
      guest[flag] = g[flag] as boolean;
    }
  }
  if (guest.pageSize === "1G" && !machine.gbPages)
    fail("guest.pageSize", '"1G" needs machine.gbPages = true');
  if (guest.memory > 2 ** machine.maxPhyAddr) {
    fail(
      "guest.memory",
      `${guest.memory} bytes do not fit a ${machine.maxPhyAddr}-bit physical address space`,
    );
  }
  if (guest.memory < 2 ** 30) fail("guest.memory", "must be at least 1G");
  if (input.tlb !== undefined) {
    if (input.tlb === null || input.tlb === false) {
      machine.tlb = { l1d: null, l1i: null, l2: null };
    } else {
      if (!isObject(input.tlb)) fail("tlb", "must be an object");
      onlyKeys(input.tlb, "tlb", ["l1d", "l1i", "l2"]);
      machine.tlb = {
        l1d: tlbLevel(input.tlb.l1d, "tlb.l1d", base.machine.tlb.l1d),
        l1i: tlbLevel(input.tlb.l1i, "tlb.l1i", base.machine.tlb.l1i),
        l2: tlbLevel(input.tlb.l2, "tlb.l2", base.machine.tlb.l2),
      };
    }
  }
  machine.psc = psc(input.psc, base.machine.psc);
  // The nested dimension's caches: the nested TLB (null switches it off) and PSCs like the guest's
  // unless given; "psc": false switches both dimensions' PSCs off.
  machine.nestedTlb = tlbLevel(input.nestedTlb, "nestedTlb", defaultNestedTlb());
  machine.nestedPsc =
    input.nestedPsc === undefined ? { ...machine.psc } : psc(input.nestedPsc, base.machine.psc);
  const host = { ...base.host };
  if (input.host !== undefined) {
    if (!isObject(input.host)) fail("host", "must be an object");
    onlyKeys(input.host, "host", ["levels", "pageSize", "memory"]);
    host.levels = oneOf(input.host.levels ?? host.levels, "host.levels", [4, 5] as const);
    host.pageSize = oneOf(input.host.pageSize ?? host.pageSize, "host.pageSize", PAGE_SIZES);
    if (input.host.memory !== undefined) host.memory = parseBytes(input.host.memory, "host.memory");
  }
  const hypervisor = { ...base.hypervisor, costs: { ...base.hypervisor.costs } };
  if (input.hypervisor !== undefined) {
    if (!isObject(input.hypervisor)) fail("hypervisor", "must be an object");
    const h = input.hypervisor;
    const costKeys = Object.keys(DEFAULT_COSTS).map((key) => `${key}Cycles`);
    onlyKeys(h, "hypervisor", [
      ...costKeys,
      "vpid",
      "eptAccessedDirty",
      "dirtyLog",
      "dirtyLogIntervalCycles",
      "exitCyclesByReason",
      "maxShadowPages",
      "unsync",
    ]);
    if (h.exitCyclesByReason !== undefined) {
      const byReason = h.exitCyclesByReason;
      if (!isObject(byReason))
        fail("hypervisor.exitCyclesByReason", "must be an object of cycles by exit reason");
      onlyKeys(byReason, "hypervisor.exitCyclesByReason", EXIT_REASON_NAMES);
      hypervisor.costs.exitByReason = Object.fromEntries(
        Object.entries(byReason).map(([reason, cycles]) => [
          reason,
          integer(cycles, `hypervisor.exitCyclesByReason.${reason}`, 0, 1e9),
        ]),
      );
    }
    hypervisor.dirtyLogIntervalCycles = integer(
      h.dirtyLogIntervalCycles ?? hypervisor.dirtyLogIntervalCycles,
      "hypervisor.dirtyLogIntervalCycles",
      1000,
      1e15,
    );
    for (const key of Object.keys(DEFAULT_COSTS) as Exclude<keyof HypervisorCosts, "exitByReason">[]) {
      const value = h[`${key}Cycles`];
      if (value !== undefined) hypervisor.costs[key] = integer(value, `hypervisor.${key}Cycles`, 0, 1e9);
    }
    for (const flag of ["vpid", "eptAccessedDirty", "unsync"] as const) {
      if (h[flag] === undefined) continue;
      if (typeof h[flag] !== "boolean") fail(`hypervisor.${flag}`, "must be true or false");
      hypervisor[flag] = h[flag] as boolean;
    }
    hypervisor.dirtyLog = oneOf(h.dirtyLog ?? hypervisor.dirtyLog, "hypervisor.dirtyLog", [
      "off",
      "wp",
      "dbit",
    ] as const);
    hypervisor.maxShadowPages = integer(
      h.maxShadowPages ?? hypervisor.maxShadowPages,
      "hypervisor.maxShadowPages",
      0,
      1 << 24,
    );
  }
  if (mode === "shadow" && hypervisor.dirtyLog === "dbit")
    fail(
      "hypervisor.dirtyLog",
      'shadow paging logs dirty pages by write protection ("wp"): KVM has no D-bit logging for shadow pages',
    );
  if (mode === "pv" && hypervisor.dirtyLog !== "off")
    fail(
      "hypervisor.dirtyLog",
      "paravirtual direct paging has no dirty log: Xen switches a PV guest to shadow mode to log dirty pages; use mode shadow",
    );
  if (mode !== "native") {
    if (host.pageSize === "1G" && !machine.gbPages)
      fail("host.pageSize", '"1G" needs machine.gbPages = true');
    if (host.memory > 2 ** machine.maxPhyAddr)
      fail("host.memory", `does not fit a ${machine.maxPhyAddr}-bit physical address space`);
    if (mode === "pv" && PAGE_SHIFT[guest.pageSize] > PAGE_SHIFT[host.pageSize]) {
      fail(
        "guest.pageSize",
        `paravirtual paging maps guest pages on machine frames: a ${guest.pageSize} guest page needs host.pageSize of at least ${guest.pageSize}`,
      );
    }
  }
  machine.cache = cache(input.cache, base.machine.cache);
  const memory = { ...base.memory };
  if (input.memory !== undefined) {
    if (!isObject(input.memory)) fail("memory", "must be an object");
    onlyKeys(input.memory, "memory", ["backedFramesLog2", "limitMiB"]);
    memory.backedFramesLog2 = integer(
      input.memory.backedFramesLog2 ?? memory.backedFramesLog2,
      "memory.backedFramesLog2",
      8,
      26,
    );
    memory.limitMiB = integer(input.memory.limitMiB ?? memory.limitMiB, "memory.limitMiB", 0, 65536);
  }
  const iommu = resolveIommu(input.iommu);
  const devices = resolveDevices(input.devices);
  const resolved: ResolvedConfig = { mode, seed, guest, machine, memory, host, hypervisor, iommu, devices };
  if (input.overcommit !== undefined && input.overcommit !== false) {
    resolved.overcommit = resolveOvercommit(input.overcommit);
    if (mode !== "ept" && mode !== "npt") fail("mode", 'overcommit needs "ept" or "npt"');
    if (host.pageSize === "1G")
      fail(
        "host.pageSize",
        'overcommit backs guest memory with 4K pages or 2M large pages it can break: host.pageSize must be "4K" or "2M"',
      );
  }
  return resolved;
}

/** Parses config text; JSON syntax errors name the file. */
export function parseConfigText(text: string, file: string): ResolvedConfig {
  let json: Json;
  try {
    json = JSON.parse(text) as Json;
  } catch (error) {
    throw new ConfigError(`${file}: not valid JSON: ${(error as Error).message}`);
  }
  try {
    return resolveConfig(json);
  } catch (error) {
    if (error instanceof ConfigError) throw new ConfigError(`${file}: ${error.message}`);
    throw error;
  }
}
