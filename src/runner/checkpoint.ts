// Checkpoints of a trace run: the core's state (linear memory, sparsely, and its globals), every
// piece of host state (guest OS, hypervisor technique, scheduler, exit counters, the Machine's own
// host-side fields), the trace position and the options the run was started with. The file is
// written beside its final name and renamed over it, so a run killed at any moment leaves either the
// previous checkpoint or the new one, never half of one.

import { closeSync, fsyncSync, openSync, readFileSync, renameSync, writeSync } from "node:fs";
import { deflateSync, inflateSync } from "node:zlib";
import type { ResolvedConfig } from "../config/config.js";
import { type CoreState, type Machine, MemvirtError } from "../core/machine.js";
import type { BuildName } from "../core/wasm.js";
import { FrameAllocator } from "../guest/frames.js";
import { GuestOS } from "../guest/os.js";
import { NativeCpu } from "../guest/paging-cpu.js";
import { ParavirtualPaging } from "../hypervisor/pv.js";
import { ShadowMmu } from "../hypervisor/shadow.js";
import { TdpMmu } from "../hypervisor/tdp.js";
import { ExitCounter, GuestCpu } from "../hypervisor/technique.js";
import { HostMemory, Vm } from "../hypervisor/vm.js";
import type { TraceFormatOption, TracePosition } from "../trace/source.js";
import { Rng } from "../util/random.js";
import { type ClassRegistry, decodeState, encodeState, StateError } from "../util/state.js";
import { Simulation } from "./simulation.js";

const MAGIC = "MVCKPT01";
const FORMAT_VERSION = 1;

/** Every host class whose instances live in a simulation's state. A new one must be added here;
 *  saving a checkpoint that holds an unknown class fails with its path rather than restoring wrongly. */
const CLASSES: ClassRegistry = new Map<string, abstract new (...args: never[]) => unknown>(
  Object.entries({
    FrameAllocator,
    GuestOS,
    NativeCpu,
    ParavirtualPaging,
    ShadowMmu,
    TdpMmu,
    ExitCounter,
    GuestCpu,
    HostMemory,
    Vm,
    Rng,
  }),
);

/** Machine fields that are rebuilt from the configuration or are views of linear memory. */
const MACHINE_REBUILT_FIELDS = new Set([
  "core",
  "build",
  "buffer",
  "u8",
  "u32",
  "u64",
  "config",
  "physicalLimit",
  "cpus",
  "translateCore",
]);

/** What a run needs to continue: how it was started. */
export interface CheckpointRun {
  config: ResolvedConfig;
  trace: string;
  format: TraceFormatOption;
  build: BuildName;
  checkpoint: string;
  checkpointEvery: number;
}

export interface Checkpoint {
  run: CheckpointRun;
  position: TracePosition;
  simulation: Simulation;
}

/** The simulation's host-side state, as one graph so shared objects stay shared. */
function hostState(simulation: Simulation): Record<string, unknown> {
  const machineFields: Record<string, unknown> = {};
  for (const [key, value] of Object.entries(simulation.machine)) {
    if (!MACHINE_REBUILT_FIELDS.has(key)) machineFields[key] = value;
  }
  const simulationFields: Record<string, unknown> = {};
  for (const [key, value] of Object.entries(simulation)) {
    if (key !== "machine" && key !== "config") simulationFields[key] = value;
  }
  return { simulation: simulationFields, machine: machineFields };
}

