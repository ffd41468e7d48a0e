// Runs a workload on a host: a synthetic generator fills the core's record buffer, one batch at a
// time, and the host's loop replays each batch; a churn workload also makes the guest kernel's system
// calls between its batches.
import type { Host } from "../host/host.js";
import { type ChurnSpec, isChurnWorkload, runChurnWorkload } from "./churn.js";
import { createWorkload, type WorkloadSpec } from "./synthetic.js";

/** Every workload that runs on one guest: a synthetic access stream or a churn workload. */
export type HostWorkloadSpec = WorkloadSpec | ChurnSpec;

/** `onBatch` hears of each batch once it has run (the playground's progress bar). */
export function runWorkload(
  host: Host,
  spec: HostWorkloadSpec,
  onBatch?: (count: number, total: number) => void,
): number {
  if (isChurnSpec(spec)) return runChurnWorkload(host, spec, onBatch);
  const workload = createWorkload(spec);
  let total = 0;
  while (true) {
    const count = workload.fill(host.recordView(), host.recordCapacity);
    if (count === 0) return total;
    host.replay(count);
    total += count;
    onBatch?.(count, total);
  }
}

function isChurnSpec(spec: HostWorkloadSpec): spec is ChurnSpec {
  return isChurnWorkload(spec.name);
}
