// Runs a synthetic workload through a simulation: the generator fills the core's record buffer,
// one batch at a time, and the simulation replays each batch.
import type { Simulation } from "../runner/simulation.js";
import { createWorkload, type WorkloadSpec } from "./synthetic.js";

export function runWorkload(simulation: Simulation, spec: WorkloadSpec): number {
  const workload = createWorkload(spec);
  let total = 0;
  while (true) {
    const count = workload.fill(simulation.recordView(), simulation.recordCapacity);
    if (count === 0) return total;
    simulation.replayBuffer(count);
    total += count;
  }
}
