// Runs a synthetic workload on a host: the generator fills the core's record buffer, one batch at a
// time, and the host's loop replays each batch.
import type { Host } from "../host/host.js";
import { drain, type Steps } from "../util/steps.js";
import { createWorkload, type WorkloadSpec } from "./synthetic.js";

/**
 * The workload as steps (util/steps.ts): one batch each, yielding its record count; returns the total.
 * `onBatch` hears of each batch once it has run (the playground's progress bar).
 */
export function* workloadSteps(
  host: Host,
  spec: WorkloadSpec,
  onBatch?: (count: number, total: number) => void,
): Steps<number> {
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
  spec: WorkloadSpec,
  onBatch?: (count: number, total: number) => void,
): number {
  return drain(workloadSteps(host, spec, onBatch));
}
