// memvirt benchmarks: operations per CPU-second of the release core (bench/harness.ts: medians of
// several samples with min-max), with ratios against the TypeScript reference model. Work is done in
// batches of calls (65,536 records a call), because V8 optimises a Wasm function only between calls.
// Run with `npm run bench`; `--quick` shortens every case.
import { closeSync, existsSync, openSync, readFileSync, renameSync, writeSync } from "node:fs";
import { cpus, tmpdir } from "node:os";
import { join } from "node:path";
import { RefMachine } from "../reference/machine.js";
import { defaultConfig } from "../src/config/config.js";
import { RECORD_CAPACITY, RECORD_SIZE } from "../src/core/layout.js";
import { Machine } from "../src/core/machine.js";
import type { MachineConfig } from "../src/core/types.js";
import { Simulation } from "../src/runner/simulation.js";
import { runWorkload } from "../src/workload/run.js";
import { createWorkload, type WorkloadName } from "../src/workload/synthetic.js";
import { formatRate, measureRate, type Rate, type Row, runProcess, summarize } from "./harness.js";
import { DMA_CAPACITY, dmaBatch } from "./iommu.js";
import { champsimDecodeVersusSimulate, ownFormatEndToEnd, sweepScaling } from "./trace.js";

const quick = process.argv.includes("--quick");
/** `--only=TEXT` runs just the cases whose name contains TEXT (for profiling one case). */
const only = process.argv.find((a) => a.startsWith("--only="))?.slice("--only=".length);
const selected = (name: string) => only === undefined || name.includes(only);
const BATCH = RECORD_CAPACITY;
const PAGES = 16384;
const DATA_BASE = 0x4000_0000n;
const VA_BASE = 0x1000_0000n;

interface Mmu {
  writePhys64(pa: bigint, value: bigint): void;
  setRegs(cpu: number, regs: Record<string, bigint | number>): void;
}

/** 64 MiB of 4K pages at VA_BASE: PML4, PDPT, PD and 32 page tables. */
function mapPages(mmu: Mmu): void {
  let next = 0x10_0000n;
  const table = () => {
    const address = next;
    next += 0x1000n;
    return address;
  };
  const pml4 = table();
  const pdpt = table();
  const pd = table();
  mmu.writePhys64(pml4, pdpt | 7n);
  mmu.writePhys64(pdpt, pd | 7n);
  for (let d = 0; d < PAGES / 512; d++) {
    const pt = table();
    mmu.writePhys64(pd + BigInt(128 + d) * 8n, pt | 7n);
    for (let i = 0; i < 512; i++) {
      mmu.writePhys64(pt + BigInt(i) * 8n, (DATA_BASE + BigInt(d * 512 + i) * 0x1000n) | 0x67n);
    }
  }
  mmu.setRegs(0, { cr0: 0x8001_0001n, cr3: pml4, cr4: 0x20n, efer: 0xd00n, cpl: 3 });
}

function walkOnlyConfig(): MachineConfig {
  const machine = defaultConfig().machine;
  machine.tlb = { l1d: null, l1i: null, l2: null };
  machine.psc = { ...machine.psc, pml5: null, pml4: null, pdpte: null, pde: null };
  return machine;
}

/** Addresses of a batch: `pageOf(i)` picks the page of record i. */
function addresses(pageOf: (i: number) => number): bigint[] {
  return Array.from({ length: BATCH }, (_, i) => VA_BASE + BigInt(pageOf(i) * 4096 + ((i * 8) % 4096)));
}

function loadRecords(machine: Machine, list: bigint[]): void {
  const view = machine.recordView();
  list.forEach((la, i) => {
    view.setBigUint64(i * RECORD_SIZE, la, true);
    view.setUint8(i * RECORD_SIZE + 8, i % 4 === 0 ? 1 : 0);
  });
}

function measure(perOp: number, fn: () => void): Rate {
  return measureRate(perOp, fn, quick ? { samples: 3, sampleSeconds: 0.1 } : {});
}

