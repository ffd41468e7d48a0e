// The memvirt command line. `run` replays a trace or a workload on a configured machine; `compare` runs
// one workload under every technique; `convert`, `sweep`, `worker`, `presets`, `web` (the playground)
// and `demo` (npm start).
// This module only declares the commands: each one's work is imported when it runs, so `--help` and a
// small run load no more than they use (no IOMMU, overcommit, HTML reports, worker pool or xz decoder
// until a command needs them).
import { Command, CommanderError, Option } from "commander";
import type { BuildName } from "../core/wasm.js";
import { TRACE_FORMATS, type TraceFormatOption } from "../trace/formats.js";
import { VERSION } from "../version.js";
import { WORKLOAD_CHOICES, WORKLOAD_FAMILIES } from "../workload/catalog.js";
import type { CommandIo } from "./io.js";
import { endingOf, finish } from "./outcome.js";
import { stderrIsTerminal, writeOut } from "./stdio.js";
import { registerSweepCommands } from "./sweep.js";

export { afterOutput } from "./stdio.js";

export interface MainOptions {
  /** Stops a run between batches (instead of SIGINT and SIGTERM, which main handles otherwise). */
  signal?: AbortSignal;
  /** Where progress bars draw (default: stderr, when it is a terminal). */
  progress?: NodeJS.WriteStream;
}

/** Commander's accumulator for an option given several times. */
function collect(value: string, previous: string[] = []): string[] {
  return [...previous, value];
}

/**
 * Runs `work` with a stop signal: the caller's, or one that SIGINT and SIGTERM abort (the first asks the
 * run to stop between batches; a second one ends the process at once, as if it had not been caught).
 */
async function withSignals<T>(given: AbortSignal | undefined, work: (signal: AbortSignal) => Promise<T>) {
  if (given) return work(given);
  const controller = new AbortController();
  const onSignal = (signal: NodeJS.Signals) => {
    if (!controller.signal.aborted) {
      controller.abort(signal);
      return;
    }
    process.removeListener("SIGINT", onSignal);
    process.removeListener("SIGTERM", onSignal);
    process.kill(process.pid, signal);
  };
  process.on("SIGINT", onSignal);
  process.on("SIGTERM", onSignal);
  try {
    return await work(controller.signal);
  } finally {
    process.removeListener("SIGINT", onSignal);
    process.removeListener("SIGTERM", onSignal);
  }
}

