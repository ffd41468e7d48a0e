import { execFileSync } from "node:child_process";
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { dirname, join, resolve } from "node:path";
import { fileURLToPath } from "node:url";
import fc from "fast-check";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { RECORD_CAPACITY, RECORDS_BASE, TEXT_SIZE } from "../../src/core/layout.js";
import { readChunks, readChunksSync } from "../../src/trace/reader.js";
import {
  describeParseError,
  MAX_LINE_LENGTH,
  PARSE_AFTER_EOF,
  PARSE_BAD_ADDRESS,
  PARSE_BAD_SIZE,
  PARSE_BAD_TYPE,
  PARSE_LINE_TOO_LONG,
  PARSE_OK,
  PARSE_SYNTAX,
  parseTextChunk,
  sniffFormat,
  TRACE_FORMAT_CODES,
  TRACE_FORMAT_NAMES,
  type TraceFormatCode,
} from "./text-twin.js";

const ROOT = resolve(dirname(fileURLToPath(import.meta.url)), "../..");
// Real traces of real programs (valgrind lackey, Dinero), kept in the repository so a clone tests on its own.
const TRACES = resolve(ROOT, "test/fixtures");
/** Where the parser's text buffer is in its module's memory (it allocates the buffer when asked). */
let TEXT_BASE = 0;

const LACKEY = 1;
const DIN = 2;
const PIN = 3;

const lackeyTrace = readFileSync(join(TRACES, "ls.lk"));
const dinTrace = readFileSync(join(TRACES, "ls.din"));
const encoder = new TextEncoder();

interface ChunkResult {
  /** The records written, 16 bytes each. */
  records: Uint8Array;
  bytes: number;
  lines: number;
  error: number;
  errorLine: number;
  /** A pinatrace #eof line has been seen, in this call or before it. */
  eofSeen: boolean;
}

type ChunkParser = (
  format: TraceFormatCode,
  bytes: Uint8Array,
  isFinal: boolean,
  firstLine: number,
  maxRecords: number,
  eofSeen?: boolean,
) => ChunkResult;

interface TextExports {
  memory: WebAssembly.Memory;
  parseText(format: number, len: number, isFinal: number, firstLine: number, maxRecords: number): number;
  sniffText(len: number): number;
  textBuffer(): number;
  textParsedBytes(): number;
  textParsedLines(): number;
  textParseError(): number;
  textParseErrorLine(): number;
  textEofSeen(): number;
  textResetEof(seen: number): void;
}

let wasm: TextExports;
let buildDirectory: string;

beforeAll(() => {
  buildDirectory = mkdtempSync(join(tmpdir(), "memvirt-text-"));
  // An empty config keeps asc from applying the project's asconfig.json, whose targets would write
  // text output into build/.
  const config = join(buildDirectory, "asconfig.json");
  writeFileSync(config, JSON.stringify({ options: {} }));
  const output = join(buildDirectory, "text.wasm");
  // vitest.config.ts runs every file once per core build; follow it, so both the optimised and the
  // unoptimised code are held to the same expectations.
  const optimisation = process.env.MEMVIRT_BUILD === "debug" ? ["--debug"] : ["-O3", "--noAssert"];
  execFileSync(
    join(ROOT, "node_modules/.bin/asc"),
    [
      "assembly/trace/text.test-entry.ts",
      "--config",
      config,
      "--runtime",
      "stub",
      ...optimisation,
      "--initialMemory",
      "512",
      "-o",
      output,
    ],
    { cwd: ROOT, stdio: "pipe" },
  );
  const module = new WebAssembly.Module(readFileSync(output));
  const instance = new WebAssembly.Instance(module, {
    env: {
      abort: () => {
        throw new Error("abort in the text parser");
      },
    },
  });
  wasm = instance.exports as unknown as TextExports;
  TEXT_BASE = wasm.textBuffer();
}, 120_000);

afterAll(() => {
  if (buildDirectory) rmSync(buildDirectory, { recursive: true, force: true });
});

const parseWithWasm: ChunkParser = (format, bytes, isFinal, firstLine, maxRecords, eofSeen = false) => {
  if (bytes.length > TEXT_SIZE) throw new Error("chunk larger than the TEXT region");
  new Uint8Array(wasm.memory.buffer).set(bytes, TEXT_BASE);
  // The pinatrace #eof state carries between calls through the host, as in src/trace/source.ts.
  wasm.textResetEof(eofSeen ? 1 : 0);
  const count = wasm.parseText(format, bytes.length, isFinal ? 1 : 0, firstLine, maxRecords);
  return {
    records: new Uint8Array(wasm.memory.buffer).slice(RECORDS_BASE, RECORDS_BASE + count * 16),
    bytes: wasm.textParsedBytes(),
    lines: wasm.textParsedLines(),
    error: wasm.textParseError(),
    errorLine: wasm.textParseErrorLine(),
    eofSeen: wasm.textEofSeen() !== 0,
  };
};

