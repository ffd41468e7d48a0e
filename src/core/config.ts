// The machine's sections of the configuration: CPUs, physical address width, the TLBs, the
// paging-structure caches of both dimensions, the data-cache model and the core's own memory, with
// Skylake-class defaults (docs/tlb-geometry.md). Validated here, named by key; config.ts composes the sections.
import {
  fail,
  flag,
  integer,
  isObject,
  type Json,
  type JsonObject,
  object,
  oneOf,
  onlyKeys,
  parseBytes,
  setAssociative,
} from "../config/validate.js";
import {
  type CacheLevelConfig,
  type MachineConfig,
  PAGE_SIZES,
  type PageSize,
  type SetAssocConfig,
  type TlbArrayConfig,
  type TlbLevelConfig,
} from "./types.js";

/** The core's own memory: the frame directory's size and a cap on linear memory. */
export interface CoreMemoryConfig {
  backedFramesLog2: number;
  limitMiB: number;
}

/** The top-level keys this section owns. */
export const MACHINE_KEYS = ["cpus", "machine", "tlb", "psc", "cache", "nestedTlb", "nestedPsc"] as const;

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

/** The nested TLB used under EPT/NPT by default: one 64-entry 4-way array for every page size. */
export function defaultNestedTlb(): TlbLevelConfig {
  return { latency: 1, arrays: [{ sizes: ["4K", "2M", "1G"], entries: 64, ways: 4, policy: "lru" }] };
}

export function defaultMachine(seed = 1): MachineConfig {
  return {
    cpus: 1,
    maxPhyAddr: 46,
    gbPages: true,
    eptExecuteOnly: true,
    seed,
    tlb: skylakeTlb(),
    psc: defaultPsc(),
    cache: defaultCache(),
    nestedTlb: defaultNestedTlb(),
    nestedPsc: defaultPsc(),
  };
}

export function defaultCoreMemory(): CoreMemoryConfig {
  return { backedFramesLog2: 20, limitMiB: 0 };
}

/** A TLB array or cache: a missing way count is min(entries, 4) unless a fallback has one. */
function geometry(object: JsonObject, key: string, fallback?: SetAssocConfig): SetAssocConfig {
  return setAssociative(object, key, {
    entries: fallback?.entries,
    ways: (entries) => fallback?.ways ?? Math.min(entries, 4),
    policy: fallback?.policy ?? "lru",
    max: 1 << 20,
  });
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

function psc(value: Json | undefined, key: string, fallback: MachineConfig["psc"]): MachineConfig["psc"] {
  if (value === undefined || value === true) return fallback;
  const off = { latency: fallback.latency, pml5: null, pml4: null, pdpte: null, pde: null };
  if (value === false || value === null) return off;
  if (!isObject(value)) fail(key, "must be false, true or an object");
  onlyKeys(value, key, ["latency", "pml5", "pml4", "pdpte", "pde"]);
  const result: MachineConfig["psc"] = { ...fallback };
  result.latency = integer(value.latency ?? fallback.latency, `${key}.latency`, 0, 1000);
  for (const level of ["pml5", "pml4", "pdpte", "pde"] as const) {
    const spec = value[level];
    if (spec === undefined) continue;
    if (spec === null || spec === false) {
      result[level] = null;
      continue;
    }
    if (!isObject(spec)) fail(`${key}.${level}`, "must be an object {entries, ways, policy} or null");
    result[level] = geometry(spec, `${key}.${level}`, fallback[level] ?? undefined);
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

/** The machine from the top-level keys it owns (MACHINE_KEYS), with `seed` for its random policies. */
export function resolveMachine(input: JsonObject, seed: number): MachineConfig {
  const base = defaultMachine(seed);
  const machine = { ...base };
  machine.cpus = integer(input.cpus ?? 1, "cpus", 1, 16);
  if (input.machine !== undefined) {
    const m = object(input.machine, "machine");
    onlyKeys(m, "machine", ["maxPhyAddr", "gbPages", "eptExecuteOnly"]);
    machine.maxPhyAddr = integer(m.maxPhyAddr ?? machine.maxPhyAddr, "machine.maxPhyAddr", 36, 52);
    machine.gbPages = flag(m.gbPages, "machine.gbPages", machine.gbPages);
    machine.eptExecuteOnly = flag(m.eptExecuteOnly, "machine.eptExecuteOnly", machine.eptExecuteOnly ?? true);
  }
  if (input.tlb !== undefined) {
    if (input.tlb === null || input.tlb === false) {
      machine.tlb = { l1d: null, l1i: null, l2: null };
    } else {
      const tlb = object(input.tlb, "tlb");
      onlyKeys(tlb, "tlb", ["l1d", "l1i", "l2"]);
      machine.tlb = {
        l1d: tlbLevel(tlb.l1d, "tlb.l1d", base.tlb.l1d),
        l1i: tlbLevel(tlb.l1i, "tlb.l1i", base.tlb.l1i),
        l2: tlbLevel(tlb.l2, "tlb.l2", base.tlb.l2),
      };
    }
  }
  machine.psc = psc(input.psc, "psc", base.psc);
  // The nested dimension's caches: the nested TLB (null switches it off) and PSCs like the guest's
  // unless given; "psc": false switches both dimensions' PSCs off.
  machine.nestedTlb = tlbLevel(input.nestedTlb, "nestedTlb", defaultNestedTlb());
  machine.nestedPsc =
    input.nestedPsc === undefined ? { ...machine.psc } : psc(input.nestedPsc, "nestedPsc", base.psc);
  machine.cache = cache(input.cache, base.cache);
  return machine;
}

/** The "memory" section: the core's frame directory and linear-memory cap. */
export function resolveCoreMemory(value: Json | undefined): CoreMemoryConfig {
  const memory = defaultCoreMemory();
  if (value === undefined) return memory;
  const m = object(value, "memory");
  onlyKeys(m, "memory", ["backedFramesLog2", "limitMiB"]);
  memory.backedFramesLog2 = integer(
    m.backedFramesLog2 ?? memory.backedFramesLog2,
    "memory.backedFramesLog2",
    8,
    26,
  );
  memory.limitMiB = integer(m.limitMiB ?? memory.limitMiB, "memory.limitMiB", 0, 65536);
  return memory;
}

/**
 * The machine's top-level keys as JSON that resolveMachine reads back to exactly `machine`: every
 * structure in its explicit form (a TLB level's arrays, each PSC level, each cache level).
 */
export function machineToJson(machine: MachineConfig): JsonObject {
  const json = (value: unknown) => structuredClone(value) as Json;
  return {
    cpus: machine.cpus,
    machine: {
      maxPhyAddr: machine.maxPhyAddr,
      gbPages: machine.gbPages,
      eptExecuteOnly: machine.eptExecuteOnly ?? true,
    },
    tlb: json(machine.tlb),
    psc: json(machine.psc),
    nestedTlb: json(machine.nestedTlb ?? null),
    nestedPsc: machine.nestedPsc ? json(machine.nestedPsc) : false,
    cache: {
      l1: json(machine.cache.l1),
      l2: json(machine.cache.l2),
      llc: json(machine.cache.llc),
      dram: machine.cache.dramLatency,
    },
  };
}
