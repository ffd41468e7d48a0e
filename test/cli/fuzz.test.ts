// Fuzzing the CLI (issue 16): mutated traces of every format, mutated configs and random flags. Every
// run ends with exit 0, or exit 2 and a one-line message; never a stack trace, an internal error (exit
// 70, which a Wasm trap would be) or a hang. In this process (test/cli/in-process.ts), so a case costs
// a run, not a spawn.
import { readFileSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { gzipSync } from "node:zlib";
import fc from "fast-check";
import { describe, expect, it } from "vitest";
import { runs } from "../fc-runs.js";
import { ownTraceBytes, randomRecords } from "../trace/own-trace.js";
import { runMemvirt as run, scratch } from "./in-process.js";

const fixture = (name: string) => new URL(`../fixtures/${name}`, import.meta.url).pathname;
const { dir } = scratch("memvirt-fuzz-");
/** A run that takes longer than this on a case this small is a hang. */
const TIME_BOUND_MS = 20_000;

const headLines = (name: string, lines: number) =>
  Buffer.from(readFileSync(fixture(name), "utf8").split("\n").slice(0, lines).join("\n"));
const lackey = headLines("ls-head.lk", 300);

/** One small trace of each format, and compressed ones: what the mutations start from. */
const SEEDS: Record<string, Buffer> = {
  lackey,
  din: headLines("ls.din", 300),
  pinatrace: Buffer.concat([headLines("ls-head.pinatrace", 300), Buffer.from("\n#eof\n")]),
  memvirt: ownTraceBytes(randomRecords(200, 64, 2)),
  "champsim.xz": readFileSync(fixture("ls-head.champsim.xz")),
  "champsim.gz": readFileSync(fixture("ls-head.champsim.gz")),
  "lackey.gz": gzipSync(lackey),
};

/** Byte-level damage: flips, overwrites, cuts, insertions and repeats. */
const mutation = fc.oneof(
  fc.record({ kind: fc.constant("flip" as const), at: fc.nat(), bit: fc.nat(7) }),
  fc.record({
    kind: fc.constant("set" as const),
    at: fc.nat(),
    bytes: fc.uint8Array({ minLength: 1, maxLength: 16 }),
  }),
  fc.record({ kind: fc.constant("cut" as const), at: fc.nat() }),
  fc.record({ kind: fc.constant("insert" as const), at: fc.nat(), bytes: fc.uint8Array({ maxLength: 32 }) }),
  fc.record({ kind: fc.constant("repeat" as const), at: fc.nat(), length: fc.nat(200) }),
);
type Mutation = typeof mutation extends fc.Arbitrary<infer M> ? M : never;

function mutate(bytes: Buffer, mutations: Mutation[]): Buffer {
  let out = Buffer.from(bytes);
  for (const m of mutations) {
    const at = out.length === 0 ? 0 : m.at % (out.length + 1);
    if (m.kind === "flip" && at < out.length) out[at] ^= 1 << m.bit;
    else if (m.kind === "set")
      out = Buffer.concat([out.subarray(0, at), m.bytes, out.subarray(at + m.bytes.length)]);
    else if (m.kind === "cut") out = out.subarray(0, at);
    else if (m.kind === "insert") out = Buffer.concat([out.subarray(0, at), m.bytes, out.subarray(at)]);
    else if (m.kind === "repeat")
      out = Buffer.concat([out.subarray(0, at), out.subarray(at, at + m.length), out.subarray(at)]);
  }
  return out;
}

let cases = 0;

/** Runs memvirt and holds it to the promise: exit 0, or exit 2 with one `memvirt: ` line; in time. */
async function expectCleanEnding(args: string[]): Promise<number> {
  const started = performance.now();
  const result = await run(args);
  const elapsed = performance.now() - started;
  const where = `memvirt ${args.join(" ")}`;
  expect([0, 2], `${where}\n${result.stderr}`).toContain(result.code);
  expect(result.stderr, where).not.toMatch(/\n\s+at |internal error|RuntimeError|unreachable/);
  if (result.code === 2) expect(result.stderr, where).toMatch(/^memvirt: [^\n]+\n$/);
  expect(elapsed, where).toBeLessThan(TIME_BOUND_MS);
  return result.code;
}

describe("fuzzing: every run ends with exit 0, or 2 and a message, and no stack trace, trap or hang", () => {
  it("mutated traces of every format, run or converted, read with --format auto and with their own format", async () => {
    const formats: Record<string, string> = {
      lackey: "lackey",
      din: "din",
      pinatrace: "pinatrace",
      memvirt: "memvirt",
      "champsim.xz": "champsim",
      "champsim.gz": "champsim",
      "lackey.gz": "lackey",
    };
    await fc.assert(
      fc.asyncProperty(
        fc.constantFrom(...Object.keys(SEEDS)),
        fc.array(mutation, { minLength: 1, maxLength: 4 }),
        fc.boolean(),
        fc.boolean(),
        async (seed, mutations, auto, convert) => {
          const file = join(dir, `trace-${cases++}`);
          writeFileSync(file, mutate(SEEDS[seed], mutations));
          const format = auto ? [] : ["--format", formats[seed]];
          if (convert) {
            await expectCleanEnding(["convert", file, "--out", `${file}.mvt`, ...format]);
            return;
          }
          await expectCleanEnding(["run", "--trace", file, "--json", ...format]);
        },
      ),
      { numRuns: runs(40) },
    );
  });

  // Keys the config knows, and values of every JSON kind, some of them plausible.
  const KEYS = [
    "mode",
    "seed",
    "cpus",
    "guest.levels",
    "guest.pageSize",
    "guest.memory",
    "guest.processes",
    "guest.quantum",
    "host.pageSize",
    "host.memory",
    "host.levels",
    "tlb.l1d.entries",
    "tlb.l2.ways",
    "psc",
    "memory.backedFramesLog2",
    "cache.llc.sizeKiB",
    "iommu.kind",
    "overcommit",
    "nosuchkey",
  ];
  const value = fc.oneof(
    fc.jsonValue({ maxDepth: 2 }),
    fc.constantFrom(
      "ept",
      "npt",
      "shadow",
      "pv",
      "native",
      "4K",
      "2M",
      "1G",
      "1T",
      4,
      5,
      0,
      -1,
      2 ** 53,
      1.5,
    ),
  );

  it("mutated configs", async () => {
    await fc.assert(
      fc.asyncProperty(
        fc.array(fc.tuple(fc.constantFrom(...KEYS), value), { maxLength: 4 }),
        async (edits) => {
          const config: Record<string, unknown> = {};
          for (const [path, v] of edits) {
            const keys = path.split(".");
            let node = config;
            for (const key of keys.slice(0, -1)) {
              if (typeof node[key] !== "object" || node[key] === null) node[key] = {};
              node = node[key] as Record<string, unknown>;
            }
            node[keys[keys.length - 1]] = v;
          }
          const file = join(dir, `config-${cases++}.json`);
          writeFileSync(file, JSON.stringify(config));
          await expectCleanEnding(["run", "--config", file, "--trace", fixture("ls-head.lk"), "--json"]);
        },
      ),
      { numRuns: runs(40) },
    );
  });

  // Flags with values of the right kind, the wrong kind, and none; kept small enough to run quickly.
  const number = fc.oneof(
    fc.constantFrom("0", "1", "-1", "1.5", "1e400", "NaN", "", "abc", "0x10", "2000", "9999999999999"),
    fc.integer({ min: 1, max: 20_000 }).map(String),
  );
  const bytes = fc.constantFrom("0", "8", "4097", "64K", "1M", "16M", "1G", "1024T", "-4K", "1.5M", "lots");
  const FLAGS: [string, fc.Arbitrary<string> | null][] = [
    [
      "--workload",
      fc.constantFrom("zipf", "uniform", "sequential", "pointer-chase", "dma-nic", "cloud-mix", "no"),
    ],
    ["--trace", fc.constantFrom(fixture("ls-head.lk"), fixture("ls-head.champsim.xz"), dir, "/no/such/file")],
    ["--records", number],
    ["--footprint", bytes],
    ["--stride", number],
    ["--zipf", number],
    ["--write-fraction", number],
    ["--seed", number],
    ["--vms", number],
    ["--pages-per-vm", fc.constantFrom("16", "256", "1.5", "-1", "x", "99999999")],
    ["--seconds", fc.constantFrom("0", "0.01", "-1", "x")],
    ["--format", fc.constantFrom("auto", "lackey", "din", "champsim", "memvirt", "nope")],
    ["--preset", fc.constantFrom("zen4", "skylake", "zen9")],
    ["--checkpoint-every", number],
    ["--json", null],
    ["--csv", null],
    ["--quiet", null],
    ["--print-config", null],
    ["--force-trace", null],
    ["--modes", fc.constantFrom("native", "ept,npt", "warp")],
  ];
  const flags = fc.array(
    fc
      .constantFrom(...FLAGS)
      .chain(([flag, values]) => (values ? values.map((v) => [flag, v]) : fc.constant([flag]))),
    { maxLength: 6 },
  );

  it("random flags on run and compare", async () => {
    await fc.assert(
      fc.asyncProperty(fc.constantFrom("run", "compare"), flags, async (command, pairs) => {
        const args = pairs.flat();
        // A long run is not a failure: bound the work (compare runs 14 pairings).
        const records = command === "compare" ? "2000" : "20000";
        const i = args.indexOf("--records");
        if (i >= 0 && Number(args[i + 1]) > Number(records)) args[i + 1] = records;
        if (i < 0) args.push("--records", records);
        await expectCleanEnding([command, ...args]);
      }),
      { numRuns: runs(40) },
    );
  });
});
