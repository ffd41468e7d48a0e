// Rule tests for the IOMMU's caches and their invalidation (docs/iommu.md; docs/MODEL.md §13): the
// IOTLB tagged by domain and requester, the context cache, VT-d queued-invalidation descriptors, AMD-Vi
// commands, and the cycles of a DMA translation.
import { describe, expect, it } from "vitest";
import type { Iommu } from "../../src/iommu/hardware.js";
import { AmdDeviceTable, IoPageTable, VtdRootTable } from "../../src/iommu/tables.js";
import { setup } from "./harness.js";

const A = 0x0110;
const B = 0x0111;
const RW = { read: true, write: true };
const QUEUE = 0xa00_0000n;
const STATUS = 0xa10_0000n;

/** Two devices of domain 1 (A, B) and one of domain 2 (0x0200), all mapping 0x1000 and 0x2000. */
function vtd(scalable = false) {
  const env = setup("vtd");
  const root = new VtdRootTable(env.machine, env.frames, scalable);
  const t1 = new IoPageTable(env.machine, env.frames, "vtd-sl", 4);
  const t2 = new IoPageTable(env.machine, env.frames, "vtd-sl", 4);
  for (const t of [t1, t2]) {
    t.map(0x1000n, 0x10_0000n, "4K", RW);
    t.map(0x2000n, 0x20_0000n, "4K", RW);
    t.map(0x40_0000n, 0x4000_0000n, "2M", RW);
  }
  if (scalable) {
    root.setPasidEntry(A, 0, { domain: 1, pgtt: 2, aw: 2, secondLevelRoot: t1.root });
    root.setPasidEntry(A, 1, { domain: 1, pgtt: 2, aw: 2, secondLevelRoot: t1.root });
    root.setPasidEntry(0x0200, 0, { domain: 2, pgtt: 2, aw: 2, secondLevelRoot: t2.root });
  } else {
    root.setContext(A, { domain: 1, aw: 2, root: t1.root });
    root.setContext(B, { domain: 1, aw: 2, root: t1.root });
    root.setContext(0x0200, { domain: 2, aw: 2, root: t2.root });
  }
  env.iommu.setRoot(root.rtaddr);
  env.iommu.setQueue(QUEUE, 16);
  return { ...env, root, t1, t2 };
}

/** Translates each (sid, address) and returns whether each hit the IOTLB. */
function hits(iommu: Iommu, requests: [number, bigint][]): boolean[] {
  return requests.map(([sid, address]) => {
    const before = iommu.stats().iotlb.hits;
    iommu.dma([{ sid, address, write: false }]);
    return iommu.stats().iotlb.hits > before;
  });
}

const WARM: [number, bigint][] = [
  [A, 0x1000n],
  [A, 0x2000n],
  [B, 0x1000n],
  [0x0200, 0x1000n],
];

describe("the IOTLB", () => {
  it("caches a translation: the second request hits and makes no references", () => {
    const { iommu } = vtd();
    expect(hits(iommu, [[A, 0x1000n]])).toEqual([false]);
    const refs = iommu.stats().walkRefs;
    expect(hits(iommu, [[A, 0x1008n]])).toEqual([true]);
    expect(iommu.stats().walkRefs).toBe(refs);
  });

  it("is tagged by domain and requester: another device of the same domain misses", () => {
    const { iommu } = vtd();
    hits(iommu, [[A, 0x1000n]]);
    expect(hits(iommu, [[B, 0x1000n]])).toEqual([false]);
  });

  it("keeps a stale translation until software invalidates it", () => {
    const { iommu, t1 } = vtd();
    hits(iommu, [[A, 0x1000n]]);
    t1.unmap(0x1000n);
    expect(iommu.dma([{ sid: A, address: 0x1000n, write: false }])[0].hpa).toBe(0x10_0000n);
    iommu.submit([[2n | (3n << 4n) | (1n << 16n), 0x1000n]]);
    expect(iommu.dma([{ sid: A, address: 0x1000n, write: false }])[0].cause).toBe("noRead");
  });

  it("evicts the least recently used way of a full set", () => {
    const env = setup("vtd", { iotlb: { entries: 2, ways: 2, policy: "lru", latency: 2 } });
    const root = new VtdRootTable(env.machine, env.frames, false);
    const t = new IoPageTable(env.machine, env.frames, "vtd-sl", 4);
    for (let page = 1n; page <= 3n; page++) t.map(page << 12n, page << 20n, "4K", RW);
    root.setContext(A, { domain: 1, aw: 2, root: t.root });
    env.iommu.setRoot(root.rtaddr);
    expect(
      hits(env.iommu, [
        [A, 0x1000n],
        [A, 0x2000n],
        [A, 0x1000n],
        [A, 0x3000n],
        [A, 0x1000n],
        [A, 0x2000n],
      ]),
    ).toEqual([false, false, true, false, true, false]);
  });
});

