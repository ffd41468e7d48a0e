// The memvirt command line. `run` replays a trace or a synthetic workload on a configured machine;
// `demo` (npm start) shows what 2M pages change against 4K pages on the embedded default workload.
import { readFileSync } from "node:fs";
import { Command, CommanderError, Option } from "commander";
import {
  defaultConfig,
  MODES,
  type Mode,
  parseConfigText,
  type ResolvedConfig,
  resolveConfig,
} from "../config/config.js";
import { MemvirtError } from "../core/machine.js";
import type { PageSize } from "../core/types.js";
import type { BuildName } from "../core/wasm.js";
import { formatIommuCompare, runIommuCompare } from "../iommu/compare.js";
import { isDmaWorkload, platformOf, runDmaWorkload } from "../iommu/workload.js";
import { formatSeedTable, runSeedTable } from "../overcommit/seed-table.js";
import { formatCsv } from "../report/csv.js";
import { writeHtmlReport } from "../report/html-file.js";
import { buildReport, formatTable, type RunReport, VERSION } from "../report/report.js";
import { type CheckpointRun, readCheckpoint, saveCheckpoint } from "../runner/checkpoint.js";
import { Simulation } from "../runner/simulation.js";
import { convertTrace } from "../trace/convert.js";
import { replayTrace } from "../trace/replay.js";
import { TRACE_FORMATS, type TraceFormatOption, type TracePosition } from "../trace/source.js";
import { MULTI_VM_WORKLOADS } from "../workload/multivm.js";
import { runWorkload } from "../workload/run.js";
import { formatCompare, runCompare } from "./compare.js";
import { formatDemo, runDemo } from "./demo.js";
import {
  collect,
  dmaOperations,
  numberOption,
  type RunOptions,
  seedOf,
  WORKLOAD_GROUPS,
  workloadSpec,
} from "./options.js";
import { continueTraces, runOvercommit, runTraces } from "./overcommit.js";
import { ProgressBar } from "./progress.js";
import { registerSweepCommands } from "./sweep.js";

function loadConfig(path: string | undefined): ResolvedConfig {
  if (!path) return defaultConfig();
  let text: string;
  try {
    text = readFileSync(path, "utf8");
  } catch (error) {
    throw new MemvirtError(`${path}: cannot read the config: ${(error as Error).message}`);
  }
  return parseConfigText(text, path);
}

/** Prints a run's report in the chosen form and writes the HTML report if asked. */
function emitReport(report: RunReport, options: RunOptions, print: (text: string) => void): void {
  print(
    options.json ? JSON.stringify(report, null, 2) : options.csv ? formatCsv([report]) : formatTable(report),
  );
  if (options.report) writeHtmlReport(options.report, [report]);
}

