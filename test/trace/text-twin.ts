// TypeScript twin of assembly/trace/text.ts: the same grammar, error codes and consumed-bytes rule,
// used only by test/trace/text.test.ts, which checks the two agree on random input. The grammar is
// documented once, in the AssemblyScript file; the codes are the host's (src/trace/text-codes.ts).

import {
  MAX_ACCESS_SIZE,
  MAX_LINE_LENGTH,
  PARSE_AFTER_EOF,
  PARSE_BAD_ADDRESS,
  PARSE_BAD_SIZE,
  PARSE_BAD_TYPE,
  PARSE_LINE_TOO_LONG,
  PARSE_OK,
  PARSE_SYNTAX,
  RECORD_BYTES,
  TRACE_FORMAT_CODES,
  type TraceFormat,
  type TraceFormatCode,
} from "../../src/trace/text-codes.js";

export * from "../../src/trace/text-codes.js";

export interface ParseChunkResult {
  /** Records written to `out`. */
  records: number;
  /** Bytes of `bytes` consumed: whole lines only, plus an unterminated last line when final. */
  bytes: number;
  /** Lines consumed, skipped lines included. */
  lines: number;
  /** PARSE_OK, or the code of the error that stopped the parse. */
  error: number;
  /** Absolute 1-based line number of the error, 0 when none. */
  errorLine: number;
  /** Whether a pinatrace `#eof` line has been seen, this call or before (the `eofSeen` argument). */
  eofSeen: boolean;
}

const SNIFF_LINES = 16;
const LINE_SKIPPED = 255;

const CHAR_TAB = 9;
const CHAR_NEWLINE = 10;
const CHAR_CARRIAGE_RETURN = 13;
const CHAR_SPACE = 32;
const CHAR_HASH = 35;
const CHAR_COMMA = 44;
const CHAR_COLON = 58;
const CHAR_R = 82;
const CHAR_W = 87;
const CHAR_ZERO = 48;
const CHAR_EQUALS = 61;
const CHAR_I = 73;
const CHAR_L = 76;
const CHAR_M = 77;
const CHAR_S = 83;
const CHAR_LOWER_X = 120;

const KIND_READ = 0;
const KIND_WRITE = 1;
const KIND_FETCH = 2;

function isBlank(character: number): boolean {
  return character === CHAR_SPACE || character === CHAR_TAB || character === CHAR_CARRIAGE_RETURN;
}

function hexDigitValue(character: number): number {
  const decimal = character - CHAR_ZERO;
  if (decimal >= 0 && decimal < 10) return decimal;
  const letter = (character | 0x20) - 0x61;
  return letter >= 0 && letter < 6 ? letter + 10 : 16;
}

/**
 * One line parser for both formats, so a successful parse leaves the address as two 32-bit halves
 * (no BigInt per record) in this object, which the caller copies into the record.
 */
class LineParser {
  addressLow = 0;
  addressHigh = 0;
  kind = 0;
  size = 0;
  /** A pinatrace `#eof` line has been parsed. */
  eofSeen = false;
  private position = 0;

  constructor(private readonly bytes: Uint8Array) {}

  private skipBlanks(end: number): void {
    const bytes = this.bytes;
    let position = this.position;
    while (position < end && isBlank(bytes[position])) position++;
    this.position = position;
  }

  /** Reads hex digits at the cursor; false when there are none or more than 16 significant ones. */
  private readHexAddress(end: number): boolean {
    const bytes = this.bytes;
    let position = this.position;
    let low = 0;
    let high = 0;
    let digits = 0;
    let significantDigits = 0;
    while (position < end) {
      const value = hexDigitValue(bytes[position]);
      if (value >= 16) break;
      high = ((high << 4) | (low >>> 28)) >>> 0;
      low = ((low << 4) | value) >>> 0;
      // A flag, not `value so far != 0`: a 17th digit can shift the value back to 0.
      if (significantDigits !== 0 || value !== 0) significantDigits++;
      digits++;
      position++;
    }
    this.position = position;
    this.addressLow = low;
    this.addressHigh = high;
    return digits !== 0 && significantDigits <= 16;
  }

