// Workloads whose page tables change: they run accesses on the guest's vCPUs and, between them, the
// system calls that make a guest kernel rewrite its page tables, so each virtualization technique pays
// what it pays for them on real systems. All are seeded (the same spec gives the same run).
// - pt-churn: a shell forks and execs short-lived programs one after another, as a shell script or a
//   build does; each program touches its memory and exits.
// - mmap-churn: a malloc-heavy server, one thread per vCPU: each request mmaps a buffer (glibc serves
//   allocations from 128 KiB up with mmap), fills and reads it, and munmaps it; the allocator purges
//   heap chunks with madvise(MADV_DONTNEED); a JIT flips code pages between writable and executable
//   with mprotect (W^X).
// - threads-shootdown: a process with one thread per vCPU over one shared region; in turn a thread
//   unmaps a chunk of it and maps it again, so every unmap shoots down the other threads' TLBs.
// Records: 8-byte accesses (text is fetched), cpu = the vCPU the thread runs on.
import { MemvirtError } from "../core/errors.js";
import { PAGE_SHIFT } from "../core/types.js";
import type { GuestOS, Process, Protection, Segment } from "../guest/os.js";
import type { Host } from "../host/host.js";
import { Rng } from "../util/random.js";

import { CHURN_FOOTPRINT, CHURN_WORKLOADS, type ChurnWorkloadName, isChurnWorkload } from "./catalog.js";

export { CHURN_FOOTPRINT, CHURN_WORKLOADS, type ChurnWorkloadName, isChurnWorkload };

export interface ChurnSpec {
  name: ChurnWorkloadName;
  /** Accesses in all (system calls come between them). */
  records: number;
  /** pt-churn: the most memory one program touches; mmap-churn: the heap; threads-shootdown: the region. */
  footprint: number;
  seed: number;
  /** Share of data accesses that write; default 0.3. */
  writeFraction?: number;
}

const PAGE = 0x1000n;
const KIND_READ = 0;
const KIND_WRITE = 1;
const KIND_FETCH = 2;
const RECORD_BYTES = 16;
const TEXT = 0x40_0000n;
const DATA = 0x200_0000n;
const HEAP = 0x1000_0000n;
const JIT = 0x2000_0000n;
const REGION = 0x4000_0000n;
const STACK_TOP = 0x7ffc_0000_0000n;
const RX: Protection = { writable: false, user: true, executable: true };
const RW: Protection = { writable: true, user: true, executable: false };

/** The accesses of a run: written into the host's record region and replayed a batch at a time. */
class Accesses {
  private count = 0;
  private view: DataView | undefined;
  done = 0;

  constructor(
    private readonly host: Host,
    private readonly firstCpu: number,
    private readonly limit: number,
    private readonly rng: Rng,
    private readonly writeFraction: number,
    private readonly onBatch?: (count: number, total: number) => void,
  ) {}

  get left(): number {
    return this.limit - this.done - this.count;
  }

  /** One access by guest CPU `cpu`; none once the run's records are all issued. */
  add(cpu: number, la: bigint, kind: number): void {
    if (this.left <= 0) return;
    if (!this.view) this.view = this.host.recordView();
    const at = this.count * RECORD_BYTES;
    this.view.setBigUint64(at, la, true);
    this.view.setUint32(at + 8, kind | (8 << 8) | ((this.firstCpu + cpu) << 16), true);
    this.view.setUint32(at + 12, 0, true);
    if (++this.count === this.host.recordCapacity) this.flush();
  }

  /** A data access: a write with probability writeFraction, else a read. */
  data(cpu: number, la: bigint): void {
    this.add(cpu, la, this.rng.next() < this.writeFraction ? KIND_WRITE : KIND_READ);
  }

  /** Runs what is pending: the kernel may only change the page tables between accesses. */
  flush(): void {
    if (this.count === 0) return;
    const count = this.count;
    this.count = 0;
    this.view = undefined;
    this.host.replayRange(0, count);
    this.done += count;
    this.onBatch?.(count, this.done);
  }
}