async function run(options: RunOptions, print: (text: string) => void): Promise<number> {
  if (options.resume) return resume(options, print);
  const traces = options.trace ?? [];
  if ((traces.length === 0) === !options.workload) {
    throw new MemvirtError(
      "memvirt run needs exactly one of --trace FILE (one per VM) and --workload NAME (or --resume FILE)",
    );
  }
  const config = loadConfig(options.config);
  const seed = seedOf(options, config);
  // Several VMs need a nested dimension: without a config file they run under EPT.
  const multiVmBase = () => (options.config ? config : resolveConfig({ mode: "ept" }));
  if ((MULTI_VM_WORKLOADS as readonly string[]).includes(options.workload ?? ""))
    return runOvercommit(multiVmBase(), options, seed, print);
  const multiVmOnly: [string, string | undefined][] = [
    ["pages-per-vm", options.pagesPerVm],
    ["shared-fraction", options.sharedFraction],
    ["zero-fraction", options.zeroFraction],
  ];
  for (const [flag, value] of multiVmOnly)
    if (value !== undefined)
      throw new MemvirtError(
        `--${flag}: only the multi-VM workloads (${MULTI_VM_WORKLOADS.join(", ")}) take it`,
      );
  if (options.vms !== undefined)
    throw new MemvirtError(
      traces.length > 0
        ? "--vms: a trace run has one VM per --trace; give --trace once for each VM"
        : `--vms: only the multi-VM workloads (${MULTI_VM_WORKLOADS.join(", ")}) take it`,
    );
  if (traces.length < 2)
    for (const [flag, value] of [
      ["timeline", options.timeline],
      ["seconds", options.seconds],
    ] as const)
      if (value !== undefined)
        throw new MemvirtError(
          `--${flag}: only runs of several VMs (a multi-VM workload, or --trace given more than once) take it`,
        );
  const checkpointEvery = numberOption(options.checkpointEvery, "checkpoint-every", 1, 2 ** 53) ?? 0;
  if ((options.checkpoint === undefined) !== (checkpointEvery === 0)) {
    throw new MemvirtError("--checkpoint FILE and --checkpoint-every N go together");
  }
  if (options.checkpoint && traces.length === 0) {
    throw new MemvirtError("--checkpoint applies to trace runs (--trace FILE)");
  }
  const checkpoint = options.checkpoint ? { file: options.checkpoint, every: checkpointEvery } : undefined;
  if (traces.length > 1) return runTraces(multiVmBase(), options, checkpoint, print);
  const simulation = new Simulation(config, { build: options.build });
  simulation.start();
  if (isDmaWorkload(options.workload)) {
    // Device DMA through the IOMMU: --records counts I/O operations (packets, commands, copies).
    const operations = dmaOperations(options);
    const iommu = runDmaWorkload(platformOf(simulation), { name: options.workload, operations, seed });
    const report = buildReport(simulation, { kind: "workload", name: options.workload, operations, seed });
    report.iommu = iommu;
    emitReport(report, options, print);
    return 0;
  }
  if (traces.length === 1) {
    const checkpointRun: CheckpointRun | undefined = checkpoint
      ? {
          config,
          trace: traces[0],
          format: options.format,
          build: options.build,
          checkpoint: checkpoint.file,
          checkpointEvery: checkpoint.every,
        }
      : undefined;
    return traceRun(simulation, traces[0], options.format, checkpointRun, undefined, options, print);
  }
  const spec = workloadSpec(options, seed);
  runWorkload(simulation, spec);
  emitReport(buildReport(simulation, { kind: "workload", ...spec }), options, print);
  return 0;
}

/** `run --resume FILE`: the checkpoint's host, continued on its traces. */
async function resume(options: RunOptions, print: (text: string) => void): Promise<number> {
  if (options.workload) throw new MemvirtError("--resume continues a trace run; it takes no --workload");
  // The build comes from the checkpoint: static data sits at different addresses in the two builds.
  const checkpoint = readCheckpoint(options.resume as string);
  const run = checkpoint.run;
  // Moved traces can be named again; positions are in decoded bytes, the same wherever a file lives.
  const traces = options.trace ?? [];
  const expected = run.traces?.length ?? 1;
  if (traces.length > 0 && traces.length !== expected)
    throw new MemvirtError(
      `--trace: the checkpoint's run has ${expected} trace(s); name all of them, in order`,
    );
  if (traces.length > 0) {
    run.trace = traces[0];
    if (run.traces) run.traces = traces;
  }
  if (options.checkpoint) run.checkpoint = options.checkpoint;
  const every = numberOption(options.checkpointEvery, "checkpoint-every", 1, 2 ** 53);
  if (every !== undefined) run.checkpointEvery = every;
  if ("host" in checkpoint) return continueTraces(checkpoint.host, run, checkpoint.position, options, print);
  return traceRun(checkpoint.simulation, run.trace, run.format, run, checkpoint.position, options, print);
}

async function traceRun(
  simulation: Simulation,
  trace: string,
  format: TraceFormatOption,
  checkpointRun: CheckpointRun | undefined,
  resumeFrom: TracePosition | undefined,
  options: RunOptions,
  print: (text: string) => void,
): Promise<number> {
  const source: RunReport["source"] = { kind: "trace", file: trace, format };
  const progress = new ProgressBar(trace, options.quiet === true);
  const last: { position?: TracePosition } = { position: resumeFrom };
  let failure: MemvirtError | undefined;
  try {
    const result = await replayTrace(simulation, trace, format, {
      resume: resumeFrom,
      last,
      checkpointEvery: checkpointRun?.checkpointEvery,
      onCheckpoint: checkpointRun
        ? (position) => saveCheckpoint(checkpointRun.checkpoint, simulation, checkpointRun, position)
        : undefined,
      onProgress: (position, fileBytes) => progress.update(position.records, fileBytes),
    });
    source.format = result.format;
    source.lines = result.lines;
    source.records = result.records;
  } catch (error) {
    if (!(error instanceof MemvirtError)) {
      progress.stop();
      throw error;
    }
    failure = error;
    if (last.position) {
      source.format = last.position.format;
      source.records = last.position.records;
    }
  }
  progress.stop();
  emitReport(buildReport(simulation, source, failure?.message), options, print);
  if (failure) {
    process.stderr.write(`memvirt: ${failure.message}\n`);
    return failure.exitCode;
  }
  return 0;
}