  lackey(start: number, end: number): number {
    const bytes = this.bytes;
    if (end - start >= 2 && bytes[start] === CHAR_EQUALS && bytes[start + 1] === CHAR_EQUALS) {
      return LINE_SKIPPED;
    }
    this.position = start;
    this.skipBlanks(end);
    if (this.position === end) return LINE_SKIPPED;

    const type = bytes[this.position];
    if (type === CHAR_I) this.kind = KIND_FETCH;
    else if (type === CHAR_L) this.kind = KIND_READ;
    else if (type === CHAR_S || type === CHAR_M) this.kind = KIND_WRITE;
    else return PARSE_BAD_TYPE;
    this.position++;
    if (this.position === end) return PARSE_SYNTAX;
    if (!isBlank(bytes[this.position])) return PARSE_BAD_TYPE;
    this.skipBlanks(end);
    if (this.position === end) return PARSE_SYNTAX;

    if (!this.readHexAddress(end)) return PARSE_BAD_ADDRESS;
    if (this.position === end) return PARSE_SYNTAX;
    if (bytes[this.position] !== CHAR_COMMA) return PARSE_BAD_ADDRESS;
    let position = this.position + 1;

    let size = 0;
    let sizeDigits = 0;
    while (position < end) {
      const value = bytes[position] - CHAR_ZERO;
      if (value < 0 || value >= 10) break;
      size = Math.min(size * 10 + value, MAX_ACCESS_SIZE + 1);
      sizeDigits++;
      position++;
    }
    if (sizeDigits === 0 || size > MAX_ACCESS_SIZE) return PARSE_BAD_SIZE;
    if (position < end && !isBlank(bytes[position])) return PARSE_BAD_SIZE;
    this.position = position;
    this.skipBlanks(end);
    if (this.position !== end) return PARSE_SYNTAX;
    this.size = Math.min(size, 255);
    return PARSE_OK;
  }

  din(start: number, end: number): number {
    const bytes = this.bytes;
    this.position = start;
    this.skipBlanks(end);
    if (this.position === end) return LINE_SKIPPED;
    const letter = bytes[this.position] | 0x20;
    if (letter === 0x72 || letter === 0x77 || letter === 0x69) return this.dinExtended(letter, end);

    let position = this.position;
    let label = 0;
    let labelDigits = 0;
    while (position < end) {
      const value = bytes[position] - CHAR_ZERO;
      if (value < 0 || value >= 10) break;
      label = Math.min(label * 10 + value, 10);
      labelDigits++;
      position++;
    }
    if (labelDigits === 0) return PARSE_BAD_TYPE;
    if (position < end && !isBlank(bytes[position])) return PARSE_BAD_TYPE;
    if (label > 2) return PARSE_BAD_TYPE;
    this.position = position;
    this.skipBlanks(end);
    if (this.position === end) return PARSE_SYNTAX;

    position = this.position;
    if (
      end - position >= 2 &&
      bytes[position] === CHAR_ZERO &&
      (bytes[position + 1] | 0x20) === CHAR_LOWER_X
    ) {
      this.position = position + 2;
    }
    if (!this.readHexAddress(end)) return PARSE_BAD_ADDRESS;
    if (this.position < end && !isBlank(bytes[this.position])) return PARSE_BAD_ADDRESS;
    // Din labels equal the record kinds for read (0), write (1) and fetch (2).
    this.kind = label;
    this.size = 0;
    return PARSE_OK;
  }

