// Differential property test (docs/MODEL.md §13): the core's IOMMU against the TypeScript reference
// model, over random VT-d (legacy and scalable) and AMD-Vi structures, random DMA requests and random
// invalidation descriptors. Every request's outcome, the queue, the fault records, the event log, memory
// and every counter must agree.
import fc from "fast-check";
import { describe, expect, it } from "vitest";
import { RefIommu } from "../../reference/iommu.js";
import { defaultConfig } from "../../src/config/config.js";
import { Machine } from "../../src/core/machine.js";
import { Iommu, type IommuHardwareConfig } from "../../src/iommu/hardware.js";
import { runs } from "../fc-runs.js";

const REGION = 0x10_0000n;
const FRAMES = 16;
const QUEUE = REGION + 20n * 0x1000n;
const STATUS = REGION + 21n * 0x1000n;
const LOG = REGION + 22n * 0x1000n;
const MEMORY_TOP = 1n << 30n;
const SIDS = [0x0000, 0x0001, 0x0080, 0x0100];
const SLOTS = [0, 1, 2, 3, 4, 5, 8, 16, 24];

type Kind = "vtd-legacy" | "vtd-scalable" | "amdvi";
const frame = (i: number) => REGION + BigInt(i % FRAMES) * 0x1000n;

/** Entries that point into the region with random low and high bits, or random values. */
const entry = fc.oneof(
  fc
    .tuple(
      fc.nat(FRAMES - 1),
      fc.nat(0xfff),
      fc.constantFrom(0n, 3n << 61n, 1n << 61n, 1n << 62n, 0x5n << 52n, 1n << 63n),
    )
    .map(([f, low, high]) => frame(f) | BigInt(low) | high),
  fc.bigInt(0n, (1n << 64n) - 1n),
  fc.constant(0n),
);

// Addresses whose table indexes are small (so they meet the structures' first slots).
const address = fc
  .tuple(
    fc.array(fc.nat(3), { minLength: 3, maxLength: 3 }),
    fc.array(fc.constantFrom(0, 0, 0, 1), { minLength: 2, maxLength: 2 }),
    fc.nat(4095),
    fc.constantFrom(false, false, false, false, false, true),
  )
  .map(
    ([low, upper, offset, high]) =>
      [...low, ...upper].reduce(
        (a, idx, level) => a | (BigInt(idx) << BigInt(12 + 9 * level)),
        BigInt(offset & ~7),
      ) | (high ? 1n << 57n : 0n),
  );

const request = fc.record({
  sid: fc.constantFrom(...SIDS),
  address,
  write: fc.boolean(),
  pasid: fc.option(fc.nat(2), { nil: undefined }),
  translated: fc.oneof(
    { weight: 6, arbitrary: fc.constant(false) },
    { weight: 1, arbitrary: fc.constant(true) },
  ),
  length: fc.constantFrom(8, 8, 64, 64, 4096),
  data: fc.option(fc.bigInt(0n, 255n), { nil: undefined }),
});

const descriptor = fc
  .tuple(
    fc.constantFrom(1, 2, 3, 5, 6, 7, 9, 0),
    fc.nat(3),
    fc.nat(3),
    fc.constantFrom(...SIDS),
    fc.nat(3),
    fc.constantFrom(0, 1, 2, 3, 19),
    address,
    fc.boolean(),
  )
  .map(([type, g, did, sid, fm, am, addr, s]): [bigint, bigint, bigint, bigint] => [
    // VT-d form, then AMD-Vi form of the same draw.
    BigInt(type) |
      (BigInt(g) << 4n) |
      (BigInt(did) << 16n) |
      (BigInt(sid) << 32n) |
      (BigInt(fm) << 48n) |
      (type === 5 ? 1n << 5n : 0n),
    type === 5 ? STATUS : (addr & ~0xfffn) | BigInt(am),
    (BigInt([1, 2, 3, 8, 4, 0, 3, 1][type % 8]) << 60n) |
      (BigInt(did) << 32n) |
      BigInt(sid) |
      (type === 1 ? STATUS | 1n : 0n),
    (addr & ~0xfffn) | (s ? 1n : 0n),
  ]);

