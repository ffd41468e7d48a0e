// Checkpoints of a trace run, one VM or several: the core's state (linear memory, sparsely, and its
// globals), every piece of host state (guests, techniques, scheduler, exit counters, the overcommit
// mechanisms, the Machine's own host-side fields), the trace positions and the options the run was
// started with. The file is
// written beside its final name and renamed over it, so a run killed at any moment leaves either the
// previous checkpoint or the new one, never half of one.

import { createHash } from "node:crypto";
import {
  closeSync,
  existsSync,
  fstatSync,
  fsyncSync,
  openSync,
  readFileSync,
  readSync,
  renameSync,
  statSync,
  unlinkSync,
  writeSync,
} from "node:fs";
import { deflateSync, inflateSync } from "node:zlib";
import { configToJson, type ResolvedConfig, resolveConfig } from "../config/config.js";
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
import { ExitCounter, GuestCpu, VirtualIpis } from "../hypervisor/technique.js";
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
    VirtualIpis,
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
  /**
   * What each trace was when the run started (filled in by the first save): the trace, or each of
   * `traces`; null for one that is not a regular file (a pipe cannot be read twice).
   */
  traceIdentities?: (TraceIdentity | null)[];
}

/** A trace file's identity: its size and a hash of its first and last MiB (the whole of a smaller one). */
export interface TraceIdentity {
  size: number;
  sha256: string;
}

const IDENTITY_SPAN = 1 << 20;

/** The identity of the trace file at `path`; null when it is not a regular file (a pipe, a device). */
export function traceIdentity(path: string): TraceIdentity | null {
  try {
    if (!statSync(path).isFile()) return null;
  } catch (error) {
    throw new MemvirtError(`${path}: cannot open the trace: ${(error as Error).message}`);
  }
  let descriptor: number;
  try {
    descriptor = openSync(path, "r");
  } catch (error) {
    throw new MemvirtError(`${path}: cannot open the trace: ${(error as Error).message}`);
  }
  try {
    const size = fstatSync(descriptor).size;
    const hash = createHash("sha256");
    const read = (at: number, length: number) => {
      const bytes = Buffer.alloc(length);
      let done = 0;
      while (done < length) {
        const n = readSync(descriptor, bytes, done, length - done, at + done);
        if (n === 0) break;
        done += n;
      }
      hash.update(bytes.subarray(0, done));
    };
    if (size <= 2 * IDENTITY_SPAN) read(0, size);
    else {
      read(0, IDENTITY_SPAN);
      read(size - IDENTITY_SPAN, IDENTITY_SPAN);
    }
    return { size, sha256: hash.digest("hex") };
  } finally {
    closeSync(descriptor);
  }
}

/** The traces of a run, in order: its one trace or each VM's. */
function runTraces(run: CheckpointRun): string[] {
  return run.traces ?? [run.trace];
}

/**
 * Refuses to continue `run` on traces other than the ones its checkpoint was taken on (a checkpoint's
 * position means nothing in another file), unless `force`. A checkpoint without identities (an older
 * one) is not checked.
 */
export function checkTraceIdentities(path: string, run: CheckpointRun, force = false): void {
  const expected = run.traceIdentities;
  if (!expected || force) return;
  runTraces(run).forEach((trace, i) => {
    const want = expected[i];
    if (!want) return;
    const have = traceIdentity(trace);
    if (!have || (have.size === want.size && have.sha256 === want.sha256)) return;
    const what =
      have.size !== want.size
        ? `it has ${have.size} bytes, the checkpoint's trace had ${want.size}`
        : "its first or last MiB differs from the checkpoint's trace";
    throw new MemvirtError(
      `${trace}: not the trace checkpoint ${path} was taken on (${what}); name the right one with --trace, or pass --force-trace to resume on this one anyway`,
    );
  });
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
  run.traceIdentities ??= runTraces(run).map(traceIdentity);
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
    // Nothing half-written stays behind (a rename onto a directory fails after the write).
    if (existsSync(temporary)) unlinkSync(temporary);
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
  const header = readHeader(path, payload);
  const run = header.run;
  if (build && build !== run.build) run.build = build;
  // Past the checks above the file is well formed; what is left can still disagree with itself (a
  // header edited by hand, state from another memvirt). A failure while rebuilding is the file's.
  try {
    return restore(header, payload);
  } catch (error) {
    if (error instanceof MemvirtError) throw new MemvirtError(`${path}: ${error.message}`);
    throw new MemvirtError(
      `${path}: inconsistent checkpoint: rebuilding its state failed (${error instanceof Error ? error.message : String(error)})`,
    );
  }
}