/** What every churn workload works with: the guest kernel, its vCPUs, the accesses, the seed. */
interface Run {
  os: GuestOS;
  cpus: number;
  accesses: Accesses;
  rng: Rng;
  /** Bytes of the guest's pages: ranges the kernel changes are whole pages. */
  unit: bigint;
  footprint: bigint;
}

const roundUp = (bytes: bigint, unit: bigint) => (bytes + unit - 1n) & ~(unit - 1n);

/** A random 8-byte-aligned address in [start, start + bytes). */
function within(rng: Rng, start: bigint, bytes: bigint): bigint {
  return start + BigInt(rng.below(Number(bytes / 8n))) * 8n;
}

/** Touches every 4 KiB page of [start, start + bytes) once, as `kind` (a first touch faults each). */
function touchAll(run: Run, cpu: number, start: bigint, bytes: bigint, kind: number): void {
  for (let page = start; page < start + bytes && run.accesses.left > 0; page += PAGE)
    run.accesses.add(cpu, page + BigInt(run.rng.below(512)) * 8n, kind);
}

/** A program image: text, data, heap and stack, sized in 4 KiB pages. */
function image(text: number, data: number, heap: number, stack: number): Segment[] {
  const bytes = (pages: number) => BigInt(pages) * PAGE;
  return [
    { start: TEXT, length: bytes(text), protection: RX },
    { start: DATA, length: bytes(data), protection: RW },
    { start: HEAP, length: bytes(heap), protection: RW },
    { start: STACK_TOP - bytes(stack), length: bytes(stack), protection: RW },
  ];
}

/** Touches every page of an image's segments (text fetched, the rest read or written). */
function touchImage(run: Run, cpu: number, segments: readonly Segment[]): void {
  for (const segment of segments) {
    const kind = segment.protection.executable ? KIND_FETCH : run.rng.next() < 0.5 ? KIND_WRITE : KIND_READ;
    touchAll(run, cpu, segment.start, segment.length, kind);
  }
}

/** `count` random accesses over an image's segments, in proportion to their sizes. */
function useImage(run: Run, cpu: number, segments: readonly Segment[], count: number): void {
  const total = segments.reduce((sum, segment) => sum + segment.length, 0n);
  for (let i = 0; i < count && run.accesses.left > 0; i++) {
    let offset = BigInt(run.rng.below(Number(total / 8n))) * 8n;
    for (const segment of segments) {
      if (offset >= segment.length) {
        offset -= segment.length;
        continue;
      }
      const la = segment.start + offset;
      if (segment.protection.executable) run.accesses.add(cpu, la, KIND_FETCH);
      else run.accesses.data(cpu, la);
      break;
    }
  }
}

/** A process of its own with `segments` mapped (demand paged), running on `cpus`. */
function spawn(os: GuestOS, segments: readonly Segment[], cpus: readonly number[]): Process {
  const process = os.createProcess();
  for (const segment of segments)
    os.addVma(
      process,
      segment.start,
      segment.start + segment.length,
      { ...segment.protection },
      os.config.pageSize,
    );
  for (const cpu of cpus) os.switchTo(cpu, process);
  return process;
}

/**
 * pt-churn: the shell forks; the child writes a little of its stack (copy-on-write), execs a program
 * of up to `footprint` bytes, touches all of it, runs over it, and exits; the shell runs on, its pages
 * read-only since the fork until its writes make them its own again. Children run on the vCPUs in turn.
 */