  private dinExtended(letter: number, end: number): number {
    const bytes = this.bytes;
    this.position++;
    if (this.position === end) return PARSE_SYNTAX;
    if (!isBlank(bytes[this.position])) return PARSE_BAD_TYPE;
    this.skipBlanks(end);
    if (this.position === end) return PARSE_SYNTAX;
    if (!this.readHexAddress(end)) return PARSE_BAD_ADDRESS;
    const addressLow = this.addressLow;
    const addressHigh = this.addressHigh;
    if (this.position === end) return PARSE_SYNTAX;
    if (!isBlank(bytes[this.position])) return PARSE_BAD_ADDRESS;
    this.skipBlanks(end);
    if (this.position === end) return PARSE_SYNTAX;
    if (!this.readHexAddress(end)) return PARSE_BAD_SIZE;
    if (this.addressHigh !== 0 || this.addressLow > MAX_ACCESS_SIZE) return PARSE_BAD_SIZE;
    const size = Math.min(this.addressLow, 255);
    if (this.position < end && !isBlank(bytes[this.position])) return PARSE_BAD_SIZE;
    this.skipBlanks(end);
    if (this.position !== end) return PARSE_SYNTAX;
    this.addressLow = addressLow;
    this.addressHigh = addressHigh;
    this.kind = letter === 0x72 ? KIND_READ : letter === 0x77 ? KIND_WRITE : KIND_FETCH;
    this.size = size;
    return PARSE_OK;
  }

  private skipHexPrefix(end: number): void {
    const bytes = this.bytes;
    const position = this.position;
    if (
      end - position >= 2 &&
      bytes[position] === CHAR_ZERO &&
      (bytes[position + 1] | 0x20) === CHAR_LOWER_X
    ) {
      this.position = position + 2;
    }
  }

  pinatrace(start: number, end: number): number {
    const bytes = this.bytes;
    this.position = start;
    this.skipBlanks(end);
    if (this.position === end) return LINE_SKIPPED;
    if (bytes[this.position] === CHAR_HASH) {
      if (
        end - this.position >= 4 &&
        bytes[this.position + 1] === 0x65 &&
        bytes[this.position + 2] === 0x6f &&
        bytes[this.position + 3] === 0x66
      ) {
        this.eofSeen = true;
      }
      return LINE_SKIPPED;
    }
    if (this.eofSeen) return PARSE_AFTER_EOF;
    this.skipHexPrefix(end);
    if (!this.readHexAddress(end)) return PARSE_BAD_ADDRESS;
    if (this.position === end || bytes[this.position] !== CHAR_COLON) return PARSE_BAD_ADDRESS;
    this.position++;
    this.skipBlanks(end);
    if (this.position === end) return PARSE_SYNTAX;
    const type = bytes[this.position];
    if (type === CHAR_R) this.kind = KIND_READ;
    else if (type === CHAR_W) this.kind = KIND_WRITE;
    else return PARSE_BAD_TYPE;
    this.position++;
    if (this.position === end) return PARSE_SYNTAX;
    if (!isBlank(bytes[this.position])) return PARSE_BAD_TYPE;
    this.skipBlanks(end);
    if (this.position === end) return PARSE_SYNTAX;
    this.skipHexPrefix(end);
    if (!this.readHexAddress(end)) return PARSE_BAD_ADDRESS;
    if (this.position < end && !isBlank(bytes[this.position])) return PARSE_BAD_ADDRESS;
    this.skipBlanks(end);
    if (this.position !== end) return PARSE_SYNTAX;
    this.size = 0;
    return PARSE_OK;
  }
}

function formatCode(format: TraceFormat | TraceFormatCode): TraceFormatCode {
  if (format === 1 || format === 2 || format === 3) return format;
  const code = TRACE_FORMAT_CODES[format];
  if (code === undefined) throw new Error(`unknown trace format ${String(format)}`);
  return code;
}

/**
 * Parses whole lines of `bytes` into 16-byte records at `out` offset 0, at most `maxRecords` (and no
 * more than `out` holds). Same contract as the core's parseText: stops at the first error (records
 * before it stay) or after the last record that fits; `bytes` in the result is where the next call
 * resumes, and the unconsumed tail must be carried into the next chunk.
 */
