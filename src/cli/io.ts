// What the command line hands a command: where its output goes, the signal that stops it between
// batches (SIGINT, SIGTERM), and where its progress bar may draw.
export interface CommandIo {
  print(text: string): void;
  signal: AbortSignal;
  /** The stream a progress bar draws on: stderr on a terminal; undefined with `quiet` or off a terminal. */
  progress(quiet?: boolean): NodeJS.WriteStream | undefined;
}
