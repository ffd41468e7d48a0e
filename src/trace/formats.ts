// The trace formats memvirt reads, by name: light data, so the command line lists them without loading
// a reader (trace/source.ts) or a decompressor.
export const TRACE_FORMATS = ["lackey", "din", "pinatrace", "champsim", "memvirt"] as const;
export type TraceFormat = (typeof TRACE_FORMATS)[number];
export type TraceFormatOption = TraceFormat | "auto";
