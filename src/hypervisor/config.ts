// The hypervisor's sections of the configuration: "mode" (the technique that virtualizes the guest's
// memory), "host" (the host under the guest: its paging depth, backing page size and memory) and
// "hypervisor" (exit and handler costs, VPIDs, EPT A/D, dirty logging, the shadow MMU's knobs).
import {
  fail,
  flag,
  integer,
  type Json,
  type JsonObject,
  object,
  oneOf,
  onlyKeys,
  parseBytes,
} from "../config/validate.js";
import { PAGE_SIZES, type PageSize } from "../core/types.js";
import {
  DEFAULT_COSTS,
  DIRTY_LOG_MODES,
  EXIT_REASON_NAMES,
  type HypervisorConfig,
  type HypervisorCosts,
  IPI_DELIVERIES,
} from "./technique.js";
import { MODES, type Mode, TECHNIQUES } from "./techniques.js";

export type { DirtyLogMode, HypervisorConfig } from "./technique.js";

export { MODES, type Mode } from "./techniques.js";

/** Whether `mode`'s technique fills nested tables (what overcommit and several VMs need). */
export function hasNestedTables(mode: Mode): boolean {
  return TECHNIQUES[mode].nestedTables;
}

/** The host under a virtualized guest: its paging depth (EPT/NPT levels), backing pages and memory. */
export interface HostConfig {
  levels: 4 | 5;
  /** Backing page size of guest memory: "4K", "2M" (THP) or "1G" (hugetlbfs). */
  pageSize: PageSize;
  memory: number;
}

export function defaultHost(): HostConfig {
  return { levels: 4, pageSize: "4K", memory: 256 * 2 ** 30 };
}

export function defaultHypervisor(): HypervisorConfig {
  return {
    costs: { ...DEFAULT_COSTS },
    vpid: true,
    eptAccessedDirty: true,
    dirtyLog: "off",
    dirtyLogIntervalCycles: 10_000_000,
    maxShadowPages: 0,
    unsync: true,
    ipi: "exit",
  };
}

export function resolveMode(value: Json | undefined): Mode {
  return oneOf(value ?? "native", "mode", MODES);
}

export function resolveHost(value: Json | undefined): HostConfig {
  const host = defaultHost();
  if (value === undefined) return host;
  const h = object(value, "host");
  onlyKeys(h, "host", ["levels", "pageSize", "memory"]);
  host.levels = oneOf(h.levels ?? host.levels, "host.levels", [4, 5] as const);
  host.pageSize = oneOf(h.pageSize ?? host.pageSize, "host.pageSize", PAGE_SIZES);
  if (h.memory !== undefined) host.memory = parseBytes(h.memory, "host.memory");
  return host;
}

/** The "hypervisor" section, with the rules that tie it to the mode. */
export function resolveHypervisor(value: Json | undefined, mode: Mode): HypervisorConfig {
  const hypervisor = defaultHypervisor();
  if (value !== undefined) {
    const h = object(value, "hypervisor");
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
      "ipi",
    ]);
    if (h.exitCyclesByReason !== undefined) {
      const byReason = h.exitCyclesByReason;
      if (typeof byReason !== "object" || byReason === null || Array.isArray(byReason))
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
      const cycles = h[`${key}Cycles`];
      if (cycles !== undefined) hypervisor.costs[key] = integer(cycles, `hypervisor.${key}Cycles`, 0, 1e9);
    }
    for (const name of ["vpid", "eptAccessedDirty", "unsync"] as const)
      hypervisor[name] = flag(h[name], `hypervisor.${name}`, hypervisor[name]);
    hypervisor.dirtyLog = oneOf(h.dirtyLog ?? hypervisor.dirtyLog, "hypervisor.dirtyLog", DIRTY_LOG_MODES);
    hypervisor.ipi = oneOf(h.ipi ?? hypervisor.ipi, "hypervisor.ipi", IPI_DELIVERIES);
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
  if (hypervisor.dirtyLog === "pml" && mode !== "ept")
    fail(
      "hypervisor.dirtyLog",
      `page-modification logging is Intel's, for EPT: it needs mode "ept" (mode is "${mode}")`,
    );
  if (hypervisor.dirtyLog === "pml" && !hypervisor.eptAccessedDirty)
    fail(
      "hypervisor.dirtyLog",
      "page-modification logging logs the EPT dirty flags the CPU sets: it needs hypervisor.eptAccessedDirty true",
    );
  if (mode === "pv" && hypervisor.dirtyLog !== "off")
    fail(
      "hypervisor.dirtyLog",
      "paravirtual direct paging has no dirty log: Xen switches a PV guest to shadow mode to log dirty pages; use mode shadow",
    );
  return hypervisor;
}

/** The "hypervisor" section as JSON that resolveHypervisor reads back to exactly `hypervisor`. */
export function hypervisorToJson(hypervisor: HypervisorConfig): JsonObject {
  const { costs, ...rest } = hypervisor;
  const json: JsonObject = { ...rest };
  for (const key of Object.keys(DEFAULT_COSTS) as Exclude<keyof HypervisorCosts, "exitByReason">[])
    json[`${key}Cycles`] = costs[key];
  if (costs.exitByReason) json.exitCyclesByReason = { ...costs.exitByReason } as JsonObject;
  return json;
}
