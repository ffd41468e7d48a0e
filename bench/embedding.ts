// The embedding interface as a host simulator uses it, through the public entry: a cache or core
// model asks memvirt for every translation, one `translate` call per access, or a batch of records in
// and one result per record out (`translateBatch`). Both on L1 DTLB hits (16 hot pages), the case an
// embedder's inner loop lives in. Rates are per CPU-second of this process (bench/harness.ts), medians
// with min-max. Run with `npm run bench:embedding` (`--quick` for fewer, shorter samples).
import {
  AccessKind,
  BATCH_RESULT,
  defaultConfig,
  Machine,
  RECORD_CAPACITY,
  RECORD_SIZE,
} from "../src/index.js";
import { formatRate, measureRate } from "./harness.js";

const quick = process.argv.includes("--quick");
/** Calls per measured call of the single-call case: a batch of calls, as V8 tiers up between calls. */
const CALLS = 65_536;
const HOT_PAGES = 16;
const VA_BASE = 0x1000_0000n;
const DATA_BASE = 0x4000_0000n;

/** A machine whose 16 hot pages at VA_BASE are mapped 4K (4-level tables) and already in the L1 DTLB. */
function machine(): Machine {
  const m = new Machine(defaultConfig().machine, { build: "release" });
  m.writePhys64(0x10_0000n, 0x10_1000n | 7n);
  m.writePhys64(0x10_1000n, 0x10_2000n | 7n);
  m.writePhys64(0x10_2000n + 128n * 8n, 0x10_3000n | 7n);
  for (let page = 0n; page < BigInt(HOT_PAGES); page++)
    m.writePhys64(0x10_3000n + page * 8n, (DATA_BASE + page * 0x1000n) | 0x67n);
  m.setRegs(0, { cr0: 0x8001_0001n, cr3: 0x10_0000n, cr4: 0x20n, efer: 0xd00n, cpl: 3 });
  for (let page = 0; page < HOT_PAGES; page++)
    m.translate(0, VA_BASE + BigInt(page) * 0x1000n, AccessKind.Read);
  return m;
}

/** The access stream: page i % 16, a different line each time. */
const addressOf = (i: number) => VA_BASE + BigInt((i % HOT_PAGES) * 4096 + ((i * 64) % 4096));

/** Keeps results alive, so V8 cannot drop the work that made them. */
let sink = 0n;

/** One `translate` call per access; the host reads the physical address of each. */
function singleCalls(m: Machine, addresses: bigint[]): void {
  for (let i = 0; i < CALLS; i++) {
    const result = m.translate(0, addresses[i & 1023], AccessKind.Read);
    sink ^= result.pa;
  }
}

/**
 * A batch of RECORD_CAPACITY records: the host copies its records into the record buffer, translates
 * them in one call and reads each record's physical address and cycles back.
 */
function batch(m: Machine, template: Uint8Array): void {
  const offset = m.recordView().byteOffset;
  new Uint8Array(m.memory.buffer, offset, RECORD_CAPACITY * RECORD_SIZE).set(template);
  m.translateBatch(0, RECORD_CAPACITY);
  if (readResults(new Uint32Array(m.memory.buffer, offset, RECORD_CAPACITY * 4)) < 0) sink ^= 1n;
}

/**
 * What a host does with the results: each record's physical address (below 2^52, so two 32-bit
 * halves make it exactly, without a BigInt) and cycles. Locals only, so V8 keeps them in registers.
 */
function readResults(u32: Uint32Array): number {
  const cyclesWord = BATCH_RESULT.cycles / 4;
  let pa = 0;
  let cycles = 0;
  for (let i = 0; i < RECORD_CAPACITY; i++) {
    pa += u32[i * 4] + u32[i * 4 + 1] * 4294967296;
    cycles += u32[i * 4 + cyclesWord];
  }
  return pa + cycles;
}

const m = machine();
const addresses = Array.from({ length: 1024 }, (_, i) => addressOf(i));
const template = new Uint8Array(RECORD_CAPACITY * RECORD_SIZE);
const view = new DataView(template.buffer);
for (let i = 0; i < RECORD_CAPACITY; i++) {
  view.setBigUint64(i * RECORD_SIZE, addressOf(i), true);
  view.setUint8(i * RECORD_SIZE + 8, AccessKind.Read);
}

const options = quick ? { samples: 3, sampleSeconds: 0.1 } : { samples: 11, sampleSeconds: 0.3 };
const cases = [
  {
    name: "single translate calls, L1 DTLB hits",
    unit: "M calls/s",
    goal: 20e6,
    rate: measureRate(CALLS, () => singleCalls(m, addresses), options),
  },
  {
    name: "translateBatch, L1 DTLB hits (copy records in, read pa and cycles out)",
    unit: "M records/s",
    goal: 100e6,
    rate: measureRate(RECORD_CAPACITY, () => batch(m, template), options),
  },
];
if (m.stats().tlb.l1d.misses !== HOT_PAGES) throw new Error("the embedding cases left the L1 DTLB");

console.log(`embedding, per CPU-second (median of ${options.samples} with min-max), Node ${process.version}`);
console.log("| what | rate | goal |");
console.log("|---|---|---|");
for (const c of cases) {
  const met = c.rate.median >= c.goal ? "met" : "not met";
  console.log(
    `| ${c.name} | ${formatRate(c.rate, 1e6, ` ${c.unit}`, 1)} | ${c.goal / 1e6} ${c.unit}: ${met} |`,
  );
}
if (sink === 42n) console.log("");