describe("VT-d queued invalidation", () => {
  it("IOTLB global invalidation (type 2, granularity 1) drops every entry", () => {
    const { iommu } = vtd();
    hits(iommu, WARM);
    expect(iommu.submit([[2n | (1n << 4n), 0n]])).toBe(true);
    expect(hits(iommu, WARM)).toEqual([false, false, false, false]);
    expect(iommu.stats().invalidations).toEqual({ iotlbGlobal: 1 });
  });

  it("IOTLB domain invalidation (granularity 2) drops only that domain's entries", () => {
    const { iommu } = vtd();
    hits(iommu, WARM);
    iommu.submit([[2n | (2n << 4n) | (1n << 16n), 0n]]);
    expect(hits(iommu, WARM)).toEqual([false, false, false, true]);
  });

  it("page-selective invalidation (granularity 3) covers 2^AM pages from the aligned address", () => {
    const { iommu } = vtd();
    hits(iommu, WARM);
    iommu.submit([[2n | (3n << 4n) | (1n << 16n), 0x2000n]]); // AM=0: 0x2000 only
    expect(hits(iommu, WARM)).toEqual([true, false, true, true]);
    hits(iommu, WARM);
    iommu.submit([[2n | (3n << 4n) | (1n << 16n), 0x1000n | 1n]]); // AM=1: 0x0000-0x1fff
    expect(hits(iommu, WARM)).toEqual([false, true, false, true]);
  });

  it("a page-selective invalidation inside a 2M entry removes the whole entry", () => {
    const { iommu } = vtd();
    hits(iommu, [[A, 0x40_0000n]]);
    iommu.submit([[2n | (3n << 4n) | (1n << 16n), 0x45_0000n]]);
    expect(hits(iommu, [[A, 0x40_0000n]])).toEqual([false]);
  });

  it("context-cache invalidation: device-selective with a function mask, domain, global", () => {
    const { iommu } = vtd();
    const misses = () => iommu.stats().contextCache.misses;
    hits(iommu, WARM);
    const before = misses();
    // Device 0x0110 with FM=3: functions 0-7 of 01:02 (A and B), not 02:00.0.
    iommu.submit([[1n | (3n << 4n) | (BigInt(A) << 32n) | (3n << 48n), 0n]]);
    hits(iommu, WARM);
    expect(misses() - before).toBe(2);
    iommu.submit([[1n | (2n << 4n) | (2n << 16n), 0n]]);
    hits(iommu, WARM);
    expect(misses() - before).toBe(3);
    iommu.submit([[1n | (1n << 4n), 0n]]);
    hits(iommu, WARM);
    expect(misses() - before).toBe(6);
    expect(iommu.stats().invalidations).toMatchObject({
      contextDevice: 1,
      contextDomain: 1,
      contextGlobal: 1,
    });
  });

  it("an invalidation wait with SW writes its status data", () => {
    const { iommu, machine } = vtd();
    iommu.submit([[5n | (1n << 5n) | (0x1234n << 32n), STATUS + 4n]]);
    expect(machine.readPhys64(STATUS) >> 32n).toBe(0x1234n);
  });

  it("a device-TLB descriptor (type 3) is invalid here: FSTS.IQE is set and the head stays on it", () => {
    const { iommu } = vtd();
    expect(
      iommu.submit([
        [2n | (1n << 4n), 0n],
        [3n, 0n],
        [2n | (1n << 4n), 0n],
      ]),
    ).toBe(false);
    expect(iommu.faultStatus & 16).toBe(16);
    expect(iommu.queueHead).toBe(1);
    expect(iommu.stats().invalidations).toEqual({ iotlbGlobal: 1, rejected: 1 });
  });

  it("PASID-based IOTLB invalidation (type 6) drops one PASID's entries; PASID-cache (type 7) its context", () => {
    const { iommu } = vtd(true);
    const pasids: [number, number][] = [
      [A, 0],
      [A, 1],
    ];
    const run = () =>
      pasids.map(([sid, pasid]) => {
        const before = iommu.stats().iotlb.hits;
        iommu.dma([{ sid, pasid, address: 0x1000n, write: false }]);
        return iommu.stats().iotlb.hits > before;
      });
    run();
    expect(run()).toEqual([true, true]);
    iommu.submit([[6n | (2n << 4n) | (1n << 16n) | (1n << 32n), 0n]]);
    expect(run()).toEqual([true, false]);
    const misses = iommu.stats().contextCache.misses;
    iommu.submit([[7n | (1n << 4n) | (1n << 16n) | (0n << 32n), 0n]]);
    run();
    expect(iommu.stats().contextCache.misses - misses).toBe(1);
    expect(iommu.stats().invalidations).toMatchObject({ pasidIotlb: 1, pasidCache: 1 });
  });
});

