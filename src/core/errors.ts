// The error every part of memvirt throws for something a user can cause (a bad config key, a bad
// trace line, a bad argument): the CLI prints its message without a stack and exits with its code.

export class MemvirtError extends Error {
  /** Process exit code for the CLI: 2 for user errors, 1 for internal ones. */
  constructor(
    message: string,
    readonly exitCode = 2,
  ) {
    super(message);
    this.name = "MemvirtError";
  }
}
