// The memvirt command line. `run` replays a trace or a synthetic workload on a configured machine;
// `demo` (npm start) shows what 2M pages change against 4K pages on the embedded default workload.
import { readFileSync, writeFileSync } from "node:fs";
import { Command, CommanderError, Option } from "commander";
import {
  defaultConfig,
  MODES,
  type Mode,
  parseBytes,
  parseConfigText,
  type ResolvedConfig,
} from "../config/config.js";
import { MemvirtError } from "../core/machine.js";
import type { PageSize } from "../core/types.js";
import type { BuildName } from "../core/wasm.js";
import { formatSeedTable, runSeedTable } from "../overcommit/seed-table.js";
import { buildReport, formatTable, type RunReport, VERSION } from "../report/report.js";
import { Simulation } from "../runner/simulation.js";
import { replayTextTrace, type TraceFormatOption } from "../trace/replay.js";
import { MULTI_VM_WORKLOADS } from "../workload/multivm.js";
import { runWorkload } from "../workload/run.js";
import { WORKLOAD_NAMES, type WorkloadName, type WorkloadSpec } from "../workload/synthetic.js";
import { formatCompare, runCompare } from "./compare.js";
import { formatDemo, runDemo } from "./demo.js";
import { runOvercommit } from "./overcommit.js";

export interface RunOptions {
  config?: string;
  vms?: string;
  pagesPerVm?: string;
  sharedFraction?: string;
  zeroFraction?: string;
  seconds?: string;
  timeline?: string;
  checkInvariants?: boolean;
  trace?: string;
  format: TraceFormatOption;
  workload?: WorkloadName;
  records?: string;
  footprint: string;
  stride?: string;
  zipf?: string;
  writeFraction?: string;
  seed?: string;
  json?: boolean;
  quiet?: boolean;
  build: BuildName;
}

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

export function numberOption(
  value: string | undefined,
  name: string,
  min: number,
  max: number,
): number | undefined {
  if (value === undefined) return undefined;
  const n = Number(value);
  if (!Number.isFinite(n) || n < min || n > max) {
    throw new MemvirtError(`--${name}: must be a number from ${min} to ${max}, got "${value}"`);
  }
  return n;
}

export function workloadSpec(options: RunOptions, seed: number): WorkloadSpec {
  const records = numberOption(options.records ?? "1000000", "records", 1, 2 ** 40) ?? 0;
  return {
    name: options.workload as WorkloadName,
    records: Math.floor(records),
    footprint: parseBytes(options.footprint, "--footprint"),
    stride: numberOption(options.stride, "stride", 8, 2 ** 40),
    zipfS: numberOption(options.zipf, "zipf", 0, 10),
    writeFraction: numberOption(options.writeFraction, "write-fraction", 0, 1),
    seed,
  };
}

async function run(options: RunOptions, print: (text: string) => void): Promise<number> {
  if (!options.trace === !options.workload) {
    throw new MemvirtError("memvirt run needs exactly one of --trace FILE and --workload NAME");
  }
  const config = loadConfig(options.config);
  const seed = numberOption(options.seed, "seed", 0, 2 ** 32 - 1) ?? config.seed;
  if ((MULTI_VM_WORKLOADS as readonly string[]).includes(options.workload ?? "")) {
    return runOvercommit(config, options, seed, print, (path, text) => writeFileSync(path, text));
  }
  if (options.timeline)
    throw new MemvirtError(
      "--timeline: only the multi-VM workloads (identical-vms, cloud-mix, memory-hog) have a timeline",
    );
  const simulation = new Simulation(config, { build: options.build });
  simulation.start();
  let source: RunReport["source"];
  let failure: MemvirtError | undefined;
  if (options.trace) {
    source = { kind: "trace", file: options.trace, format: options.format };
    try {
      const result = await replayTextTrace(simulation, options.trace, options.format);
      source.format = result.format;
      source.lines = result.lines;
    } catch (error) {
      if (!(error instanceof MemvirtError)) throw error;
      failure = error;
    }
  } else {
    const spec = workloadSpec(options, seed);
    source = { kind: "workload", ...spec };
    runWorkload(simulation, spec);
  }
  const report = buildReport(simulation, source, failure?.message);
  print(options.json ? JSON.stringify(report, null, 2) : formatTable(report));
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
    const workload = new Option("-w, --workload <name>", "synthetic workload").choices([
      ...WORKLOAD_NAMES,
      ...MULTI_VM_WORKLOADS,
    ]);
    if (defaults.workload) workload.default(defaults.workload);
    return command
      .addOption(workload)
      .option(
        "--records <n>",
        "workload: records to generate (default 1000000; multi-VM: per workload)",
        defaults.records,
      )
      .option("--footprint <bytes>", "workload: bytes of address space touched (e.g. 256M)", "256M")
      .option("--stride <bytes>", "workload: stride of sequential/strided")
      .option("--zipf <s>", "workload: Zipf exponent")
      .option("--write-fraction <f>", "workload: share of writes")
      .option("--seed <n>", "seed of the workload (default: the config's seed)")
      .option("--json", "print one JSON object")
      .addOption(buildOption);
  };

  workloadOptions(
    program
      .command("run")
      .description("replay a trace file or a synthetic workload and report translation costs")
      .option("-c, --config <file>", "machine and guest configuration (JSON)")
      .option("-t, --trace <file>", "trace file to replay")
      .addOption(
        new Option("-f, --format <format>", "trace format")
          .choices(["auto", "lackey", "din"])
          .default("auto"),
      )
      .option("-q, --quiet", "no progress output")
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
    const seed = numberOption(options.seed, "seed", 0, 2 ** 32 - 1) ?? config.seed;
    const modes = options.modes.split(",").map((m) => m.trim());
    for (const mode of modes) {
      if (!(MODES as readonly string[]).includes(mode))
        throw new MemvirtError(`--modes: unknown mode "${mode}"`);
    }
    const result = runCompare(config, workloadSpec(options, seed), options.build, modes as Mode[]);
    print(options.json ? JSON.stringify(result, null, 2) : formatCompare(result));
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