describe("AMD-Vi commands", () => {
  function amd() {
    const env = setup("amdvi");
    const devices = new AmdDeviceTable(env.machine, env.frames);
    const t = new IoPageTable(env.machine, env.frames, "amdvi", 4);
    for (let page = 0n; page < 16n; page++) t.map(page << 12n, 0x100_0000n + (page << 12n), "4K", RW);
    devices.setDte(A, { mode: 4, root: t.root, domain: 5 });
    env.iommu.setRoot(devices.base);
    env.iommu.setQueue(QUEUE, 16);
    env.iommu.setEventLog(0xb00_0000n, 16);
    return { ...env, devices };
  }
  const pages = (n: number): [number, bigint][] => Array.from({ length: n }, (_, i) => [A, BigInt(i) << 12n]);

  it("INVALIDATE_IOMMU_PAGES with S=0 drops one page, with S=1 the range its address encodes", () => {
    const { iommu } = amd();
    hits(iommu, pages(8));
    iommu.submit([[(3n << 60n) | (5n << 32n), 0x3000n]]);
    expect(hits(iommu, pages(8))).toEqual([true, true, true, false, true, true, true, true]);
    hits(iommu, pages(8));
    // S=1, bits 12-13 ones, bit 14 zero: 2^15 = 32 KiB from 0 (pages 0-7).
    iommu.submit([[(3n << 60n) | (5n << 32n), 0x3000n | 1n]]);
    expect(hits(iommu, pages(8)).every((hit) => !hit)).toBe(true);
  });

  it("INVALIDATE_DEVTAB_ENTRY drops the cached DTE, INVALIDATE_ALL everything", () => {
    const { iommu } = amd();
    hits(iommu, pages(2));
    const misses = iommu.stats().contextCache.misses;
    iommu.submit([[(2n << 60n) | BigInt(A), 0n]]);
    expect(hits(iommu, pages(2))).toEqual([true, true]);
    expect(iommu.stats().contextCache.misses - misses).toBe(1);
    iommu.submit([[8n << 60n, 0n]]);
    expect(hits(iommu, pages(2))).toEqual([false, false]);
    expect(iommu.stats().invalidations).toMatchObject({ deviceTableEntry: 1, invalidateAll: 1 });
  });

  it("COMPLETION_WAIT with S stores its data; an unknown opcode logs ILLEGAL_COMMAND_ERROR", () => {
    const { iommu, machine } = amd();
    iommu.submit([[(1n << 60n) | STATUS | 1n, 0xfeedn]]);
    expect(machine.readPhys64(STATUS)).toBe(0xfeedn);
    expect(iommu.submit([[6n << 60n, 0n]])).toBe(false);
    expect(iommu.takeEvents()).toMatchObject([{ code: 5, address: QUEUE + 16n }]);
  });
});

