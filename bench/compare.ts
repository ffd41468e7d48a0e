// `npm run bench:compare`: memvirt against a minimal native C TLB-only replayer (bench/tlb-replayer.c,
// built here with the system compiler) on the same din trace, run interleaved, in CPU time; and
// memvirt's start-up against a bare `node -e 0`. `--quick` uses a 3 M-record trace and fewer rounds.
import { execFileSync } from "node:child_process";
import {
  closeSync,
  existsSync,
  mkdirSync,
  openSync,
  readFileSync,
  renameSync,
  writeFileSync,
  writeSync,
} from "node:fs";
import { cpus, tmpdir } from "node:os";
import { join } from "node:path";
import { formatRate, interleave, type PeerResult } from "./harness.js";

const quick = process.argv.includes("--quick");
const root = new URL("../../", import.meta.url).pathname;
const cli = join(root, "bin", "memvirt.js");
const work = join(tmpdir(), "memvirt-bench");
mkdirSync(work, { recursive: true });

/** The config that asks memvirt the C replayer's question: a 64-entry 4-way LRU DTLB, 4K pages. */
const TLB_ONLY = { tlb: { l1d: { entries: 64, ways: 4, policy: "lru" }, l1i: null, l2: null } };
const LS_DIN_RECORDS = 47_234;

function compileReplayer(): string {
  const binary = join(work, "tlb-replayer");
  const compiler = process.env.CC ?? "cc";
  execFileSync(compiler, ["-O2", "-o", binary, join(root, "bench", "tlb-replayer.c")], { stdio: "inherit" });
  return binary;
}

/** test/fixtures/ls.din (the real `ls /` data trace) repeated to about `records` lines, and its conversion. */
function traces(records: number): { din: string; own: string; records: number } {
  const copies = Math.ceil(records / LS_DIN_RECORDS);
  const din = join(work, `ls-${copies}x.din`);
  const own = join(work, `ls-${copies}x.mvt`);
  if (!existsSync(din)) {
    const fixture = readFileSync(join(root, "test", "fixtures", "ls.din"));
    const partial = `${din}.partial`;
    const fd = openSync(partial, "w");
    for (let i = 0; i < copies; i++) writeSync(fd, fixture);
    closeSync(fd);
    renameSync(partial, din);
  }
  if (!existsSync(own))
    execFileSync(process.execPath, [cli, "convert", din, "--format", "din", "--out", own]);
  return { din, own, records: copies * LS_DIN_RECORDS };
}

function ratioLine(name: string, ratio: number, goal: string, met: boolean): string {
  return `| ${name} | ${ratio.toFixed(2)}x | ${goal} | ${met ? "met" : "not met"} |`;
}

function main(): void {
  console.log(
    `memvirt bench:compare, ${new Date().toISOString().slice(0, 10)}, ${cpus()[0].model}, ${cpus().length} CPUs, Node ${process.version}`,
  );
  const replayer = compileReplayer();
  const config = join(work, "tlb-only.json");
  writeFileSync(config, JSON.stringify(TLB_ONLY));
  const { din, own, records } = traces(quick ? 3_000_000 : 30_000_000);
  const rounds = quick ? 3 : 5;
  const run = (file: string) => [cli, "run", "--config", config, "--trace", file, "--json", "--quiet"];
  const [c, memvirtDin, memvirtOwn] = interleave(
    [
      { name: "C replayer, din", command: replayer, args: [din], ops: records },
      { name: "memvirt, din", command: process.execPath, args: run(din), ops: records },
      { name: "memvirt, own format", command: process.execPath, args: run(own), ops: records },
    ],
    rounds,
  );
  // The two must answer the same question, or the ratio means nothing.
  const cMisses = JSON.parse(c.lastStdout).misses as number;
  const memvirtMisses = JSON.parse(memvirtDin.lastStdout).tlb.l1d.misses as number;
  if (cMisses !== memvirtMisses)
    throw new Error(`L1 DTLB misses differ: C ${cMisses}, memvirt ${memvirtMisses}`);

  const [node0, help, small] = interleave(
    [
      { name: "node -e 0", command: process.execPath, args: ["-e", "0"], ops: 0 },
      { name: "memvirt --help", command: process.execPath, args: [cli, "--help"], ops: 0 },
      {
        name: `memvirt run, ls.din (${LS_DIN_RECORDS} records)`,
        command: process.execPath,
        args: run(join(root, "test", "fixtures", "ls.din")),
        ops: 0,
      },
    ],
    quick ? 5 : 15,
  );

  const rate = (r: PeerResult) => formatRate(r.rate, 1e6, " M records/s");
  console.log(
    `\n${(records / 1e6).toFixed(1)} M-record din trace (ls.din repeated), ${rounds} interleaved rounds, per CPU-second; L1 DTLB misses agree (${cMisses})\n`,
  );
  const resident = (r: PeerResult) => (r.maxRssMiB ? `${r.maxRssMiB.median.toFixed(0)} MB` : "-");
  console.log("| run | rate, median (min–max) | resident |\n|---|---|---|");
  for (const r of [c, memvirtDin, memvirtOwn]) console.log(`| ${r.name} | ${rate(r)} | ${resident(r)} |`);
  const ms = (r: PeerResult) =>
    `${formatRate(r.rate, 1e-3, " ms", 0)}${r.maxRssMiB ? `, ${r.maxRssMiB.median.toFixed(0)} MB resident` : ""}`;
  console.log("\n| start-up | CPU, median (min–max) |\n|---|---|");
  for (const r of [node0, help, small]) console.log(`| ${r.name} | ${ms(r)} |`);

  const dinRatio = memvirtDin.rate.median / c.rate.median;
  const ownRatio = memvirtOwn.rate.median / c.rate.median;
  const startup = small.rate.median / node0.rate.median;
  console.log("\n| figure | measured | goal | |\n|---|---|---|---|");
  console.log(ratioLine("din replay, memvirt / C", dinRatio, ">= 0.8x", dinRatio >= 0.8));
  console.log(ratioLine("own format, memvirt / C", ownRatio, ">= 1.0x", ownRatio >= 1.0));
  console.log(ratioLine("start-up (ls.din run) / node -e 0, CPU", startup, "<= 1.5x", startup <= 1.5));
  if (small.maxRssMiB) {
    const rss = small.maxRssMiB.median;
    console.log(
      `| resident memory, ls.din run | ${rss.toFixed(0)} MB | <= 60 MB | ${rss <= 60 ? "met" : "not met"} |`,
    );
  }
  // Streaming keeps memory flat: the 30 M-record run (a 357 MB file, read in 2 MiB chunks) against
  // the 47 k-record one, both din.
  if (small.maxRssMiB && memvirtDin.maxRssMiB) {
    const growth = memvirtDin.maxRssMiB.median - small.maxRssMiB.median;
    console.log(
      `| resident memory, ${(records / 1e6).toFixed(0)} M-record din run less the ls.din run | ${growth.toFixed(0)} MB | flat (<= 8 MB) | ${growth <= 8 ? "met" : "not met"} |`,
    );
  }
}

main();