export async function main(
  argv: string[],
  print: (text: string) => void = (t) => writeOut(`${t}\n`),
  options: MainOptions = {},
): Promise<number> {
  const program = new Command();
  program
    .name("memvirt")
    .description("Cycle-level emulator of address translation and memory virtualization")
    .version(VERSION)
    .exitOverride()
    .configureOutput({
      writeOut,
      writeErr: (text) => process.stderr.write(text),
      // A usage error is a user error like any other: one line, `memvirt: ` and the flag it names.
      outputError: (text, write) =>
        write(
          `memvirt: ${text
            .replace(/^error: /, "")
            .trim()
            .replace(/\s*\n\s*/g, " ")}\n`,
        ),
    });

  let exitCode = 0;
  const io = (signal: AbortSignal): CommandIo => ({
    print,
    signal,
    progress: (quiet) => {
      if (quiet) return undefined;
      if (options.progress) return options.progress.isTTY ? options.progress : undefined;
      return stderrIsTerminal() ? process.stderr : undefined;
    },
  });
  /** An action that runs under signals and sets the exit code. */
  const action =
    <A extends unknown[]>(work: (io: CommandIo, ...args: A) => Promise<number>) =>
    async (...args: A) => {
      exitCode = await withSignals(options.signal, (signal) => work(io(signal), ...args));
    };

  const buildOption = new Option("--build <build>", "WebAssembly build")
    .choices(["release", "debug"])
    .default("release");
  const formatOption = () =>
    new Option("-f, --format <format>", "trace format (default auto: detected from the content)").choices([
      "auto",
      ...TRACE_FORMATS,
    ]);
  const recordsHelp = WORKLOAD_FAMILIES.map(
    (family) => `${family.family}: ${family.records.unit}, default ${family.records.default}`,
  ).join("; ");

  /** The config, workload, output and build options `run` and `compare` share. */
  const shared = (command: Command, workloadHelp = "workload") => {
    const workload = new Option("-w, --workload <name>", workloadHelp).choices([...WORKLOAD_CHOICES]);
    return command
      .option("-c, --config <file>", "machine and guest configuration (JSON); its keys override --preset's")
      .option("--preset <name>", "start from a CPU preset (memvirt presets lists them)")
      .option("--print-config", "print the effective config as JSON (what --config reads back) and exit")
      .addOption(workload)
      .option("--records <n>", `workload: how much to run (${recordsHelp})`)
      .option(
        "--footprint <bytes>",
        "workload: bytes of address space touched (default 256M; pt-churn: per program, 1M; mmap-churn: heap, 16M; threads-shootdown: shared region, 8M)",
      )
      .option("--stride <bytes>", "sequential/strided: bytes between accesses")
      .option("--zipf <s>", "zipf: the exponent (default 0.99)")
      .option("--write-fraction <f>", "workload: share of writes (default 0.3)")
      .option("--seed <n>", "seed of the workload (default: the config's seed)")
      .option("--json", "print one JSON object (with the effective config as `config`)")
      .option("--csv", "print CSV: a header row and one row per run")
      .option("--report <file.html>", "also write a self-contained HTML report with charts")
      .option("-q, --quiet", "no progress bar")
      .addOption(buildOption);
  };

  shared(
    program
      .command("run")
      .description("replay a trace file or run a workload and report translation costs")
      .option("-t, --trace <file>", "trace file to replay; more than once: one VM per trace", collect)
      .addOption(formatOption())
      .option(
        "--checkpoint <file>",
        "save the whole simulation state to FILE, atomically (with --checkpoint-every)",
      )
      .option("--checkpoint-every <n>", "records between checkpoints")
      .option("--resume <file>", "continue the run saved in a checkpoint")
      .option("--force-trace", "--resume: continue on a trace that is not the checkpoint's")
      .option("--vms <n>", "multi-VM workloads: number of VMs")
      .option("--pages-per-vm <n>", "multi-VM workloads: 4 KiB pages of each VM's application")
      .option("--shared-fraction <f>", "identical-vms: share of pages from the common OS image")
      .option("--zero-fraction <f>", "identical-vms: share of zero pages")
      .option("--seconds <s>", "several VMs: simulated seconds the run lasts")
      .option("--timeline <file.csv>", "several VMs: write the memory timeline as CSV")
      .option("--check-invariants", "several VMs: check for stale translations after every overcommit step"),
  ).action(
    action(async (commandIo, flags) => (await import("./run.js")).runCommand(flags as never, commandIo)),
  );

  shared(
    program
      .command("compare")
      .description("run one workload under native, pv, shadow, ept and npt with each page-size pairing")
      .option("--modes <list>", "comma-separated modes to include (default: all)")
      .option("--seed-table", "the comparison table of memory-virtualization techniques, measured"),
    "workload (default zipf)",
  ).action(
    action(async (commandIo, flags) =>
      (await import("./compare-command.js")).compareCommand(flags as never, commandIo),
    ),
  );

  program
    .command("convert")
    .description("convert a trace in any format to memvirt's compact binary format")
    .argument("<in>", "trace to read")
    .addOption(formatOption())
    .requiredOption("-o, --out <file>", "memvirt trace to write")
    .option("--json", "print one JSON object")
    .option("-q, --quiet", "no progress bar")
    .addOption(buildOption)
    .action(
      action(
        async (
          commandIo,
          input: string,
          flags: {
            format?: TraceFormatOption;
            out: string;
            json?: boolean;
            quiet?: boolean;
            build: BuildName;
          },
        ) => (await import("./convert-command.js")).convertCommand(input, flags, commandIo),
      ),
    );

  registerSweepCommands(program, {
    buildOption,
    print,
    setExitCode: (code) => {
      exitCode = code;
    },
  });

  program
    .command("presets")
    .description("list the CPU presets --preset takes (their sources: docs/presets.md)")
    .option("--json", "print the presets' files as one JSON array")
    .action(async (flags: { json?: boolean }) => {
      const { formatPresets, listPresets } = await import("./presets.js");
      const presets = listPresets();
      print(flags.json ? JSON.stringify(presets, null, 2) : formatPresets(presets));
    });

  program
    .command("web")
    .description("serve the playground (built by npm run web:build) on 127.0.0.1 and print its URL")
    .option("-p, --port <n>", "port to listen on (0: any free port)", "4173")
    .option("--dir <dir>", "serve a site built elsewhere (default: the package's web/dist)")
    .action(async (flags: { port: string; dir?: string }) => {
      // Loaded only for this command: the others pay nothing for the HTTP server.
      const { runWeb } = await import("./web.js");
      const { integerOption } = await import("./options.js");
      const port = integerOption(flags.port, "port", 0, 65535) ?? 4173;
      exitCode = await runWeb(port, print, flags.dir);
    });

  program
    .command("demo")
    .description("run the embedded default workload with 4K and with 2M pages and compare them")
    .option("--json", "print one JSON object")
    .option("-q, --quiet", "no progress bar")
    .addOption(buildOption)
    .action(
      action(async (commandIo, flags: { json?: boolean; quiet?: boolean; build: BuildName }) =>
        (await import("./demo-command.js")).demoCommand(flags, commandIo),
      ),
    );

  try {
    await program.parseAsync(argv);
    return exitCode;
  } catch (error) {
    if (error instanceof CommanderError) return error.exitCode === 0 ? 0 : 2;
    return finish(endingOf(error));
  }
}
