// Builds the virtualization technique a config asks for, with its VM and host memory.
import type { ResolvedConfig } from "../config/config.js";
import { type Machine, MemvirtError } from "../core/machine.js";
import { ParavirtualPaging } from "./pv.js";
import { ShadowMmu } from "./shadow.js";
import { TdpMmu } from "./tdp.js";
import type { VirtualizationTechnique } from "./technique.js";
import { HostMemory, Vm } from "./vm.js";

export type TechniqueFactory = (
  machine: Machine,
  vm: Vm,
  host: HostMemory,
  config: ResolvedConfig,
) => VirtualizationTechnique;

/** Techniques registered beyond the built-in ones (shadow paging registers itself here). */
export const techniqueFactories: Partial<Record<string, TechniqueFactory>> = {
  ept: (machine, vm, host, config) => tdp("ept", machine, vm, host, config),
  npt: (machine, vm, host, config) => tdp("npt", machine, vm, host, config),
  pv: (machine, vm, _host, config) =>
    new ParavirtualPaging(machine, vm, config.hypervisor.costs, config.machine.cpus),
  shadow: (machine, vm, host, config) =>
    new ShadowMmu(machine, vm, host, {
      costs: config.hypervisor.costs,
      cpus: config.machine.cpus,
      unsync: config.hypervisor.unsync,
      maxShadowPages: config.hypervisor.maxShadowPages,
      guestMemory: config.guest.memory,
      dirtyLogIntervalCycles: config.hypervisor.dirtyLogIntervalCycles,
    }),
};

function tdp(
  format: "ept" | "npt",
  machine: Machine,
  vm: Vm,
  host: HostMemory,
  config: ResolvedConfig,
): TdpMmu {
  return new TdpMmu(machine, vm, host, {
    format,
    levels: config.host.levels,
    accessedDirty: format === "npt" || config.hypervisor.eptAccessedDirty,
    costs: config.hypervisor.costs,
    dirtyLog: config.hypervisor.dirtyLog,
    dirtyLogIntervalCycles: config.hypervisor.dirtyLogIntervalCycles,
    cpus: config.machine.cpus,
  });
}

/** One VM over all of guest memory, on host memory, run by the configured technique. */
export function createVirtualMachine(machine: Machine, config: ResolvedConfig): VirtualizationTechnique {
  const factory = techniqueFactories[config.mode];
  if (!factory) throw new MemvirtError(`mode "${config.mode}" is not available`);
  const host = new HostMemory(config.host.memory, config.seed);
  const vm = new Vm(1, host, config.host.pageSize, config.hypervisor.vpid ? 1 : 0);
  vm.addMemslot(0n, BigInt(config.guest.memory), { logDirty: config.hypervisor.dirtyLog !== "off" });
  return factory(machine, vm, host, config);
}
