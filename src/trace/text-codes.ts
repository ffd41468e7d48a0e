// The codes of the in-core text parser (assembly/trace/text.ts) as the host reads them: which text
// format a code names, and what a parse error code means.

export type TraceFormat = "lackey" | "din" | "pinatrace";
export type TraceFormatCode = 1 | 2 | 3;

export const TRACE_FORMAT_CODES: Readonly<Record<TraceFormat, TraceFormatCode>> = {
  lackey: 1,
  din: 2,
  pinatrace: 3,
};
export const TRACE_FORMAT_NAMES: Readonly<Record<TraceFormatCode, TraceFormat>> = {
  1: "lackey",
  2: "din",
  3: "pinatrace",
};

export const PARSE_OK = 0;
export const PARSE_BAD_TYPE = 1;
export const PARSE_BAD_ADDRESS = 2;
export const PARSE_BAD_SIZE = 3;
export const PARSE_LINE_TOO_LONG = 4;
export const PARSE_SYNTAX = 5;
export const PARSE_AFTER_EOF = 6;

/** Bytes before '\n'; a longer line is PARSE_LINE_TOO_LONG. Same value as the core's. */
export const MAX_LINE_LENGTH = 65536;
/** Largest size an access record may give (a larger one is PARSE_BAD_SIZE). Same value as the core's. */
export const MAX_ACCESS_SIZE = 4096;

export const RECORD_BYTES = 16;

const PARSE_ERROR_MESSAGES: readonly string[] = [
  "no error",
  "bad record type or label",
  "bad hex address",
  "bad size (an access is 0 to 4096 bytes)",
  "line too long",
  "missing field or trailing garbage",
  "record after #eof",
];

export function describeParseError(code: number): string {
  return PARSE_ERROR_MESSAGES[code] ?? `unknown parse error ${code}`;
}
