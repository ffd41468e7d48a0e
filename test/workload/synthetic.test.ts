import fc from "fast-check";
import { describe, expect, it } from "vitest";
import {
  createWorkload,
  DEFAULT_BASE,
  WORKLOAD_NAMES,
  type WorkloadOptions,
  type WorkloadSpec,
} from "../../src/workload/synthetic.js";

interface DecodedRecord {
  address: bigint;
  kind: number;
  size: number;
  cpu: number;
  line: number;
}

/** Runs a workload to exhaustion in batches of `batch` records; returns all the bytes. */
function generate(spec: WorkloadSpec, batch = 1000, options?: WorkloadOptions): Uint8Array {
  const workload = createWorkload(spec, options);
  const parts: Uint8Array[] = [];
  const buffer = new Uint8Array(batch * 16);
  const view = new DataView(buffer.buffer);
  for (;;) {
    const count = workload.fill(view, batch);
    if (count === 0) break;
    parts.push(buffer.slice(0, count * 16));
  }
  const result = new Uint8Array(parts.reduce((sum, part) => sum + part.length, 0));
  let offset = 0;
  for (const part of parts) {
    result.set(part, offset);
    offset += part.length;
  }
  return result;
}

function decode(bytes: Uint8Array): DecodedRecord[] {
  const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  const records: DecodedRecord[] = [];
  for (let offset = 0; offset < bytes.length; offset += 16) {
    records.push({
      address: view.getBigUint64(offset, true),
      kind: view.getUint8(offset + 8),
      size: view.getUint8(offset + 9),
      cpu: view.getUint16(offset + 10, true),
      line: view.getUint32(offset + 12, true),
    });
  }
  return records;
}

const offsetsOf = (records: DecodedRecord[], base = DEFAULT_BASE): number[] =>
  records.map((record) => Number(record.address - base));

