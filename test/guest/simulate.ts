// What the guest-kernel and churn tests share: a small guest on a host, one access at a time, and a
// process running on chosen vCPUs.
import { type Mode, type ResolvedConfig, resolveConfig } from "../../src/config/config.js";
import type { Process } from "../../src/guest/os.js";
import { Simulation } from "../../src/runner/simulation.js";

export const READ = 0;
export const WRITE = 1;
export const PF = 14;
export const PAGE = 0x1000n;
export const RW = { writable: true, user: true, executable: false };
export const RO = { writable: false, user: true, executable: false };

/** A 4 GiB guest (16 GiB host) under `mode`, the config changed by `change` first. */
export function simulation(
  mode: Mode = "native",
  change: (config: ResolvedConfig) => void = () => {},
): Simulation {
  const config = resolveConfig({ mode, guest: { memory: "4G" }, host: { memory: "16G" } });
  change(config);
  return new Simulation(config);
}

/** One 8-byte access as a record on `cpu`, serviced as a trace replay does. */
export function touch(sim: Simulation, la: bigint, kind = READ, cpu = 0): void {
  const view = sim.recordView();
  view.setBigUint64(0, la, true);
  view.setUint8(8, kind);
  view.setUint8(9, 8);
  view.setUint16(10, cpu, true);
  sim.replayBuffer(1);
}

/** A process with nothing mapped, running on `cpus`. */
export function running(sim: Simulation, cpus = [0]): Process {
  const process = sim.os.createProcess();
  for (const cpu of cpus) sim.os.switchTo(cpu, process);
  return process;
}
