// `memvirt run` with several VMs on one host: a multi-VM workload, or one trace per VM (`--trace`
// repeated). Both run on the overcommitted host (src/overcommit), with its mechanisms acting on them.
import { writeFileSync } from "node:fs";
import { configToJson, type ResolvedConfig } from "../config/config.js";
import { MemvirtError } from "../core/errors.js";
import { OvercommitHost } from "../overcommit/host.js";
import {
  buildOvercommitReport,
  formatOvercommitReport,
  type OvercommitReport,
  timelineCsv,
} from "../overcommit/report.js";
import { formatCsv } from "../report/csv.js";
import { writeOvercommitReport } from "../report/html-file.js";
import { type CheckpointRun, saveCheckpoint } from "../runner/checkpoint.js";
import { type MultiTracePosition, replayTraces, TraceVms } from "../trace/multi.js";
import { drive } from "../util/steps.js";
import { VERSION } from "../version.js";
import type { CommandIo } from "./io.js";
import { multiVmHost } from "./multi-vm.js";
import { numberOption, type RunOptions } from "./options.js";
import { attempt, type Ending, finish, markReport } from "./outcome.js";
import { ProgressBar } from "./progress.js";

/** Prints the report (JSON with the effective config, CSV or the table), writes the HTML page and the timeline. */
function emit(host: OvercommitHost, report: OvercommitReport, options: RunOptions, io: CommandIo): void {
  io.print(
    options.json
      ? JSON.stringify({ ...report, config: configToJson(host.config) }, null, 2)
      : options.csv
        ? formatCsv([report])
        : formatOvercommitReport(report),
  );
  if (options.report) writeOvercommitReport(options.report, report, host.config);
  if (options.timeline) {
    try {
      writeFileSync(options.timeline, timelineCsv(host));
    } catch (error) {
      throw new MemvirtError(`--timeline ${options.timeline}: cannot write: ${(error as Error).message}`);
    }
  }
}

function finishRun(
  host: OvercommitHost,
  source: Record<string, unknown>,
  ending: Ending | undefined,
  options: RunOptions,
  io: CommandIo,
): number {
  const report = markReport(buildOvercommitReport(host, source, VERSION), ending);
  emit(host, report, options, io);
  return finish(ending);
}

export async function runOvercommit(
  config: ResolvedConfig,
  options: RunOptions,
  seed: number,
  io: CommandIo,
): Promise<number> {
  const { host, spec, workload } = multiVmHost(config, options, seed, {
    build: options.build,
    checkInvariants: options.checkInvariants || undefined,
  });
  // Each VM boots by touching its memory, then the accesses run.
  const total = workload.plans.reduce((sum, plan) => sum + plan.bootPages, 0) + spec.records;
  const stream = io.progress(options.quiet);
  const progress = ProgressBar.count(total, "records", !stream, stream);
  const ending = await attempt(async () => {
    await drive(host.runSteps(), { signal: io.signal, onProgress: (done) => progress.update(done) });
    host.finish();
  });
  progress.stop();
  return finishRun(host, { kind: "workload", ...spec }, ending, options, io);
}

/** A new run of one trace per VM (`--trace` repeated). */
export async function runTraces(
  config: ResolvedConfig,
  options: RunOptions,
  checkpoint: { file: string; every: number } | undefined,
  io: CommandIo,
): Promise<number> {
  const traces = options.trace ?? [];
  const format = options.format ?? "auto";
  const seconds = numberOption(options.seconds, "seconds", 0, 1e6) ?? 0;
  const host = new OvercommitHost(config, new TraceVms(traces, config.guest, seconds), {
    build: options.build,
    checkInvariants: options.checkInvariants || undefined,
  });
  const run: CheckpointRun = {
    config,
    trace: traces[0],
    traces,
    format,
    build: options.build,
    checkpoint: checkpoint?.file ?? "",
    checkpointEvery: checkpoint?.every ?? 0,
    seconds,
    checkInvariants: options.checkInvariants,
  };
  return continueTraces(host, run, undefined, options, io);
}

/** Runs (or continues, from `resume`) the traces of `run` to their end and reports. */
export async function continueTraces(
  host: OvercommitHost,
  run: CheckpointRun,
  resume: MultiTracePosition | undefined,
  options: RunOptions,
  io: CommandIo,
): Promise<number> {
  const traces = run.traces ?? [run.trace];
  const stream = io.progress(options.quiet);
  const progress = new ProgressBar(traces, !stream, stream);
  let result: Awaited<ReturnType<typeof replayTraces>> | undefined;
  const ending = await attempt(async () => {
    result = await replayTraces(
      host,
      traces.map((file) => ({ file, format: run.format })),
      {
        build: run.build,
        resume,
        checkpointEvery: run.checkpoint ? run.checkpointEvery : 0,
        onCheckpoint: (position) => saveCheckpoint(run.checkpoint, host, run, position),
        onProgress: (records, fileBytes) => progress.update(records, fileBytes),
        signal: io.signal,
      },
    );
    if (result.error) throw result.error;
    host.finish();
  });
  progress.stop();
  const source = { kind: "trace", traces: result?.traces ?? traces.map((file) => ({ file })) };
  return finishRun(host, source, ending, options, io);
}