async function coreVersusReference(
  name: string,
  config: MachineConfig,
  pageOf: (i: number) => number,
  target: number,
): Promise<Row> {
  const machine = new Machine(config, { build: "release" });
  mapPages(machine);
  const list = addresses(pageOf);
  loadRecords(machine, list);
  machine.replay(0, BATCH);
  const core = measure(BATCH, () => machine.replay(0, BATCH));
  const reference = new RefMachine(config);
  mapPages(reference);
  const slice = list.slice(0, 4096);
  for (const la of slice) reference.access(0, la, 0);
  const model = measure(slice.length, () => {
    for (const la of slice) reference.access(0, la, 0);
  });
  return { name, unit: "accesses/s", rate: core, reference: model, target };
}

/**
 * A din trace of about `records` lines: the real `ls /` data trace (test/fixtures/ls.din, 47,234
 * records) repeated, so the run sees a real program's locality. Written once to the temp folder.
 */
function dinTrace(records: number): string {
  const path = join(tmpdir(), `memvirt-bench-ls-${records}.din`);
  if (existsSync(path)) return path;
  const fixture = readFileSync(new URL("../../test/fixtures/ls.din", import.meta.url));
  const copies = Math.ceil(records / 47_234);
  const partial = `${path}.partial`;
  const fd = openSync(partial, "w");
  for (let i = 0; i < copies; i++) writeSync(fd, fixture);
  closeSync(fd);
  renameSync(partial, path);
  return path;
}

function endToEnd(records: number): Row {
  const path = dinTrace(records);
  const cli = new URL("../../bin/memvirt.js", import.meta.url).pathname;
  const rates: number[] = [];
  for (let i = 0; i < (quick ? 1 : 5); i++) {
    const run = runProcess(process.execPath, [cli, "run", "--trace", path, "--format", "din", "--json"]);
    rates.push(JSON.parse(run.stdout).accesses / run.cpuSeconds);
  }
  return {
    name: `memvirt run, ${(records / 1e6).toFixed(0)} M-record din trace (ls.din repeated), process start to JSON`,
    unit: "records/s",
    rate: summarize(rates),
    target: 35e6,
  };
}

function format(rows: Row[]): string {
  const m = (n: number) => `${(n / 1e6).toFixed(2)} M`;
  const lines = [
    "| what | core, per CPU-second: median (min–max) | reference model | core / reference | goal |",
    "|---|---|---|---|---|",
  ];
  for (const row of rows) {
    if (row.unit === "x") {
      lines.push(
        `| ${row.name} | ${formatRate(row.rate, 1, "x")} | - | - | ${row.target === undefined ? "-" : `${row.target}x`} |`,
      );
      continue;
    }
    const unit = ` ${row.unit}`;
    const reference = row.reference ? formatRate(row.reference, 1e6, ` M${unit}`) : "-";
    const ratio = row.reference ? `${(row.rate.median / row.reference.median).toFixed(1)}x` : "-";
    const goal = row.target ? (row.target >= 1e6 ? `${m(row.target)}${unit}` : `${row.target}x`) : "-";
    lines.push(
      `| ${row.name} | ${formatRate(row.rate, 1e6, ` M${unit}`)} | ${reference} | ${ratio} | ${goal} |`,
    );
  }
  return lines.join("\n");
}

/**
 * The same 64 MiB of 4K pages as mapPages, seen by a guest under EPT: guest tables in guest-physical
 * memory, an EPT mapping every guest-physical page 4K at HOST_OFFSET, VPID 1.
 */
const HOST_OFFSET = 0x10_0000_0000n;

