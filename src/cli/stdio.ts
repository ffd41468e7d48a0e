// The command line's stdout, and whether its stderr is a terminal, without Node's stdio streams where
// they are not needed. Creating process.stdout or process.stderr on a pipe loads net and its socket
// machinery, about 5% of a small run's CPU (measured against `node -e 0`). Output is written with
// fs.writeSync instead, which is what those streams do on Linux for a file, a pipe or a terminal (they
// write synchronously); a descriptor that is not ready (a non-blocking pipe that is full) hands the
// rest to process.stdout, which waits for it, and a reader that went away ends the output quietly.
import { fstatSync, writeSync } from "node:fs";

/** process.stdout has been written to (and may hold output until it drains). */
let streamed = false;
/** The reader of stdout went away (EPIPE): nothing more is written. */
let closed = false;

/** Writes `text` to stdout, in order with everything written before. */
export function writeOut(text: string): void {
  if (closed) return;
  if (streamed) {
    process.stdout.write(text);
    return;
  }
  const bytes = Buffer.from(text);
  let offset = 0;
  try {
    while (offset < bytes.length) offset += writeSync(1, bytes, offset);
  } catch (error) {
    const code = (error as { code?: string }).code;
    if (code === "EPIPE") {
      closed = true;
      return;
    }
    if (code !== "EAGAIN") throw error;
    streamed = true;
    process.stdout.write(bytes.subarray(offset));
  }
}

/** Calls `done` once everything written to stdout is out. */
export function afterOutput(done: () => void): void {
  if (streamed) process.stdout.write("", done);
  else done();
}

/** Whether stderr is a terminal, without creating process.stderr when fd 2 cannot be one. */
export function stderrIsTerminal(): boolean {
  try {
    if (!fstatSync(2).isCharacterDevice()) return false;
  } catch {
    return false;
  }
  return process.stderr.isTTY === true;
}
