// Runs a workload on a host: a synthetic generator fills the core's record buffer, one batch at a
// time, and the host's loop replays each batch; a churn workload also makes the guest kernel's system
// calls between its batches.
import type { Host } from "../host/host.js";
import { drain, type Steps } from "../util/steps.js";
import { type ChurnSpec, isChurnWorkload, runChurnWorkload } from "./churn.js";
import { createWorkload, type WorkloadSpec } from "./synthetic.js";

/** Every workload that runs on one guest: a synthetic access stream or a churn workload. */
export type HostWorkloadSpec = WorkloadSpec | ChurnSpec;

/**
 * The workload as steps (util/steps.ts): one batch each, yielding its record count; returns the total.
 * `onBatch` hears of each batch once it has run (the playground's progress bar). A churn workload's
 * drivers interleave system calls with accesses in one call stack, so it is one step: its progress is
 * drawn by `onBatch`, and a stop is seen when it ends.
 */
export function* workloadSteps(
  host: Host,
  spec: HostWorkloadSpec,
  onBatch?: (count: number, total: number) => void,
): Steps<number> {
  if (isChurnSpec(spec)) {
    const total = runChurnWorkload(host, spec, onBatch);
    yield total;
    return total;
  }
  const workload = createWorkload(spec);
  let total = 0;
  while (true) {
    const count = workload.fill(host.recordView(), host.recordCapacity);
    if (count === 0) return total;
    host.replay(count);
    total += count;
    onBatch?.(count, total);
    yield count;
  }
}

export function runWorkload(
  host: Host,
  spec: HostWorkloadSpec,
  onBatch?: (count: number, total: number) => void,
): number {
  return drain(workloadSteps(host, spec, onBatch));
}

function isChurnSpec(spec: HostWorkloadSpec): spec is ChurnSpec {
  return isChurnWorkload(spec.name);
}
