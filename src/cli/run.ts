// `memvirt run`: a trace (one VM, or one VM per trace), a workload of any family, or a checkpoint's run
// continued. Every option is checked against the source it would apply to before anything runs; every
// run ends with its report (the statistics so far when it stopped early) and the exit code of how it
// ended (cli/outcome.ts).
import { configToJson, type ResolvedConfig } from "../config/config.js";
import type { Json } from "../config/validate.js";
import { MemvirtError } from "../core/errors.js";
import { formatCsv } from "../report/csv.js";
import { buildReport, formatTable, type RunReport } from "../report/report.js";
import type { CheckpointRun } from "../runner/checkpoint.js";
import { Simulation } from "../runner/simulation.js";
import type { TraceFormatOption } from "../trace/formats.js";
import { replayTrace } from "../trace/replay.js";
import type { TracePosition } from "../trace/source.js";
import { drive } from "../util/steps.js";
import { familyOf, WORKLOAD_FAMILIES, WORKLOAD_OPTIONS, type WorkloadFamily } from "../workload/catalog.js";
import { workloadSteps } from "../workload/run.js";
import { checkOutput, loadConfig } from "./files.js";
import type { CommandIo } from "./io.js";
import {
  dmaOperations,
  flagName,
  integerOption,
  multiVmConfig,
  type RunOptions,
  seedOf,
  workloadSpec,
} from "./options.js";
import { attempt, type Ending, finish, markReport } from "./outcome.js";
import { ProgressBar } from "./progress.js";

/** What a run reads its records from. */
type SourceKind = "trace" | "traces" | "resume" | WorkloadFamily;

const SOURCE_NAMES: Record<SourceKind, string> = {
  trace: "a trace run",
  traces: "a run of several traces",
  resume: "--resume (the checkpoint holds the run's config, workload and format)",
  synthetic: "a synthetic workload",
  churn: "a churn workload",
  dma: "a DMA workload",
  "multi-vm": "a multi-VM workload",
};

const NEW_RUNS: SourceKind[] = ["trace", "traces", ...WORKLOAD_FAMILIES.map((f) => f.family)];
/** Workload options that runs of several traces take too: they run on the same overcommitted host. */
const HOST_OPTIONS = new Set(["seconds", "timeline", "checkInvariants"]);

/** The options of `run` that apply to some sources only, and the sources each applies to. */
const APPLIES_TO: [keyof RunOptions, readonly SourceKind[]][] = [
  ["config", NEW_RUNS],
  ["preset", NEW_RUNS],
  ["format", ["trace", "traces"]],
  ["checkpoint", ["trace", "traces", "resume"]],
  ["checkpointEvery", ["trace", "traces", "resume"]],
  ["forceTrace", ["resume"]],
  ...WORKLOAD_OPTIONS.map((option): [keyof RunOptions, SourceKind[]] => [
    option,
    [
      ...WORKLOAD_FAMILIES.filter((f) => f.options.includes(option)).map((f) => f.family),
      ...(HOST_OPTIONS.has(option) ? (["traces"] as const) : []),
    ],
  ]),
];

/** The source the flags ask for, with every option that does not apply to it refused by name. */
function sourceOf(flags: RunOptions): SourceKind {
  const traces = flags.trace ?? [];
  let source: SourceKind;
  if (flags.resume) {
    if (flags.workload) throw new MemvirtError("--resume continues a trace run; it takes no --workload");
    source = "resume";
  } else if ((traces.length === 0) === !flags.workload) {
    throw new MemvirtError(
      "memvirt run needs exactly one of --trace FILE (one per VM), --workload NAME and --resume FILE",
    );
  } else if (flags.workload) {
    source = (familyOf(flags.workload) as (typeof WORKLOAD_FAMILIES)[number]).family;
  } else source = traces.length > 1 ? "traces" : "trace";
  if (flags.vms !== undefined && traces.length > 0)
    throw new MemvirtError("--vms: a trace run has one VM per --trace; give --trace once for each VM");
  for (const [key, sources] of APPLIES_TO) {
    if (flags[key] === undefined || sources.includes(source)) continue;
    const takers = sources.map((s) => SOURCE_NAMES[s]).join(", ");
    throw new MemvirtError(
      `${flagName(key)}: does not apply to ${source === "resume" ? SOURCE_NAMES.resume : `${SOURCE_NAMES[source]}${flags.workload ? ` (--workload ${flags.workload})` : ""}`}${takers ? `; it applies to ${takers}` : ""}`,
    );
  }
  return source;
}

