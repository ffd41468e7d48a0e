// The user-facing configuration, composed from the sections each subsystem owns and validates: the
// machine's (core/config.ts), the guest's (guest/config.ts), the hypervisor's (hypervisor/config.ts),
// the IOMMU's and devices' (iommu/config.ts) and overcommit's (overcommit/config.ts). What ties two
// sections together is one table of cross-section rules, below. Every failure names its key (exit 2).
import {
  type CoreMemoryConfig,
  defaultCache,
  defaultCoreMemory,
  defaultMachine,
  defaultNestedTlb,
  defaultPsc,
  MACHINE_KEYS,
  machineToJson,
  resolveCoreMemory,
  resolveMachine,
  skylakeTlb,
} from "../core/config.js";
import { type MachineConfig, PAGE_SHIFT } from "../core/types.js";
import { defaultGuest, type GuestConfig, resolveGuest } from "../guest/config.js";
import {
  defaultHost,
  defaultHypervisor,
  type HostConfig,
  type HypervisorConfig,
  hasNestedTables,
  hypervisorToJson,
  type Mode,
  resolveHost,
  resolveHypervisor,
  resolveMode,
} from "../hypervisor/config.js";
import {
  defaultIommuConfig,
  devicesToJson,
  type IommuConfig,
  resolveDevices,
  resolveIommu,
} from "../iommu/config.js";
import type { DeviceSpec } from "../iommu/devices.js";
import { type OvercommitConfig, resolveOvercommit } from "../overcommit/config.js";
import { ConfigError, fail, integer, isObject, type Json, type JsonObject, onlyKeys } from "./validate.js";

export type { FramePolicy, GuestConfig } from "../guest/config.js";
export { type HostConfig, type HypervisorConfig, MODES, type Mode } from "../hypervisor/config.js";
export { ConfigError, parseBytes } from "./validate.js";
export { defaultCache, defaultNestedTlb, defaultPsc, skylakeTlb };

export interface ResolvedConfig {
  mode: Mode;
  seed: number;
  guest: GuestConfig;
  machine: MachineConfig;
  memory: CoreMemoryConfig;
  host: HostConfig;
  hypervisor: HypervisorConfig;
  /** The IOMMU and the DMA devices the dma-* workloads drive. */
  iommu: IommuConfig;
  devices: DeviceSpec[];
  /** Memory overcommit (balloon, KSM, zswap, swap, controller); set when the config has the section. */
  overcommit?: OvercommitConfig;
}

export function defaultConfig(): ResolvedConfig {
  return {
    mode: "native",
    seed: 1,
    guest: defaultGuest(),
    machine: defaultMachine(),
    memory: defaultCoreMemory(),
    host: defaultHost(),
    hypervisor: defaultHypervisor(),
    iommu: defaultIommuConfig(),
    devices: [],
  };
}

/** A rule across sections: when `broken` holds, the config fails naming `key`. */
interface CrossRule {
  key: string;
  broken: (config: ResolvedConfig) => boolean;
  why: (config: ResolvedConfig) => string;
}

const virtualized = (c: ResolvedConfig) => c.mode !== "native";