function mapPagesUnderEpt(machine: Machine): void {
  let nextHost = 0x1000_0000n;
  const hostTable = () => {
    const address = nextHost;
    nextHost += 0x1000n;
    return address;
  };
  const eptRoot = hostTable();
  const mapNested = (gpa: bigint) => {
    let table = eptRoot;
    for (let level = 4; level > 1; level--) {
      const address = table + ((gpa >> BigInt(12 + 9 * (level - 1))) & 0x1ffn) * 8n;
      let entry = machine.readPhys64(address);
      if (entry === 0n) {
        entry = hostTable() | 7n;
        machine.writePhys64(address, entry);
      }
      table = entry & 0x000f_ffff_ffff_f000n;
    }
    machine.writePhys64(table + ((gpa >> 12n) & 0x1ffn) * 8n, (gpa + HOST_OFFSET) | 7n | (6n << 3n));
  };
  const guest = {
    writePhys64: (gpa: bigint, value: bigint) => {
      mapNested(gpa & ~0xfffn);
      machine.writePhys64(gpa + HOST_OFFSET, value);
    },
    setRegs: (cpu: number, regs: Record<string, bigint | number>) => machine.setRegs(cpu, regs),
  };
  mapPages(guest);
  for (let page = 0; page < PAGES; page++) mapNested(DATA_BASE + BigInt(page) * 0x1000n);
  // EPTP: write-back, 4-level walk, A/D enabled.
  machine.vmEnter(0, { nested: "ept", root: eptRoot | 6n | (3n << 3n) | (1n << 6n), vpid: 1 });
}

async function virtualized(
  name: string,
  config: MachineConfig,
  pageOf: (i: number) => number,
  target: number,
): Promise<Row> {
  const machine = new Machine(config, { build: "release" });
  mapPagesUnderEpt(machine);
  loadRecords(machine, addresses(pageOf));
  machine.replay(0, BATCH);
  const refs = machine.stats().walkRefs / Math.max(1, machine.stats().walks);
  const rate = measure(BATCH, () => machine.replay(0, BATCH));
  return { name: `${name} (${refs.toFixed(1)} refs/walk)`, unit: "accesses/s", rate, target };
}

/**
 * A synthetic workload as `memvirt run --workload NAME` runs it (default config, 256 MiB footprint, seed
 * 1): the generator alone filling the record region batch after batch, and the generator with the host's
 * run loop (demand faults, the guest kernel, the core). The simulation rows start from a fresh host per
 * sample, so a sample's share of first-touch faults is what a run of that length pays.
 */
function workloadRows(name: WorkloadName, goal: number): Row[] {
  const records = quick ? 1 << 20 : 1 << 22;
  const spec = { name, records, footprint: 256 << 20, seed: 1 };
  const options = quick ? { samples: 3, sampleSeconds: 0 } : { samples: 5, sampleSeconds: 0 };
  const simulation = new Simulation(defaultConfig(), { build: "release" });
  simulation.start();
  const generate = measureRate(
    records,
    () => {
      const workload = createWorkload(spec);
      while (workload.fill(simulation.recordView(), simulation.recordCapacity) > 0);
    },
    { ...options, warmupCalls: 1 },
  );
  const simulate = measureRate(
    records,
    () => {
      const fresh = new Simulation(defaultConfig(), { build: "release" });
      fresh.start();
      runWorkload(fresh, spec);
    },
    { ...options, warmupCalls: 1 },
  );
  return [
    { name: `${name} workload: generator alone`, unit: "records/s", rate: generate },
    {
      name: `${name} workload: generator + simulation (run loop)`,
      unit: "records/s",
      rate: simulate,
      target: goal,
    },
  ];
}

