// `memvirt run` with several VMs on one host: a multi-VM workload, or one trace per VM (`--trace`
// repeated). Both run on the overcommitted host (src/overcommit), with its mechanisms acting on them.
import { writeFileSync } from "node:fs";
import type { ResolvedConfig } from "../config/config.js";
import type { MemvirtError } from "../core/machine.js";
import { OvercommitHost } from "../overcommit/host.js";
import { buildOvercommitReport, formatOvercommitReport, timelineCsv } from "../overcommit/report.js";
import { VERSION } from "../report/report.js";
import { type CheckpointRun, saveCheckpoint } from "../runner/checkpoint.js";
import { type MultiTracePosition, replayTraces, TraceVms } from "../trace/multi.js";
import { multiVmConfig, numberOption, type RunOptions, runMultiVmWorkload } from "./options.js";
import { ProgressBar } from "./progress.js";

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
  const { host, spec, failure } = runMultiVmWorkload(base, options, seed, {
    build: options.build,
    checkInvariants: options.checkInvariants || undefined,
  });
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
