// Trace replay in the browser against Node, on the traces the package ships (examples/). The browser
// side is the playground's own worker (web/src/worker.ts as Vite builds it) in headless Chromium,
// posted the trace as a Blob, exactly as the Run view does. Node's side replays the same trace two ways,
// each in a fresh process per sample: the file (replayTrace, as `memvirt run` does: compressed input
// is inflated on a decode thread) and the bytes from memory (replayTraceData, the browser's path).
// Every replay is a fresh Simulation and ends with the report and its CSV and HTML, as the worker's.
//
// Rates are records per CPU-second (bench/harness.ts): Node's from process.cpuUsage(), the browser's
// from the CPU time the kernel charged every process of Chromium's tree (/proc/PID/stat), so the
// browser pays for all it does, not only the worker thread. Samples alternate browser and Node,
// medians with min-max. Run with `npm run bench:web` (`--quick` for fewer samples).
import { execFileSync } from "node:child_process";
import { copyFileSync, mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import type { AddressInfo } from "node:net";
import { tmpdir } from "node:os";
import { join, resolve } from "node:path";
import { fileURLToPath } from "node:url";
import { build } from "vite";
import { siteServer } from "../src/cli/web.js";
import {
  buildReport,
  defaultConfig,
  formatCsv,
  renderHtmlReport,
  replayTraceData,
  Simulation,
} from "../src/index.js";
import { replayTrace } from "../src/trace/replay.js";
import { launchChromium } from "../test/chromium.js";
import { cpuSeconds, formatRate, type Rate, summarize } from "./harness.js";

const ROOT = resolve(fileURLToPath(new URL("../..", import.meta.url)));
const REPEATED = "ls.lk-x10.lk";
const quick = process.argv.includes("--quick");
const ROUNDS = quick ? 3 : 7;
/** CPU seconds a sample runs for at least, replaying the trace as often as that takes. */
const SAMPLE_SECONDS = quick ? 0.3 : 0.6;
/** The shipped traces as the site ships them, and the xz one inflated and repeated ten times (2 M
 * records of lackey text), where a replay's fixed costs (a fresh Simulation, the report) weigh less. */
const TRACES = ["ls.lk.xz", "ls-head.lk", REPEATED];
const CLOCK_TICKS = 100;
/** CPU seconds of replays before measuring, on either side. */
const WARMUP_SECONDS = 1;

/** CPU seconds (user + system) every process under `root` (not itself) has used: here, Chromium's. */
function treeCpuSeconds(root: number): number {
  const stats = new Map<number, { parent: number; ticks: number }>();
  for (const entry of readdirSync("/proc")) {
    if (!/^\d+$/.test(entry)) continue;
    let text: string;
    try {
      text = readFileSync(`/proc/${entry}/stat`, "utf8");
    } catch {
      continue;
    }
    // The command name may hold spaces and parentheses: the fields start after the last ")".
    const fields = text.slice(text.lastIndexOf(")") + 2).split(" ");
    stats.set(Number(entry), { parent: Number(fields[1]), ticks: Number(fields[11]) + Number(fields[12]) });
  }
  const inTree = (pid: number): boolean => {
    for (let p = pid, hops = 0; p > 1 && hops < 64; hops++) {
      if (p === root) return hops > 0;
      p = stats.get(p)?.parent ?? 0;
    }
    return false;
  };
  let ticks = 0;
  for (const [pid, stat] of stats) if (inTree(pid)) ticks += stat.ticks;
  return ticks / CLOCK_TICKS;
}

/**
 * One Node sample in a process of its own (this file with --node-side), so that nothing of the
 * bench's own heap (Vite, Playwright) weighs on it: warm-up replays, then replays for SAMPLE_SECONDS
 * of CPU. `file` replays the path as `memvirt run` does; `bytes` the same data from memory, as the
 * browser does. Returns records per CPU-second.
 */
function nodeSample(trace: string, path: string, how: "file" | "bytes"): number {
  const out = execFileSync(
    process.execPath,
    [fileURLToPath(import.meta.url), "--node-side", trace, path, how, String(SAMPLE_SECONDS)],
    {
      encoding: "utf8",
    },
  );
  const { records, seconds } = JSON.parse(out) as { records: number; seconds: number };
  return records / seconds;
}

async function nodeSide(
  trace: string,
  path: string,
  how: "file" | "bytes",
  sampleSeconds: number,
): Promise<void> {
  const bytes = readFileSync(path);
  const replay = async (): Promise<number> => {
    const simulation = new Simulation(defaultConfig(), { build: "release" });
    simulation.start();
    const result =
      how === "file"
        ? await replayTrace(simulation, path, "auto")
        : await replayTraceData(simulation, new Blob([bytes]), "auto", { name: trace });
    const report = buildReport(simulation, { kind: "trace", file: trace, format: result.format });
    formatCsv([report]);
    renderHtmlReport([report]);
    return report.accesses;
  };
  // Warm-up: V8 optimizes the core and the stream code over the first replays.
  const warm = cpuSeconds();
  while (cpuSeconds() - warm < WARMUP_SECONDS) await replay();
  const start = cpuSeconds();
  let records = 0;
  do records += await replay();
  while (cpuSeconds() - start < sampleSeconds);
  process.stdout.write(JSON.stringify({ records, seconds: cpuSeconds() - start }));
}

async function main(): Promise<void> {
  const work = mkdtempSync(join(tmpdir(), "memvirt-bench-web-"));
  const site = join(work, "site");
  await build({
    configFile: join(ROOT, "web", "vite.config.ts"),
    logLevel: "error",
    build: { outDir: site },
  });
  const worker = readdirSync(join(site, "assets")).find((f) => /^worker-.*\.js$/.test(f));
  if (!worker) throw new Error("the built site has no worker bundle");
  const server = siteServer(site);
  await new Promise<void>((done) => server.listen(0, "127.0.0.1", done));
  const origin = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
  const browser = await launchChromium();
  // playwright-core starts Chromium as a child of this process: its tree is everything under us.
  const browserPid = process.pid;
  const page = await browser.newPage();
  await page.goto(`${origin}/`);
  // The worker as the page starts it, and the traces as the site ships them (fetched once, as Blobs);
  // replays of a trace, each in a fresh Simulation, with the report.
  const assets = readdirSync(join(site, "assets"));
  const inflated = execFileSync("xz", ["-dc", join(ROOT, "examples", "ls.lk.xz")], { maxBuffer: 1 << 26 });
  writeFileSync(join(site, "assets", REPEATED), Buffer.concat(Array.from({ length: 10 }, () => inflated)));
  const paths: Record<string, string> = {};
  const shipped = Object.fromEntries(
    TRACES.map((trace) => {
      const [stem, ext] = [trace.slice(0, trace.lastIndexOf(".")), trace.slice(trace.lastIndexOf(".") + 1)];
      let file = assets.find((f) => f.startsWith(`${stem}-`) && f.endsWith(`.${ext}`));
      if (trace === REPEATED) file = REPEATED;
      else if (!file) {
        // Served beside the site for the bench, as a file picked in the Run view would be read.
        file = trace;
        copyFileSync(join(ROOT, "examples", trace), join(site, "assets", file));
      }
      paths[trace] = trace === REPEATED ? join(site, "assets", REPEATED) : join(ROOT, "examples", trace);
      return [trace, `${origin}/assets/${file}`];
    }),
  );
  await page.evaluate(
    async ({ url, traces }) => {
      const w = new Worker(url, { type: "module" });
      const blobs: Record<string, Blob> = {};
      for (const [name, at] of Object.entries(traces)) blobs[name] = await (await fetch(at)).blob();
      (globalThis as unknown as { bench: unknown }).bench = async (name: string, times: number) => {
        let records = 0;
        for (let i = 0; i < times; i++) {
          const reply = await new Promise<{ type: string; report?: { accesses: number }; message?: string }>(
            (done) => {
              w.onmessage = ({ data: message }) => {
                if (message.type !== "progress") done(message);
              };
              w.postMessage({
                type: "run",
                configText: "{}",
                source: { kind: "trace", name, data: blobs[name], format: "auto" },
              });
            },
          );
          if (reply.type !== "run-done") throw new Error(reply.message);
          records += reply.report?.accesses ?? 0;
        }
        return records;
      };
    },
    { url: `${origin}/assets/${worker}`, traces: shipped },
  );

  console.log(
    `Trace replay, browser (the playground's worker in Chromium ${browser.version()}) against Node ${process.version}, records per CPU-second, median (min-max) of ${ROUNDS} interleaved samples; default config (native):`,
  );
  for (const trace of TRACES) {
    const browserReplay = (times: number): Promise<number> =>
      page.evaluate(
        ({ name, n }) =>
          (globalThis as unknown as { bench: (a: string, b: number) => Promise<number> }).bench(name, n),
        { name: trace, n: times },
      );

    // Warm the browser's worker as long as Node's (V8 tiers the core up), and size its batches.
    const before = treeCpuSeconds(browserPid);
    let warmups = 0;
    while (treeCpuSeconds(browserPid) - before < WARMUP_SECONDS) {
      await browserReplay(1);
      warmups++;
    }
    const perReplay = Math.max(0.005, (treeCpuSeconds(browserPid) - before) / warmups);
    const batch = Math.max(1, Math.ceil(SAMPLE_SECONDS / perReplay));
    const browserRates: number[] = [];
    const nodeRates: number[][] = [[], []];
    for (let round = 0; round < ROUNDS; round++) {
      const start = treeCpuSeconds(browserPid);
      const records = await browserReplay(batch);
      browserRates.push(records / (treeCpuSeconds(browserPid) - start));
      for (const [i, how] of (["file", "bytes"] as const).entries())
        nodeRates[i].push(nodeSample(trace, paths[trace], how));
    }
    const browserRate: Rate = summarize(browserRates);
    console.log(
      `  ${trace.padEnd(13)} browser (Blob, the Run view's path)        ${formatRate(browserRate)}`,
    );
    (
      [
        "Node, memvirt run's path (file, decode thread)",
        "Node, the browser's path (bytes in memory)",
      ] as const
    ).forEach((label, i) => {
      const ratio = summarize(browserRates.map((rate, r) => rate / nodeRates[i][r]));
      console.log(
        `  ${"".padEnd(13)} ${label.padEnd(44)} ${formatRate(summarize(nodeRates[i]))}  browser/Node ${ratio.median.toFixed(2)}x (${ratio.min.toFixed(2)}-${ratio.max.toFixed(2)}), goal 0.5x: ${ratio.median >= 0.5 ? "met" : "not met"}`,
      );
    });
  }
  await browser.close();
  server.close();
  rmSync(work, { recursive: true, force: true });
}

const side = process.argv.indexOf("--node-side");
if (side > 0) {
  const [trace, path, how, seconds] = process.argv.slice(side + 1);
  await nodeSide(trace, path, how as "file" | "bytes", Number(seconds));
} else {
  await main();
}
