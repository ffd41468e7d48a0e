// In-core parsers for text traces. The host copies raw file bytes into the TEXT region and these
// functions turn whole lines into 16-byte records at RECORDS_BASE without crossing the Wasm boundary
// per line. src/trace/text.ts is the TypeScript twin with the same grammar, error codes and
// consumed-bytes rule; test/trace/text.test.ts checks the two agree on random input.
//
// Grammar shared by both formats (bytes, not characters):
// - A line ends at '\n'; the bytes before it form the line. Blanks are space, tab and '\r', so CRLF
//   needs no special case: the '\r' is trailing blank.
// - A line longer than MAX_LINE_LENGTH bytes (excluding '\n') is error 4, whatever it contains. The
//   length check comes before the content check so that the outcome does not depend on where the host
//   cut its chunks: an incomplete line that already exceeds the limit is reported at once, a shorter
//   incomplete line is left unconsumed for the next call.
// - A line that holds only blanks is skipped.
// - Hex addresses: at most 16 significant digits (leading zeros are free).
//
// lackey (`valgrind --tool=lackey --trace-mem=yes`):
//   line starting with "==" (column 0)  -> skipped (valgrind's own messages)
//   blanks, type letter, blank(s), hex address, ',', decimal size, blanks
//   type: I fetch, L read, S write, M write (one read-modify-write access). Size clamps to 255 (the
//   record's byte); a size above MAX_ACCESS_SIZE is no access and is error 3.
//   Errors: unknown letter or letter glued to the address -> 1; no hex digits, too many, or a
//   non-hex byte before the ',' -> 2; no size digits or a non-blank byte glued to them -> 3;
//   line ending before the address or the size, or garbage after the size -> 5.
// din (Dinero IV traditional `d` format):
//   blanks, decimal label, blank(s), hex address with optional 0x/0X, then anything after a blank
//   label: 0 read, 1 write, 2 fetch. Labels 3 (escape) and 4 (flush) have no access to model -> 1.
//   Errors: no label digits, a label outside 0..2 or glued to the next field -> 1; bad hex -> 2;
//   line ending before the address -> 5. Size is 0 (unknown).
// din extended (`D` form, same format code as din, told apart per line by the label):
//   blanks, label letter r/w/i (either case), blank(s), hex address, blank(s), hex size, blanks.
//   Errors: bad hex address -> 2; no or bad hex size, or one above MAX_ACCESS_SIZE -> 3; anything
//   after the size -> 5. Size clamps to 255.
// pinatrace (Pin's ManualExamples/pinatrace: `fprintf("%p: %c %p\n", ip, 'R' or 'W', addr)`):
//   blanks, hex ip with optional 0x, ':', blank(s), R or W, blank(s), hex address with optional 0x,
//   blanks. Lines starting with '#' are comments; `#eof` is Pin's end marker and sets eofSeen, so the
//   host can tell a complete trace from a truncated one; a record after it is error 6. The ip is not
//   a fetch: Pin writes one line per memory operand, so one instruction can own several lines.
//   Errors: bad ip or missing ':' -> 2 (the ip is an address too); letter other than R/W -> 1.

import {
  AccessKind,
  REC_ADDR,
  REC_KIND,
  REC_LINE,
  RECORD_CAPACITY,
  RECORD_SIZE,
  RECORDS_BASE,
  CFG_TEXT_BASE,
  CTRL_BASE,
  TEXT_SIZE,
} from "../constants";
import { regionOnDemand } from "../heap";

export const FORMAT_LACKEY: u32 = 1;
export const FORMAT_DIN: u32 = 2;
export const FORMAT_PINATRACE: u32 = 3;

export const PARSE_OK: u32 = 0;
export const PARSE_BAD_TYPE: u32 = 1;
export const PARSE_BAD_ADDRESS: u32 = 2;
export const PARSE_BAD_SIZE: u32 = 3;
export const PARSE_LINE_TOO_LONG: u32 = 4;
export const PARSE_SYNTAX: u32 = 5;
export const PARSE_AFTER_EOF: u32 = 6;

