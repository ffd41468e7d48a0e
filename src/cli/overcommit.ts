// `memvirt run` with a multi-VM workload: an overcommitted host (src/overcommit) instead of one VM.
import type { ResolvedConfig } from "../config/config.js";
import { MemvirtError } from "../core/machine.js";
import { defaultOvercommit } from "../overcommit/config.js";
import { OvercommitHost } from "../overcommit/host.js";
import { buildOvercommitReport, formatOvercommitReport, timelineCsv } from "../overcommit/report.js";
import { VERSION } from "../report/report.js";
import { defaultMultiVmOptions, MultiVm, type MultiVmWorkloadName } from "../workload/multivm.js";
import { numberOption, type RunOptions } from "./main.js";

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

export function runOvercommit(
  base: ResolvedConfig,
  options: RunOptions,
  seed: number,
  print: (text: string) => void,
  write: (path: string, text: string) => void,
): number {
  const config = { ...base };
  if (!config.overcommit) {
    // A multi-VM workload always runs on the overcommitted host; without the section, its defaults.
    if (config.mode !== "ept" && config.mode !== "npt")
      throw new MemvirtError('config key "mode": the multi-VM workloads need "ept" or "npt"');
    if (config.host.pageSize !== "4K")
      throw new MemvirtError(
        'config key "host.pageSize": the multi-VM workloads reclaim 4 KiB pages: use "4K"',
      );
    config.overcommit = defaultOvercommit();
  }
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