const parseWithTypeScript: ChunkParser = (format, bytes, isFinal, firstLine, maxRecords, eofSeen = false) => {
  const out = new Uint8Array(Math.min(maxRecords, RECORD_CAPACITY) * 16);
  const result = parseTextChunk(
    format,
    bytes,
    isFinal,
    firstLine,
    new DataView(out.buffer),
    maxRecords,
    eofSeen,
  );
  return { ...result, records: out.slice(0, result.records * 16) };
};

const PARSERS: [string, () => ChunkParser][] = [
  ["wasm", () => parseWithWasm],
  ["typescript", () => parseWithTypeScript],
];

function concat(parts: Uint8Array[]): Uint8Array {
  const total = parts.reduce((sum, part) => sum + part.length, 0);
  const result = new Uint8Array(total);
  let offset = 0;
  for (const part of parts) {
    result.set(part, offset);
    offset += part.length;
  }
  return result;
}

interface StreamResult {
  records: Uint8Array;
  /** Lines consumed before the end or the error. */
  lines: number;
  error: number;
  errorLine: number;
}

/**
 * Drives a parser the way a host does: chunks of the given sizes (cycled), the unconsumed tail
 * carried in front of the next chunk, repeated calls while a call fills `maxRecords`.
 */
function parseStream(
  parse: ChunkParser,
  format: TraceFormatCode,
  data: Uint8Array,
  chunkSizes: number[] = [data.length],
  maxRecords = RECORD_CAPACITY,
): StreamResult {
  const records: Uint8Array[] = [];
  let line = 1;
  let carry = new Uint8Array(0);
  let offset = 0;
  let eofSeen = false;
  for (let chunkIndex = 0; ; chunkIndex++) {
    const chunk = data.subarray(offset, offset + chunkSizes[chunkIndex % chunkSizes.length]);
    offset += chunk.length;
    const isFinal = offset >= data.length;
    let buffer = concat([carry, chunk]);
    for (;;) {
      const result = parse(format, buffer, isFinal, line, maxRecords, eofSeen);
      records.push(result.records);
      line += result.lines;
      eofSeen = result.eofSeen;
      buffer = buffer.subarray(result.bytes);
      if (result.error !== PARSE_OK) {
        return {
          records: concat(records),
          lines: line - 1,
          error: result.error,
          errorLine: result.errorLine,
        };
      }
      if (result.records.length / 16 < maxRecords) break;
    }
    carry = buffer.slice();
    if (isFinal) {
      expect(carry.length).toBe(0);
      return { records: concat(records), lines: line - 1, error: PARSE_OK, errorLine: 0 };
    }
  }
}

interface ExpectedRecord {
  address: bigint;
  kind: number;
  size: number;
  line: number;
}

/** Independent reference: split on newlines and match each line with a regular expression. */
function referenceRecords(format: TraceFormatCode, text: string): ExpectedRecord[] {
  const records: ExpectedRecord[] = [];
  const lines = text.split("\n");
  if (lines[lines.length - 1] === "") lines.pop();
  lines.forEach((rawLine, index) => {
    const line = rawLine.replace(/\r$/, "");
    if (line.trim() === "" || (format === LACKEY && line.startsWith("=="))) return;
    if (format === LACKEY) {
      const match = /^\s*([ILSM])\s+([0-9a-fA-F]+),(\d+)\s*$/.exec(line);
      if (!match) throw new Error(`reference cannot parse line ${index + 1}: ${line}`);
      const kind = match[1] === "I" ? 2 : match[1] === "L" ? 0 : 1;
      const size = Math.min(Number(match[3]), 255);
      records.push({ address: BigInt(`0x${match[2]}`), kind, size, line: index + 1 });
    } else {
      const match = /^\s*([012])\s+(?:0[xX])?([0-9a-fA-F]+)(\s.*)?$/.exec(line);
      if (!match) throw new Error(`reference cannot parse line ${index + 1}: ${line}`);
      records.push({ address: BigInt(`0x${match[2]}`), kind: Number(match[1]), size: 0, line: index + 1 });
    }
  });
  return records;
}