type Write = [number, number, bigint];

/**
 * A plausible set of structures for each kind, so that most requests get far: root and context
 * entries (or PASID directory and table, or DTEs) for the requesters, pointing at page tables in frames
 * 3.. whose first slots point at other frames (as tables or leaves). Random values vary the fields
 * that matter: TT, AW, PGTT, FLPM, mode, domains, Next Level, rights.
 */
function skeleton(kind: Kind): fc.Arbitrary<Write[]> {
  // Every table frame (3..15) gets its first four slots filled: [frame, slot, target, low bits, NL, rights].
  const table = fc
    .array(fc.tuple(fc.integer({ min: 1, max: FRAMES - 1 }), fc.nat(7), fc.nat(3), fc.nat(3)), {
      minLength: (FRAMES - 3) * 4,
      maxLength: (FRAMES - 3) * 4,
    })
    .map((cells) =>
      cells.map(
        ([target, low, next, rights], i) => [3 + (i >> 2), i & 3, target, low, next, rights] as const,
      ),
    );
  const did = fc.nat(3);
  if (kind === "vtd-legacy") {
    const context = fc.tuple(
      fc.constantFrom(0, 0, 0, 1, 2, 3),
      fc.constantFrom(1, 2, 2, 3),
      did,
      fc.integer({ min: 3, max: 6 }),
      fc.boolean(),
    );
    return fc.tuple(fc.array(context, { minLength: 4, maxLength: 4 }), table).map(([contexts, tables]) => {
      const writes: Write[] = [
        [0, 0, frame(1) | 1n],
        [0, 2, frame(2) | 1n],
      ];
      const slots: [number, number][] = [
        [1, 0],
        [1, 2],
        [1, 256],
        [2, 0],
      ];
      contexts.forEach(([tt, aw, d, root, fpd], i) => {
        const [f, slot] = slots[i];
        writes.push([f, slot, frame(root) | 1n | (fpd ? 2n : 0n) | (BigInt(tt) << 2n)]);
        writes.push([f, slot + 1, BigInt(aw) | (BigInt(d) << 8n)]);
      });
      for (const [f, slot, target, low] of tables)
        writes.push([f, slot, frame(target) | BigInt(low & 3 || 3)]);
      return writes;
    });
  }
  if (kind === "vtd-scalable") {
    const pasidEntry = fc.tuple(
      fc.constantFrom(1, 2, 3, 4, 2),
      fc.constantFrom(1, 2, 2),
      did,
      fc.integer({ min: 6, max: 9 }),
      fc.integer({ min: 6, max: 9 }),
      fc.constantFrom(0, 0, 1),
    );
    return fc
      .tuple(fc.array(pasidEntry, { minLength: 3, maxLength: 3 }), fc.nat(2), table)
      .map(([entries, ridPasid, tables]) => {
        const writes: Write[] = [
          [0, 0, frame(1) | 1n],
          [0, 1, frame(2) | 1n],
          [0, 2, frame(2) | 1n],
          // Context entries for devfn 0 and 1 (PASIDs enabled, device TLB for devfn 1), and devfn 0x80/bus 1.
          [1, 0, frame(4) | 1n | 8n],
          [1, 1, BigInt(ridPasid)],
          [1, 4, frame(4) | 1n | 8n | 4n],
          [2, 0, frame(4) | 1n],
          [4, 0, frame(5) | 1n],
        ];
        entries.forEach(([pgtt, aw, d, sl, fl, flpm], pasid) => {
          writes.push([5, pasid * 8, frame(sl) | 1n | (BigInt(aw) << 2n) | (BigInt(pgtt) << 6n)]);
          writes.push([5, pasid * 8 + 1, BigInt(d)]);
          writes.push([5, pasid * 8 + 2, frame(fl) | (BigInt(flpm) << 2n)]);
        });
        for (const [f, slot, target, low] of tables)
          if (f > 5) writes.push([f, slot, frame(target) | BigInt(low | 1)]);
        return writes;
      });
  }
  const dte = fc.tuple(
    fc.constantFrom(0, 1, 2, 3, 4, 4, 7),
    did,
    fc.integer({ min: 3, max: 6 }),
    fc.nat(3),
    fc.constantFrom(true, true, true, false),
  );
  return fc.tuple(fc.array(dte, { minLength: 4, maxLength: 4 }), table).map(([dtes, tables]) => {
    const writes: Write[] = [];
    const slots: [number, number][] = [
      [0, 0],
      [0, 4],
      [1, 0],
      [2, 0],
    ];
    dtes.forEach(([mode, d, root, rights, tv], i) => {
      const [f, slot] = slots[i];
      writes.push([
        f,
        slot,
        frame(root) | 1n | (tv ? 2n : 0n) | (BigInt(mode) << 9n) | (BigInt(rights) << 61n),
      ]);
      writes.push([f, slot + 1, BigInt(d) | (i === 1 ? 1n << 32n : 0n)]);
    });
    for (const [f, slot, target, , next, rights] of tables)
      writes.push([
        f,
        slot,
        frame(target) |
          1n |
          (BigInt(next === 3 ? 7 : next) << 9n) |
          (BigInt(rights || 3) << 61n) |
          (next === 3 ? 0x1000n : 0n),
      ]);
    return writes;
  });
}