/** Bytes before '\n'. Far above any record line; leaves room for long valgrind header lines while
 *  guaranteeing a host chunk of TEXT_SIZE always holds at least one whole line. */
export const MAX_LINE_LENGTH: u32 = 65536;
/** Largest size an access record may give: a page (valgrind's lackey writes at most 512). */
export const MAX_ACCESS_SIZE: u32 = 4096;

/** Lines the sniffer classifies before deciding. */
const SNIFF_LINES: u32 = 16;

/** Line parser result for a line that carries no record (blank, valgrind message). */
const LINE_SKIPPED: u32 = 255;

const CHAR_TAB: u32 = 9;
const CHAR_NEWLINE: u32 = 10;
const CHAR_CARRIAGE_RETURN: u32 = 13;
const CHAR_SPACE: u32 = 32;
const CHAR_HASH: u32 = 35;
const CHAR_COMMA: u32 = 44;
const CHAR_COLON: u32 = 58;
const CHAR_R: u32 = 82;
const CHAR_W: u32 = 87;
const CHAR_LOWER_E: u32 = 101;
const CHAR_LOWER_F: u32 = 102;
const CHAR_LOWER_O: u32 = 111;
const CHAR_ZERO: u32 = 48;
const CHAR_EQUALS: u32 = 61;
const CHAR_I: u32 = 73;
const CHAR_L: u32 = 76;
const CHAR_M: u32 = 77;
const CHAR_S: u32 = 83;
const CHAR_LOWER_X: u32 = 120;

/** Bytes of the text region consumed by the last parseText call. */
export let parsedBytes: u32 = 0;
/** Lines consumed by the last parseText call, skipped lines included. */
export let parsedLines: u32 = 0;
/** Error code of the last parseText call, PARSE_OK when none. */
export let parseError: u32 = 0;
/** Absolute 1-based line number of the error, 0 when none. */
export let parseErrorLine: u32 = 0;
/** Whether a pinatrace `#eof` line has been parsed since the last textResetEof. */
export let eofSeen: bool = false;

// Getters for hosts that would rather call functions than read exported WebAssembly.Global objects;
// the names are the ones src/core/wasm.ts expects from the module.
export function textParsedBytes(): u32 {
  return parsedBytes;
}

export function textParsedLines(): u32 {
  return parsedLines;
}

export function textParseError(): u32 {
  return parseError;
}

export function textParseErrorLine(): u32 {
  return parseErrorLine;
}

export function textEofSeen(): bool {
  return eofSeen;
}

/** Called by the host before the first chunk of a trace (and when resuming, with the saved value). */
export function textResetEof(seen: bool): void {
  eofSeen = seen;
}

/**
 * The text buffer: TEXT_SIZE bytes the host copies trace text into, a sized region allocated when first
 * asked for (runs that parse no text never have one). Returns its address, or 0 when memory cannot
 * hold it.
 */
export function textBuffer(): usize {
  return regionOnDemand(CFG_TEXT_BASE, TEXT_SIZE, 4096);
}

// The sniffer runs the real line parsers, which write a record on success; this keeps that write
// away from RECORDS_BASE, where the host may hold records not yet simulated.
const sniffScratchRecord: usize = memory.data(16);

// @ts-ignore: decorator
@inline
function isBlank(character: u32): bool {
  return character == CHAR_SPACE || character == CHAR_TAB || character == CHAR_CARRIAGE_RETURN;
}

/** The first position at or after `position` that is not a blank, or `end`. */
// @ts-ignore: decorator
@inline
function skipBlanks(position: usize, end: usize): usize {
  while (position < end && isBlank(load<u8>(position))) position++;
  return position;
}