function encodeRecords(records: ExpectedRecord[]): Uint8Array {
  const bytes = new Uint8Array(records.length * 16);
  const view = new DataView(bytes.buffer);
  records.forEach((record, index) => {
    view.setBigUint64(index * 16, record.address, true);
    view.setUint8(index * 16 + 8, record.kind);
    view.setUint8(index * 16 + 9, record.size);
    view.setUint16(index * 16 + 10, 0, true);
    view.setUint32(index * 16 + 12, record.line, true);
  });
  return bytes;
}

function kindCounts(records: Uint8Array): number[] {
  const counts = [0, 0, 0, 0, 0];
  for (let offset = 8; offset < records.length; offset += 16) counts[records[offset] & 0x7f]++;
  return counts;
}

/** Kind counts straight from the text, by each line's leading token. */
function countKindsBySplitting(format: TraceFormatCode, text: string): number[] {
  const counts = [0, 0, 0, 0, 0];
  for (const line of text.split("\n")) {
    if (format === LACKEY) {
      const type = line.trim().split(/\s+/)[0];
      if (type === "I") counts[2]++;
      else if (type === "L") counts[0]++;
      else if (type === "S" || type === "M") counts[1]++;
    } else {
      const label = line.trim().split(/\s+/)[0];
      if (label === "0" || label === "1" || label === "2") counts[Number(label)]++;
    }
  }
  return counts;
}

const bytesOf = (text: string): Uint8Array => encoder.encode(text);