async function main(): Promise<void> {
  console.log(
    `memvirt bench, ${new Date().toISOString().slice(0, 10)}, ${cpus()[0].model}, Node ${process.version}`,
  );
  // Each case is named once; `--only=TEXT` keeps the cases whose name contains TEXT.
  const bare2d = walkOnlyConfig();
  bare2d.nestedTlb = null;
  bare2d.nestedPsc = null;
  const e2eRecords = quick ? 3_000_000 : 30_000_000;
  const cases: [string, () => Promise<Row>][] = [
    // Accesses that hit the L1 DTLB: 16 pages, one after another, 8 bytes apart (a quarter are writes).
    [L1_HITS, () => coreVersusReference(L1_HITS, defaultConfig().machine, (i) => (i >> 9) % 16, 100e6)],
    // The same, but every access on another page (16 pages round robin): the set scan every time.
    [L1_SCAN, () => coreVersusReference(L1_SCAN, defaultConfig().machine, (i) => i % 16, 0)],
    // Native 4-level walks, TLBs and paging-structure caches off: every access walks 4 levels.
    [NATIVE_WALKS, () => coreVersusReference(NATIVE_WALKS, walkOnlyConfig(), (i) => i % PAGES, 30e6)],
    // Full 2D walks, 4-level guest on 4-level EPT, every cache off: 24 references each.
    [TWO_D_WALKS, () => virtualized(TWO_D_WALKS, bare2d, (i) => i % PAGES, 8e6)],
    // Virtualized replay with a warm TLB against native: the same L1-hit stream under EPT.
    [EPT_WARM, () => virtualized(EPT_WARM, defaultConfig().machine, (i) => (i >> 9) % 16, 0)],
    ["memvirt run", async () => endToEnd(e2eRecords)],
    ["memvirt-format", async () => ownFormatEndToEnd(quick)],
    // DMA translations that hit the IOTLB: 16 hot pages of one device, 64-byte requests.
    [
      IOMMU_WARM,
      () =>
        dmaCase(
          IOMMU_WARM,
          dmaBatch(true, (i) => (i >> 6) % 16),
          20e6,
        ),
    ],
    // Full 4-level IOMMU walks: no IOTLB, 16,384 pages round robin (the context cache stays on).
    [
      IOMMU_WALKS,
      () =>
        dmaCase(
          IOMMU_WALKS,
          dmaBatch(false, (i) => i % 16384),
          5e6,
        ),
    ],
  ];
  const multiRowCases: [string, () => Promise<Row[]>][] = [
    ["ChampSim", () => champsimDecodeVersusSimulate(quick)],
    ["zipf", async () => workloadRows("zipf", 20e6)],
    ["uniform", async () => workloadRows("uniform", 0)],
    ["pointer-chase", async () => workloadRows("pointer-chase", 0)],
    ["sweep", async () => sweepScaling(quick)],
  ];
  const rows: Row[] = [];
  for (const [name, run] of cases) if (selected(name)) rows.push(await run());
  for (const [name, run] of multiRowCases) if (selected(name)) rows.push(...(await run()));
  console.log(format(rows));
  const row = (prefix: string) => rows.find((r) => r.name.startsWith(prefix));
  const walkRow = row(NATIVE_WALKS);
  if (walkRow?.reference) {
    console.log(
      `\ncore vs reference on the same walk: ${(walkRow.rate.median / walkRow.reference.median).toFixed(1)}x (goal 20x)`,
    );
  }
  const native = row(L1_HITS);
  const warm = row(EPT_WARM);
  if (native && warm) {
    console.log(
      `EPT guest warm-TLB replay: ${(native.rate.median / warm.rate.median).toFixed(2)}x native's time per access (goal within 1.5x)`,
    );
  }
}

async function dmaCase(name: string, run: () => void, target: number): Promise<Row> {
  return { name, unit: "translations/s", rate: measure(DMA_CAPACITY, run), target };
}

const IOMMU_WARM = "DMA translations, warm IOTLB (16 hot pages)";
const IOMMU_WALKS = "full 4-level IOMMU walks, IOTLB off";
const L1_HITS = "L1 DTLB hits (16 hot pages)";
const L1_SCAN = "L1 DTLB hits, page changes every access";
const NATIVE_WALKS = "native 4-level walks, TLBs and PSCs off";
const TWO_D_WALKS = "full 2D walks, 4+4 levels, caches off";
const EPT_WARM = "EPT guest, L1 DTLB hits (16 hot pages)";

await main();
