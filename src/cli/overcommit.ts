// `memvirt run` with several VMs on one host: a multi-VM workload, or one trace per VM (`--trace`
// repeated). Both run on the overcommitted host (src/overcommit), with its mechanisms acting on them.
import { writeFileSync } from "node:fs";
import type { ResolvedConfig } from "../config/config.js";
import { MemvirtError } from "../core/machine.js";
import { hasNestedTables } from "../hypervisor/config.js";
import { defaultOvercommit } from "../overcommit/config.js";
import { OvercommitHost } from "../overcommit/host.js";
import { buildOvercommitReport, formatOvercommitReport, timelineCsv } from "../overcommit/report.js";
import { VERSION } from "../report/report.js";
import { type CheckpointRun, saveCheckpoint } from "../runner/checkpoint.js";
import { type MultiTracePosition, replayTraces, TraceVms } from "../trace/multi.js";
import { defaultMultiVmOptions, MultiVm, type MultiVmWorkloadName } from "../workload/multivm.js";
import { numberOption, type RunOptions } from "./options.js";
import { ProgressBar } from "./progress.js";

export function multiVmOptions(options: RunOptions, seed: number) {
  const spec = defaultMultiVmOptions(options.workload as MultiVmWorkloadName);
  spec.seed = seed;
  spec.vms = numberOption(options.vms, "vms", 1, 16) ?? spec.vms;
  spec.pagesPerVm = numberOption(options.pagesPerVm, "pages-per-vm", 16, 2 ** 24) ?? spec.pagesPerVm;
  spec.sharedFraction = numberOption(options.sharedFraction, "shared-fraction", 0, 1) ?? spec.sharedFraction;
  spec.zeroFraction = numberOption(options.zeroFraction, "zero-fraction", 0, 1) ?? spec.zeroFraction;
  spec.records = numberOption(options.records, "records", 0, 2 ** 40) ?? spec.records;
  spec.seconds = numberOption(options.seconds, "seconds", 0, 1e6) ?? spec.seconds;
  spec.writeFraction = numberOption(options.writeFraction, "write-fraction", 0, 1) ?? spec.writeFraction;
  if (!Number.isInteger(spec.vms)) throw new MemvirtError("--vms: must be an integer");
  if (!Number.isInteger(spec.pagesPerVm)) throw new MemvirtError("--pages-per-vm: must be an integer");
  spec.records = Math.floor(spec.records);
  return spec;
}

/**
 * The config several VMs run with: the mode must fill nested tables (the host's memory management
 * edits them); without an "overcommit" section, its defaults on 4K host pages.
 */
export function multiVmConfig(base: ResolvedConfig, what: string): ResolvedConfig {
  const config = { ...base };
  if (!hasNestedTables(config.mode)) throw new MemvirtError(`config key "mode": ${what} need "ept" or "npt"`);
  if (config.guest.pageSize !== "4K")
    throw new MemvirtError(
      `config key "guest.pageSize": ${what} page the guest in 4 KiB pages (the host tracks each): use "4K"`,
    );
  if (!config.overcommit) {
    if (config.host.pageSize !== "4K")
      throw new MemvirtError(`config key "host.pageSize": ${what} reclaim 4 KiB pages: use "4K"`);
    config.overcommit = defaultOvercommit();
  }
  return config;
}

/** Prints the report, writes the timeline, and turns a stop on bad input into its exit code. */
function finish(
  host: OvercommitHost,
  source: Record<string, unknown>,
  failure: MemvirtError | undefined,
  options: RunOptions,
  print: (text: string) => void,
): number {
  const report = buildOvercommitReport(host, source, VERSION, failure?.message);
  print(options.json ? JSON.stringify(report, null, 2) : formatOvercommitReport(report));
  if (options.timeline) writeFileSync(options.timeline, timelineCsv(host));
  if (failure) {
    process.stderr.write(`memvirt: ${failure.message}\n`);
    return failure.exitCode;
  }
  return 0;
}

export function runOvercommit(
  base: ResolvedConfig,
  options: RunOptions,
  seed: number,
  print: (text: string) => void,
): number {
  const config = multiVmConfig(base, "the multi-VM workloads");
  const spec = multiVmOptions(options, seed);
  const host = new OvercommitHost(config, new MultiVm(spec), {
    build: options.build,
    checkInvariants: options.checkInvariants || undefined,
  });
  let failure: MemvirtError | undefined;
  try {
    host.run();
  } catch (error) {
    if (!(error instanceof MemvirtError)) throw error;
    failure = error;
  }
  return finish(host, { kind: "workload", ...spec }, failure, options, print);
}

/** A new run of one trace per VM (`--trace` repeated). */
export async function runTraces(
  base: ResolvedConfig,
  options: RunOptions,
  checkpoint: { file: string; every: number } | undefined,
  print: (text: string) => void,
): Promise<number> {
  const traces = options.trace ?? [];
  const config = multiVmConfig(base, "several traces");
  const seconds = numberOption(options.seconds, "seconds", 0, 1e6) ?? 0;
  const host = new OvercommitHost(config, new TraceVms(traces, config.guest, seconds), {
    build: options.build,
    checkInvariants: options.checkInvariants || undefined,
  });
  const run: CheckpointRun = {
    config,
    trace: traces[0],
    traces,
    format: options.format,
    build: options.build,
    checkpoint: checkpoint?.file ?? "",
    checkpointEvery: checkpoint?.every ?? 0,
    seconds,
    checkInvariants: options.checkInvariants,
  };
  return continueTraces(host, run, undefined, options, print);
}

/** Runs (or continues, from `resume`) the traces of `run` to their end and reports. */
export async function continueTraces(
  host: OvercommitHost,
  run: CheckpointRun,
  resume: MultiTracePosition | undefined,
  options: RunOptions,
  print: (text: string) => void,
): Promise<number> {
  const traces = run.traces ?? [run.trace];
  const progress = new ProgressBar(traces, options.quiet === true);
  const result = await replayTraces(
    host,
    traces.map((file) => ({ file, format: run.format })),
    {
      build: run.build,
      resume,
      checkpointEvery: run.checkpoint ? run.checkpointEvery : 0,
      onCheckpoint: (position) => saveCheckpoint(run.checkpoint, host, run, position),
      onProgress: (records, fileBytes) => progress.update(records, fileBytes),
    },
  );
  progress.stop();
  if (!result.error) host.finish();
  return finish(host, { kind: "trace", traces: result.traces }, result.error, options, print);
}