describe("DMA translation cycles", () => {
  it("an IOTLB hit costs the IOTLB latency; a miss adds its references, priced by the LLC or DRAM", () => {
    const { iommu } = vtd();
    const cycles = () => iommu.stats().cycles;
    iommu.dma([{ sid: A, address: 0x1000n, write: false }]);
    const first = cycles();
    // Context miss: root + context entry (2 refs), walk: 4 refs, all from DRAM (250) plus the latency 2.
    expect(first).toBe(2 + 6 * 250);
    iommu.dma([{ sid: A, address: 0x1000n, write: false }]);
    expect(cycles() - first).toBe(2);
    iommu.dma([{ sid: A, address: 0x2000n, write: false }]);
    // The walk's upper entries are in the LLC now (44); the last-level PTE shares the line.
    expect(cycles() - first - 2).toBe(2 + 4 * 44);
  });
});

describe("the IO paging-structure cache", () => {
  function withPsc(kind: "vtd" | "amdvi") {
    const env = setup(kind, { iotlb: null, psc: { entries: 8, ways: 2, policy: "lru" } });
    const t = new IoPageTable(env.machine, env.frames, kind === "vtd" ? "vtd-sl" : "amdvi", 4);
    for (let page = 0n; page < 4n; page++) t.map(page << 12n, 0x100_0000n + (page << 12n), "4K", RW);
    if (kind === "vtd") {
      const root = new VtdRootTable(env.machine, env.frames, false);
      root.setContext(A, { domain: 1, aw: 2, root: t.root });
      env.iommu.setRoot(root.rtaddr);
    } else {
      const devices = new AmdDeviceTable(env.machine, env.frames);
      devices.setDte(A, { mode: 4, root: t.root, domain: 1 });
      env.iommu.setRoot(devices.base);
    }
    env.iommu.setQueue(QUEUE, 16);
    const refs = (address: bigint) => {
      const before = env.iommu.stats().walkRefs;
      env.iommu.dma([{ sid: A, address, write: false }]);
      return env.iommu.stats().walkRefs - before;
    };
    return { ...env, refs };
  }

  it("a hit on the cached directory entry leaves only the last level to read", () => {
    const { iommu, refs } = withPsc("vtd");
    expect(refs(0x1000n)).toBe(4);
    expect(refs(0x2000n)).toBe(1);
    expect(iommu.stats().psc).toEqual({ hits: 1, misses: 1 });
  });

  it("VT-d page-selective invalidation drops the domain's entries unless IH says only leaves changed", () => {
    const { iommu, refs } = withPsc("vtd");
    refs(0x1000n);
    iommu.submit([[2n | (3n << 4n) | (1n << 16n), 0x1000n | 0x40n]]); // IH=1
    expect(refs(0x1000n)).toBe(1);
    iommu.submit([[2n | (3n << 4n) | (1n << 16n), 0x1000n]]); // IH=0
    expect(refs(0x1000n)).toBe(4);
  });

  it("AMD-Vi INVALIDATE_IOMMU_PAGES drops the domain's entries only with PDE", () => {
    const { iommu, refs } = withPsc("amdvi");
    refs(0x1000n);
    iommu.submit([[(3n << 60n) | (1n << 32n), 0x1000n]]);
    expect(refs(0x1000n)).toBe(1);
    iommu.submit([[(3n << 60n) | (1n << 32n), 0x1000n | 2n]]);
    expect(refs(0x1000n)).toBe(4);
  });
});