describe.each(PARSERS)("text parser (%s)", (_name, getParser) => {
  it("parses the lackey trace completely", () => {
    const parse = getParser();
    const text = lackeyTrace.toString("latin1");
    const result = parseStream(parse, LACKEY, lackeyTrace);
    expect(result.error).toBe(PARSE_OK);
    expect(result.lines).toBe(200_000);
    const counts = countKindsBySplitting(LACKEY, text);
    expect(kindCounts(result.records)).toEqual(counts);
    // 152760 I, 33914 L, 11841 S + 1479 M (README: M is one write access).
    expect(counts).toEqual([33914, 11841 + 1479, 152760, 0, 0]);
    expect(
      Buffer.from(result.records).equals(Buffer.from(encodeRecords(referenceRecords(LACKEY, text)))),
    ).toBe(true);
  });

  it("parses the din trace completely", () => {
    const parse = getParser();
    const text = dinTrace.toString("latin1");
    const result = parseStream(parse, DIN, dinTrace);
    expect(result.error).toBe(PARSE_OK);
    expect(result.lines).toBe(47_234);
    const counts = countKindsBySplitting(DIN, text);
    expect(kindCounts(result.records)).toEqual(counts);
    expect(counts).toEqual([33914 + 1479, 11841, 0, 0, 0]);
    expect(Buffer.from(result.records).equals(Buffer.from(encodeRecords(referenceRecords(DIN, text))))).toBe(
      true,
    );
  });

  it("gives the same records whatever the chunk sizes and record limit", () => {
    const parse = getParser();
    for (const [format, trace] of [
      [LACKEY, lackeyTrace],
      [DIN, dinTrace],
    ] as const) {
      const whole = parseStream(parse, format, trace);
      for (const [sizes, maxRecords] of [
        [[4093], RECORD_CAPACITY],
        [[65537, 7, 131071], 1000],
        [[(1 << 20) + 3], 65535],
      ] as const) {
        const chunked = parseStream(parse, format, trace, [...sizes], maxRecords);
        expect(chunked.error).toBe(PARSE_OK);
        expect(chunked.lines).toBe(whole.lines);
        expect(Buffer.from(chunked.records).equals(Buffer.from(whole.records))).toBe(true);
      }
      // A tiny record limit and every small chunk size, on prefixes so the many calls stay cheap.
      const limited = parseStream(parse, format, trace.subarray(0, 100_000), [1 << 22], 3);
      expect(
        Buffer.from(limited.records).equals(
          Buffer.from(parseStream(parse, format, trace.subarray(0, 100_000)).records),
        ),
      ).toBe(true);
      const prefix = trace.subarray(0, 6000);
      const reference = parseStream(parse, format, prefix);
      for (let size = 1; size <= 17; size++) {
        const chunked = parseStream(parse, format, prefix, [size], 5);
        expect(Buffer.from(chunked.records).equals(Buffer.from(reference.records))).toBe(true);
      }
    }
  }, 60_000);

  it("accepts CRLF line ends", () => {
    const parse = getParser();
    for (const [format, trace] of [
      [LACKEY, lackeyTrace],
      [DIN, dinTrace],
    ] as const) {
      const prefix = trace.subarray(0, 50_000);
      const crlf = bytesOf(prefix.toString("latin1").replaceAll("\n", "\r\n"));
      const expected = parseStream(parse, format, prefix);
      expect(parseStream(parse, format, crlf, [997])).toEqual(expected);
    }
  });

  it("consumes only whole lines unless final", () => {
    const parse = getParser();
    const data = bytesOf("I  0401ab70,3\n L 1fff000688,8");
    const partial = parse(LACKEY, data, false, 1, 100);
    expect(partial).toMatchObject({ bytes: 14, lines: 1, error: PARSE_OK });
    expect(partial.records.length).toBe(16);
    const final = parse(LACKEY, data, true, 1, 100);
    expect(final).toMatchObject({ bytes: data.length, lines: 2, error: PARSE_OK });
    expect(final.records.length).toBe(32);
    // A final chunk ending in a newline has no extra empty line.
    expect(parse(LACKEY, bytesOf("I  1,1\n"), true, 1, 100)).toMatchObject({ bytes: 7, lines: 1 });
  });

  it("stops right after the record that reaches maxRecords", () => {
    const parse = getParser();
    const data = bytesOf("==1== x\nI  10,4\n\n L 20,8\n S 30,8\n");
    const result = parse(LACKEY, data, true, 5, 2);
    expect(result).toMatchObject({ bytes: 25, lines: 4, error: PARSE_OK, errorLine: 0 });
    expect(Array.from(result.records.subarray(12, 16))).toEqual([6, 0, 0, 0]);
    expect(Array.from(result.records.subarray(28, 32))).toEqual([8, 0, 0, 0]);
    const rest = parse(LACKEY, data.subarray(25), true, 9, 2);
    expect(rest).toMatchObject({ bytes: 8, lines: 1 });
    expect(parse(LACKEY, data, true, 1, 0)).toMatchObject({ bytes: 0, lines: 0, records: new Uint8Array(0) });
  });

  it("writes addresses, kinds and clamped sizes", () => {
    const parse = getParser();
    const result = parse(
      LACKEY,
      bytesOf("\t M ffffffffffffffff,300\nI 0000000000000000001,0  \r\n"),
      true,
      1,
      9,
    );
    const view = new DataView(result.records.buffer);
    expect(view.getBigUint64(0, true)).toBe(0xffffffffffffffffn);
    expect(view.getUint8(8)).toBe(1);
    expect(view.getUint8(9)).toBe(255);
    expect(view.getBigUint64(16, true)).toBe(1n);
    expect(view.getUint8(24)).toBe(2);
    expect(view.getUint8(25)).toBe(0);
    const din = parse(DIN, bytesOf("2 0XdeadBEEF 4 extra\n 00\t12\n"), true, 1, 9);
    const dinView = new DataView(din.records.buffer);
    expect(din.error).toBe(PARSE_OK);
    expect(dinView.getBigUint64(0, true)).toBe(0xdeadbeefn);
    expect(dinView.getUint32(8, true)).toBe(2);
    expect(dinView.getBigUint64(16, true)).toBe(0x12n);
    expect(dinView.getUint32(24, true)).toBe(0);
  });

  const errorCases: [string, TraceFormatCode, string, number, number, number][] = [
    // name, format, text, error, error line (firstLine 10), records before the error
    ["lackey unknown type", LACKEY, "I  1,1\n X 2,1\n", PARSE_BAD_TYPE, 11, 1],
    ["lackey type glued to address", LACKEY, "==5== hi\n\nL12,4\n", PARSE_BAD_TYPE, 12, 0],
    ["lackey lower-case type", LACKEY, "i  1,1\n", PARSE_BAD_TYPE, 10, 0],
    ["lackey single =", LACKEY, "=5 hi\n", PARSE_BAD_TYPE, 10, 0],
    ["lackey bad hex", LACKEY, "I  1,1\nI  12g4,4\n", PARSE_BAD_ADDRESS, 11, 1],
    ["lackey 0x prefix", LACKEY, "I  0x12,4\n", PARSE_BAD_ADDRESS, 10, 0],
    ["lackey no address", LACKEY, "I  ,4\n", PARSE_BAD_ADDRESS, 10, 0],
    ["lackey 17 digits", LACKEY, " L 10000000000000000,8\n", PARSE_BAD_ADDRESS, 10, 0],
    ["lackey space before comma", LACKEY, " L 10 ,8\n", PARSE_BAD_ADDRESS, 10, 0],
    ["lackey no size", LACKEY, " L 10,\n", PARSE_BAD_SIZE, 10, 0],
    ["lackey glued size garbage", LACKEY, " L 10,8x\n", PARSE_BAD_SIZE, 10, 0],
    ["lackey negative size", LACKEY, " L 10,-8\n", PARSE_BAD_SIZE, 10, 0],
    ["lackey size above a page (4096 bytes)", LACKEY, " L 10,4096\n L 20,4097\n", PARSE_BAD_SIZE, 11, 1],
    ["lackey size of 99999999999", LACKEY, " L 10,99999999999\n", PARSE_BAD_SIZE, 10, 0],
    ["lackey missing size", LACKEY, " L 10\n", PARSE_SYNTAX, 10, 0],
    ["lackey missing address", LACKEY, "I  1,1\nI\n", PARSE_SYNTAX, 11, 1],
    ["lackey missing address after blanks", LACKEY, "I  \r\n", PARSE_SYNTAX, 10, 0],
    ["lackey trailing garbage", LACKEY, " L 10,8 9\n", PARSE_SYNTAX, 10, 0],
    ["lackey error on unterminated last line", LACKEY, "I  1,1\n S 5,", PARSE_BAD_SIZE, 11, 1],
    ["din escape label", DIN, "0 10\n3 20\n", PARSE_BAD_TYPE, 11, 1],
    ["din flush label", DIN, "4 20\n", PARSE_BAD_TYPE, 10, 0],
    ["din two-digit label", DIN, "12 20\n", PARSE_BAD_TYPE, 10, 0],
    ["din label glued", DIN, "0x10 20\n", PARSE_BAD_TYPE, 10, 0],
    // `I` is also the D form's fetch label, so the lackey line fails at its address instead.
    ["din lackey line (a D-form fetch with a comma)", DIN, "I  10,4\n", PARSE_BAD_ADDRESS, 10, 0],
    ["din D form without size", DIN, "r 10\n", PARSE_SYNTAX, 10, 0],
    ["din D form bad size", DIN, "r 10 8z\n", PARSE_BAD_SIZE, 10, 0],
    ["din D form size above a page", DIN, "r 10 1000\nw 10 1001\n", PARSE_BAD_SIZE, 11, 1],
    ["din D form glued label", DIN, "w10 8\n", PARSE_BAD_TYPE, 10, 0],
    ["din D form trailing field", DIN, "i 10 8 9\n", PARSE_SYNTAX, 10, 0],
    ["pinatrace missing colon", PIN, "0x10 R 0x20\n", PARSE_BAD_ADDRESS, 10, 0],
    ["pinatrace lower-case r", PIN, "0x10: r 0x20\n", PARSE_BAD_TYPE, 10, 0],
    ["pinatrace bad address", PIN, "0x10: W 0xzz\n", PARSE_BAD_ADDRESS, 10, 0],
    ["pinatrace missing address", PIN, "0x10: W\n", PARSE_SYNTAX, 10, 0],
    ["pinatrace record after #eof", PIN, "0x10: W 0x20\n#eof\n0x10: R 0x20\n", PARSE_AFTER_EOF, 12, 1],
    ["din valgrind header", DIN, "==1== hi\n", PARSE_BAD_TYPE, 10, 0],
    ["din bad hex", DIN, "1 10\n\n1 1z\n", PARSE_BAD_ADDRESS, 12, 1],
    ["din empty 0x", DIN, "1 0x\n", PARSE_BAD_ADDRESS, 10, 0],
    ["din 17 digits", DIN, "1 0x12345678901234567\n", PARSE_BAD_ADDRESS, 10, 0],
    ["din missing address", DIN, "1\n", PARSE_SYNTAX, 10, 0],
    ["din missing address after blank", DIN, "1 \t\n", PARSE_SYNTAX, 10, 0],
  ];

  it.each(errorCases)("reports %s", (_case, format, text, error, errorLine, recordsBefore) => {
    const parse = getParser();
    const data = bytesOf(text);
    const result = parse(format, data, true, 10, 100);
    expect(result.error).toBe(error);
    expect(result.errorLine).toBe(errorLine);
    expect(result.lines).toBe(errorLine - 10);
    expect(result.records.length).toBe(recordsBefore * 16);
    expect(result.bytes).toBe(bytesBefore(text, errorLine - 10));
  });

  it("reports over-long lines whether or not they are complete", () => {
    const parse = getParser();
    const tooLong = `I  1,1\n${"I  1,1".padEnd(MAX_LINE_LENGTH + 1, " ")}`;
    for (const text of [tooLong, `${tooLong}\n`]) {
      for (const isFinal of [false, true]) {
        const result = parse(LACKEY, bytesOf(text), isFinal, 1, 100);
        expect(result).toMatchObject({ error: PARSE_LINE_TOO_LONG, errorLine: 2, lines: 1, bytes: 7 });
      }
    }
    // Exactly at the limit is fine, and so is an incomplete line that could still end in time.
    const longest = `${"I  1,1".padEnd(MAX_LINE_LENGTH, " ")}\n`;
    expect(parse(LACKEY, bytesOf(longest), false, 1, 100)).toMatchObject({ error: PARSE_OK, lines: 1 });
    expect(parse(LACKEY, bytesOf(longest.slice(0, -1)), false, 1, 100)).toMatchObject({
      error: PARSE_OK,
      lines: 0,
      bytes: 0,
    });
    // Length comes first, so an over-long line with bad content is still "too long".
    expect(parse(DIN, bytesOf(`9${" ".repeat(MAX_LINE_LENGTH)}\n`), true, 1, 100).error).toBe(
      PARSE_LINE_TOO_LONG,
    );
  });

  it("reports the error at the same line when chunked", () => {
    const parse = getParser();
    const lines = lackeyTrace.toString("latin1").split("\n").slice(0, 3000);
    lines[2500] = " Q 1234,8";
    const data = bytesOf(lines.join("\n"));
    const whole = parseStream(parse, LACKEY, data);
    expect(whole).toMatchObject({ error: PARSE_BAD_TYPE, errorLine: 2501, lines: 2500 });
    const chunked = parseStream(parse, LACKEY, data, [333, 1], 17);
    expect(chunked).toEqual(whole);
  });
});