/** Digit value, or 16 and above for a byte that is not a hex digit. */
// @ts-ignore: decorator
@inline
function hexDigitValue(character: u32): u32 {
  const decimal = character - CHAR_ZERO;
  if (decimal < 10) return decimal;
  // Folding to lower case maps 'A'..'F' onto 'a'..'f'; unsigned wrap-around rejects everything else.
  const letter = (character | 0x20) - 0x61;
  return letter < 6 ? letter + 10 : 16;
}

/** Address of the first '\n' in [start, end), or `end`. Eight bytes per test instead of one (SIMD is
 *  not enabled in the project's build); worth about a fifth of the parse time on ls.lk. Never reads
 *  at or past `end`. */
// @ts-ignore: decorator
@inline
function findNewline(start: usize, end: usize): usize {
  let position = start;
  while (position + 8 <= end) {
    const word = load<u64>(position) ^ 0x0a0a0a0a0a0a0a0a;
    // Classic zero-byte test: the lowest flagged byte is exact (false positives only sit above a
    // true zero), which is the one little-endian order needs.
    const zeroBytes = (word - 0x0101010101010101) & ~word & 0x8080808080808080;
    if (zeroBytes != 0) return position + usize(ctz<u64>(zeroBytes) >> 3);
    position += 8;
  }
  while (position < end && u32(load<u8>(position)) != CHAR_NEWLINE) position++;
  return position;
}

// @ts-ignore: decorator
@inline
function storeRecord(record: usize, address: u64, kind: u32, size: u32, line: u32): void {
  store<u64>(record + REC_ADDR, address);
  // kind, size and cpu (always 0 for text traces) share one little-endian word.
  store<u32>(record + REC_KIND, kind | (size << 8));
  store<u32>(record + REC_LINE, line);
}

/** Where the last parseHexAddress stopped, or 0 when it found no valid address. */
let hexEnd: usize = 0;

/**
 * Reads the hex digits at [position, end): at least one, at most 16 significant. Sets hexEnd to the
 * first byte after them, or 0 when there is no valid address.
 */
// @ts-ignore: decorator
@inline
function parseHexAddress(start: usize, end: usize): u64 {
  let position = start;
  let address: u64 = 0;
  let significantDigits: u32 = 0;
  while (position < end) {
    const value = hexDigitValue(load<u8>(position));
    if (value >= 16) break;
    address = (address << 4) | value;
    // Counted with a flag, not `address != 0`, because a 17th digit can shift the value back to 0.
    significantDigits += u32(significantDigits != 0 || value != 0);
    position++;
  }
  hexEnd = position == start || significantDigits > 16 ? 0 : position;
  return address;
}

/** Parses the lackey line [start, end); writes a record on success. */
// @ts-ignore: decorator
@inline
function parseLackeyLine(start: usize, end: usize, record: usize, line: u32): u32 {
  let position = start;
  if (end - position >= 2 && load<u8>(position) == CHAR_EQUALS && load<u8>(position + 1) == CHAR_EQUALS) {
    return LINE_SKIPPED;
  }
  position = skipBlanks(position, end);
  if (position == end) return LINE_SKIPPED;

  const type: u32 = load<u8>(position);
  let kind: u32;
  if (type == CHAR_I) kind = AccessKind.Fetch;
  else if (type == CHAR_L) kind = AccessKind.Read;
  else if (type == CHAR_S || type == CHAR_M) kind = AccessKind.Write;
  else return PARSE_BAD_TYPE;
  position++;
  if (position == end) return PARSE_SYNTAX;
  if (!isBlank(load<u8>(position))) return PARSE_BAD_TYPE;
  position = skipBlanks(position, end);
  if (position == end) return PARSE_SYNTAX;

  const address = parseHexAddress(position, end);
  if (hexEnd == 0) return PARSE_BAD_ADDRESS;
  position = hexEnd;
  if (position == end) return PARSE_SYNTAX;
  if (load<u8>(position) != CHAR_COMMA) return PARSE_BAD_ADDRESS;
  position++;

  let size: u32 = 0;
  let sizeDigits: u32 = 0;
  while (position < end) {
    const value = u32(load<u8>(position)) - CHAR_ZERO;
    if (value >= 10) break;
    // Saturating keeps the accumulator bounded however many digits follow.
    size = min(size * 10 + value, MAX_ACCESS_SIZE + 1);
    sizeDigits++;
    position++;
  }
  if (sizeDigits == 0 || size > MAX_ACCESS_SIZE) return PARSE_BAD_SIZE;
  if (position < end && !isBlank(load<u8>(position))) return PARSE_BAD_SIZE;
  position = skipBlanks(position, end);
  if (position != end) return PARSE_SYNTAX;

  storeRecord(record, address, kind, min(size, 255), line);
  return PARSE_OK;
}

