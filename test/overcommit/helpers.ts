// Builds an overcommitted host for the tests: EPT, 4K host backing (or 2M with hostPageSize), the
// mechanisms a test asks for.
import { resolveConfig } from "../../src/config/config.js";
import { OvercommitHost } from "../../src/overcommit/host.js";
import {
  defaultMultiVmOptions,
  MultiVm,
  type MultiVmOptions,
  type MultiVmWorkloadName,
} from "../../src/workload/multivm.js";

export function makeHost(
  name: MultiVmWorkloadName,
  workload: Partial<MultiVmOptions>,
  overcommit: Record<string, unknown>,
  options: {
    hostMemory?: string;
    hostPageSize?: "4K" | "2M";
    mode?: "ept" | "npt";
    checkInvariants?: boolean;
  } = {},
): OvercommitHost {
  const config = resolveConfig({
    mode: options.mode ?? "ept",
    guest: { memory: "1G" },
    host: { memory: options.hostMemory ?? "1G", pageSize: options.hostPageSize ?? "4K" },
    overcommit,
  });
  const spec = { ...defaultMultiVmOptions(name), ...workload };
  return new OvercommitHost(config, new MultiVm(spec), { checkInvariants: options.checkInvariants });
}
