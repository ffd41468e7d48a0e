// A host simulator's cache model that asks memvirt for every translation: the simulator owns the
// data cache (here a direct-mapped, physically tagged 32 KiB cache with 64-byte lines) and memvirt
// owns address translation (TLBs, page walks, their cycles). Run it with `node examples/embed-cache.mjs`
// after `npm run build` in a checkout, or from a project that installed memvirt.
import { AccessKind, BATCH_RESULT, defaultConfig, EXIT_REASONS, Machine, RECORD_SIZE } from "memvirt";

class TinyCache {
  constructor(bytes, lineBytes) {
    this.lineShift = Math.log2(lineBytes);
    this.tags = new Float64Array(bytes / lineBytes).fill(-1);
    this.hits = 0;
    this.misses = 0;
  }
  /** Looks up the line of physical address `pa` (a bigint); true on a hit. */
  access(pa) {
    const line = Number(pa >> BigInt(this.lineShift));
    const set = line % this.tags.length;
    if (this.tags[set] === line) return ++this.hits > 0;
    this.tags[set] = line;
    this.misses++;
    return false;
  }
}

/**
 * A machine with four-level page tables in its physical memory: PML4 at 0x1000, PDPT 0x2000, PD 0x3000,
 * PT 0x4000; 64 user pages at linear 0x400000 map to frames from 0x100000 (present, writable, user).
 */
function makeMachine() {
  const machine = new Machine(defaultConfig().machine);
  machine.writePhys64(0x1000n, 0x2000n | 7n);
  machine.writePhys64(0x2000n, 0x3000n | 7n);
  machine.writePhys64(0x3000n + 2n * 8n, 0x4000n | 7n); // PD[2] covers 0x400000-0x5fffff
  for (let page = 0n; page < 64n; page++)
    machine.writePhys64(0x4000n + page * 8n, (0x100000n + page * 0x1000n) | 7n);
  machine.setRegs(0, { cr0: 0x80010001n, cr3: 0x1000n, cr4: 0x20n, efer: 0xd00n, cpl: 3 });
  return machine;
}

// The simulator's access stream: three passes over a 24 KiB array (line by line), then one access to
// each of the 64 pages.
const accesses = [];
for (let pass = 0; pass < 3; pass++)
  for (let offset = 0; offset < 24 * 1024; offset += 64) accesses.push(0x400000n + BigInt(offset));
for (let page = 0; page < 64; page++) accesses.push(0x400000n + BigInt(page * 4096 + 128));

// 1. One call per access: translate returns the physical address, the fault, the page size, the walk's
//    references and cycles. A fault would go to the simulator's own OS model; here there is none.
let machine = makeMachine();
const perCall = new TinyCache(32 * 1024, 64);
let cycles = 0;
for (const la of accesses) {
  const result = machine.translate(0, la, AccessKind.Read);
  if (result.fault !== 0) throw new Error(`fault ${result.fault} at 0x${la.toString(16)}`);
  machine.countAccess();
  cycles += result.cycles + (perCall.access(result.pa) ? 4 : 200);
}
console.log(
  `per call: ${accesses.length} accesses, cache ${perCall.hits} hits ${perCall.misses} misses, ${cycles} cycles`,
);
const perCallStats = machine.stats();

// 2. Batches: write records (u64 linear address, u8 kind, u8 size, u16 cpu) into the record buffer,
//    translate them in one call, read one result per record back from the same slots. A fresh machine
//    gives the same translations, cycles and statistics as the calls above.
machine = makeMachine();
const batched = new TinyCache(32 * 1024, 64);
const view = machine.recordView();
accesses.forEach((la, i) => {
  view.setBigUint64(i * RECORD_SIZE, la, true);
  view.setUint8(i * RECORD_SIZE + 8, AccessKind.Read);
  view.setUint16(i * RECORD_SIZE + 10, 0, true);
});
machine.translateBatch(0, accesses.length);
cycles = 0;
for (let i = 0; i < accesses.length; i++) {
  const at = i * RECORD_SIZE;
  const outcome = EXIT_REASONS[view.getUint8(at + BATCH_RESULT.outcome)];
  if (outcome !== "none") throw new Error(`${outcome} at record ${i}`);
  const pa = view.getBigUint64(at + BATCH_RESULT.pa, true);
  cycles += view.getUint32(at + BATCH_RESULT.cycles, true) + (batched.access(pa) ? 4 : 200);
}
console.log(
  `batched:  ${accesses.length} accesses, cache ${batched.hits} hits ${batched.misses} misses, ${cycles} cycles`,
);

const stats = machine.stats();
console.log(
  `memvirt:  ${stats.accesses} accesses, ${stats.walks} walks, ${stats.walkRefs} walk references, L1 DTLB ${stats.tlb.l1d.hits} hits ${stats.tlb.l1d.misses} misses`,
);
console.log(`same statistics both ways: ${JSON.stringify(stats) === JSON.stringify(perCallStats)}`);