/** Parses the din line [start, end); writes a record on success. */
// @ts-ignore: decorator
@inline
function parseDinLine(start: usize, end: usize, record: usize, line: u32): u32 {
  let position = start;
  position = skipBlanks(position, end);
  if (position == end) return LINE_SKIPPED;

  const letter = u32(load<u8>(position)) | 0x20;
  if (letter == (CHAR_R | 0x20) || letter == (CHAR_W | 0x20) || letter == (CHAR_I | 0x20)) {
    return parseDinExtendedLine(letter, position + 1, end, record, line);
  }

  let label: u32 = 0;
  let labelDigits: u32 = 0;
  while (position < end) {
    const value = u32(load<u8>(position)) - CHAR_ZERO;
    if (value >= 10) break;
    label = min(label * 10 + value, 10);
    labelDigits++;
    position++;
  }
  if (labelDigits == 0) return PARSE_BAD_TYPE;
  if (position < end && !isBlank(load<u8>(position))) return PARSE_BAD_TYPE;
  // Din labels equal the record kinds for read (0), write (1) and fetch (2).
  if (label > 2) return PARSE_BAD_TYPE;
  position = skipBlanks(position, end);
  if (position == end) return PARSE_SYNTAX;

  if (
    end - position >= 2 &&
    load<u8>(position) == CHAR_ZERO &&
    (u32(load<u8>(position + 1)) | 0x20) == CHAR_LOWER_X
  ) {
    position += 2;
  }
  const address = parseHexAddress(position, end);
  if (hexEnd == 0) return PARSE_BAD_ADDRESS;
  position = hexEnd;
  if (position < end && !isBlank(load<u8>(position))) return PARSE_BAD_ADDRESS;

  storeRecord(record, address, label, 0, line);
  return PARSE_OK;
}

/** The rest of a din `D`-form line after its label letter (lower case). */
// @ts-ignore: decorator
@inline
function parseDinExtendedLine(letter: u32, start: usize, end: usize, record: usize, line: u32): u32 {
  let position = start;
  if (position == end) return PARSE_SYNTAX;
  if (!isBlank(load<u8>(position))) return PARSE_BAD_TYPE;
  position = skipBlanks(position, end);
  if (position == end) return PARSE_SYNTAX;
  const address = parseHexAddress(position, end);
  if (hexEnd == 0) return PARSE_BAD_ADDRESS;
  position = hexEnd;
  if (position == end) return PARSE_SYNTAX;
  if (!isBlank(load<u8>(position))) return PARSE_BAD_ADDRESS;
  position = skipBlanks(position, end);
  if (position == end) return PARSE_SYNTAX;
  const size = parseHexAddress(position, end);
  if (hexEnd == 0 || size > u64(MAX_ACCESS_SIZE)) return PARSE_BAD_SIZE;
  position = hexEnd;
  if (position < end && !isBlank(load<u8>(position))) return PARSE_BAD_SIZE;
  position = skipBlanks(position, end);
  if (position != end) return PARSE_SYNTAX;
  const kind = letter == (CHAR_R | 0x20) ? AccessKind.Read : letter == (CHAR_W | 0x20) ? AccessKind.Write : AccessKind.Fetch;
  storeRecord(record, address, kind, u32(min<u64>(size, 255)), line);
  return PARSE_OK;
}