/** Bytes of the first `lines` lines of ASCII `text`, newlines included. */
function bytesBefore(text: string, lines: number): number {
  let offset = 0;
  for (let line = 0; line < lines; line++) offset = text.indexOf("\n", offset) + 1;
  return offset;
}

describe("format sniffing", () => {
  const sniffWasm = (bytes: Uint8Array): number => {
    new Uint8Array(wasm.memory.buffer).set(bytes, TEXT_BASE);
    return wasm.sniffText(bytes.length);
  };
  const cases: [string, Uint8Array, "lackey" | "din" | null][] = [
    ["ls.lk", lackeyTrace, "lackey"],
    ["ls.din", dinTrace, "din"],
    ["a prefix cut mid-line", lackeyTrace.subarray(0, 4000), "lackey"],
    ["din without newline", bytesOf("0 1234"), "din"],
    ["headers only", bytesOf("==1== a\n==1== b\n"), null],
    ["empty", bytesOf(""), null],
    ["mixed formats", bytesOf("I  10,4\n0 10\n"), null],
    ["prose", bytesOf("hello world\n"), null],
    ["din with CRLF and 0x", bytesOf("\r\n2 0x400000 1\r\n0 7fff0000\r\n"), "din"],
  ];
  it.each(cases)("recognises %s", (_name, bytes, expected) => {
    expect(sniffFormat(bytes)).toBe(expected);
    expect(sniffWasm(bytes)).toBe(expected === null ? 0 : TRACE_FORMAT_CODES[expected]);
  });
});

