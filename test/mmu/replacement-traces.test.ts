// The L1 DTLB's replacement against an independent model, as DineroIV counts it: a set-associative
// TLB of 4 KiB pages, FIFO (a hit changes nothing; a miss inserts as the newest) or LRU (a hit and a
// miss both make the page the most recent), over every shipped trace with its writes. A store that
// meets a clean entry sets D through a walk but is a hit, and leaves the entry where it stands in the
// replacement order. The model knows nothing of memvirt: only the records it reads come from memvirt's
// trace reader, the same records the core translates.
import { describe, expect, it } from "vitest";
import { parseConfigText } from "../../src/config/config.js";
import { AccessKind, REC_KIND, RECORD_SIZE } from "../../src/core/layout.js";
import { Simulation } from "../../src/runner/simulation.js";
import { readTrace } from "../../src/trace/stream.js";

const build = process.env.MEMVIRT_BUILD === "debug" ? "debug" : "release";
const fixture = (name: string) => new URL(`../fixtures/${name}`, import.meta.url).pathname;

type Policy = "fifo" | "lru";

/** A set-associative TLB of page numbers: each way holds a page and the time of its fill (or use). */
class ModelTlb {
  private readonly pages: number[];
  private readonly times: number[];
  private now = 0;
  misses = 0;

  constructor(
    private readonly sets: number,
    private readonly ways: number,
    private readonly policy: Policy,
  ) {
    this.pages = new Array(sets * ways).fill(-1);
    this.times = new Array(sets * ways).fill(0);
  }

  access(page: number): void {
    const first = (page % this.sets) * this.ways;
    this.now++;
    for (let i = first; i < first + this.ways; i++) {
      if (this.pages[i] === page) {
        if (this.policy === "lru") this.times[i] = this.now;
        return;
      }
    }
    this.misses++;
    let victim = first;
    for (let i = first; i < first + this.ways; i++) {
      if (this.pages[i] === -1) {
        victim = i;
        break;
      }
      if (this.times[i] < this.times[victim]) victim = i;
    }
    this.pages[victim] = page;
    this.times[victim] = this.now;
  }
}

const TRACES = [
  "ls.din",
  "ls.lk",
  "ls-head.lk",
  "ls-head.pinatrace",
  "ls-head.champsim.xz",
  "ls-head.champsim.gz",
];
const GEOMETRIES: [entries: number, ways: number][] = [
  [16, 2],
  [64, 4],
];

/** memvirt's L1 DTLB misses over `trace`, and the model's over the same data records. */
async function missesOf(
  trace: string,
  policy: Policy,
  entries: number,
  ways: number,
): Promise<[number, number]> {
  const config = parseConfigText(
    JSON.stringify({ tlb: { l1d: { entries, ways, policy }, l2: null } }),
    "replacement test",
  );
  const simulation = new Simulation(config, { build });
  simulation.start();
  const model = new ModelTlb(entries / ways, ways, policy);
  await readTrace(simulation.machine, fixture(trace), "auto", (count) => {
    // Taken per batch: the core's memory may grow, which detaches an older view.
    const records = simulation.machine.recordView();
    for (let i = 0; i < count; i++) {
      const kind = records.getUint8(i * RECORD_SIZE + REC_KIND) & 0x7f;
      if (kind === AccessKind.Fetch) continue;
      model.access(Number(records.getBigUint64(i * RECORD_SIZE, true) >> 12n));
    }
    simulation.replay(count);
  });
  return [simulation.machine.stats().tlb.l1d.misses, model.misses];
}

describe("L1 DTLB misses equal an independent FIFO/LRU model on every shipped trace, writes included", () => {
  for (const policy of ["fifo", "lru"] as const) {
    for (const [entries, ways] of GEOMETRIES) {
      it.each(TRACES)(`${policy}, ${entries} entries ${ways}-way: %s`, async (trace) => {
        const [memvirt, model] = await missesOf(trace, policy, entries, ways);
        expect(model).toBeGreaterThan(0);
        expect(memvirt).toBe(model);
      });
    }
  }
});
