// The embedding interface as a host simulator uses it, through the public entry: a cache or core
// model asks memvirt for every translation, one `translate` call per access, or a batch of records in
// and one result per record out (`translateBatch`). Both on L1 DTLB hits (16 hot pages), the case an
// embedder's inner loop lives in. Rates are per second of process CPU time (process.cpuUsage), each
// case run REPS times interleaved with the others; medians with min-max. Run with
// `npm run bench:embedding` (`--quick` for fewer, shorter repetitions).
import {
  AccessKind,
  BATCH_RESULT,
  defaultConfig,
  Machine,
  RECORD_CAPACITY,
  RECORD_SIZE,
} from "../src/index.js";

const quick = process.argv.includes("--quick");
const REPS = quick ? 3 : 11;
const CALLS = quick ? 200_000 : 2_000_000;
const BATCHES = quick ? 4 : 40;
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

function cpuSeconds(fn: () => void): number {
  const start = process.cpuUsage();
  fn();
  const used = process.cpuUsage(start);
  return (used.user + used.system) / 1e6;
}

let sink = 0n;

/** One `translate` call per access; the host reads the physical address of each. */
function singleCalls(m: Machine, addresses: bigint[]): number {
  return (
    CALLS /
    cpuSeconds(() => {
      for (let i = 0; i < CALLS; i++) {
        const result = m.translate(0, addresses[i & 1023], AccessKind.Read);
        sink ^= result.pa;
      }
    })
  );
}

/**
 * Batches of RECORD_CAPACITY records: the host copies its records into the record buffer, translates
 * them in one call and reads each record's physical address and cycles back.
 */
function batches(m: Machine, template: Uint8Array): number {
  const buffer = m.memory.buffer;
  const offset = m.recordView().byteOffset;
  const bytes = new Uint8Array(buffer, offset, RECORD_CAPACITY * RECORD_SIZE);
  const u32 = new Uint32Array(buffer, offset, RECORD_CAPACITY * 4);
  let sum = 0;
  const seconds = cpuSeconds(() => {
    for (let b = 0; b < BATCHES; b++) {
      bytes.set(template);
      m.translateBatch(0, RECORD_CAPACITY);
      sum += readResults(u32);
    }
  });
  if (sum < 0) sink ^= 1n;
  return (BATCHES * RECORD_CAPACITY) / seconds;
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

function median(values: number[]): number {
  const sorted = [...values].sort((a, b) => a - b);
  return sorted[Math.floor(sorted.length / 2)];
}

const m = machine();
const addresses = Array.from({ length: 1024 }, (_, i) => addressOf(i));
const template = new Uint8Array(RECORD_CAPACITY * RECORD_SIZE);
const view = new DataView(template.buffer);
for (let i = 0; i < RECORD_CAPACITY; i++) {
  view.setBigUint64(i * RECORD_SIZE, addressOf(i), true);
  view.setUint8(i * RECORD_SIZE + 8, AccessKind.Read);
}

const cases: { name: string; unit: string; goal?: number; run: () => number; rates: number[] }[] = [
  {
    name: "single translate calls, L1 DTLB hits",
    unit: "M calls/s",
    goal: 20e6,
    run: () => singleCalls(m, addresses),
    rates: [],
  },
  {
    name: "translateBatch, L1 DTLB hits (copy records in, read pa and cycles out)",
    unit: "M records/s",
    goal: 100e6,
    run: () => batches(m, template),
    rates: [],
  },
];

for (const c of cases) c.run(); // warm-up: V8 tiers the loops and the Wasm functions up
for (let rep = 0; rep < REPS; rep++) for (const c of cases) c.rates.push(c.run());
if (m.stats().tlb.l1d.misses !== HOT_PAGES) throw new Error("the embedding cases left the L1 DTLB");

const M = (rate: number) => (rate / 1e6).toFixed(1);
console.log(`embedding (per CPU-second, median of ${REPS} with min-max), Node ${process.version}`);
console.log("| what | rate | goal |");
console.log("|---|---|---|");
for (const c of cases) {
  const rate = `${M(median(c.rates))} ${c.unit} (${M(Math.min(...c.rates))}-${M(Math.max(...c.rates))})`;
  const goal = c.goal ? `${M(c.goal)} ${c.unit}: ${median(c.rates) >= c.goal ? "met" : "not met"}` : "-";
  console.log(`| ${c.name} | ${rate} | ${goal} |`);
}
if (sink === 42n) console.log("");
