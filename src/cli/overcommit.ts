// `memvirt run` with a multi-VM workload: an overcommitted host (src/overcommit) instead of one VM.
import type { ResolvedConfig } from "../config/config.js";
import { MemvirtError } from "../core/machine.js";
import { OvercommitHost } from "../overcommit/host.js";
import { buildOvercommitReport, formatOvercommitReport, timelineCsv } from "../overcommit/report.js";
import { VERSION } from "../report/report.js";
import { MultiVm } from "../workload/multivm.js";
import type { RunOptions } from "./main.js";
import { multiVmOptions, overcommitConfig } from "./options.js";

export function runOvercommit(
  base: ResolvedConfig,
  options: RunOptions,
  seed: number,
  print: (text: string) => void,
  write: (path: string, text: string) => void,
): number {
  const config = overcommitConfig(base);
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
  const report = buildOvercommitReport(host, { kind: "workload", ...spec }, VERSION, failure?.message);
  print(options.json ? JSON.stringify(report, null, 2) : formatOvercommitReport(report));
  if (options.timeline) write(options.timeline, timelineCsv(host));
  if (failure) {
    process.stderr.write(`memvirt: ${failure.message}\n`);
    return failure.exitCode;
  }
  return 0;
}