/** Skips an optional 0x/0X at `position`. */
// @ts-ignore: decorator
@inline
function skipHexPrefix(position: usize, end: usize): usize {
  if (end - position >= 2 && load<u8>(position) == CHAR_ZERO && (u32(load<u8>(position + 1)) | 0x20) == CHAR_LOWER_X) {
    return position + 2;
  }
  return position;
}

/** Parses the pinatrace line [start, end); writes a record on success. Reads and sets eofSeen. */
// @ts-ignore: decorator
@inline
function parsePinLine(start: usize, end: usize, record: usize, line: u32): u32 {
  let position = start;
  position = skipBlanks(position, end);
  if (position == end) return LINE_SKIPPED;
  if (u32(load<u8>(position)) == CHAR_HASH) {
    if (
      end - position >= 4 &&
      u32(load<u8>(position + 1)) == CHAR_LOWER_E &&
      u32(load<u8>(position + 2)) == CHAR_LOWER_O &&
      u32(load<u8>(position + 3)) == CHAR_LOWER_F
    ) {
      eofSeen = true;
    }
    return LINE_SKIPPED;
  }
  if (eofSeen) return PARSE_AFTER_EOF;
  position = skipHexPrefix(position, end);
  parseHexAddress(position, end);
  if (hexEnd == 0) return PARSE_BAD_ADDRESS;
  position = hexEnd;
  if (position == end || u32(load<u8>(position)) != CHAR_COLON) return PARSE_BAD_ADDRESS;
  position++;
  position = skipBlanks(position, end);
  if (position == end) return PARSE_SYNTAX;
  const type = u32(load<u8>(position));
  let kind: u32;
  if (type == CHAR_R) kind = AccessKind.Read;
  else if (type == CHAR_W) kind = AccessKind.Write;
  else return PARSE_BAD_TYPE;
  position++;
  if (position == end) return PARSE_SYNTAX;
  if (!isBlank(load<u8>(position))) return PARSE_BAD_TYPE;
  position = skipBlanks(position, end);
  if (position == end) return PARSE_SYNTAX;
  position = skipHexPrefix(position, end);
  const address = parseHexAddress(position, end);
  if (hexEnd == 0) return PARSE_BAD_ADDRESS;
  position = hexEnd;
  if (position < end && !isBlank(load<u8>(position))) return PARSE_BAD_ADDRESS;
  position = skipBlanks(position, end);
  if (position != end) return PARSE_SYNTAX;
  storeRecord(record, address, kind, 0, line);
  return PARSE_OK;
}

/** Hex digit value of every byte, 16 for the rest: one load per digit on the fast paths. */
const HEX_TABLE: usize = memory.data<u8>([
  16, 16, 16, 16, 16, 16, 16, 16, 16, 16, 16, 16, 16, 16, 16, 16, 16, 16, 16, 16, 16, 16, 16, 16, 16, 16,
  16, 16, 16, 16, 16, 16, 16, 16, 16, 16, 16, 16, 16, 16, 16, 16, 16, 16, 16, 16, 16, 16, 0, 1, 2, 3, 4,
  5, 6, 7, 8, 9, 16, 16, 16, 16, 16, 16, 16, 10, 11, 12, 13, 14, 15, 16, 16, 16, 16, 16, 16, 16, 16, 16,
  16, 16, 16, 16, 16, 16, 16, 16, 16, 16, 16, 16, 16, 16, 16, 16, 16, 10, 11, 12, 13, 14, 15, 16, 16, 16,
  16, 16, 16, 16, 16, 16, 16, 16, 16, 16, 16, 16, 16, 16, 16, 16, 16, 16, 16, 16, 16, 16, 16, 16, 16, 16,
  16, 16, 16, 16, 16, 16, 16, 16, 16, 16, 16, 16, 16, 16, 16, 16, 16, 16, 16, 16, 16, 16, 16, 16, 16, 16,
  16, 16, 16, 16, 16, 16, 16, 16, 16, 16, 16, 16, 16, 16, 16, 16, 16, 16, 16, 16, 16, 16, 16, 16, 16, 16,
  16, 16, 16, 16, 16, 16, 16, 16, 16, 16, 16, 16, 16, 16, 16, 16, 16, 16, 16, 16, 16, 16, 16, 16, 16, 16,
  16, 16, 16, 16, 16, 16, 16, 16, 16, 16, 16, 16, 16, 16, 16, 16, 16, 16, 16, 16, 16, 16, 16, 16, 16, 16,
  16, 16, 16, 16, 16, 16, 16, 16, 16, 16, 16, 16, 16, 16, 16, 16, 16, 16, 16, 16,
]);