function ptChurn(run: Run): void {
  const { os, accesses, rng } = run;
  const shellImage = image(64, 16, 128, 8);
  const shell = spawn(os, shellImage, [0]);
  let idle: Process | undefined;
  touchImage(run, 0, shellImage);
  const programPages = Math.max(8, Number(run.footprint / PAGE));
  for (let child = 0; accesses.left > 0; child++) {
    useImage(run, 0, shellImage, 32);
    accesses.flush();
    const forked = os.fork(0);
    const cpu = child % run.cpus;
    os.switchTo(cpu, forked);
    // Before exec the child writes its stack: copy-on-write copies.
    accesses.add(cpu, STACK_TOP - 0x10n, KIND_WRITE);
    accesses.add(cpu, STACK_TOP - PAGE - 0x10n, KIND_WRITE);
    accesses.flush();
    const pages = Math.ceil(programPages * (0.5 + 0.5 * rng.next()));
    const program = image(
      Math.max(1, Math.round(pages * 0.3)),
      Math.max(1, Math.round(pages * 0.1)),
      Math.max(1, Math.round(pages * 0.5)),
      Math.max(1, Math.round(pages * 0.1)),
    );
    os.exec(cpu, program);
    touchImage(run, cpu, program);
    useImage(run, cpu, program, 3 * pages);
    accesses.flush();
    if (cpu === 0) os.exit(0, shell);
    else {
      idle ??= os.createProcess();
      os.exit(cpu, idle);
    }
  }
}

/**
 * mmap-churn: a server with one thread per vCPU. Each request (threads in turn) works on the heap,
 * mmaps a 128 KiB-1 MiB buffer, writes all of it and reads some back, and munmaps it. Every 8th
 * request the JIT rewrites a few code pages (mprotect writable, write, mprotect executable, run);
 * every 16th the allocator purges 256 KiB of heap (madvise(MADV_DONTNEED)), which later faults back.
 */
function mmapChurn(run: Run): void {
  const { os, accesses, rng, unit } = run;
  const cpus = Array.from({ length: run.cpus }, (_, cpu) => cpu);
  const heapBytes = roundUp(run.footprint, unit);
  const jitBytes = roundUp(256n * PAGE, unit);
  const segments: Segment[] = [
    { start: TEXT, length: 64n * PAGE, protection: RX },
    { start: HEAP, length: heapBytes, protection: RW },
    { start: JIT, length: jitBytes, protection: RX },
  ];
  spawn(os, segments, cpus);
  for (const segment of segments) {
    const kind = segment.protection.executable ? KIND_FETCH : KIND_WRITE;
    for (let page = 0n; page * PAGE < segment.length && accesses.left > 0; page++)
      accesses.add(Number(page % BigInt(run.cpus)), segment.start + page * PAGE, kind);
  }
  for (let request = 0; accesses.left > 0; request++) {
    const cpu = request % run.cpus;
    for (let i = 0; i < 24; i++) accesses.data(cpu, within(rng, HEAP, heapBytes));
    for (let i = 0; i < 4; i++) accesses.add(cpu, within(rng, TEXT, 64n * PAGE), KIND_FETCH);
    const bytes = BigInt(32 + rng.below(225)) * PAGE;
    accesses.flush();
    const buffer = os.mmap(cpu, roundUp(bytes, unit), RW);
    touchAll(run, cpu, buffer, bytes, KIND_WRITE);
    for (let i = 0n; i < bytes / PAGE / 2n; i++) accesses.data(cpu, within(rng, buffer, bytes));
    accesses.flush();
    os.munmap(cpu, buffer, roundUp(bytes, unit));
    if (request % 8 === 7) {
      const pages = BigInt(4 + rng.below(13));
      const at = JIT + ((BigInt(rng.below(Number(jitBytes / PAGE - pages))) * PAGE) & ~(unit - 1n));
      const length = roundUp(pages * PAGE, unit);
      os.mprotect(cpu, at, length, RW);
      touchAll(run, cpu, at, pages * PAGE, KIND_WRITE);
      accesses.flush();
      os.mprotect(cpu, at, length, RX);
      touchAll(run, cpu, at, pages * PAGE, KIND_FETCH);
    }
    if (request % 16 === 15) {
      const chunk = roundUp(64n * PAGE, unit);
      const at = HEAP + ((BigInt(rng.below(Number(heapBytes / PAGE))) * PAGE) & ~(chunk - 1n));
      accesses.flush();
      os.madviseDontNeed(cpu, at, chunk);
    }
  }
}