export async function main(
  argv: string[],
  print: (text: string) => void = (t) => console.log(t),
): Promise<number> {
  const program = new Command();
  program
    .name("memvirt")
    .description("Cycle-level emulator of address translation and memory virtualization")
    .version(VERSION)
    .exitOverride()
    .configureOutput({ writeErr: (text) => process.stderr.write(text) });

  let exitCode = 0;
  const buildOption = new Option("--build <build>", "WebAssembly build")
    .choices(["release", "debug"])
    .default("release");

  /** The workload, seed, output and build options `run` and `compare` share. */
  const workloadOptions = (command: Command, defaults: { workload?: string; records?: string }) => {
    const workload = new Option("-w, --workload <name>", "workload").choices(
      WORKLOAD_GROUPS.flatMap((group) => group.names),
    );
    if (defaults.workload) workload.default(defaults.workload);
    return command
      .addOption(workload)
      .option(
        "--records <n>",
        "workload: records to generate (default 1000000; multi-VM: per workload)",
        defaults.records,
      )
      .option(
        "--footprint <bytes>",
        "workload: bytes of address space touched (default 256M; pt-churn: per program, 1M; mmap-churn: heap, 16M; threads-shootdown: shared region, 8M)",
      )
      .option("--stride <bytes>", "workload: stride of sequential/strided")
      .option("--zipf <s>", "workload: Zipf exponent")
      .option("--write-fraction <f>", "workload: share of writes")
      .option("--seed <n>", "seed of the workload (default: the config's seed)")
      .option("--json", "print one JSON object")
      .option("--csv", "print CSV: a header row and one row per run")
      .option("--report <file.html>", "also write a self-contained HTML report with charts")
      .addOption(buildOption);
  };

  workloadOptions(
    program
      .command("run")
      .description("replay a trace file or a synthetic workload and report translation costs")
      .option("-c, --config <file>", "machine and guest configuration (JSON)")
      .option("-t, --trace <file>", "trace file to replay; more than once: one VM per trace", collect)
      .addOption(
        new Option("-f, --format <format>", "trace format (auto: detected from the content)")
          .choices(["auto", ...TRACE_FORMATS])
          .default("auto"),
      )
      .option(
        "--checkpoint <file>",
        "save the whole simulation state to FILE, atomically (with --checkpoint-every)",
      )
      .option("--checkpoint-every <n>", "records between checkpoints")
      .option("--resume <file>", "continue the run saved in a checkpoint")
      .option("-q, --quiet", "no progress bar")
      .option("--vms <n>", "multi-VM workloads: number of VMs")
      .option("--pages-per-vm <n>", "multi-VM workloads: 4 KiB pages of each VM's application")
      .option("--shared-fraction <f>", "identical-vms: share of pages from the common OS image")
      .option("--zero-fraction <f>", "identical-vms: share of zero pages")
      .option("--seconds <s>", "multi-VM workloads: simulated seconds the run lasts")
      .option("--timeline <file.csv>", "multi-VM workloads: write the memory timeline as CSV")
      .option("--check-invariants", "check for stale translations after every overcommit step"),
    {},
  ).action(async (options: RunOptions) => {
    exitCode = await run(options, print);
  });

  workloadOptions(
    program
      .command("compare")
      .description("run one workload under native, pv, shadow, ept and npt with each page-size pairing")
      .option("-c, --config <file>", "base configuration (JSON); mode and page sizes are varied")
      .option("--modes <list>", "comma-separated modes to include", MODES.join(","))
      .option("--seed-table", "the comparison table of memory-virtualization techniques, measured"),
    { workload: "zipf", records: "500000" },
  ).action((options: RunOptions & { modes: string; seedTable?: boolean }) => {
    if (options.seedTable) {
      const table = runSeedTable(options.build);
      print(options.json ? JSON.stringify(table, null, 2) : formatSeedTable(table));
      return;
    }
    const config = loadConfig(options.config);
    const seed = seedOf(options, config);
    if (isDmaWorkload(options.workload)) {
      // Device workloads compare IOMMU modes (off, strict, deferred, pass-through) instead.
      const operations = dmaOperations(options);
      const result = runIommuCompare(config, options.workload, operations, seed, options.build);
      print(options.json ? JSON.stringify(result, null, 2) : formatIommuCompare(result));
      return;
    }
    if ((MULTI_VM_WORKLOADS as readonly string[]).includes(options.workload ?? "")) {
      throw new MemvirtError(
        `--workload ${options.workload}: multi-VM workloads run on an overcommitted host under ept or npt only, so there is no per-mode comparison; use memvirt run --workload ${options.workload}, or compare --seed-table`,
      );
    }
    const modes = options.modes.split(",").map((m) => m.trim());
    for (const mode of modes) {
      if (!(MODES as readonly string[]).includes(mode))
        throw new MemvirtError(`--modes: unknown mode "${mode}"`);
    }
    const result = runCompare(config, workloadSpec(options, seed), options.build, modes as Mode[]);
    print(
      options.json
        ? JSON.stringify(result, null, 2)
        : options.csv
          ? formatCsv(result.rows)
          : formatCompare(result),
    );
    if (options.report) writeHtmlReport(options.report, [], result);
  });

  program
    .command("convert")
    .description("convert a trace in any format to memvirt's compact binary format")
    .argument("<in>", "trace to read")
    .addOption(
      new Option("-f, --format <format>", "input format (auto: detected from the content)")
        .choices(["auto", ...TRACE_FORMATS])
        .default("auto"),
    )
    .requiredOption("-o, --out <file>", "memvirt trace to write")
    .option("--json", "print one JSON object")
    .addOption(buildOption)
    .action(
      async (
        input: string,
        options: { format: TraceFormatOption; out: string; json?: boolean; build: BuildName },
      ) => {
        const result = await convertTrace(input, options.format, options.out, options.build);
        print(
          options.json
            ? JSON.stringify(result, null, 2)
            : `converted ${result.input} (${result.format}): ${result.records.toLocaleString("en-US")} records, ${result.bytesWritten.toLocaleString("en-US")} bytes in ${result.output}`,
        );
      },
    );

  registerSweepCommands(program, {
    buildOption,
    print,
    numberOption,
    setExitCode: (code) => {
      exitCode = code;
    },
  });

  program
    .command("web")
    .description("serve the playground (built by npm run web:build) on 127.0.0.1 and print its URL")
    .option("-p, --port <n>", "port to listen on (0: any free port)", "4173")
    .option("--dir <dir>", "serve a site built elsewhere (default: the package's web/dist)")
    .action(async (options: { port: string; dir?: string }) => {
      // Loaded only for this command: the others pay nothing for the HTTP server.
      const { runWeb } = await import("./web.js");
      const port = numberOption(options.port, "port", 0, 65535) ?? 4173;
      if (!Number.isInteger(port))
        throw new MemvirtError(`--port: must be an integer, got "${options.port}"`);
      exitCode = await runWeb(port, print, options.dir);
    });

  program
    .command("demo")
    .description("run the embedded default workload with 4K and with 2M pages and compare them")
    .option("--json", "print one JSON object")
    .addOption(buildOption)
    .action((options: { json?: boolean; build: BuildName }) => {
      const result = runDemo(options.build);
      print(options.json ? JSON.stringify(result, null, 2) : formatDemo(result));
    });

  try {
    await program.parseAsync(argv);
    return exitCode;
  } catch (error) {
    if (error instanceof CommanderError) return error.exitCode === 0 ? 0 : 2;
    if (error instanceof MemvirtError) {
      process.stderr.write(`memvirt: ${error.message}\n`);
      return error.exitCode;
    }
    throw error;
  }
}

export type { PageSize };