/** Bytes a fast-path line may span: every fast line is shorter, so its loops need no bounds checks. */
const FAST_WINDOW: usize = 48;

/**
 * The common shape of a line in one pass, with no bounds checks (the caller guarantees FAST_WINDOW
 * readable bytes): din `L HEX\n` with L in 0..2, lackey `I  HEX,DEC\n` or ` X HEX,DEC\n`, at most 16 hex
 * digits. Returns the position after the '\n', or 0 when the line needs the general parser, which
 * then decides exactly what it is (a valgrind message, CRLF, extra blanks, or an error).
 */
// @ts-ignore: decorator
@inline
function parseFastLine(format: u32, start: usize, record: usize, line: u32): usize {
  let position = start;
  let kind: u32;
  const first = <u32>load<u8>(position);
  const second = <u32>load<u8>(position, 1);
  if (format == FORMAT_DIN) {
    kind = first - CHAR_ZERO;
    if (kind > 2 || second != CHAR_SPACE) return 0;
    position += 2;
  } else {
    if (<u32>load<u8>(position, 2) != CHAR_SPACE) return 0;
    if (first == CHAR_I && second == CHAR_SPACE) kind = AccessKind.Fetch;
    else if (first != CHAR_SPACE) return 0;
    else if (second == CHAR_L) kind = AccessKind.Read;
    else if (second == CHAR_S || second == CHAR_M) kind = AccessKind.Write;
    else return 0;
    position += 3;
  }
  let address: u64 = 0;
  const digitsStart = position;
  let value = <u32>load<u8>(HEX_TABLE + <usize>load<u8>(position));
  while (value < 16) {
    address = (address << 4) | value;
    position++;
    value = <u32>load<u8>(HEX_TABLE + <usize>load<u8>(position));
  }
  const digits = position - digitsStart;
  if (digits == 0 || digits > 16) return 0;
  let size: u32 = 0;
  if (format == FORMAT_LACKEY) {
    if (<u32>load<u8>(position) != CHAR_COMMA) return 0;
    position++;
    const sizeStart = position;
    let decimal = <u32>load<u8>(position) - CHAR_ZERO;
    while (decimal < 10 && position - sizeStart < 3) {
      size = size * 10 + decimal;
      position++;
      decimal = <u32>load<u8>(position) - CHAR_ZERO;
    }
    if (position == sizeStart || decimal < 10) return 0;
  }
  if (<u32>load<u8>(position) != CHAR_NEWLINE) return 0;
  storeRecord(record, address, kind, min(size, 255), line);
  return position + 1;
}

/**
 * Parses whole lines of the text buffer's [0, len) into records at RECORDS_BASE and returns how many it wrote.
 * Consumes only lines ending in '\n', plus an unterminated last line when `isFinal`. Stops at the
 * first error (records before it stay) or after `maxRecords` records; parsedBytes then ends right
 * after the last line consumed, so the host resumes at parsedBytes into the buffer.
 * An unknown `format` is reported as PARSE_SYNTAX on `firstLine`.
 */