describe("format names and messages", () => {
  it("maps names and codes both ways", () => {
    expect(TRACE_FORMAT_CODES).toEqual({ lackey: 1, din: 2, pinatrace: 3 });
    expect(TRACE_FORMAT_NAMES[1]).toBe("lackey");
    expect(TRACE_FORMAT_NAMES[2]).toBe("din");
    expect(TRACE_FORMAT_NAMES[3]).toBe("pinatrace");
  });
  it("describes every error code", () => {
    expect(describeParseError(PARSE_BAD_ADDRESS)).toBe("bad hex address");
    for (let code = 0; code <= 6; code++) expect(describeParseError(code)).not.toMatch(/unknown/);
    expect(describeParseError(42)).toMatch(/unknown/);
  });
  it("accepts format names and codes alike", () => {
    const out = new DataView(new ArrayBuffer(16));
    expect(parseTextChunk("din", bytesOf("1 10\n"), true, 1, out, 1).records).toBe(1);
    expect(parseTextChunk(2, bytesOf("1 10\n"), true, 1, out, 1).records).toBe(1);
    expect(() => parseTextChunk("dinero" as "din", bytesOf("1 10\n"), true, 1, out, 1)).toThrow(/unknown/);
    new Uint8Array(wasm.memory.buffer).set(bytesOf("1 10\n"), TEXT_BASE);
    expect(wasm.parseText(4, 5, 1, 7, 10)).toBe(0);
    expect([wasm.textParseError(), wasm.textParseErrorLine(), wasm.textParsedBytes()]).toEqual([
      PARSE_SYNTAX,
      7,
      0,
    ]);
  });
});

