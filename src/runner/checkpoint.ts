// Checkpoints of a trace run, one VM or several: the core's state (linear memory, sparsely, and its
// globals), every piece of host state (guests, techniques, scheduler, exit counters, the overcommit
// mechanisms, the Machine's own host-side fields), the trace positions and the options the run was
// started with. The file is
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
import { HOST_CLASSES, type Host } from "../host/host.js";
import { NativePaging } from "../hypervisor/native.js";
import { ParavirtualPaging } from "../hypervisor/pv.js";
import { ShadowMmu } from "../hypervisor/shadow.js";
import { TdpMmu } from "../hypervisor/tdp.js";
import { ExitCounter, GuestCpu } from "../hypervisor/technique.js";
import { HostMemory, Vm } from "../hypervisor/vm.js";
import { Balloon } from "../overcommit/balloon.js";
import { Controller } from "../overcommit/controller.js";
import { OVERCOMMIT_CLASSES, OvercommitHost } from "../overcommit/host.js";
import { Ksm } from "../overcommit/ksm.js";
import { ColdPages, HostSwap, Zswap } from "../overcommit/zswap.js";
import { type MultiTracePosition, TraceVms } from "../trace/multi.js";
import type { TraceFormatOption, TracePosition } from "../trace/source.js";
import { Rng } from "../util/random.js";
import { type ClassRegistry, decodeState, encodeState, StateError } from "../util/state.js";
import { Simulation } from "./simulation.js";

const MAGIC = "MVCKPT01";
/** 2: the host graph of the one Host (guests, timers, hooks); version 1 held a Simulation's own. */
const FORMAT_VERSION = 2;

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
    NativePaging,
    ...HOST_CLASSES,
    ...OVERCOMMIT_CLASSES,
    Ksm,
    Balloon,
    Zswap,
    HostSwap,
    ColdPages,
    Controller,
    TraceVms,
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
  /** The config the host was built from (a multi-trace run's with its overcommit section). */
  config: ResolvedConfig;
  /** The trace (a multi-trace run's first). */
  trace: string;
  /** A multi-trace run: one trace per VM. */
  traces?: string[];
  format: TraceFormatOption;
  build: BuildName;
  checkpoint: string;
  checkpointEvery: number;
  /** A multi-trace run: simulated seconds it lasts, and whether it checks invariants. */
  seconds?: number;
  checkInvariants?: boolean;
}

/** A checkpoint of a run on one guest. */
export interface Checkpoint {
  run: CheckpointRun;
  position: TracePosition;
  simulation: Simulation;
}

/** A checkpoint of a multi-trace run: several VMs on the overcommitted host. */
export interface MultiCheckpoint {
  run: CheckpointRun;
  position: MultiTracePosition;
  host: OvercommitHost;
}

/**
 * The host-side state, as one graph so shared objects stay shared. The host itself and its machine
 * are placeholders: what points at them (a mechanism's services, a technique's machine) is bound to
 * the fresh host and machine on load.
 */
function hostState(host: Host): Record<string, unknown> {
  const machineFields: Record<string, unknown> = {};
  for (const [key, value] of Object.entries(host.machine)) {
    if (!MACHINE_REBUILT_FIELDS.has(key)) machineFields[key] = value;
  }
  const hostFields: Record<string, unknown> = {};
  for (const [key, value] of Object.entries(host)) {
    if (key !== "machine" && key !== "config") hostFields[key] = value;
  }
  return { host: hostFields, machine: machineFields };
}

/** Writes a checkpoint of `host` at `position` to `path`, atomically. */
export function saveCheckpoint(
  path: string,
  host: Host,
  run: CheckpointRun,
  position: TracePosition | MultiTracePosition,
): void {
  let state: string;
  try {
    state = encodeState(
      hostState(host),
      CLASSES,
      new Map<object, string>([
        [host.machine, "machine"],
        [host, "host"],
      ]),
    );
  } catch (error) {
    if (error instanceof StateError) {
      throw new MemvirtError(`cannot checkpoint mode ${host.config.mode}: ${error.message}`);
    }
    throw error;
  }
  const core = host.machine.saveCoreState();
  const header = JSON.stringify({
    version: FORMAT_VERSION,
    run,
    position,
    host: state,
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

/** Reads the checkpoint of a run on one guest (readCheckpoint reads either kind). */
export function loadCheckpoint(path: string, build?: BuildName): Checkpoint {
  const checkpoint = readCheckpoint(path, build);
  if ("host" in checkpoint)
    throw new MemvirtError(
      `${path}: a checkpoint of a run of ${checkpoint.run.traces?.length} traces, one per VM; read it with readCheckpoint`,
    );
  return checkpoint;
}

/**
 * Reads a checkpoint, of either kind, and rebuilds its host: a machine and host objects from the saved
 * configuration, then the saved core memory, globals and host state over them.
 */
export function readCheckpoint(path: string, build?: BuildName): Checkpoint | MultiCheckpoint {
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
    position: TracePosition | MultiTracePosition;
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
  const host = run.traces
    ? new OvercommitHost(run.config, new TraceVms(run.traces, run.config.guest, run.seconds), {
        build: run.build,
        checkInvariants: run.checkInvariants,
      })
    : new Simulation(run.config, { build: run.build });
  host.machine.restoreCoreState({
    build: header.core.build,
    memoryPages: header.core.memoryPages,
    globals,
    pages,
  });
  const state = decodeState(
    header.host,
    CLASSES,
    new Map<string, object>([
      ["machine", host.machine],
      ["host", host],
    ]),
  ) as {
    host: Record<string, unknown>;
    machine: Record<string, unknown>;
  };
  Object.assign(host.machine as unknown as Record<string, unknown>, state.machine);
  Object.assign(host as unknown as Record<string, unknown>, state.host);
  return host instanceof OvercommitHost
    ? { run, position: header.position as MultiTracePosition, host }
    : { run, position: header.position as TracePosition, simulation: host as Simulation };
}

export type { Machine };