interface CheckpointHeader {
  version: number;
  run: CheckpointRun;
  position: TracePosition | MultiTracePosition;
  host: string;
  core: { build: BuildName; memoryPages: number; pages: number[] };
  /** Where the core's globals start in the payload. */
  globalsAt: number;
}

const GLOBALS_BYTES = 256;
const PAGE_BYTES = 65536;

/** The header, checked against itself and the payload's length: every failure names what is wrong. */
function readHeader(path: string, payload: Buffer): CheckpointHeader {
  const bad = (what: string): never => {
    throw new MemvirtError(`${path}: inconsistent checkpoint: ${what}`);
  };
  if (payload.length < 4) bad("no header");
  const headerLength = payload.readUInt32LE(0);
  if (4 + headerLength > payload.length) bad(`a ${headerLength}-byte header in ${payload.length} bytes`);
  let header: CheckpointHeader;
  try {
    header = JSON.parse(payload.subarray(4, 4 + headerLength).toString("utf8"));
  } catch (error) {
    return bad(`the header is not JSON (${(error as Error).message})`);
  }
  if (header === null || typeof header !== "object") bad("the header is not an object");
  if (header.version !== FORMAT_VERSION) {
    throw new MemvirtError(
      `${path}: checkpoint version ${header.version}; this memvirt reads ${FORMAT_VERSION}`,
    );
  }
  const { run, core, position } = header;
  if (run === null || typeof run !== "object") bad("no run");
  if (typeof run.trace !== "string") bad("run.trace is not a file name");
  if (
    run.traces !== undefined &&
    (!Array.isArray(run.traces) || run.traces.some((t) => typeof t !== "string"))
  )
    bad("run.traces is not a list of file names");
  if (run.build !== "release" && run.build !== "debug") bad(`run.build ${JSON.stringify(run.build)}`);
  if (
    typeof run.checkpoint !== "string" ||
    !Number.isSafeInteger(run.checkpointEvery) ||
    run.checkpointEvery < 0
  )
    bad("run.checkpoint or run.checkpointEvery");
  // The config goes through the same checks as a config file (naming the key), as what it reads back.
  try {
    run.config = resolveConfig(configToJson(run.config));
  } catch (error) {
    bad(`run.config: ${error instanceof Error ? error.message : String(error)}`);
  }
  if (position === null || typeof position !== "object" || !Number.isSafeInteger(position.records))
    bad("no trace position");
  if (run.traces) {
    const feeds = (position as MultiTracePosition).feeds;
    if (!Array.isArray(feeds) || feeds.length !== run.traces.length)
      bad(`${run.traces.length} traces but ${Array.isArray(feeds) ? feeds.length : "no"} trace positions`);
  } else if (!Number.isSafeInteger((position as TracePosition).decodedBytes)) bad("position.decodedBytes");
  if (typeof header.host !== "string") bad("no host state");
  if (core === null || typeof core !== "object" || !Array.isArray(core.pages)) bad("no core pages");
  if (!Number.isSafeInteger(core.memoryPages) || core.memoryPages < 1) bad("core.memoryPages");
  for (const index of core.pages)
    if (!Number.isSafeInteger(index) || index < 0 || index >= core.memoryPages)
      bad(`core page ${JSON.stringify(index)} outside its ${core.memoryPages} pages`);
  const expected = 4 + headerLength + GLOBALS_BYTES + core.pages.length * PAGE_BYTES;
  if (payload.length !== expected)
    bad(`${payload.length} bytes of state where its header describes ${expected}`);
  header.globalsAt = 4 + headerLength;
  return header;
}

/** Rebuilds the host a checked header describes: a machine and host objects, then the saved state. */
function restore(header: CheckpointHeader, payload: Buffer): Checkpoint | MultiCheckpoint {
  let offset = header.globalsAt;
  const globals = payload.subarray(offset, offset + GLOBALS_BYTES);
  offset += GLOBALS_BYTES;
  const pages: CoreState["pages"] = header.core.pages.map((index) => {
    const bytes = payload.subarray(offset, offset + PAGE_BYTES);
    offset += PAGE_BYTES;
    return { index, bytes };
  });
  const run = header.run;
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
