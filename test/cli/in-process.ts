// Test helper: `memvirt` run in the test's own process (no spawn), with its output, its stderr and its
// exit code, on the build the test project runs; and config files written to a scratch directory.
import { mkdtempSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { type MainOptions, main } from "../../src/cli/main.js";

export const build = process.env.MEMVIRT_BUILD === "debug" ? "debug" : "release";

/** `memvirt ARGS --build BUILD` in this process; `options` stand for the signals and the terminal. */
export async function runMemvirt(
  args: string[],
  options: MainOptions & { withoutBuild?: boolean } = {},
): Promise<{ code: number; output: string; stderr: string }> {
  const lines: string[] = [];
  const stderr: string[] = [];
  const original = process.stderr.write.bind(process.stderr);
  process.stderr.write = ((text: string) => stderr.push(text)) as typeof process.stderr.write;
  try {
    const argv = ["node", "memvirt", ...args, ...(options.withoutBuild ? [] : ["--build", build])];
    const code = await main(argv, (text) => lines.push(text), options);
    return { code, output: lines.join("\n"), stderr: stderr.join("") };
  } finally {
    process.stderr.write = original;
  }
}

/** A scratch directory, and a writer of JSON config files into it. */
export function scratch(prefix: string): { dir: string; config: (name: string, value: unknown) => string } {
  const dir = mkdtempSync(join(tmpdir(), prefix));
  return {
    dir,
    config: (name, value) => {
      const path = join(dir, name);
      writeFileSync(path, JSON.stringify(value));
      return path;
    },
  };
}

/** A stand-in terminal for progress bars: all it is shown is in `text`; `onWrite` sees it after each write. */
export function fakeTerminal(isTTY = true, onWrite?: (text: string) => void) {
  return {
    isTTY,
    columns: 200,
    text: "",
    write(chunk: string) {
      this.text += chunk;
      onWrite?.(this.text);
      return true;
    },
    cursorTo: () => true,
    clearLine: () => true,
    moveCursor: () => true,
    on: () => {},
    removeListener: () => {},
  } as unknown as NodeJS.WriteStream & { text: string };
}
