// The errors every part of memvirt throws for something a user can cause (a bad config key, a bad
// trace line, a bad argument) or asks for (an interrupt): the CLI prints the message without a stack,
// with the statistics so far, and exits with the error's code.

export class MemvirtError extends Error {
  /** Process exit code for the CLI: 2 for user errors; anything else is internal (the CLI exits 70). */
  constructor(
    message: string,
    readonly exitCode = 2,
  ) {
    super(message);
    this.name = "MemvirtError";
  }
}

const SIGNAL_NUMBERS: Record<string, number> = { SIGHUP: 1, SIGINT: 2, SIGTERM: 15 };

/**
 * A run stopped between two batches because it was asked to (an aborted `AbortSignal`; the CLI aborts on
 * SIGINT and SIGTERM). Everything before it ran; the exit code is the shell's for the signal (128 + n).
 */
export class InterruptedError extends MemvirtError {
  constructor(readonly reason: string) {
    super(`interrupted by ${reason}`, 128 + (SIGNAL_NUMBERS[reason] ?? SIGNAL_NUMBERS.SIGINT));
    this.name = "InterruptedError";
  }
}