const step = fc.oneof(
  { weight: 6, arbitrary: request.map((r) => ({ op: "dma" as const, r })) },
  { weight: 1, arbitrary: descriptor.map((d) => ({ op: "queue" as const, d })) },
  {
    weight: 1,
    arbitrary: fc
      .tuple(fc.nat(FRAMES - 1), fc.constantFrom(...SLOTS), entry)
      .map((w) => ({ op: "write" as const, w })),
  },
  { weight: 1, arbitrary: fc.nat(3).map((i) => ({ op: "clear" as const, i })) },
);

function run(kind: Kind, writes: Write[], steps: fc.Value<typeof step>[], iotlb: boolean) {
  const machineConfig = defaultConfig().machine;
  const machine = new Machine(machineConfig);
  const llc = machineConfig.cache.llc as { size: number; ways: number; latency: number };
  const hardware: IommuHardwareConfig = {
    kind: kind === "amdvi" ? "amdvi" : "vtd",
    supportedAw: [1, 2],
    largePages: { "2M": true, "1G": false },
    snoopControl: false,
    memoryTop: MEMORY_TOP,
    iotlb: iotlb ? { entries: 8, ways: 2, policy: "lru", latency: 3 } : null,
    contextCache: { entries: 4, ways: 2, policy: "fifo" },
    psc: iotlb ? { entries: 4, ways: 2, policy: "lru" } : null,
    faultRecords: 3,
  };
  const core = new Iommu(machine, hardware);
  const ref = new RefIommu({
    ...hardware,
    maxPhyAddr: machineConfig.maxPhyAddr,
    llc,
    dramLatency: machineConfig.cache.dramLatency,
    contextCache: hardware.contextCache as { entries: number; ways: number; policy: "fifo" },
    psc: hardware.psc as { entries: number; ways: number; policy: "lru" } | null,
    iotlb: hardware.iotlb as { entries: number; ways: number; policy: "lru"; latency: number } | null,
  });
  const write = (pa: bigint, value: bigint) => {
    machine.writePhys64(pa, value);
    ref.write64(pa, value);
  };
  const root = frame(0) | (kind === "vtd-scalable" ? 1n << 10n : 0n);
  core.setRoot(root);
  ref.root = root;
  core.setQueue(QUEUE, 16);
  ref.setQueue(QUEUE, 16);
  if (kind === "amdvi") {
    core.setEventLog(LOG, 8);
    ref.setEventLog(LOG, 8);
  }
  for (const [f, slot, value] of writes) write(frame(f) + BigInt(slot) * 8n, value);
  let tail = 0;
  for (const s of steps) {
    if (s.op === "dma") {
      const [got] = core.dma([s.r]);
      const want = ref.dma(s.r);
      expect(
        { status: got.status, hpa: got.hpa, data: got.data },
        JSON.stringify(s.r, (_, v) => (typeof v === "bigint" ? `0x${v.toString(16)}` : v)),
      ).toEqual(want);
    } else if (s.op === "queue") {
      const [q0, q1] = kind === "amdvi" ? [s.d[2], s.d[3]] : [s.d[0], s.d[1]];
      const at = QUEUE + BigInt(tail) * 16n;
      write(at, q0);
      write(at + 8n, q1);
      tail = (tail + 1) % 16;
      const accepted = machine.core.iommuQueueTail(tail) !== 0;
      expect(accepted).toBe(ref.processQueue(tail));
      if (!accepted) {
        // Software skips the rejected entry and restarts the queue after it.
        core.setQueue(QUEUE, 16);
        ref.setQueue(QUEUE, 16);
        tail = 0;
      }
      expect(core.faultStatus).toBe(ref.faultStatus);
    } else if (s.op === "write") {
      write(frame(s.w[0]) + BigInt(s.w[1]) * 8n, s.w[2]);
    } else {
      core.clearFaultRecord(s.i);
      ref.clearRecord(s.i);
    }
  }
  const stats = core.stats();
  const c = ref.counters;
  expect(stats).toEqual({
    translations: c.translations,
    iotlb: c.iotlb,
    contextCache: c.contextCache,
    psc: c.psc,
    walks: c.walks,
    walkRefs: c.walkRefs,
    contextRefs: c.contextRefs,
    untranslated: c.untranslated,
    bytes: c.bytes,
    cycles: c.cycles,
    faults: c.faults,
    faultsRecorded: c.faultsRecorded,
    faultOverflows: c.faultOverflows,
    invalidations: c.invalidations,
  });
  expect(machine.stats().adUpdates).toBe(c.adUpdates);
  expect(machine.stats().cache.llc.hits).toBe(c.llcHits);
  expect(core.faultStatus).toBe(ref.faultStatus);
  expect(core.status).toBe(ref.status);
  expect(core.faultRecords()).toEqual(
    ref.records.flatMap((r, index) =>
      r.hi >> 63n
        ? [
            {
              index,
              address: r.lo,
              sid: Number(r.hi & 0xffffn),
              reason: Number((r.hi >> 32n) & 0xffn),
              write: ((r.hi >> 62n) & 1n) === 0n,
              translated: ((r.hi >> 60n) & 3n) === 2n,
              ...(((r.hi >> 31n) & 1n) === 1n ? { pasid: Number((r.hi >> 40n) & 0xfffffn) } : {}),
            },
          ]
        : [],
    ),
  );
  // Memory the IOMMU can write (structures via A/D, the event log, wait statuses, DMA data) agrees.
  for (let f = 0; f < 23; f++)
    for (let slot = 0; slot < 512; slot++) {
      const pa = REGION + BigInt(f) * 0x1000n + BigInt(slot) * 8n;
      if (machine.readPhys64(pa) !== ref.read64(pa))
        expect([pa, machine.readPhys64(pa)]).toEqual([pa, ref.read64(pa)]);
    }
}

describe("the core's IOMMU agrees with the reference model (MODEL.md §13)", () => {
  for (const kind of ["vtd-legacy", "vtd-scalable", "amdvi"] as const) {
    for (const iotlb of [true, false]) {
      it(`${kind}, IOTLB and PSC ${iotlb ? "on" : "off"}: random structures, requests and invalidations`, () => {
        fc.assert(
          fc.property(
            skeleton(kind),
            fc.array(fc.tuple(fc.nat(FRAMES - 1), fc.constantFrom(...SLOTS), entry), { maxLength: 12 }),
            fc.array(step, { minLength: 1, maxLength: 60 }),
            (structures, corruption, steps) => run(kind, [...structures, ...corruption], steps, iotlb),
          ),
          { numRuns: runs(60) },
        );
      });
    }
  }
});
