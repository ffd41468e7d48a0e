// The security property of DMA remapping (docs/MODEL.md §13.8): a device in domain A never reaches a
// frame outside A. Random mappings, unmappings (with strict invalidation) and DMA addresses, on each
// table format; and malformed tables never crash the core (fuzzing its structures).
import fc from "fast-check";
import { describe, expect, it } from "vitest";
import { defaultConfig } from "../../src/config/config.js";
import * as L from "../../src/core/layout.js";
import { Machine } from "../../src/core/machine.js";
import { type Domain, IommuDriver } from "../../src/iommu/driver.js";
import { AmdDeviceTable, IoPageTable, VtdRootTable } from "../../src/iommu/tables.js";
import { runs } from "../fc-runs.js";
import { BumpFrames, hardware, setup } from "./harness.js";

const DEVICES = [0x0100, 0x0101, 0x0200, 0x0308];

type Step =
  | { op: "map"; device: number; pages: number; write: boolean }
  | { op: "unmap"; device: number; which: number }
  | {
      op: "dma";
      device: number;
      which: number;
      offset: number;
      write: boolean;
      stray: number;
      stale: boolean;
    };

// Device 0 half the time, so map, DMA, unmap and a stale DMA often meet on one device.
const device = fc.oneof(fc.constant(0), fc.nat(3));

const step: fc.Arbitrary<Step> = fc.oneof(
  fc.record({
    op: fc.constant("map" as const),
    device,
    pages: fc.integer({ min: 1, max: 4 }),
    write: fc.boolean(),
  }),
  fc.record({ op: fc.constant("unmap" as const), device, which: fc.nat() }),
  fc.record({
    op: fc.constant("dma" as const),
    device,
    which: fc.nat(),
    offset: fc.nat(4095),
    write: fc.boolean(),
    stray: fc.oneof(fc.constant(0), fc.constant(0), fc.integer({ min: -3, max: 3 })),
    stale: fc.boolean(),
  }),
);

const SETUPS = [
  { name: "VT-d legacy second-level", kind: "vtd" as const, scalable: false, firstLevel: false },
  { name: "VT-d scalable first-level", kind: "vtd" as const, scalable: true, firstLevel: true },
  { name: "AMD-Vi", kind: "amdvi" as const, scalable: false, firstLevel: false },
];

describe("isolation: a device in domain A never reaches a frame outside A", () => {
  for (const s of SETUPS) {
    it(`${s.name}, strict invalidation, random mappings and DMA addresses`, () => {
      fc.assert(
        fc.property(fc.array(step, { minLength: 1, maxLength: 60 }), fc.boolean(), (steps, sharedDomain) => {
          const machine = new Machine(defaultConfig().machine);
          const frames = new BumpFrames();
          const driver = new IommuDriver(machine, frames, {
            hardware: hardware(s.kind, { iotlb: { entries: 8, ways: 2, policy: "lru", latency: 2 } }),
            mode: "strict",
            scalable: s.scalable,
            firstLevel: s.firstLevel,
            levels: 4,
            flushQueue: 16,
            costs: { pteCycles: 0, invalidationCycles: 0 },
          });
          // Devices 0 and 1 share a domain when `sharedDomain`; the rest have their own.
          const domains: Domain[] = [];
          for (let i = 0; i < DEVICES.length; i++) {
            const domain = sharedDomain && i === 1 ? domains[0] : driver.newDomain();
            domains.push(domain);
            driver.attach(DEVICES[i], domain);
          }
          // What each domain may reach: frame -> writable, and its live mappings.
          const owned = new Map<Domain, Map<bigint, boolean>>();
          const live = new Map<Domain, { iova: bigint; pages: bigint[]; write: boolean }[]>();
          // Addresses unmapped earlier: a stale IOTLB entry would still reach their frames.
          const unmapped = new Map<Domain, bigint[]>(domains.map((d) => [d, []]));
          for (const d of domains) {
            owned.set(d, new Map());
            live.set(d, []);
          }
          for (const st of steps) {
            const domain = domains[st.device];
            const mappings = live.get(domain) as { iova: bigint; pages: bigint[]; write: boolean }[];
            if (st.op === "map") {
              const pages = Array.from({ length: st.pages }, () => frames.alloc("4K"));
              const iova = driver.mapPages(domain, pages, st.write);
              for (const p of pages) owned.get(domain)?.set(p, st.write);
              mappings.push({ iova, pages, write: st.write });
            } else if (st.op === "unmap") {
              if (mappings.length === 0) continue;
              const [m] = mappings.splice(st.which % mappings.length, 1);
              driver.unmapPages(domain, m.iova, m.pages.length);
              for (const p of m.pages) owned.get(domain)?.delete(p);
              unmapped.get(domain)?.push(m.iova);
            } else {
              const target = mappings.length ? mappings[st.which % mappings.length] : undefined;
              let base = target ? target.iova + BigInt(st.stray * 4096) : BigInt(st.which % 64) << 12n;
              const stale = unmapped.get(domain) as bigint[];
              if (st.stale && stale.length) base = stale[st.which % stale.length];
              if (base < 0n) continue;
              const [r] = driver.iommu.dma([
                {
                  sid: DEVICES[st.device],
                  address: base + BigInt(st.offset & ~7),
                  write: st.write,
                  data: 0x1n,
                },
              ]);
              if (r.status !== 0) continue;
              const frame = r.hpa & ~0xfffn;
              const writable = owned.get(domain)?.get(frame);
              expect(
                writable,
                `device ${st.device} reached frame 0x${frame.toString(16)}`,
              ).not.toBeUndefined();
              if (st.write) expect(writable).toBe(true);
            }
          }
        }),
        { numRuns: runs(60) },
      );
    });
  }
});

