// How a command ends, told the same way by every command: a run that stopped on bad input says what and
// where in one line and exits 2; an interrupted one exits with the shell's code for the signal; a bug
// in memvirt says so in one line with the version and exits 70 (EX_SOFTWARE). In every case the
// statistics so far are printed first, with `error` or `"interrupted": true` in them.
import { InterruptedError, MemvirtError } from "../core/errors.js";
import { VERSION } from "../version.js";

export interface Ending {
  code: number;
  /** What happened, in a few words: the error's message, or "interrupted by SIGINT". */
  message: string;
  /** The line for stderr. */
  line: string;
  /** For the report: what stopped the run (absent when it was interrupted). */
  error?: string;
  interrupted?: boolean;
  /** The internal error itself, for MEMVIRT_DEBUG. */
  cause?: unknown;
}

/** The exit code for an internal error: BSD's EX_SOFTWARE. */
export const EXIT_INTERNAL = 70;

export function endingOf(error: unknown): Ending {
  if (error instanceof InterruptedError)
    return {
      code: error.exitCode,
      message: error.message,
      interrupted: true,
      line: `memvirt: ${error.message}: stopped between two batches; the statistics so far are on stdout`,
    };
  if (error instanceof MemvirtError && error.exitCode === 2)
    return { code: 2, message: error.message, error: error.message, line: `memvirt: ${error.message}` };
  const message = error instanceof Error ? `${error.name}: ${error.message}` : String(error);
  const oneLine = message.replace(/\s*\n\s*/g, " ");
  return {
    code: EXIT_INTERNAL,
    message: `internal error: ${oneLine}`,
    error: `internal error: ${oneLine}`,
    cause: error,
    line: `memvirt ${VERSION}: internal error: ${oneLine}. This is a bug in memvirt: please report it with the command, config and input that caused it (MEMVIRT_DEBUG=1 adds the stack).`,
  };
}

/** Records in a report how its run ended. */
export function markReport<T extends { error?: string; interrupted?: boolean }>(
  report: T,
  ending?: Ending,
): T {
  if (ending?.interrupted) report.interrupted = true;
  else if (ending?.error) report.error = ending.error;
  return report;
}

/** Writes the ending's line to stderr and returns the exit code (0 when there is none). */
export function finish(ending: Ending | undefined): number {
  if (!ending) return 0;
  process.stderr.write(`${ending.line}\n`);
  if (ending.cause instanceof Error && process.env.MEMVIRT_DEBUG)
    process.stderr.write(`${ending.cause.stack}\n`);
  return ending.code;
}

/** Runs `work`; an error becomes its Ending instead of propagating. */
export async function attempt(work: () => Promise<unknown> | unknown): Promise<Ending | undefined> {
  try {
    await work();
    return undefined;
  } catch (error) {
    return endingOf(error);
  }
}
