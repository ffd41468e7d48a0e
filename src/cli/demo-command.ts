// `memvirt demo` (npm start): the embedded default workload with 4K and with 2M pages, with progress.
import type { BuildName } from "../core/wasm.js";
import { effectiveConfig } from "../report/report.js";
import { drive } from "../util/steps.js";
import { DEMO_WORKLOAD, type DemoResult, demoSteps, formatDemo } from "./demo.js";
import type { CommandIo } from "./io.js";
import { attempt, finish } from "./outcome.js";
import { ProgressBar } from "./progress.js";

export async function demoCommand(
  flags: { json?: boolean; quiet?: boolean; build: BuildName },
  io: CommandIo,
): Promise<number> {
  const stream = io.progress(flags.quiet);
  const progress = ProgressBar.count(2 * DEMO_WORKLOAD.records, "records", !stream, stream);
  let result: DemoResult | undefined;
  const ending = await attempt(async () => {
    result = await drive(demoSteps(flags.build), {
      signal: io.signal,
      onProgress: (done) => progress.update(done),
    });
  });
  progress.stop();
  if (result) {
    // Each run's JSON carries the config it ran with, as every --json report does.
    const runs = Object.fromEntries(
      Object.entries(result.runs).map(([size, report]) => [
        size,
        { ...report, config: effectiveConfig(report) },
      ]),
    );
    io.print(flags.json ? JSON.stringify({ ...result, runs }, null, 2) : formatDemo(result));
  }
  return finish(ending);
}