export async function runCommand(flags: RunOptions, io: CommandIo): Promise<number> {
  // --print-config alone: the config the preset and the config file make, before any source.
  if (flags.printConfig && !flags.trace && !flags.workload && !flags.resume) {
    io.print(JSON.stringify(configToJson(loadConfig(flags.config, flags.preset)), null, 2));
    return 0;
  }
  const source = sourceOf(flags);
  if (source === "resume") return resume(flags, io);
  const checkpointEvery = integerOption(flags.checkpointEvery, "checkpoint-every", 1, 2 ** 53);
  if ((flags.checkpoint === undefined) !== (checkpointEvery === undefined))
    throw new MemvirtError("--checkpoint FILE and --checkpoint-every N go together");
  // Several VMs need a nested dimension: without a config file they run under EPT.
  const severalVms = source === "traces" || source === "multi-vm";
  const base: Json = severalVms && !flags.config ? { mode: "ept" } : {};
  let config = loadConfig(flags.config, flags.preset, base);
  if (severalVms)
    config = multiVmConfig(config, source === "traces" ? "several traces" : "the multi-VM workloads");
  if (flags.printConfig) {
    io.print(JSON.stringify(configToJson(config), null, 2));
    return 0;
  }
  checkOutputs(flags);
  const seed = seedOf(flags, config);
  const checkpoint = flags.checkpoint
    ? { file: flags.checkpoint, every: checkpointEvery as number }
    : undefined;
  switch (source) {
    case "multi-vm":
      return (await import("./overcommit.js")).runOvercommit(config, flags, seed, io);
    case "traces":
      return (await import("./overcommit.js")).runTraces(config, flags, checkpoint, io);
    case "trace": {
      const trace = (flags.trace as string[])[0];
      const format = flags.format ?? "auto";
      const run: CheckpointRun | undefined = checkpoint && {
        config,
        trace,
        format,
        build: flags.build,
        checkpoint: checkpoint.file,
        checkpointEvery: checkpoint.every,
      };
      const simulation = new Simulation(config, { build: flags.build });
      simulation.start();
      return traceRun(simulation, trace, format, run, undefined, flags, io);
    }
    case "dma":
      return dmaRun(config, flags, seed, io);
    case "synthetic":
    case "churn":
      return syntheticRun(config, flags, seed, io);
  }
}

/** Every file the run will write, checked before it starts. */
function checkOutputs(flags: RunOptions): void {
  if (flags.report) checkOutput(flags.report, "--report");
  if (flags.timeline) checkOutput(flags.timeline, "--timeline");
  if (flags.checkpoint) checkOutput(flags.checkpoint, "--checkpoint");
}

/** Prints a run's report in the chosen form (JSON with the effective config) and writes its HTML page. */
export async function emitReport(
  report: RunReport,
  config: ResolvedConfig,
  flags: RunOptions,
  io: CommandIo,
): Promise<void> {
  io.print(
    flags.json
      ? JSON.stringify({ ...report, config: configToJson(config) }, null, 2)
      : flags.csv
        ? formatCsv([report])
        : formatTable(report),
  );
  if (flags.report) (await import("../report/html-file.js")).writeHtmlReport(flags.report, [report]);
}

async function syntheticRun(config: ResolvedConfig, flags: RunOptions, seed: number, io: CommandIo) {
  const spec = workloadSpec(flags, seed, config.guest.levels);
  const simulation = new Simulation(config, { build: flags.build });
  simulation.start();
  const stream = io.progress(flags.quiet);
  const progress = ProgressBar.count(spec.records, "records", !stream, stream);
  const ending = await attempt(() =>
    // A churn workload is one step (workload/run.ts): its batches move the bar as they run.
    drive(
      workloadSteps(simulation, spec, (_, total) => progress.update(total)),
      {
        signal: io.signal,
        onProgress: (done) => progress.update(done),
      },
    ),
  );
  progress.stop();
  const report = buildReport(simulation, { kind: "workload", ...spec });
  await emitReport(markReport(report, ending), config, flags, io);
  return finish(ending);
}

