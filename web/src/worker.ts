// The core in a Web Worker: runs, comparisons, the seed table and walks, through the package's browser
// entry. The page stays responsive; cancelling a run terminates this worker and starts another.
// The last run's machine stays here, so the Walk view walks the tables that run built.

import {
  buildOvercommitReport,
  buildReport,
  configToJson,
  DMA_WORKLOADS,
  explainWalk,
  formatCsv,
  formatSeedTable,
  loadCore,
  type Machine,
  MemvirtError,
  MODES,
  MULTI_VM_WORKLOADS,
  parseConfigText,
  platformOf,
  type ResolvedConfig,
  type RunReport,
  renderHtmlReport,
  replayTraceData,
  runCompare,
  runDmaWorkload,
  runSeedTable,
  runWorkload,
  Simulation,
  type TraceFormatOption,
  timelineCsv,
  VERSION,
} from "memvirt";
import { runMultiVmWorkload } from "../../src/cli/multi-vm.js";
import { dmaOperations, seedOf, workloadSpec } from "../../src/cli/options.js";
import { count } from "../../src/util/count.js";
import type { RecentAccess, Reply, Request, RunDone, SourceChoice } from "./protocol.js";

const post = (reply: Reply) => (self as unknown as Worker).postMessage(reply);
const progress = (fraction: number | null, text: string) => post({ type: "progress", fraction, text });

/** Compiled once per worker; every Simulation and host after it instantiates it. */
const ready = loadCore({ build: "release" });

/** The last run's machine and what its accesses were, for the Walk view. */
let last: { machine: Machine } | undefined;

const RECENT = 24;

/** Distinct pages among the records left in the record region (the last batch), most recent first. */
function recentAccesses(simulation: Simulation, count: number): RecentAccess[] {
  const view = simulation.recordView();
  const seen = new Set<string>();
  const recent: RecentAccess[] = [];
  for (let i = count - 1; i >= 0 && recent.length < RECENT; i--) {
    const la = view.getBigUint64(i * 16, true);
    const kind = view.getUint8(i * 16 + 8) & 0x7f;
    const cpu = view.getUint16(i * 16 + 10, true);
    const key = `${cpu}:${la >> 12n}`;
    if (seen.has(key) || kind > 2) continue;
    seen.add(key);
    recent.push({ cpu, la: `0x${la.toString(16)}`, kind });
  }
  return recent;
}

/** A report as `memvirt run --json` prints it: with the effective config as `config`. */
const withConfig = <R extends object>(report: R, config: ResolvedConfig) => ({
  ...report,
  config: configToJson(config),
});

function runFiles(report: RunReport, config: ResolvedConfig): RunDone["files"] {
  return [
    {
      name: "report.json",
      type: "application/json",
      text: `${JSON.stringify(withConfig(report, config), null, 2)}\n`,
    },
    { name: "report.csv", type: "text/csv", text: `${formatCsv([report])}\n` },
    { name: "report.html", type: "text/html", text: renderHtmlReport([report]) },
  ];
}