/**
 * threads-shootdown: one thread per vCPU over a shared region. Each round every thread makes 32
 * accesses (interleaved), then one thread in turn unmaps a chunk every thread may have touched and
 * maps it again: mostly 1-16 pages (flushed page by page), one round in 8 64-256 pages (a full flush).
 */
function threadsShootdown(run: Run): void {
  const { os, accesses, rng, unit } = run;
  if (run.cpus < 2)
    throw new MemvirtError(
      'workload threads-shootdown runs one thread per vCPU and needs at least 2: set "cpus" in the config (e.g. {"cpus": 4})',
    );
  const region = roundUp(run.footprint, unit);
  const cpus = Array.from({ length: run.cpus }, (_, cpu) => cpu);
  const text: Segment = { start: TEXT, length: 16n * PAGE, protection: RX };
  spawn(os, [text, { start: REGION, length: region, protection: RW }], cpus);
  for (let page = 0n; page * PAGE < region && accesses.left > 0; page++)
    accesses.add(Number(page % BigInt(run.cpus)), REGION + page * PAGE, KIND_WRITE);
  for (let round = 0; accesses.left > 0; round++) {
    for (let i = 0; i < 32; i++)
      for (const cpu of cpus) {
        if (i % 8 === 0) accesses.add(cpu, within(rng, TEXT, text.length), KIND_FETCH);
        else accesses.data(cpu, within(rng, REGION, region));
      }
    accesses.flush();
    const cpu = round % run.cpus;
    const pages = round % 8 === 7 ? 64 + rng.below(193) : 1 + rng.below(16);
    const bytes = roundUp(BigInt(pages) * PAGE, unit);
    if (bytes > region) continue;
    const at = REGION + ((BigInt(rng.below(Number((region - bytes) / PAGE) + 1)) * PAGE) & ~(unit - 1n));
    os.munmap(cpu, at, bytes);
    os.mmap(cpu, bytes, RW, { address: at });
  }
}

const DRIVERS: Record<ChurnWorkloadName, (run: Run) => void> = {
  "pt-churn": ptChurn,
  "mmap-churn": mmapChurn,
  "threads-shootdown": threadsShootdown,
};

/** Runs a churn workload on the host's first guest; returns the accesses run. */
export function runChurnWorkload(
  host: Host,
  spec: ChurnSpec,
  onBatch?: (count: number, total: number) => void,
): number {
  if (!Number.isSafeInteger(spec.records) || spec.records < 0)
    throw new RangeError(`records must be a non-negative integer, got ${spec.records}`);
  if (!Number.isSafeInteger(spec.footprint) || spec.footprint < 4096)
    throw new RangeError(`footprint must be at least 4096 bytes, got ${spec.footprint}`);
  const writeFraction = spec.writeFraction ?? 0.3;
  if (!(writeFraction >= 0 && writeFraction <= 1))
    throw new RangeError(`writeFraction must be in [0, 1], got ${writeFraction}`);
  const guest = host.guests[0];
  const rng = new Rng(spec.seed ^ 0x7c3a_91e5);
  const accesses = new Accesses(host, guest.firstCpu, spec.records, rng, writeFraction, onBatch);
  const run: Run = {
    os: guest.os,
    cpus: guest.cpus,
    accesses,
    rng,
    unit: 1n << BigInt(PAGE_SHIFT[guest.os.config.pageSize]),
    footprint: BigInt(spec.footprint),
  };
  DRIVERS[spec.name](run);
  accesses.flush();
  return accesses.done;
}
