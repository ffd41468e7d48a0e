// Traces given as data rather than files (src/trace/source.ts readTraceData, the browser's way in):
// bytes, a Blob, a ReadableStream or async chunks, plain, gzip or xz, replay to exactly the statistics
// of the same trace read from its file, and bad data stops with the same kind of message.
import { readFileSync } from "node:fs";
import { gzipSync } from "node:zlib";
import { describe, expect, it } from "vitest";
import { defaultConfig } from "../../src/config/config.js";
import { Simulation } from "../../src/runner/simulation.js";
import { replayTrace } from "../../src/trace/replay.js";
import { replayTraceData } from "../../src/trace/replay-data.js";
import { type TraceData, TraceError, type TracePosition } from "../../src/trace/source.js";

const fixture = (name: string) => new URL(`../fixtures/${name}`, import.meta.url).pathname;
const build = process.env.MEMVIRT_BUILD === "debug" ? "debug" : "release";

function simulation(): Simulation {
  const sim = new Simulation(defaultConfig(), { build });
  sim.start();
  return sim;
}

async function fromFile(name: string) {
  const sim = simulation();
  const result = await replayTrace(sim, fixture(name), "auto");
  return { result, stats: sim.stats() };
}

async function fromData(data: TraceData, name = "data") {
  const sim = simulation();
  const result = await replayTraceData(sim, data, "auto", { name });
  return { result, stats: sim.stats() };
}

/** Splits bytes into uneven chunks, as a network delivers them. */
async function* chunked(bytes: Uint8Array): AsyncGenerator<Uint8Array> {
  for (let at = 0, size = 1; at < bytes.length; at += size, size = (size * 7 + 3) % 65_521) {
    yield bytes.subarray(at, at + size);
  }
}

function streamOf(bytes: Uint8Array): ReadableStream<Uint8Array> {
  return new Blob([bytes]).stream() as ReadableStream<Uint8Array>;
}

describe("a trace as data replays to the statistics of its file", () => {
  it.each([
    ["ls-head.lk", "lackey"],
    ["ls-head.pinatrace", "pinatrace"],
    ["ls-head.champsim.xz", "champsim"],
    ["ls-head.champsim.gz", "champsim"],
  ])("%s given as bytes, a Blob, a ReadableStream and uneven async chunks (%s)", async (name, format) => {
    const expected = await fromFile(name);
    const bytes = new Uint8Array(readFileSync(fixture(name)));
    for (const data of [bytes, new Blob([bytes]), streamOf(bytes), chunked(bytes)] as TraceData[]) {
      const got = await fromData(data);
      expect(got.result.format).toBe(format);
      expect(got.result.records).toBe(expected.result.records);
      expect(got.stats).toEqual(expected.stats);
    }
  });

  it("gzip-compressed lackey text decodes through DecompressionStream to the plain file's statistics", async () => {
    const plain = readFileSync(fixture("ls-head.lk"));
    const expected = await fromFile("ls-head.lk");
    const got = await fromData(chunked(gzipSync(plain)));
    expect(got.stats).toEqual(expected.stats);
  });

  it("resumes from a checkpoint's position: it delivers only the records after it and ends where the whole trace ends", async () => {
    const bytes = new Uint8Array(readFileSync(fixture("ls-head.champsim.xz")));
    const sim = simulation();
    let saved: TracePosition | undefined;
    await replayTraceData(sim, bytes, "auto", {
      checkpointEvery: 5000,
      onCheckpoint: (position) => {
        saved ??= position;
      },
    });
    expect(saved?.records).toBe(5000);
    const rest = simulation();
    const result = await replayTraceData(rest, bytes, "auto", { resume: saved });
    const whole = await fromFile("ls-head.champsim.xz");
    expect(result.records).toBe(whole.result.records);
    expect(rest.stats().accesses).toBe(whole.result.records - 5000);
  });
});

describe("bad data stops with the reader's message", () => {
  it("a bad lackey line names the trace and the line, after replaying the records before it", async () => {
    const text = new TextEncoder().encode(" L 1000,8\n S 2000,8\n Q 3000,8\n");
    const sim = simulation();
    await expect(replayTraceData(sim, text, "lackey", { name: "page.lk" })).rejects.toThrow(
      new TraceError("page.lk:3: bad record type or label"),
    );
    expect(sim.stats().accesses).toBe(2);
  });

  it("truncated gzip data names the compressed byte reached", async () => {
    const gz = gzipSync(readFileSync(fixture("ls-head.lk")));
    const cut = gz.subarray(0, gz.length - 100);
    await expect(fromData(cut, "cut.lk.gz")).rejects.toThrow(/^cut\.lk\.gz: byte \d+ of the gzip data: /);
  });

  it("truncated xz data names the compressed byte reached", async () => {
    const xz = readFileSync(fixture("ls-head.champsim.xz"));
    const cut = new Uint8Array(xz.subarray(0, xz.length - 40));
    await expect(fromData(cut, "cut.xz")).rejects.toThrow(
      /^cut\.xz: byte \d+ of the xz data: truncated xz data/,
    );
  });

  it("content in no format is refused with the formats to choose from", async () => {
    await expect(fromData(new TextEncoder().encode("hello\nworld\n"), "what")).rejects.toThrow(
      /^what:1: cannot tell the trace format from the content \(read as lackey, line 1 is wrong: bad record type or label\); pass --format lackey\|din/,
    );
  });
});