describe("synthetic workloads", () => {
  it.each(WORKLOAD_NAMES)("%s is deterministic for a seed and independent of batching", (name) => {
    const spec: WorkloadSpec = { name, records: 5000, footprint: 1 << 20, seed: 42 };
    const first = generate(spec, 1000);
    expect(first.length).toBe(5000 * 16);
    expect(Buffer.from(generate(spec, 7)).equals(Buffer.from(first))).toBe(true);
    expect(Buffer.from(generate({ ...spec, seed: 43 })).equals(Buffer.from(first))).toBe(false);
  });

  it.each(WORKLOAD_NAMES)("%s stays inside the footprint with aligned 8-byte accesses", (name) => {
    const base = 0x7f1234560000n;
    const footprint = 40_960 + 4_096 + 24; // a partial last page, and not a multiple of any stride
    const records = decode(generate({ name, records: 20_000, footprint, base, seed: 7, cpu: 3 }));
    // One expect for all records: vitest's expect costs microseconds a call.
    const misfits = records.filter((record) => {
      const offset = record.address - base;
      const inside = offset >= 0n && offset + 8n <= BigInt(footprint) && offset % 8n === 0n;
      return !inside || record.size !== 8 || record.cpu !== 3 || record.line !== 0 || record.kind > 1;
    });
    expect(misfits).toEqual([]);
  });

  it("fills no more than asked, than the view holds, or than remain", () => {
    const workload = createWorkload({ name: "uniform", records: 10, footprint: 4096, seed: 1 });
    expect(workload.fill(new DataView(new ArrayBuffer(16 * 4)), 100)).toBe(4);
    expect(workload.fill(new DataView(new ArrayBuffer(16 * 100)), 3)).toBe(3);
    expect(workload.fill(new DataView(new ArrayBuffer(16 * 100)), 100)).toBe(3);
    expect(workload.fill(new DataView(new ArrayBuffer(16 * 100)), 100)).toBe(0);
  });

  it("sequential walks the footprint with its stride and wraps", () => {
    const offsets = offsetsOf(
      decode(generate({ name: "sequential", records: 40, footprint: 1024, seed: 1 })),
    );
    expect(offsets.slice(0, 17)).toEqual([...Array.from({ length: 16 }, (_, index) => index * 64), 0]);
    const strided = offsetsOf(
      decode(generate({ name: "sequential", records: 6, footprint: 100 * 8, stride: 256, seed: 1 })),
    );
    expect(strided).toEqual([0, 256, 512, 768, 0, 256]);
  });

  it("strided visits every page and moves to a new line each pass", () => {
    const pages = 16;
    const stride = 3 * 4096;
    const offsets = offsetsOf(
      decode(generate({ name: "strided", records: 2000, footprint: pages * 4096, stride, seed: 1 })),
    );
    expect(offsets.slice(0, 7)).toEqual([
      0,
      stride,
      2 * stride,
      3 * stride,
      4 * stride,
      5 * stride,
      4096 + 64,
    ]);
    expect(new Set(offsets.map((offset) => Math.floor(offset / 4096))).size).toBe(pages);
    const pageStride = offsetsOf(
      decode(generate({ name: "strided", records: 8, footprint: 4 * 4096, seed: 1 })),
    );
    expect(pageStride).toEqual([0, 4096, 8192, 12288, 64, 4160, 8256, 12352]);
  });

  it("uniform covers the footprint evenly", () => {
    const slots = 512;
    const offsets = offsetsOf(
      decode(generate({ name: "uniform", records: 51_200, footprint: slots * 8, seed: 5 })),
    );
    const counts = new Array<number>(slots).fill(0);
    for (const offset of offsets) counts[offset / 8]++;
    // Expected 100 per slot; 5 standard deviations either side.
    expect(Math.min(...counts)).toBeGreaterThan(50);
    expect(Math.max(...counts)).toBeLessThan(150);
  });

  it("pointer-chase visits every line once per cycle (Sattolo table)", () => {
    const lines = 1000;
    const offsets = offsetsOf(
      decode(generate({ name: "pointer-chase", records: 3 * lines, footprint: lines * 64, seed: 9 })),
    );
    expectSingleCycle(offsets, lines);
  });

  it("pointer-chase visits every line once per cycle (LCG beyond the table limit)", () => {
    for (const lines of [1000, 1024, 3, 70_001]) {
      const offsets = offsetsOf(
        decode(
          generate({ name: "pointer-chase", records: 2 * lines, footprint: lines * 64, seed: lines }, 4096, {
            permutationLimit: 2,
          }),
        ),
      );
      expectSingleCycle(offsets, lines);
    }
  });

  it("pointer-chase is not a sequential walk", () => {
    const offsets = offsetsOf(
      decode(generate({ name: "pointer-chase", records: 1000, footprint: 1 << 20, seed: 2 })),
    );
    const adjacent = offsets
      .slice(1)
      .filter((offset, index) => Math.abs(offset - offsets[index]) === 64).length;
    expect(adjacent).toBeLessThan(20);
  });

  it("zipf is skewed toward a few scattered pages", () => {
    const pages = 1024;
    const offsets = offsetsOf(
      decode(generate({ name: "zipf", records: 100_000, footprint: pages * 4096, seed: 3 })),
    );
    const counts = new Map<number, number>();
    for (const offset of offsets) {
      const page = Math.floor(offset / 4096);
      counts.set(page, (counts.get(page) ?? 0) + 1);
    }
    const ranked = [...counts.entries()].sort((a, b) => b[1] - a[1]);
    const frequencies = ranked.map(([, count]) => count);
    while (frequencies.length < pages) frequencies.push(0);
    const median = frequencies[pages >> 1];
    expect(frequencies[0]).toBeGreaterThan(20 * Math.max(median, 1));
    // Zipf(0.99) over 1024 ranks: rank 1 has probability 1 / H(1024, 0.99) ≈ 0.133, rank 2 half that.
    const harmonic = Array.from({ length: pages }, (_, index) => (index + 1) ** -0.99).reduce(
      (a, b) => a + b,
    );
    expect(frequencies[0] / 100_000).toBeCloseTo(1 / harmonic, 1);
    expect(frequencies[1] / frequencies[0]).toBeGreaterThan(0.4);
    expect(frequencies[1] / frequencies[0]).toBeLessThan(0.6);
    // The hottest pages are spread out, not the first few.
    const hottest = ranked.slice(0, 8).map(([page]) => page);
    expect(hottest.some((page) => page >= 8)).toBe(true);
  });

  it("zipf matches the exact distribution on a small domain", () => {
    for (const exponent of [0, 0.5, 0.99, 1, 1.5]) {
      const pages = 8;
      const samples = 80_000;
      const offsets = offsetsOf(
        decode(
          generate({ name: "zipf", records: samples, footprint: pages * 4096, zipfS: exponent, seed: 11 }),
        ),
      );
      const counts = new Array<number>(pages).fill(0);
      for (const offset of offsets) counts[Math.floor(offset / 4096)]++;
      const weights = Array.from({ length: pages }, (_, index) => (index + 1) ** -exponent);
      const total = weights.reduce((a, b) => a + b);
      const observed = [...counts].sort((a, b) => b - a);
      weights.forEach((weight, rank) => {
        const expected = (samples * weight) / total;
        expect(Math.abs(observed[rank] - expected)).toBeLessThan(6 * Math.sqrt(expected) + 1);
      });
    }
  });

  it("honours writeFraction", () => {
    for (const writeFraction of [0, 0.3, 0.75, 1]) {
      const records = decode(
        generate({ name: "uniform", records: 20_000, footprint: 1 << 16, writeFraction, seed: 4 }),
      );
      const writes = records.filter((record) => record.kind === 1).length / records.length;
      expect(Math.abs(writes - writeFraction)).toBeLessThan(0.02);
    }
    const defaults = decode(generate({ name: "sequential", records: 20_000, footprint: 1 << 16, seed: 4 }));
    expect(Math.abs(defaults.filter((record) => record.kind === 1).length / 20_000 - 0.3)).toBeLessThan(0.02);
  });

  it("adds base with carries across 32 bits", () => {
    const base = 0xfffffff8n;
    const records = decode(
      generate({ name: "sequential", records: 3, footprint: 1 << 12, stride: 8, base, seed: 1 }),
    );
    expect(records.map((record) => record.address)).toEqual([0xfffffff8n, 0x100000000n, 0x100000008n]);
    const top = 0xffff_ffff_ffff_f000n;
    const high = decode(generate({ name: "uniform", records: 100, footprint: 4096, base: top, seed: 1 }));
    for (const record of high) expect(record.address >= top).toBe(true);
  });

  it("rejects invalid specs", () => {
    const valid: WorkloadSpec = { name: "uniform", records: 1, footprint: 4096, seed: 1 };
    expect(() => createWorkload({ ...valid, name: "random" as "uniform" })).toThrow(/unknown workload/);
    expect(() => createWorkload({ ...valid, footprint: 100 })).toThrow(/footprint/);
    expect(() => createWorkload({ ...valid, footprint: 0 })).toThrow(/footprint/);
    expect(() => createWorkload({ ...valid, name: "pointer-chase", footprint: 32 })).toThrow(/footprint/);
    expect(() => createWorkload({ ...valid, name: "strided", stride: 12 })).toThrow(/stride/);
    expect(() => createWorkload({ ...valid, records: -1 })).toThrow(/records/);
    expect(() => createWorkload({ ...valid, writeFraction: 1.5 })).toThrow(/writeFraction/);
    expect(() => createWorkload({ ...valid, cpu: 70_000 })).toThrow(/cpu/);
    expect(() => createWorkload({ ...valid, zipfS: -1 })).toThrow(/zipfS/);
    expect(() => createWorkload({ ...valid, seed: 1.5 })).toThrow(/seed/);
    expect(() => createWorkload({ ...valid, base: 0xffff_ffff_ffff_fff8n })).toThrow(/64 bits/);
  });

  it("keeps every workload in bounds for arbitrary specs", () => {
    fc.assert(
      fc.property(
        fc.constantFrom(...WORKLOAD_NAMES),
        fc.integer({ min: 8, max: 1 << 16 }),
        fc.integer({ min: 1, max: 1 << 14 }),
        fc.integer({ min: 0, max: 2 ** 40 }),
        (name, footprintSlots, strideSlots, seed) => {
          const footprint = Math.max(footprintSlots * 8, 64);
          const records = decode(
            generate({ name, records: 300, footprint, stride: strideSlots * 8, seed, base: 0n }, 128, {
              permutationLimit: 1 << 8,
            }),
          );
          expect(records.length).toBe(300);
          const misfits = records.filter(
            ({ address }) => address + 8n > BigInt(footprint) || address % 8n !== 0n,
          );
          expect(misfits).toEqual([]);
        },
      ),
      { numRuns: 200 },
    );
  });
});

/** Every line exactly once in each window of `lines` consecutive accesses, in the same order. */
function expectSingleCycle(offsets: number[], lines: number): void {
  expect(offsets.filter((offset) => offset % 64 !== 0)).toEqual([]);
  const firstCycle = offsets.slice(0, lines).map((offset) => offset / 64);
  expect(new Set(firstCycle).size).toBe(lines);
  expect(Math.max(...firstCycle)).toBe(lines - 1);
  const repeats = offsets.slice(lines).every((offset, index) => offset === offsets[index]);
  expect(repeats).toBe(true);
}
