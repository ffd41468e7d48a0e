// Runs a synthetic workload on a host: the generator fills the core's record buffer, one batch at a
// time, and the host's loop replays each batch.
import type { Host } from "../host/host.js";
import { createWorkload, type WorkloadSpec } from "./synthetic.js";

/** `onBatch` hears of each batch once it has run (the playground's progress bar). */
export function runWorkload(
  host: Host,
  spec: WorkloadSpec,
  onBatch?: (count: number, total: number) => void,
): number {
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