async function run(request: Extract<Request, { type: "run" }>): Promise<RunDone> {
  const started = performance.now();
  last = undefined;
  const config = parseConfigText(request.configText, "config.json");
  const source: SourceChoice = request.source;
  const seconds = () => (performance.now() - started) / 1000;
  if (
    source.kind === "workload" &&
    (MULTI_VM_WORKLOADS as readonly string[]).includes(source.workload.workload ?? "")
  ) {
    const options = source.workload;
    const { host, spec, failure } = runMultiVmWorkload(
      config,
      options,
      seedOf(options, config),
      {},
      (host, spec) => {
        // The host samples its timeline as simulated time passes: that is the run's progress.
        const samples = host.timeline;
        const push = samples.push.bind(samples);
        samples.push = (...items) => {
          const at = items[items.length - 1]?.seconds ?? 0;
          progress(spec.seconds > 0 ? Math.min(1, at / spec.seconds) : null, `${at.toFixed(1)} s simulated`);
          return push(...items);
        };
      },
    );
    const report = withConfig(
      buildOvercommitReport(host, { kind: "workload", ...spec }, VERSION, failure?.message),
      host.config,
    );
    last = { machine: host.machine };
    const csv = timelineCsv(host);
    const [header, ...rows] = csv
      .trim()
      .split("\n")
      .map((line) => line.split(","));
    const files = [
      { name: "report.json", type: "application/json", text: `${JSON.stringify(report, null, 2)}\n` },
      { name: "timeline.csv", type: "text/csv", text: csv },
    ];
    if (failure) throw Object.assign(failure, { report, files, multiVm: true });
    return {
      type: "run-done",
      report: report as unknown as Record<string, unknown>,
      multiVm: true,
      files,
      recent: [],
      cpus: host.machine.config.cpus,
      timeline: { header, rows },
      seconds: seconds(),
    };
  }

  const simulation = new Simulation(config);
  simulation.start();
  let lastBatch = 0;
  let report: RunReport;
  if (
    source.kind === "workload" &&
    (DMA_WORKLOADS as readonly string[]).includes(source.workload.workload ?? "")
  ) {
    const options = source.workload;
    const seed = seedOf(options, config);
    const name = source.workload.workload as (typeof DMA_WORKLOADS)[number];
    const operations = dmaOperations(options);
    const iommu = runDmaWorkload(platformOf(simulation), { name, operations, seed });
    report = buildReport(simulation, { kind: "workload", name, operations, seed });
    report.iommu = iommu;
  } else if (source.kind === "workload") {
    const options = source.workload;
    const spec = workloadSpec(options, seedOf(options, config), config.guest.levels);
    runWorkload(simulation, spec, (batch, done) => {
      lastBatch = batch;
      progress(done / spec.records, `${count(done)} of ${count(spec.records)} records`);
    });
    report = buildReport(simulation, { kind: "workload", ...spec });
  } else {
    // A trace file, read from the Blob in chunks as the core consumes them: constant memory.
    const runSource: RunReport["source"] = { kind: "trace", file: source.name, format: source.format };
    let before = 0;
    let failure: MemvirtError | undefined;
    const lastPosition: { position?: { format: string; records: number } } = {};
    try {
      const result = await replayTraceData(simulation, source.data, source.format as TraceFormatOption, {
        name: source.name,
        last: lastPosition as never,
        onProgress: (position, fileBytes) => {
          lastBatch = position.records - before;
          before = position.records;
          progress(
            source.data.size > 0 ? Math.min(1, fileBytes / source.data.size) : null,
            `${count(position.records)} records, ${(fileBytes / 2 ** 20).toFixed(1)} of ${(source.data.size / 2 ** 20).toFixed(1)} MiB`,
          );
        },
      });
      runSource.format = result.format;
      runSource.lines = result.lines;
      runSource.records = result.records;
    } catch (error) {
      if (!(error instanceof MemvirtError)) throw error;
      failure = error;
      if (lastPosition.position) {
        runSource.format = lastPosition.position.format;
        runSource.records = lastPosition.position.records;
      }
    }
    report = buildReport(simulation, runSource, failure?.message);
    if (failure)
      throw Object.assign(failure, {
        report: withConfig(report, simulation.config),
        files: runFiles(report, simulation.config),
      });
  }
  last = { machine: simulation.machine };
  return {
    type: "run-done",
    report: withConfig(report, simulation.config),
    multiVm: false,
    files: runFiles(report, simulation.config),
    recent: recentAccesses(simulation, lastBatch),
    cpus: simulation.machine.config.cpus,
    seconds: seconds(),
  };
}

async function handle(request: Request): Promise<Reply> {
  await ready;
  switch (request.type) {
    case "run":
      return run(request);
    case "walk": {
      if (!last) throw new MemvirtError("walk: run something first: the walk reads the tables a run built");
      const la = BigInt(request.la);
      const walk = explainWalk(last.machine, request.cpu, la, request.kind, { cold: request.cold });
      return { type: "walk-done", walk };
    }
    case "compare": {
      const started = performance.now();
      const config = parseConfigText(request.configText, "config.json");
      const options = request.workload;
      const spec = workloadSpec(options, seedOf(options, config), config.guest.levels);
      let done = 0;
      const result = runCompare(config, spec, "release", MODES, (row) => {
        done++;
        progress(done / 14, `${row.mode} ${row.guestPageSize}/${row.hostPageSize ?? "-"} done`);
      });
      return {
        type: "compare-done",
        result,
        html: renderHtmlReport([], result),
        seconds: (performance.now() - started) / 1000,
      };
    }
    case "seed-table": {
      const started = performance.now();
      const table = runSeedTable("release", (row, done, total) =>
        progress(done / total, `${row.technique} measured`),
      );
      return {
        type: "seed-table-done",
        rows: table.rows,
        text: formatSeedTable(table),
        json: JSON.stringify(table, null, 2),
        seconds: (performance.now() - started) / 1000,
      };
    }
  }
}

self.onmessage = async ({ data }: MessageEvent<Request>) => {
  try {
    post(await handle(data));
  } catch (error) {
    const extra = error as { report?: unknown; files?: RunDone["files"]; multiVm?: boolean };
    post({
      type: "error",
      message: error instanceof Error ? error.message : String(error),
      report: extra.report,
      files: extra.files,
      multiVm: extra.multiVm,
    });
  }
};
