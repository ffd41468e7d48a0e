// memvirt's version: in every report, in job hashes, and in the line that asks for a bug report. Its own
// module, so the command line can say it without loading what makes reports.
export const VERSION = "0.1.0";