describe("malformed tables never crash the core", () => {
  for (const kind of ["vtd-legacy", "vtd-scalable", "amdvi"] as const) {
    it(`${kind}: random entries in every structure give a translation or a fault`, () => {
      fc.assert(
        fc.property(
          fc.array(fc.tuple(fc.nat(63), fc.nat(511), fc.bigInt(0n, (1n << 64n) - 1n)), { maxLength: 120 }),
          fc.array(
            fc.record({
              sid: fc.constantFrom(0x0000, 0x0100, 0x0180, 0xffff),
              address: fc.bigInt(0n, (1n << 64n) - 8n),
              write: fc.boolean(),
              pasid: fc.option(fc.nat(0xfffff), { nil: undefined }),
              translated: fc.boolean(),
            }),
            { minLength: 1, maxLength: 40 },
          ),
          (writes, requests) => {
            const env = setup(kind === "amdvi" ? "amdvi" : "vtd", { memoryTop: 1n << 28n });
            // Build a valid skeleton, then scribble on the pages it uses (and a few more).
            let structures: bigint[];
            if (kind === "amdvi") {
              const devices = new AmdDeviceTable(env.machine, env.frames);
              const t = new IoPageTable(env.machine, env.frames, "amdvi", 4);
              t.map(0x1000n, 0x20_0000n, "4K", { read: true, write: true });
              devices.setDte(0x0100, { mode: 4, root: t.root, domain: 1 });
              env.iommu.setRoot(devices.base);
              env.iommu.setEventLog(0x300_0000n, 8);
              structures = [devices.base, devices.base + 0x2000n, ...t.tables];
            } else {
              const root = new VtdRootTable(env.machine, env.frames, kind === "vtd-scalable");
              const t = new IoPageTable(env.machine, env.frames, "vtd-sl", 4);
              t.map(0x1000n, 0x20_0000n, "4K", { read: true, write: true });
              if (kind === "vtd-scalable")
                root.setPasidEntry(0x0100, 0, {
                  domain: 1,
                  pgtt: 3,
                  aw: 2,
                  secondLevelRoot: t.root,
                  firstLevelRoot: t.root,
                });
              else root.setContext(0x0100, { domain: 1, aw: 2, root: t.root });
              env.iommu.setRoot(root.rtaddr);
              structures = [
                root.root,
                root.contextEntryAddress(0x0100) & ~0xfffn,
                ...t.tables,
                0x100000n,
                0x104000n,
              ];
            }
            for (const [frame, slot, value] of writes) {
              const base = structures[frame % structures.length];
              env.machine.writePhys64(base + BigInt(slot) * 8n, value);
            }
            const results = env.iommu.dma(
              requests.map((r) => ({ ...r, address: r.address & ~7n, length: 8 })),
            );
            for (const r of results) {
              expect(
                r.status === 0 || r.status === L.DMA_UNSUPPORTED || (r.status >= 1 && r.status <= 0x10),
              ).toBe(true);
            }
            expect(env.iommu.stats().translations).toBe(requests.length);
          },
        ),
        { numRuns: runs(80) },
      );
    });
  }
});
