// Worker threads that run sweep cells (sweep-worker.ts), for local sweeps, `--cells` and the Redis
// worker alike. A cell never runs on the calling thread: a queue worker's thread must stay free to
// renew its job locks while a cell simulates for minutes.

import { existsSync } from "node:fs";
import { fileURLToPath } from "node:url";
import { Piscina } from "piscina";
import { MemvirtError } from "../core/machine.js";
import type { SweepCell, SweepRow } from "./cell.js";

const WORKER = fileURLToPath(new URL("./sweep-worker.js", import.meta.url));

export class CellPool {
  private readonly pool: Piscina;

  constructor(threads: number) {
    // Worker threads load compiled JavaScript: from the TypeScript sources (tsx, vitest) there is none.
    if (!existsSync(WORKER)) {
      throw new MemvirtError(`${WORKER} is missing: sweeps run from the built package (npm run build)`, 1);
    }
    this.pool = new Piscina({ filename: WORKER, minThreads: threads, maxThreads: threads });
  }

  /**
   * The cell's row. `readFrom` reads the trace from another path than the row names (a queue
   * worker's resolved path). Rejects when the thread dies or `signal` aborts the cell.
   */
  run(cell: SweepCell, signal?: AbortSignal, readFrom?: string): Promise<SweepRow> {
    return this.pool.run({ cell, readFrom }, { signal }) as Promise<SweepRow>;
  }

  destroy(): Promise<void> {
    return this.pool.destroy();
  }
}
