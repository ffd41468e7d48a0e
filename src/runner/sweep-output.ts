// The file a sweep writes its rows to, however its cells run (worker threads, a Redis queue, Slurm
// parts being merged). It is locked while a sweep writes it, so two sweeps on the same --out do not
// run every cell twice; every output is checked writable before a cell runs, so a typo in a path
// does not throw away hours of simulation at the end.

import {
  appendFileSync,
  closeSync,
  existsSync,
  openSync,
  readFileSync,
  unlinkSync,
  writeFileSync,
  writeSync,
} from "node:fs";
import { hostname } from "node:os";
import { MemvirtError } from "../core/machine.js";
import type { SweepRow } from "./cell.js";

/** Rows already in an output file (a partial last line, from a killed sweep, is ignored). */
export function readRows(path: string): SweepRow[] {
  if (!existsSync(path)) return [];
  const rows: SweepRow[] = [];
  for (const line of readFileSync(path, "utf8").split("\n")) {
    if (line.trim() === "") continue;
    try {
      rows.push(JSON.parse(line) as SweepRow);
    } catch {
      // Only the last line can be cut short by a kill; a row that did not finish is run again.
    }
  }
  return rows;
}

/** Fails with the flag and the reason when `path` cannot be written; creates it empty if missing. */
export function checkWritable(path: string, flag: string): void {
  try {
    appendFileSync(path, "");
  } catch (error) {
    throw new MemvirtError(`${flag} ${path}: cannot write: ${(error as Error).message}`);
  }
}

const SIGNALS: NodeJS.Signals[] = ["SIGINT", "SIGTERM", "SIGHUP"];

function processAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (error) {
    // EPERM: it exists, under another user.
    return (error as NodeJS.ErrnoException).code === "EPERM";
  }
}

/**
 * Takes `PATH.lock` (created exclusively, so it works between machines on a shared filesystem too).
 * A lock left by a sweep that died on this host is taken over; one held elsewhere is refused.
 */
export function lockOutput(path: string): () => void {
  const lock = `${path}.lock`;
  const host = hostname();
  for (let attempt = 0; ; attempt++) {
    let fd: number;
    try {
      fd = openSync(lock, "wx");
    } catch (error) {
      if ((error as NodeJS.ErrnoException).code !== "EEXIST") {
        throw new MemvirtError(`--out ${path}: cannot create its lock ${lock}: ${(error as Error).message}`);
      }
      let owner = "";
      try {
        owner = readFileSync(lock, "utf8").trim();
      } catch {
        // Released between our open and read: try again.
      }
      const [pid, ownerHost] = owner.split(" ");
      const stale = ownerHost === host && Number(pid) > 0 && !processAlive(Number(pid));
      if ((stale || owner === "") && attempt < 2) {
        try {
          unlinkSync(lock);
        } catch {
          // Someone else took it over first; the next open decides.
        }
        continue;
      }
      throw new MemvirtError(
        `--out ${path}: another sweep is writing it (pid ${pid || "?"} on ${ownerHost || "?"}, lock ${lock}); if that sweep is gone, remove the lock file`,
      );
    }
    writeSync(fd, `${process.pid} ${host}\n`);
    closeSync(fd);
    let released = false;
    const release = () => {
      if (released) return;
      released = true;
      for (const signal of SIGNALS) process.removeListener(signal, onSignal);
      try {
        unlinkSync(lock);
      } catch {
        // Already gone: nothing to release.
      }
    };
    // Interrupted: leave no lock behind, then die of the signal as if it had not been caught.
    const onSignal = (signal: NodeJS.Signals) => {
      release();
      process.kill(process.pid, signal);
    };
    for (const signal of SIGNALS) process.once(signal, onSignal);
    return release;
  }
}

/**
 * An open sweep output: locked, its finished rows read, a line cut short by a kill dropped. Rows are
 * appended one line each as cells finish, so a killed sweep resumes where it stopped.
 */
export class SweepOutput {
  readonly existing: SweepRow[];
  private readonly release: () => void;

  constructor(
    readonly path: string,
    extraOutputs: { path?: string; flag: string }[] = [],
  ) {
    checkWritable(path, "--out");
    for (const extra of extraOutputs) if (extra.path) checkWritable(extra.path, extra.flag);
    this.release = lockOutput(path);
    try {
      this.existing = readRows(path);
      // A killed sweep can leave a cut line without a newline: start the next row on a line of its own.
      const text = readFileSync(path, "utf8");
      if (text.length > 0 && !text.endsWith("\n")) {
        writeFileSync(path, text.slice(0, text.lastIndexOf("\n") + 1));
      }
    } catch (error) {
      this.release();
      throw error;
    }
  }

  append(row: SweepRow): void {
    appendFileSync(this.path, `${JSON.stringify(row)}\n`);
  }

  close(): void {
    this.release();
  }
}