const CROSS_RULES: CrossRule[] = [
  {
    key: "guest.pageSize",
    broken: (c) => c.guest.pageSize === "1G" && !c.machine.gbPages,
    why: () => '"1G" needs machine.gbPages = true',
  },
  {
    key: "guest.memory",
    broken: (c) => c.guest.memory > 2 ** c.machine.maxPhyAddr,
    why: (c) => `${c.guest.memory} bytes do not fit a ${c.machine.maxPhyAddr}-bit physical address space`,
  },
  {
    key: "host.pageSize",
    broken: (c) => virtualized(c) && c.host.pageSize === "1G" && !c.machine.gbPages,
    why: () => '"1G" needs machine.gbPages = true',
  },
  {
    key: "host.memory",
    broken: (c) => virtualized(c) && c.host.memory > 2 ** c.machine.maxPhyAddr,
    why: (c) => `does not fit a ${c.machine.maxPhyAddr}-bit physical address space`,
  },
  {
    key: "guest.pageSize",
    broken: (c) => c.mode === "pv" && PAGE_SHIFT[c.guest.pageSize] > PAGE_SHIFT[c.host.pageSize],
    why: (c) =>
      `paravirtual paging maps guest pages on machine frames: a ${c.guest.pageSize} guest page needs host.pageSize of at least ${c.guest.pageSize}`,
  },
  {
    key: "mode",
    broken: (c) => c.overcommit !== undefined && !hasNestedTables(c.mode),
    why: () => 'overcommit needs "ept" or "npt"',
  },
  {
    key: "host.pageSize",
    broken: (c) => c.overcommit !== undefined && c.host.pageSize === "1G",
    why: () =>
      'overcommit backs guest memory with 4K pages or 2M large pages it can break: host.pageSize must be "4K" or "2M"',
  },
];

/** Validates a parsed JSON config section by section, fills in defaults, and checks the cross rules. */
export function resolveConfig(input: Json): ResolvedConfig {
  if (input === null || input === undefined) return defaultConfig();
  if (!isObject(input)) fail("(top level)", "the config must be a JSON object");
  onlyKeys(input, "", [
    "mode",
    "seed",
    ...MACHINE_KEYS,
    "guest",
    "memory",
    "host",
    "hypervisor",
    "iommu",
    "devices",
    "overcommit",
    "$schema",
    "comment",
  ]);
  const mode = resolveMode(input.mode);
  const seed = integer(input.seed ?? 1, "seed", 0, 2 ** 32 - 1);
  const resolved: ResolvedConfig = {
    mode,
    seed,
    guest: resolveGuest(input.guest),
    machine: resolveMachine(input, seed),
    memory: resolveCoreMemory(input.memory),
    host: resolveHost(input.host),
    hypervisor: resolveHypervisor(input.hypervisor, mode),
    iommu: resolveIommu(input.iommu),
    devices: resolveDevices(input.devices),
  };
  if (input.overcommit !== undefined && input.overcommit !== false)
    resolved.overcommit = resolveOvercommit(input.overcommit);
  for (const rule of CROSS_RULES) if (rule.broken(resolved)) fail(rule.key, rule.why(resolved));
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

/**
 * The config as JSON that `resolveConfig` (and so `--config`) reads back to exactly `config`: every
 * section, every key, every structure in its explicit form. What `--print-config` prints and every
 * `--json` report carries as `config`.
 */
export function configToJson(config: ResolvedConfig): JsonObject {
  const json = (value: unknown) => structuredClone(value) as Json;
  const out: JsonObject = {
    mode: config.mode,
    seed: config.seed,
    ...machineToJson(config.machine),
    guest: json(config.guest),
    memory: json(config.memory),
    host: json(config.host),
    hypervisor: hypervisorToJson(config.hypervisor),
    iommu: json(config.iommu),
    devices: devicesToJson(config.devices),
  };
  if (config.overcommit) out.overcommit = json(config.overcommit);
  return out;
}

/**
 * `override` laid over `base`, as `--config` over `--preset`: objects merge key by key, anything else
 * replaces. A TLB level (`tlb.l1d`, `tlb.l1i`, `tlb.l2`, `nestedTlb`) is replaced whole: its three
 * forms (one geometry, per page size, shared arrays) do not mix.
 */
export function mergeConfig(base: Json, override: Json, path = ""): Json {
  if (!isObject(base) || !isObject(override) || WHOLE.has(path)) return override;
  const merged: JsonObject = { ...base };
  for (const [key, value] of Object.entries(override)) {
    const at = path ? `${path}.${key}` : key;
    merged[key] = key in base ? mergeConfig(base[key], value, at) : value;
  }
  return merged;
}

const WHOLE = new Set(["tlb.l1d", "tlb.l1i", "tlb.l2", "nestedTlb"]);
