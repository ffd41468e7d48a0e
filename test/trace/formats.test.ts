// The trace formats of issue 5, read through the one reader (src/trace/source.ts): detection by
// content, each format's records, convert's promise (replaying OUT gives exactly the statistics of
// replaying IN), and bad input stopping the run with FILE:LINE or a byte offset.
import { execFileSync } from "node:child_process";
import { mkdtempSync, readFileSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { gzipSync } from "node:zlib";
import { describe, expect, it } from "vitest";
import { defaultConfig, parseConfigText } from "../../src/config/config.js";
import { buildReport, type RunReport } from "../../src/report/report.js";
import { Simulation } from "../../src/runner/simulation.js";
import { convertTrace } from "../../src/trace/convert.js";
import { replayTrace, TraceError } from "../../src/trace/replay.js";
import type { TraceFormatOption } from "../../src/trace/source.js";
import { randomRecords, writeOwnTrace } from "./own-trace.js";

const fixture = (name: string) => new URL(`../fixtures/${name}`, import.meta.url).pathname;
const temp = mkdtempSync(join(tmpdir(), "memvirt-formats-"));
const build = process.env.MEMVIRT_BUILD === "debug" ? "debug" : "release";

interface Outcome {
  report: RunReport;
  error?: string;
}

async function replay(path: string, format: TraceFormatOption = "auto", configText = "{}"): Promise<Outcome> {
  const config = parseConfigText(configText, "test");
  const simulation = new Simulation(config, { build });
  simulation.start();
  const source: RunReport["source"] = { kind: "trace", file: path, format };
  try {
    const result = await replayTrace(simulation, path, format);
    source.format = result.format;
    return { report: buildReport(simulation, source) };
  } catch (error) {
    if (!(error instanceof TraceError)) throw error;
    return { report: buildReport(simulation, source, error.message), error: error.message };
  }
}

/** The statistics alone: everything but where the records came from. */
function statistics(report: RunReport): Omit<RunReport, "source"> {
  const { source: _source, ...rest } = report;
  return rest;
}

describe("format detection by content (--format auto)", () => {
  it.each([
    ["ls.lk", "lackey"],
    ["ls.din", "din"],
    ["ls-head.pinatrace", "pinatrace"],
    ["ls-head.champsim.xz", "champsim"],
    ["ls-head.champsim.gz", "champsim"],
  ])("detects %s as %s", async (name, format) => {
    const { report, error } = await replay(fixture(name));
    expect(error).toBeUndefined();
    expect(report.source.format).toBe(format);
    expect(report.accesses).toBeGreaterThan(3000);
  });

  it("detects memvirt's own format by its magic, and gzip-wrapped text by gzip's", async () => {
    const own = join(temp, "detect.mvt");
    writeOwnTrace(own, randomRecords(100, 10, 1));
    expect((await replay(own)).report.source.format).toBe("memvirt");
    const gz = join(temp, "ls.din.gz");
    writeFileSync(gz, gzipSync(readFileSync(fixture("ls.din"))));
    const zipped = await replay(gz);
    expect(zipped.report.source.format).toBe("din");
    expect(statistics(zipped.report)).toEqual(statistics((await replay(fixture("ls.din"))).report));
  });

  it("an unknown format is an error naming the file, with the formats to choose from", async () => {
    const path = join(temp, "noise.bin");
    writeFileSync(path, Buffer.from(Array.from({ length: 4096 }, (_, i) => (i * 37 + 11) & 0xff)));
    const { error } = await replay(path);
    expect(error).toMatch(
      /noise\.bin:1: cannot tell the trace format .*--format lackey\|din\|pinatrace\|champsim\|memvirt/,
    );
  });
});

describe("unreadable traces", () => {
  it("a missing file or a directory is a trace error naming it", async () => {
    expect((await replay(join(temp, "missing.din"))).error).toMatch(
      /missing\.din: cannot open the trace: ENOENT/,
    );
    expect((await replay(temp)).error).toMatch(/cannot read the trace: EISDIR/);
  });
});

describe("pinatrace", () => {
  it("reads `ip: R addr` and `ip: W addr` lines as reads and writes, with and without 0x, and skips # lines", async () => {
    const path = join(temp, "hand.pinatrace");
    writeFileSync(
      path,
      "# hand-written in pinatrace's format\n0x400a10: R 0x7ffd1000\n400a14: W 7ffd1008\n0x400a18: R 0x601040\n#eof\n",
    );
    const { report, error } = await replay(path);
    expect(error).toBeUndefined();
    expect(report.source.format).toBe("pinatrace");
    expect(report.accesses).toBe(3);
    // Data accesses only: the ip is not a fetch (Pin writes one line per memory operand).
    expect(report.tlb.l1i.hits + report.tlb.l1i.misses).toBe(0);
    expect(report.pages["4K"]).toBeGreaterThan(0);
  });

  it("a trace that ends without Pin's #eof line is reported as truncated, after its records ran", async () => {
    const path = join(temp, "cut.pinatrace");
    writeFileSync(path, "0x400a10: R 0x7ffd1000\n0x400a14: W 0x7ffd1008\n");
    const { report, error } = await replay(path, "pinatrace");
    expect(error).toMatch(/cut\.pinatrace:3: the trace ends without Pin's #eof line/);
    expect(report.accesses).toBe(2);
  });

  it("a record after #eof is an error on its line", async () => {
    const path = join(temp, "after.pinatrace");
    writeFileSync(path, "0x1: R 0x1000\n#eof\n0x2: W 0x2000\n");
    expect((await replay(path, "pinatrace")).error).toMatch(/after\.pinatrace:3: record after #eof/);
  });

  it("an access letter other than R or W is a bad record type on its line", async () => {
    const path = join(temp, "letter.pinatrace");
    writeFileSync(path, "0x1: R 0x1000\n0x2: X 0x2000\n#eof\n");
    expect((await replay(path, "pinatrace")).error).toMatch(/letter\.pinatrace:2: bad record type/);
  });
});

describe("Dinero din, extended D form", () => {
  it("reads `r|w|i hexaddr hexsize` as read, write and fetch, mixed with the traditional form", async () => {
    const path = join(temp, "extended.din");
    writeFileSync(path, "r 7ffd1000 8\nw 7ffd1008 4\ni 400a10 2\n0 601040\nR 601048 10\n");
    const { report, error } = await replay(path);
    expect(error).toBeUndefined();
    expect(report.source.format).toBe("din");
    expect(report.accesses).toBe(5);
    expect(report.tlb.l1i.hits + report.tlb.l1i.misses).toBe(1);
  });

  it("a D-form line without its hex size is a bad size on its line", async () => {
    const path = join(temp, "nosize.din");
    writeFileSync(path, "r 7ffd1000 8\nw 7ffd1008 zz\n");
    expect((await replay(path, "din")).error).toMatch(/nosize\.din:2: bad size/);
  });
});

describe("ChampSim traces", () => {
  it("each instruction is a fetch of its ip, a read per non-zero source and a write per non-zero destination", async () => {
    const record = Buffer.alloc(64 * 2);
    record.writeBigUInt64LE(0x400a10n, 0);
    record.writeBigUInt64LE(0x7ffd1008n, 16); // destination 0
    record.writeBigUInt64LE(0x601040n, 32); // source 0
    record.writeBigUInt64LE(0x601080n, 48); // source 2 (source 1 is zero: no access)
    record.writeBigUInt64LE(0x400a14n, 64); // second instruction: a fetch alone
    const path = join(temp, "two.champsim.gz");
    writeFileSync(path, gzipSync(record));
    const { report, error } = await replay(path);
    expect(error).toBeUndefined();
    expect(report.source.format).toBe("champsim");
    expect(report.accesses).toBe(5);
    expect(report.tlb.l1i.hits + report.tlb.l1i.misses).toBe(2);
  });

  it("xz and gz encodings of the same records give identical statistics", async () => {
    const xz = await replay(fixture("ls-head.champsim.xz"));
    const gz = await replay(fixture("ls-head.champsim.gz"));
    expect(statistics(xz.report)).toEqual(statistics(gz.report));
    // 16,653 instructions of `ls` plus their 3,361 data operands.
    expect(xz.report.accesses).toBe(20014);
  });

  it("a truncated xz file stops with the byte offset and says it is truncated", async () => {
    const whole = readFileSync(fixture("ls-head.champsim.xz"));
    const path = join(temp, "cut.champsim.xz");
    writeFileSync(path, whole.subarray(0, whole.length - 100));
    const { error } = await replay(path);
    expect(error).toMatch(/cut\.champsim\.xz: byte \d+ of the xz file: truncated xz data/);
  });

  it("a corrupt xz file stops with the byte offset and says it is corrupt", async () => {
    const whole = Buffer.from(readFileSync(fixture("ls-head.champsim.xz")));
    for (let i = 200; i < 400; i++) whole[i] ^= 0x5a;
    const path = join(temp, "corrupt.champsim.xz");
    writeFileSync(path, whole);
    expect((await replay(path)).error).toMatch(
      /corrupt\.champsim\.xz: byte \d+ of the xz file: corrupt xz data/,
    );
  });

  it("a truncated gzip file stops with the byte offset, after the records decoded before the cut ran", async () => {
    const whole = readFileSync(fixture("ls-head.champsim.gz"));
    const path = join(temp, "cut.champsim.gz");
    writeFileSync(path, whole.subarray(0, Math.floor(whole.length / 2)));
    const { report, error } = await replay(path, "champsim");
    expect(error).toMatch(/cut\.champsim\.gz: byte \d+ of the gzip file: truncated gzip data/);
    expect(report.accesses).toBeGreaterThan(0);
  });

  it("a stream that ends inside a 64-byte record names the decoded byte offset", async () => {
    const path = join(temp, "partial.champsim.gz");
    writeFileSync(path, gzipSync(Buffer.alloc(64 * 3 + 10, 1)));
    const { report, error } = await replay(path, "champsim");
    expect(error).toMatch(/partial\.champsim\.gz: byte 192: the trace ends inside a 64-byte ChampSim record/);
    expect(report.accesses).toBe(3 * 7);
  });
});

describe("memvirt's own format", () => {
  it("carries a cpu id per record, and replay runs each record on its CPU", async () => {
    const path = join(temp, "cpus.mvt");
    const records = randomRecords(2000, 50, 2);
    writeOwnTrace(path, records);
    const { report, error } = await replay(path, "auto", JSON.stringify({ cpus: 2 }));
    expect(error).toBeUndefined();
    expect(report.accesses).toBe(2000);
    // The same records all on CPU 0 warm one TLB instead of two: different statistics.
    const single = join(temp, "cpu0.mvt");
    writeOwnTrace(
      single,
      records.map((record) => ({ ...record, cpu: 0 })),
    );
    const one = await replay(single, "auto", JSON.stringify({ cpus: 2 }));
    expect(one.report.tlb.l1d.misses).not.toBe(report.tlb.l1d.misses);
  });

  it("a record for a CPU the config does not have is an error with its byte offset", async () => {
    const path = join(temp, "badcpu.mvt");
    const records = randomRecords(10, 5, 1);
    records[6].cpu = 3;
    writeOwnTrace(path, records);
    const { report, error } = await replay(path, "memvirt", JSON.stringify({ cpus: 2 }));
    expect(error).toMatch(/badcpu\.mvt: byte 112: cpu 3 .* out of range/);
    expect(report.accesses).toBe(6);
  });

  it("a bad magic, a newer version, a file ending inside a record or the header are errors with the byte offset", async () => {
    const good = join(temp, "good.mvt");
    writeOwnTrace(good, randomRecords(4, 2, 1));
    const bytes = readFileSync(good);
    const cases: [string, Buffer, RegExp][] = [
      [
        "magic.mvt",
        Buffer.concat([Buffer.from("MVTRACX\0"), bytes.subarray(8)]),
        /magic\.mvt: byte 0: not a memvirt trace/,
      ],
      ["version.mvt", Buffer.from(bytes).fill(9, 8, 9), /version\.mvt: byte 8: memvirt trace version 9/],
      [
        "short.mvt",
        bytes.subarray(0, bytes.length - 5),
        /short\.mvt: byte 64: the file ends inside a record \(11 of 16 bytes\)/,
      ],
      ["empty.mvt", Buffer.alloc(0), /empty\.mvt: byte 0: the file ends inside the header/],
      ["header.mvt", bytes.subarray(0, 10), /header\.mvt: byte 10: the file ends inside the header/],
    ];
    for (const [name, content, message] of cases) {
      const path = join(temp, name);
      writeFileSync(path, content);
      expect((await replay(path, "memvirt")).error).toMatch(message);
    }
  });
});

describe("memvirt convert", () => {
  it.each([
    ["ls.lk", "{}"],
    ["ls.din", JSON.stringify({ mode: "shadow" })],
    ["ls-head.pinatrace", JSON.stringify({ mode: "ept" })],
    ["ls-head.champsim.xz", "{}"],
  ])(
    "replaying the converted %s gives exactly the statistics of replaying it (config %s)",
    async (name, configText) => {
      const out = join(temp, `${name}.mvt`);
      const result = await convertTrace(fixture(name), "auto", out, build);
      const original = await replay(fixture(name), "auto", configText);
      const converted = await replay(out, "auto", configText);
      expect(converted.report.source.format).toBe("memvirt");
      expect(result.records).toBe(original.report.accesses);
      expect(statistics(converted.report)).toEqual(statistics(original.report));
    },
  );

  it("from the command line, writes OUT and exits 0; a bad line exits 2 with FILE:LINE and leaves no OUT", () => {
    const cli = new URL("../../bin/memvirt.js", import.meta.url).pathname;
    const out = join(temp, "cli.mvt");
    const text = execFileSync(process.execPath, [
      cli,
      "convert",
      fixture("ls.din"),
      "--out",
      out,
      "--build",
      build,
    ]);
    expect(text.toString()).toMatch(/47,234 records/);
    expect(readFileSync(out).length).toBe(16 + 47234 * 16);
    const bad = join(temp, "bad-convert.din");
    writeFileSync(bad, "0 1000\n9 2000\n");
    const badOut = join(temp, "bad.mvt");
    let status = 0;
    let stderr = "";
    try {
      execFileSync(
        process.execPath,
        [cli, "convert", bad, "--format", "din", "--out", badOut, "--build", build],
        {
          stdio: "pipe",
        },
      );
    } catch (error) {
      status = (error as { status: number }).status;
      stderr = String((error as { stderr: Buffer }).stderr);
    }
    expect(status).toBe(2);
    expect(stderr).toContain(`${bad}:2: bad record type`);
    expect(() => readFileSync(badOut)).toThrow();
  });
});

describe("defaults", () => {
  it("the default config has one CPU, so records of a single-CPU trace need no cpus key", () => {
    expect(defaultConfig().machine.cpus).toBe(1);
  });
});