/** Device DMA through the IOMMU: `--records` counts I/O operations (packets, commands, copies). */
async function dmaRun(config: ResolvedConfig, flags: RunOptions, seed: number, io: CommandIo) {
  const { platformOf, startDmaWorkload } = await import("../iommu/workload.js");
  const name = flags.workload as Parameters<typeof startDmaWorkload>[1]["name"];
  const operations = dmaOperations(flags);
  const simulation = new Simulation(config, { build: flags.build });
  simulation.start();
  const run = startDmaWorkload(platformOf(simulation), { name, operations, seed });
  const stream = io.progress(flags.quiet);
  const progress = ProgressBar.count(operations, "operations", !stream, stream);
  const ending = await attempt(() =>
    drive(run.steps(), { signal: io.signal, onProgress: (done) => progress.update(done) }),
  );
  progress.stop();
  const report = buildReport(simulation, { kind: "workload", name, operations, seed });
  report.iommu = run.report();
  await emitReport(markReport(report, ending), config, flags, io);
  return finish(ending);
}

/** `run --resume FILE`: the checkpoint's host, continued on its traces. */
async function resume(flags: RunOptions, io: CommandIo): Promise<number> {
  // The build comes from the checkpoint: static data sits at different addresses in the two builds.
  const path = flags.resume as string;
  const { checkTraceIdentities, readCheckpoint } = await import("../runner/checkpoint.js");
  const checkpoint = readCheckpoint(path);
  const run = checkpoint.run;
  if (flags.printConfig) {
    io.print(JSON.stringify(configToJson(run.config), null, 2));
    return 0;
  }
  // Moved traces can be named again; positions are in decoded bytes, the same wherever a file lives.
  const traces = flags.trace ?? [];
  const expected = run.traces?.length ?? 1;
  if (traces.length > 0 && traces.length !== expected)
    throw new MemvirtError(
      `--trace: the checkpoint's run has ${expected} trace(s); name all of them, in order`,
    );
  if (traces.length > 0) {
    run.trace = traces[0];
    if (run.traces) run.traces = traces;
  }
  checkTraceIdentities(path, run, flags.forceTrace);
  if (flags.checkpoint) run.checkpoint = flags.checkpoint;
  const every = integerOption(flags.checkpointEvery, "checkpoint-every", 1, 2 ** 53);
  if (every !== undefined) run.checkpointEvery = every;
  checkOutputs(flags);
  if ("host" in checkpoint)
    return (await import("./overcommit.js")).continueTraces(
      checkpoint.host,
      run,
      checkpoint.position,
      flags,
      io,
    );
  return traceRun(checkpoint.simulation, run.trace, run.format, run, checkpoint.position, flags, io);
}

async function traceRun(
  simulation: Simulation,
  trace: string,
  format: TraceFormatOption,
  checkpointRun: CheckpointRun | undefined,
  resumeFrom: TracePosition | undefined,
  flags: RunOptions,
  io: CommandIo,
): Promise<number> {
  const source: RunReport["source"] = { kind: "trace", file: trace, format };
  const stream = io.progress(flags.quiet);
  const progress = new ProgressBar(trace, !stream, stream);
  const last: { position?: TracePosition } = { position: resumeFrom };
  // Checkpoints (and the overcommitted host they may hold) load only for a run that takes them.
  const saveCheckpoint = checkpointRun && (await import("../runner/checkpoint.js")).saveCheckpoint;
  const ending: Ending | undefined = await attempt(async () => {
    const result = await replayTrace(simulation, trace, format, {
      resume: resumeFrom,
      last,
      checkpointEvery: checkpointRun?.checkpointEvery,
      onCheckpoint:
        checkpointRun && saveCheckpoint
          ? (position) => saveCheckpoint(checkpointRun.checkpoint, simulation, checkpointRun, position)
          : undefined,
      onProgress: (position, fileBytes) => progress.update(position.records, fileBytes),
      signal: io.signal,
    });
    source.format = result.format;
    source.lines = result.lines;
    source.records = result.records;
  });
  progress.stop();
  if (ending && last.position) {
    source.format = last.position.format;
    source.records = last.position.records;
  }
  await emitReport(markReport(buildReport(simulation, source), ending), simulation.config, flags, io);
  return finish(ending);
}
