// How bench/ measures: rates per CPU-second of this process (user + system time from
// process.cpuUsage()), as the median of several samples with their min and max; other processes by
// the CPU time the kernel charged them. CPU time holds on a shared machine where wall-clock time does
// not: a busy neighbour slows the wall clock, not the instructions a run needs. Peers are run
// interleaved (A B A B ...) so that drift in the machine's state affects both alike.
import { spawnSync } from "node:child_process";
import { existsSync } from "node:fs";

/** A rate measured several times: the median, and the spread around it. */
export interface Rate {
  median: number;
  min: number;
  max: number;
  samples: number;
}

/** One line of the bench's table. */
export interface Row {
  name: string;
  unit: string;
  rate: Rate;
  /** The same work on the TypeScript reference model. */
  reference?: Rate;
  /** The goal: a rate, or a ratio when below 1e6. */
  target?: number;
}

/** CPU seconds (user + system) this process, all its threads included, has used so far. */
export function cpuSeconds(): number {
  const { user, system } = process.cpuUsage();
  return (user + system) / 1e6;
}

/** The median of several measurements, with their min and max. */
export function summarize(values: number[]): Rate {
  const sorted = [...values].sort((a, b) => a - b);
  const mid = sorted.length >> 1;
  const median = sorted.length % 2 ? sorted[mid] : (sorted[mid - 1] + sorted[mid]) / 2;
  return { median, min: sorted[0], max: sorted[sorted.length - 1], samples: sorted.length };
}

export interface MeasureOptions {
  /** Samples taken (the median of them is the figure). */
  samples?: number;
  /** CPU seconds each sample runs for at least, calling `fn` as often as that takes. */
  sampleSeconds?: number;
  /** Calls before the first sample, so V8 has optimized the Wasm and JS on the path. */
  warmupCalls?: number;
}

/**
 * Operations per CPU-second of `fn`, which does `opsPerCall` operations each call. Work goes in
 * batches of calls because V8 tiers a Wasm function up only between calls.
 */
export function measureRate(opsPerCall: number, fn: () => void, options: MeasureOptions = {}): Rate {
  const { samples = 7, sampleSeconds = 0.25, warmupCalls = 3 } = options;
  for (let i = 0; i < warmupCalls; i++) fn();
  const rates: number[] = [];
  for (let s = 0; s < samples; s++) {
    const start = cpuSeconds();
    let calls = 0;
    let spent = 0;
    do {
      fn();
      calls++;
      spent = cpuSeconds() - start;
    } while (spent < sampleSeconds);
    rates.push((calls * opsPerCall) / spent);
  }
  return summarize(rates);
}

/** What one run of another process cost: CPU seconds (user + system), and its peak resident memory. */
export interface ProcessCost {
  cpuSeconds: number;
  /** Peak resident set in MiB, where GNU time is installed to report it. */
  maxRssMiB?: number;
  stdout: string;
}

const GNU_TIME = "/usr/bin/time";

/**
 * Runs a command to completion and returns the CPU time the kernel charged it, to the millisecond:
 * bash's `times` after the command gives its children's time (GNU time's own %U and %S are rounded to
 * 10 ms, a tenth of a small run). Where GNU time is installed it runs that bash and reports the peak
 * resident set, which is the command's (a few MB of bash's own are below it); bash and GNU time are
 * not counted in the CPU time.
 */
export function runProcess(command: string, args: string[]): ProcessCost {
  const gnu = existsSync(GNU_TIME);
  const timed = ["bash", "-c", '"$@"; status=$?; times >&2; exit $status', "_", command, ...args];
  const result = gnu
    ? spawnSync(GNU_TIME, ["-f", "%M", ...timed], { maxBuffer: 1 << 28, encoding: "utf8" })
    : spawnSync(timed[0], timed.slice(1), { maxBuffer: 1 << 28, encoding: "utf8" });
  if (result.status !== 0) {
    throw new Error(`${command} ${args.join(" ")} exited with ${result.status}: ${result.stderr}`);
  }
  const lines = result.stderr.trim().split("\n");
  // `times` prints the shell's own times, then its children's: "0m0.041s 0m0.012s".
  const seconds = (text: string) => {
    const m = /(\d+)m([\d.]+)s/.exec(text);
    return m ? Number(m[1]) * 60 + Number(m[2]) : Number.NaN;
  };
  const [user, system] = lines[lines.length - (gnu ? 2 : 1)].split(" ");
  const cpuSeconds = seconds(user) + seconds(system);
  if (!gnu) return { cpuSeconds, stdout: result.stdout };
  return { cpuSeconds, maxRssMiB: Number(lines[lines.length - 1]) / 1024, stdout: result.stdout };
}

/** A peer in an interleaved comparison: how to run it, and the unit of work one run does. */
export interface Peer {
  name: string;
  command: string;
  args: string[];
  /** Operations one run does (records, say); 0 to report CPU seconds per run instead of a rate. */
  ops: number;
}

export interface PeerResult {
  name: string;
  /** Operations per CPU-second (or CPU seconds per run when ops is 0). */
  rate: Rate;
  maxRssMiB?: Rate;
  lastStdout: string;
}

/** Runs the peers `rounds` times, interleaved, and summarizes each one's runs. */
export function interleave(peers: Peer[], rounds: number): PeerResult[] {
  const costs = peers.map(() => [] as ProcessCost[]);
  for (let r = 0; r < rounds; r++) {
    peers.forEach((peer, i) => {
      costs[i].push(runProcess(peer.command, peer.args));
    });
  }
  return peers.map((peer, i) => {
    const runs = costs[i];
    const rss = runs.map((c) => c.maxRssMiB).filter((v): v is number => v !== undefined);
    return {
      name: peer.name,
      rate: summarize(runs.map((c) => (peer.ops ? peer.ops / c.cpuSeconds : c.cpuSeconds))),
      maxRssMiB: rss.length ? summarize(rss) : undefined,
      lastStdout: runs[runs.length - 1].stdout,
    };
  });
}

/** "12.3 M/s (11.9–12.8)": a rate with its spread. */
export function formatRate(rate: Rate, scale = 1e6, suffix = " M/s", digits = 2): string {
  const f = (v: number) => (v / scale).toFixed(digits);
  return `${f(rate.median)}${suffix} (${f(rate.min)}–${f(rate.max)})`;
}
