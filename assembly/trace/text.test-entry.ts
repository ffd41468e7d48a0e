// Standalone entry for testing the text parsers on their own, with the export names the core's
// module uses (see src/core/wasm.ts), so tests need no part of the MMU.
export {
  parseText,
  textBuffer,
  sniffText,
  textEofSeen,
  textResetEof,
  textParsedBytes,
  textParsedLines,
  textParseError,
  textParseErrorLine,
} from "./text";
