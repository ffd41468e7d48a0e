// Runs a synthetic workload on a host: the generator fills the core's record buffer, one batch at a
// time, and the host's loop replays each batch.
import type { Host } from "../host/host.js";
import { drain, type Steps } from "../util/steps.js";
import { createWorkload, type WorkloadSpec } from "./synthetic.js";

/** The workload as steps (util/steps.ts): one batch each, yielding its record count; returns the total. */
export function* workloadSteps(host: Host, spec: WorkloadSpec): Steps<number> {
  const workload = createWorkload(spec);
  let total = 0;
  while (true) {
    const count = workload.fill(host.recordView(), host.recordCapacity);
    if (count === 0) return total;
    host.replay(count);
    total += count;
    yield count;
  }
}

export function runWorkload(host: Host, spec: WorkloadSpec): number {
  return drain(workloadSteps(host, spec));
}
