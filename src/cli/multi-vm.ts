// A multi-VM workload from the command line's flags (or the playground's) on the overcommitted host.
// Apart from cli/options.ts, which every run reads, so that only runs of several VMs load the host.
import type { ResolvedConfig } from "../config/config.js";
import { MemvirtError } from "../core/errors.js";
import type { BuildName } from "../core/wasm.js";
import { OvercommitHost } from "../overcommit/host.js";
import { MultiVm, type MultiVmOptions } from "../workload/multivm.js";
import { multiVmConfig, multiVmOptions, type WorkloadFlags } from "./options.js";

/** The overcommitted host of a multi-VM workload, built from the flags and not yet run. */
export function multiVmHost(
  base: ResolvedConfig,
  options: WorkloadFlags,
  seed: number,
  hostOptions: { build?: BuildName; checkInvariants?: boolean } = {},
): { host: OvercommitHost; spec: MultiVmOptions; workload: MultiVm } {
  const config = multiVmConfig(base, "the multi-VM workloads");
  const spec = multiVmOptions(options, seed);
  const workload = new MultiVm(spec);
  return { host: new OvercommitHost(config, workload, hostOptions), spec, workload };
}

/**
 * A multi-VM workload on the overcommitted host, run to its end or to a stop on bad input (`failure`,
 * whose statistics so far the host still holds). `prepare` sees the host before it runs.
 */
export function runMultiVmWorkload(
  base: ResolvedConfig,
  options: WorkloadFlags,
  seed: number,
  hostOptions: { build?: BuildName; checkInvariants?: boolean } = {},
  prepare?: (host: OvercommitHost, spec: MultiVmOptions) => void,
): { host: OvercommitHost; spec: MultiVmOptions; failure?: MemvirtError } {
  const { host, spec } = multiVmHost(base, options, seed, hostOptions);
  prepare?.(host, spec);
  try {
    host.run();
  } catch (error) {
    if (!(error instanceof MemvirtError)) throw error;
    return { host, spec, failure: error };
  }
  return { host, spec };
}