/** Writes a checkpoint of `simulation` at `position` to `path`, atomically. */
export function saveCheckpoint(
  path: string,
  simulation: Simulation,
  run: CheckpointRun,
  position: TracePosition,
): void {
  let host: string;
  try {
    host = encodeState(hostState(simulation), CLASSES, new Map([[simulation.machine, "machine"]]));
  } catch (error) {
    if (error instanceof StateError) {
      throw new MemvirtError(`cannot checkpoint mode ${simulation.config.mode}: ${error.message}`);
    }
    throw error;
  }
  const core = simulation.machine.saveCoreState();
  const header = JSON.stringify({
    version: FORMAT_VERSION,
    run,
    position,
    host,
    core: { build: core.build, memoryPages: core.memoryPages, pages: core.pages.map((page) => page.index) },
  });
  const headerBytes = Buffer.from(header, "utf8");
  const length = Buffer.alloc(4);
  length.writeUInt32LE(headerBytes.length);
  // Level 1: most pages are TLB and cache arrays, sparse and quick to squeeze; the checkpoint sits
  // on the run's critical path.
  const payload = deflateSync(
    Buffer.concat([length, headerBytes, core.globals, ...core.pages.map((page) => page.bytes)]),
    {
      level: 1,
    },
  );
  const temporary = `${path}.tmp`;
  try {
    const descriptor = openSync(temporary, "w");
    try {
      const bytes = Buffer.concat([Buffer.from(MAGIC, "latin1"), payload]);
      let written = 0;
      while (written < bytes.length) written += writeSync(descriptor, bytes, written);
      // On disk before the rename makes it the checkpoint: a crash then leaves the old one or this.
      fsyncSync(descriptor);
    } finally {
      closeSync(descriptor);
    }
    renameSync(temporary, path);
  } catch (error) {
    throw new MemvirtError(`${path}: cannot write the checkpoint: ${(error as Error).message}`);
  }
}

/**
 * Reads a checkpoint and rebuilds its simulation: a machine and host objects from the saved
 * configuration, then the saved core memory, globals and host state over them.
 */
export function loadCheckpoint(path: string, build?: BuildName): Checkpoint {
  let file: Buffer;
  try {
    file = readFileSync(path);
  } catch (error) {
    throw new MemvirtError(`${path}: cannot read the checkpoint: ${(error as Error).message}`);
  }
  if (file.subarray(0, MAGIC.length).toString("latin1") !== MAGIC) {
    throw new MemvirtError(`${path}: byte 0: not a memvirt checkpoint`);
  }
  let payload: Buffer;
  try {
    payload = inflateSync(file.subarray(MAGIC.length));
  } catch (error) {
    throw new MemvirtError(`${path}: byte ${MAGIC.length}: corrupt checkpoint (${(error as Error).message})`);
  }
  const headerLength = payload.readUInt32LE(0);
  const header = JSON.parse(payload.subarray(4, 4 + headerLength).toString("utf8")) as {
    version: number;
    run: CheckpointRun;
    position: TracePosition;
    host: string;
    core: { build: BuildName; memoryPages: number; pages: number[] };
  };
  if (header.version !== FORMAT_VERSION) {
    throw new MemvirtError(
      `${path}: checkpoint version ${header.version}; this memvirt reads ${FORMAT_VERSION}`,
    );
  }
  let offset = 4 + headerLength;
  const globals = payload.subarray(offset, offset + 256);
  offset += 256;
  const pages: CoreState["pages"] = header.core.pages.map((index) => {
    const bytes = payload.subarray(offset, offset + 65536);
    offset += 65536;
    return { index, bytes };
  });
  const run = header.run;
  if (build && build !== run.build) run.build = build;
  const simulation = new Simulation(run.config, { build: run.build });
  simulation.machine.restoreCoreState({
    build: header.core.build,
    memoryPages: header.core.memoryPages,
    globals,
    pages,
  });
  const state = decodeState(
    header.host,
    CLASSES,
    new Map<string, object>([["machine", simulation.machine]]),
  ) as {
    simulation: Record<string, unknown>;
    machine: Record<string, unknown>;
  };
  Object.assign(simulation.machine as unknown as Record<string, unknown>, state.machine);
  Object.assign(simulation as unknown as Record<string, unknown>, state.simulation);
  return { run, position: header.position, simulation };
}

export type { Machine };