// --- properties ---------------------------------------------------------------------------------

const hexDigits = fc.array(fc.constantFrom(..."0123456789abcdefABCDEF"), { minLength: 1, maxLength: 18 });
const blanks = fc
  .array(fc.constantFrom(" ", "\t"), { minLength: 0, maxLength: 2 })
  .map((parts) => parts.join(""));
const lackeyLine = fc
  .tuple(
    blanks,
    fc.constantFrom("I", "L", "S", "M"),
    fc.constantFrom(" ", "  ", "\t"),
    hexDigits,
    fc.integer({ min: 0, max: 999 }),
    fc.constantFrom("", " ", "\r"),
  )
  .map(([lead, type, gap, digits, size, tail]) => `${lead}${type}${gap}${digits.join("")},${size}${tail}`);
const dinLine = fc
  .tuple(
    blanks,
    fc.constantFrom("0", "1", "2", "00", "3"),
    fc.constantFrom(" ", "\t"),
    fc.constantFrom("", "0x", "0X"),
    hexDigits,
    fc.constantFrom("", " 4", "\tignored field", "\r"),
  )
  .map(
    ([lead, label, gap, prefix, digits, tail]) => `${lead}${label}${gap}${prefix}${digits.join("")}${tail}`,
  );
const dinExtendedLine = fc
  .tuple(
    blanks,
    fc.constantFrom("r", "w", "i", "R", "W", "I"),
    fc.constantFrom(" ", "\t"),
    hexDigits,
    fc.constantFrom(" ", "\t "),
    hexDigits,
    fc.constantFrom("", " ", "\r", " x"),
  )
  .map(
    ([lead, label, gap, digits, gap2, size, tail]) =>
      `${lead}${label}${gap}${digits.join("")}${gap2}${size.join("")}${tail}`,
  );
const pinLine = fc
  .tuple(
    blanks,
    fc.constantFrom("", "0x"),
    hexDigits,
    fc.constantFrom(": ", ":", " : "),
    fc.constantFrom("R", "W", "r"),
    fc.constantFrom(" ", "\t"),
    fc.constantFrom("", "0x"),
    hexDigits,
    fc.constantFrom("", " ", "\r"),
  )
  .map(
    ([lead, prefix, ip, colon, type, gap, prefix2, address, tail]) =>
      `${lead}${prefix}${ip.join("")}${colon}${type}${gap}${prefix2}${address.join("")}${tail}`,
  );
const pinOtherLine = fc.constantFrom("#eof", "# comment", "#eo");
// Short strings over the bytes the grammar cares about reach the odd corners of every branch.
const noiseLine = fc
  .array(fc.constantFrom(..." \t\rILSMRWrwi0123x=,9fgz-:#"), { maxLength: 12 })
  .map((characters) => characters.join(""));
const otherLine = fc.constantFrom("", "==42== Lackey", "\r", "  ");

/** Mostly valid traces; with noise, most of them stop at an error somewhere. */
function traceText(recordLine: fc.Arbitrary<string>, noise: boolean): fc.Arbitrary<string> {
  const line = noise
    ? fc.oneof({ weight: 12, arbitrary: recordLine }, otherLine, noiseLine)
    : fc.oneof({ weight: 8, arbitrary: recordLine }, otherLine);
  return fc
    .tuple(fc.array(line, { maxLength: 40 }), fc.boolean())
    .map(([lines, trailingNewline]) => lines.join("\n") + (trailingNewline ? "\n" : ""));
}

const formatAndText = fc.oneof(
  traceText(lackeyLine, false).map((text) => [LACKEY, text] as const),
  traceText(dinLine, false).map((text) => [DIN, text] as const),
  traceText(lackeyLine, true).map((text) => [LACKEY, text] as const),
  traceText(dinLine, true).map((text) => [DIN, text] as const),
  traceText(fc.oneof(dinLine, dinExtendedLine), true).map((text) => [DIN, text] as const),
  traceText(fc.oneof({ weight: 10, arbitrary: pinLine }, pinOtherLine), false).map(
    (text) => [PIN, text] as const,
  ),
  traceText(fc.oneof({ weight: 10, arbitrary: pinLine }, pinOtherLine), true).map(
    (text) => [PIN, text] as const,
  ),
);