export function parseText(format: u32, len: u32, isFinal: bool, firstLine: u32, maxRecords: u32): u32 {
  const text = textBuffer();
  const length = text == 0 ? 0 : min(len, TEXT_SIZE);
  const recordLimit = min(maxRecords, RECORD_CAPACITY);
  const end: usize = text + length;
  let position: usize = text;
  let record: usize = RECORDS_BASE;
  let records: u32 = 0;
  let lines: u32 = 0;
  let error: u32 = PARSE_OK;

  if (format != FORMAT_LACKEY && format != FORMAT_DIN && format != FORMAT_PINATRACE) {
    error = PARSE_SYNTAX;
  } else {
    while (records < recordLimit && position < end) {
      if (format != FORMAT_PINATRACE && end - position >= FAST_WINDOW) {
        const next = parseFastLine(format, position, record, firstLine + lines);
        if (next != 0) {
          records++;
          record += RECORD_SIZE;
          lines++;
          position = next;
          continue;
        }
      }
      const lineEnd = findNewline(position, end);
      if (lineEnd - position > MAX_LINE_LENGTH) {
        error = PARSE_LINE_TOO_LONG;
        break;
      }
      if (lineEnd == end && !isFinal) break;

      const status =
        format == FORMAT_LACKEY
          ? parseLackeyLine(position, lineEnd, record, firstLine + lines)
          : format == FORMAT_DIN
            ? parseDinLine(position, lineEnd, record, firstLine + lines)
            : parsePinLine(position, lineEnd, record, firstLine + lines);
      if (status == PARSE_OK) {
        records++;
        record += RECORD_SIZE;
      } else if (status != LINE_SKIPPED) {
        error = status;
        break;
      }
      lines++;
      position = lineEnd < end ? lineEnd + 1 : end;
    }
  }

  parsedBytes = u32(position - text);
  parsedLines = lines;
  parseError = error;
  parseErrorLine = error != PARSE_OK ? firstLine + lines : 0;
  return records;
}

/**
 * Guesses the format of the text buffer's [0, len), usually the first few KiB of a file: FORMAT_LACKEY,
 * FORMAT_DIN, or 0 when unsure. Looks at up to SNIFF_LINES lines that are neither blank nor valgrind
 * messages; every one must parse in the chosen format. An unterminated last line is only looked at
 * when nothing else was, since a prefix of a file usually cuts its last line short.
 */
export function sniffText(len: u32): u32 {
  const text = textBuffer();
  const end: usize = text == 0 ? 0 : text + min(len, TEXT_SIZE);
  let position: usize = text;
  let examined: u32 = 0;
  let allLackey = true;
  let allDin = true;
  let allPin = true;
  // The pinatrace parser tracks `#eof`; sniffing must not leave that state behind.
  const eofBefore = eofSeen;
  while (position < end && examined < SNIFF_LINES) {
    const lineEnd = findNewline(position, end);
    if (lineEnd - position > MAX_LINE_LENGTH) break;
    if (lineEnd == end && examined != 0) break;
    const lackeyStatus = parseLackeyLine(position, lineEnd, sniffScratchRecord, 0);
    eofSeen = false;
    const pinStatus = parsePinLine(position, lineEnd, sniffScratchRecord, 0);
    // A '#' line is a pinatrace comment but a lackey error; it counts only when pinatrace skips it.
    if (lackeyStatus != LINE_SKIPPED && pinStatus != LINE_SKIPPED) {
      const dinStatus = parseDinLine(position, lineEnd, sniffScratchRecord, 0);
      allLackey = allLackey && lackeyStatus == PARSE_OK;
      allDin = allDin && dinStatus == PARSE_OK;
      allPin = allPin && pinStatus == PARSE_OK;
      examined++;
    } else if (lackeyStatus != LINE_SKIPPED) {
      allLackey = false;
      allDin = false;
    }
    position = lineEnd + 1;
  }
  eofSeen = eofBefore;
  if (examined == 0) return 0;
  if (allLackey) return FORMAT_LACKEY;
  if (allDin) return FORMAT_DIN;
  if (allPin) return FORMAT_PINATRACE;
  return 0;
}