export function parseTextChunk(
  format: TraceFormat | TraceFormatCode,
  bytes: Uint8Array,
  isFinal: boolean,
  firstLine: number,
  out: DataView,
  maxRecords: number,
  eofSeen = false,
): ParseChunkResult {
  const code = formatCode(format);
  const recordLimit = Math.max(0, Math.min(maxRecords, Math.floor(out.byteLength / RECORD_BYTES)));
  const parser = new LineParser(bytes);
  parser.eofSeen = eofSeen;
  const end = bytes.length;
  let position = 0;
  let records = 0;
  let lines = 0;
  let error = PARSE_OK;

  while (records < recordLimit && position < end) {
    let lineEnd = bytes.indexOf(CHAR_NEWLINE, position);
    if (lineEnd < 0) lineEnd = end;
    if (lineEnd - position > MAX_LINE_LENGTH) {
      error = PARSE_LINE_TOO_LONG;
      break;
    }
    if (lineEnd === end && !isFinal) break;

    const status =
      code === 1
        ? parser.lackey(position, lineEnd)
        : code === 2
          ? parser.din(position, lineEnd)
          : parser.pinatrace(position, lineEnd);
    if (status === PARSE_OK) {
      const offset = records * RECORD_BYTES;
      out.setUint32(offset, parser.addressLow, true);
      out.setUint32(offset + 4, parser.addressHigh, true);
      // kind, size and cpu (always 0 for text traces) share one little-endian word.
      out.setUint32(offset + 8, parser.kind | (parser.size << 8), true);
      out.setUint32(offset + 12, (firstLine + lines) >>> 0, true);
      records++;
    } else if (status !== LINE_SKIPPED) {
      error = status;
      break;
    }
    lines++;
    position = lineEnd < end ? lineEnd + 1 : end;
  }

  return {
    records,
    bytes: position,
    lines,
    error,
    errorLine: error !== PARSE_OK ? (firstLine + lines) >>> 0 : 0,
    eofSeen: parser.eofSeen,
  };
}

/**
 * Guesses the format from the start of a file, as the core's sniffText: up to 16 lines that are
 * neither blank nor valgrind messages must all parse in one format. An unterminated last line is
 * only looked at when nothing else was, since a prefix of a file usually cuts its last line short.
 */
export function sniffFormat(bytes: Uint8Array): TraceFormat | null {
  const parser = new LineParser(bytes);
  const end = bytes.length;
  let position = 0;
  let examined = 0;
  let allLackey = true;
  let allDin = true;
  let allPin = true;
  while (position < end && examined < SNIFF_LINES) {
    let lineEnd = bytes.indexOf(CHAR_NEWLINE, position);
    if (lineEnd < 0) lineEnd = end;
    if (lineEnd - position > MAX_LINE_LENGTH) break;
    if (lineEnd === end && examined !== 0) break;
    const lackeyStatus = parser.lackey(position, lineEnd);
    parser.eofSeen = false;
    const pinStatus = parser.pinatrace(position, lineEnd);
    // A '#' line is a pinatrace comment but a lackey error; it counts only when pinatrace skips it.
    if (lackeyStatus !== LINE_SKIPPED && pinStatus !== LINE_SKIPPED) {
      const dinStatus = parser.din(position, lineEnd);
      allLackey &&= lackeyStatus === PARSE_OK;
      allDin &&= dinStatus === PARSE_OK;
      allPin &&= pinStatus === PARSE_OK;
      examined++;
    } else if (lackeyStatus !== LINE_SKIPPED) {
      allLackey = false;
      allDin = false;
    }
    position = lineEnd + 1;
  }
  if (examined === 0) return null;
  if (allLackey) return "lackey";
  if (allDin) return "din";
  if (allPin) return "pinatrace";
  return null;
}
