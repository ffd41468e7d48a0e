// Bare metal as a technique: the guest kernel owns the machine, its paging operations are the machine
// instructions themselves, and its #PFs go straight to its handler. A nested fault cannot happen.
import { type ExitRecord, type Machine, MemvirtError } from "../core/machine.js";
import { NativeCpu, type PagingCpu } from "../guest/paging-cpu.js";
import type { ExitAction, PagingTechnique, TechniqueModule } from "./technique.js";

export class NativePaging implements PagingTechnique {
  readonly name = "native";
  readonly cpu: PagingCpu;
  readonly plainKernelStores = true;

  constructor(machine: Machine) {
    this.cpu = new NativeCpu(machine);
  }

  boot(_machine: Machine): void {}

  onPageFault(_exit: ExitRecord): ExitAction {
    return "deliver";
  }

  onNestedFault(exit: ExitRecord): ExitAction {
    throw new MemvirtError(`a ${exit.reason} exit on bare metal`, 1);
  }

  stats(): Record<string, number> {
    return {};
  }

  exits(): Record<string, number> {
    return {};
  }
}

export const nativeTechnique: TechniqueModule = {
  virtual: false,
  nestedTables: false,
  create: (services) => new NativePaging(services.machine),
};