describe("parser properties", () => {
  it("the TypeScript parser does not depend on chunk sizes or record limits", () => {
    fc.assert(
      fc.property(
        formatAndText,
        fc.array(fc.integer({ min: 1, max: 64 }), { minLength: 1, maxLength: 5 }),
        fc.integer({ min: 1, max: 8 }),
        ([format, text], chunkSizes, maxRecords) => {
          const data = bytesOf(text);
          const whole = parseStream(parseWithTypeScript, format, data);
          const chunked = parseStream(parseWithTypeScript, format, data, chunkSizes, maxRecords);
          expect(chunked).toEqual(whole);
        },
      ),
      { numRuns: 300 },
    );
  });

  it("the TypeScript and Wasm parsers agree call by call", () => {
    fc.assert(
      fc.property(
        formatAndText,
        fc.boolean(),
        fc.integer({ min: 1, max: 100_000 }),
        fc.integer({ min: 0, max: 50 }),
        ([format, text], isFinal, firstLine, maxRecords) => {
          const data = bytesOf(text);
          const fromWasm = parseWithWasm(format, data, isFinal, firstLine, maxRecords);
          const fromTypeScript = parseWithTypeScript(format, data, isFinal, firstLine, maxRecords);
          expect(fromTypeScript).toEqual(fromWasm);
        },
      ),
      { numRuns: 1000 },
    );
  });

  it("the sniffers agree", () => {
    fc.assert(
      fc.property(formatAndText, ([, text]) => {
        const data = bytesOf(text);
        new Uint8Array(wasm.memory.buffer).set(data, TEXT_BASE);
        const fromTypeScript = sniffFormat(data);
        expect(wasm.sniffText(data.length)).toBe(
          fromTypeScript === null ? 0 : TRACE_FORMAT_CODES[fromTypeScript],
        );
      }),
      { numRuns: 300 },
    );
  });
});

// --- reader -------------------------------------------------------------------------------------

describe("trace file reader", () => {
  const path = join(TRACES, "ls.din");

  it("streams the whole file in chunks, asynchronously", async () => {
    for (const chunkSize of [1 << 16, 4099, 1 << 22]) {
      const chunks: Uint8Array[] = [];
      for await (const chunk of readChunks(path, chunkSize)) {
        expect(chunk.length).toBeLessThanOrEqual(chunkSize);
        chunks.push(chunk.slice()); // the buffer is reused once the next chunk is requested
      }
      expect(Buffer.from(concat(chunks)).equals(dinTrace)).toBe(true);
    }
  });

  it("streams the whole file in chunks, synchronously", () => {
    const chunks: Uint8Array[] = [];
    for (const chunk of readChunksSync(path, 10_007)) chunks.push(chunk.slice());
    expect(chunks.length).toBe(Math.ceil(dinTrace.length / 10_007));
    expect(Buffer.from(concat(chunks)).equals(dinTrace)).toBe(true);
  });

  it("feeds the parser through a carried tail", async () => {
    const records: Uint8Array[] = [];
    let carry = new Uint8Array(0);
    let line = 1;
    for await (const chunk of readChunks(join(TRACES, "ls.lk"), 100_003)) {
      const buffer = concat([carry, chunk]);
      const result = parseWithTypeScript(LACKEY, buffer, false, line, RECORD_CAPACITY);
      expect(result.error).toBe(PARSE_OK);
      records.push(result.records);
      line += result.lines;
      carry = buffer.slice(result.bytes);
    }
    const last = parseWithTypeScript(LACKEY, carry, true, line, RECORD_CAPACITY);
    records.push(last.records);
    expect(concat(records).length / 16).toBe(199_994);
  });

  it("closes the file when the consumer stops early, and rejects bad input", async () => {
    for await (const chunk of readChunks(path, 1000)) {
      expect(chunk.length).toBe(1000);
      break;
    }
    await expect(readChunks(join(TRACES, "missing.lk")).next()).rejects.toThrow(/ENOENT/);
    await expect(readChunks(path, 0).next()).rejects.toThrow(RangeError);
    expect(() => readChunksSync(path, -1).next()).toThrow(RangeError);
  });

  it("yields nothing for an empty file", async () => {
    const directory = mkdtempSync(join(tmpdir(), "memvirt-reader-"));
    try {
      const empty = join(directory, "empty.lk");
      writeFileSync(empty, "");
      const chunks: Uint8Array[] = [];
      for await (const chunk of readChunks(empty)) chunks.push(chunk);
      for (const chunk of readChunksSync(empty)) chunks.push(chunk);
      expect(chunks).toEqual([]);
    } finally {
      rmSync(directory, { recursive: true, force: true });
    }
  });
});
